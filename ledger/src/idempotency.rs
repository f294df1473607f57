//! Idempotency-Key rows: the claim, the stored answer and the purge.
//!
//! One PostgreSQL transaction holds the key row, the effect and the stored
//! answer. The key row is inserted first: a concurrent duplicate blocks on
//! its unique index (bounded by `lock_timeout`) until the first commits, then
//! finds the stored answer. A crash or a fault rolls the key back with the
//! effect, so no key is ever stuck "in progress". What an answer is (an HTTP
//! response) is the API's business; here it is bytes and a status.

use deadpool_postgres::Transaction;
use tokio_postgres::{GenericClient, Row};

use crate::db::Cached;
use crate::retention::purge_in_batches;
use crate::{Error, Result, TenantId};

/// Claims a key, first statement of every effectful request (`ledger-bench`
/// runs these statements in pgbench too). A key older than the retention is
/// taken over as if it were new.
pub const CLAIM_SQL: &str = "INSERT INTO idempotency_keys (tenant_id, key, fingerprint) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant_id, key) DO UPDATE \
         SET fingerprint = EXCLUDED.fingerprint, status_code = NULL, content_type = NULL, \
             response_headers = '[]', response_body = NULL, charge_id = NULL, refund_id = NULL, created_at = now() \
       WHERE idempotency_keys.created_at < now() - make_interval(secs => $4) \
     RETURNING 1";
/// Stores the answer, last statement before the commit.
pub const STORE_SQL: &str = "UPDATE idempotency_keys SET status_code = $3, content_type = $4, \
     response_headers = $5, response_body = $6 WHERE tenant_id = $1 AND key = $2";
/// The stored answer of a completed request whose key has not expired.
pub const COMPLETED_SQL: &str = "SELECT fingerprint, status_code, content_type, response_headers, response_body \
     FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status_code IS NOT NULL \
      AND created_at >= now() - make_interval(secs => $3)";
/// The stored answer of a key, whatever its state (read under the claim's lock).
const STORED_SQL: &str =
    "SELECT fingerprint, status_code, content_type, response_headers, response_body, charge_id, refund_id, \
            capture_of, void_of \
     FROM idempotency_keys WHERE tenant_id = $1 AND key = $2";

/// An answer as it is replayed: status, content type, the headers that
/// matter and the body, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a key row holds: the fingerprint of the request that made it, and
/// its answer.
#[derive(Debug, Clone)]
pub struct Stored {
    pub fingerprint: Vec<u8>,
    pub answer: Answer,
}

fn stored(row: &Row) -> Result<Stored> {
    let headers: serde_json::Value = row.try_get(3)?;
    let headers = serde_json::from_value(headers.clone())
        .map_err(|_| Error::unknown("stored response headers", headers.to_string()))?;
    let status: i16 = row.try_get(1)?;
    Ok(Stored {
        fingerprint: row.try_get(0)?,
        answer: Answer {
            status: u16::try_from(status).map_err(|_| Error::unknown("stored status", status.to_string()))?,
            content_type: row.try_get(2)?,
            headers,
            body: row.try_get(4)?,
        },
    })
}

/// A completed request's stored answer, read without a transaction: an
/// answer never changes while its key lives, so a retry of a completed
/// request costs one read (no BEGIN, no row lock).
pub async fn completed(
    client: &impl Cached,
    tenant: TenantId,
    key: &str,
    retention_secs: f64,
) -> Result<Option<Stored>> {
    client.cached_opt(COMPLETED_SQL, &[&tenant.0, &key, &retention_secs]).await?.map(|r| stored(&r)).transpose()
}

/// The outcome of a claim.
#[derive(Debug)]
pub enum Claim {
    /// This transaction owns the key: run the effect.
    Owned,
    /// The key was used before; its row, for the caller to compare
    /// fingerprints and replay.
    Taken(Stored),
    /// The key's first transaction committed an effect at the provider in
    /// flight (a card charge `processing`, a card refund `pending`) and no
    /// answer yet (its recovery point): resume that effect.
    InFlight { fingerprint: Vec<u8>, point: RecoveryPoint },
}

/// What a key's first transaction left in flight at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryPoint {
    Charge(uuid::Uuid),
    Refund(uuid::Uuid),
    /// A card authorization's capture (named by its charge).
    Capture(uuid::Uuid),
    /// A card authorization's void (named by its charge).
    Void(uuid::Uuid),
}

impl RecoveryPoint {
    /// The key's columns that name it (`charge_id`, `refund_id`,
    /// `capture_of`, `void_of`): one set, the others null.
    fn columns(self) -> [Option<uuid::Uuid>; 4] {
        let only = |p: fn(uuid::Uuid) -> RecoveryPoint| (p(self.id()) == self).then_some(self.id());
        [
            only(RecoveryPoint::Charge),
            only(RecoveryPoint::Refund),
            only(RecoveryPoint::Capture),
            only(RecoveryPoint::Void),
        ]
    }

    /// The effect's row it names.
    pub fn id(self) -> uuid::Uuid {
        match self {
            RecoveryPoint::Charge(id)
            | RecoveryPoint::Refund(id)
            | RecoveryPoint::Capture(id)
            | RecoveryPoint::Void(id) => id,
        }
    }
}

/// Claims the key within `tx`, waiting (up to `lock_timeout`) for a
/// concurrent request with the same key to finish.
pub async fn claim(
    tx: &Transaction<'_>,
    tenant: TenantId,
    key: &str,
    fingerprint: &[u8],
    retention_secs: f64,
) -> Result<Claim> {
    // Twice at most: the second time only if the purge deleted the row
    // between the insert and the read.
    for _ in 0..2 {
        let owned = tx.cached_opt(CLAIM_SQL, &[&tenant.0, &key, &fingerprint, &retention_secs]).await?;
        if owned.is_some() {
            return Ok(Claim::Owned);
        }
        if let Some(row) = tx.cached_opt(STORED_SQL, &[&tenant.0, &key]).await? {
            let status: Option<i16> = row.try_get(1)?;
            if status.is_none() {
                let id = |i: usize| row.try_get::<_, Option<uuid::Uuid>>(i);
                let point = match (id(5)?, id(6)?, id(7)?, id(8)?) {
                    (Some(charge), ..) => Some(RecoveryPoint::Charge(charge)),
                    (None, Some(refund), ..) => Some(RecoveryPoint::Refund(refund)),
                    (None, None, Some(capture), _) => Some(RecoveryPoint::Capture(capture)),
                    (None, None, None, Some(void)) => Some(RecoveryPoint::Void(void)),
                    (None, None, None, None) => None,
                };
                if let Some(point) = point {
                    return Ok(Claim::InFlight { fingerprint: row.try_get(0)?, point });
                }
            }
            return Ok(Claim::Taken(stored(&row)?));
        }
    }
    Err(Error::KeyChanged)
}

/// Stores the answer of the request that owns the key, in its transaction.
pub async fn store(tx: &Transaction<'_>, tenant: TenantId, key: &str, answer: &Answer) -> Result<()> {
    let headers = serde_json::to_value(&answer.headers).expect("headers serialize");
    let status = i16::try_from(answer.status).expect("an HTTP status fits in i16");
    tx.cached_execute(STORE_SQL, &[&tenant.0, &key, &status, &answer.content_type, &headers, &answer.body]).await?;
    Ok(())
}

/// Records the key's recovery point: its transaction made an effect whose
/// provider answer is still to come. Committed with the effect, without an
/// answer.
pub async fn mark_in_flight(tx: &Transaction<'_>, tenant: TenantId, key: &str, point: RecoveryPoint) -> Result<()> {
    let [charge, refund, capture, void] = point.columns();
    tx.cached_execute(
        "UPDATE idempotency_keys SET charge_id = $3, refund_id = $4, capture_of = $5, void_of = $6 \
          WHERE tenant_id = $1 AND key = $2",
        &[&tenant.0, &key, &charge, &refund, &capture, &void],
    )
    .await?;
    Ok(())
}

/// [`mark_in_flight`] for many keys claimed by one batch ([`claim_batch`]),
/// in one statement.
pub async fn mark_in_flight_many(tx: &Transaction<'_>, points: &[(TenantId, &str, RecoveryPoint)]) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let tenants: Vec<uuid::Uuid> = points.iter().map(|p| p.0 .0).collect();
    let keys: Vec<&str> = points.iter().map(|p| p.1).collect();
    let columns: Vec<[Option<uuid::Uuid>; 4]> = points.iter().map(|p| p.2.columns()).collect();
    let column = |n: usize| columns.iter().map(|c| c[n]).collect::<Vec<_>>();
    let (charges, refunds, captures, voids) = (column(0), column(1), column(2), column(3));
    tx.cached_execute(
        "UPDATE idempotency_keys k SET charge_id = p.c, refund_id = p.r, capture_of = p.cap, void_of = p.v \
           FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[]) \
                AS p(t, key, c, r, cap, v) \
          WHERE k.tenant_id = p.t AND k.key = p.key",
        &[&tenants, &keys, &charges, &refunds, &captures, &voids],
    )
    .await?;
    Ok(())
}

/// Stores the final answer of a key left at its recovery point (the second
/// transaction of a card charge), unless another retry stored it first:
/// the answer stays the first one, byte for byte.
pub async fn store_final(tx: &Transaction<'_>, tenant: TenantId, key: &str, answer: &Answer) -> Result<Option<Stored>> {
    let headers = serde_json::to_value(&answer.headers).expect("headers serialize");
    let status = i16::try_from(answer.status).expect("an HTTP status fits in i16");
    let n = tx
        .cached_execute(
            "UPDATE idempotency_keys SET status_code = $3, content_type = $4, response_headers = $5, response_body = $6 \
              WHERE tenant_id = $1 AND key = $2 AND status_code IS NULL",
            &[&tenant.0, &key, &status, &answer.content_type, &headers, &answer.body],
        )
        .await?;
    if n == 1 {
        return Ok(None);
    }
    match tx.cached_opt(STORED_SQL, &[&tenant.0, &key]).await? {
        Some(row) if row.try_get::<_, Option<i16>>(1)?.is_some() => Ok(Some(stored(&row)?)),
        // purged meanwhile: the answer is this one, not stored
        _ => Ok(None),
    }
}

/// Deletes keys older than the retention, a bounded batch per statement;
/// returns how many.
pub async fn purge_expired(client: &impl GenericClient, retention_secs: f64) -> Result<u64> {
    Ok(purge_in_batches(
        client,
        "DELETE FROM idempotency_keys k USING ( \
             SELECT tenant_id, key FROM idempotency_keys \
              WHERE created_at < now() - make_interval(secs => $1) \
              LIMIT $2 FOR UPDATE SKIP LOCKED) old \
          WHERE k.tenant_id = old.tenant_id AND k.key = old.key",
        retention_secs,
    )
    .await?)
}

/// A batch's keys (group commit), in one statement: the stored answers of
/// those whose request completed (each looked up in the key index,
/// `LATERAL`: a join planned while the table was small would hash a scan
/// of it), and the others claimed with the same insert as [`CLAIM_SQL`],
/// over arrays. A completed key is read, not claimed, so a batch of
/// retries writes and locks nothing. The keys are claimed in (tenant, key)
/// order, so two batches that share keys wait for each other instead of
/// deadlocking. Each row ends with its tenant and key; a claimed key's
/// row has no answer. The caller passes each (tenant, key) at most once:
/// one statement cannot claim a key twice.
const CLAIM_BATCH_SQL: &str = "WITH c AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS c(t, k, f)), \
     done AS (SELECT x.* FROM c CROSS JOIN LATERAL ( \
                  SELECT fingerprint, status_code, content_type, response_headers, response_body, tenant_id, key \
                    FROM idempotency_keys \
                   WHERE tenant_id = c.t AND key = c.k AND status_code IS NOT NULL \
                     AND created_at >= now() - make_interval(secs => $4)) x), \
     claimed AS ( \
         INSERT INTO idempotency_keys (tenant_id, key, fingerprint) \
         SELECT t, k, f FROM c WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.tenant_id = c.t AND done.key = c.k) \
          ORDER BY t, k \
         ON CONFLICT (tenant_id, key) DO UPDATE \
             SET fingerprint = EXCLUDED.fingerprint, status_code = NULL, content_type = NULL, \
                 response_headers = '[]', response_body = NULL, charge_id = NULL, refund_id = NULL, created_at = now() \
           WHERE idempotency_keys.created_at < now() - make_interval(secs => $4) \
         RETURNING tenant_id, key) \
     SELECT * FROM done \
     UNION ALL \
     SELECT NULL::bytea, NULL::int2, NULL::text, NULL::jsonb, NULL::bytea, tenant_id, key FROM claimed";
/// Stores many answers, one per owned key.
const STORE_MANY_SQL: &str = "UPDATE idempotency_keys k SET status_code = a.s, content_type = a.ct, \
     response_headers = a.h, response_body = a.b \
     FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::text[], $5::jsonb[], $6::bytea[]) AS a(t, key, s, ct, h, b) \
     WHERE k.tenant_id = a.t AND k.key = a.key";
/// [`STORE_MANY_SQL`] for keys left at their recovery point: each answer is
/// stored unless its key has one already (or is gone); the keys it stored.
const STORE_FINAL_MANY_SQL: &str = "UPDATE idempotency_keys k SET status_code = a.s, content_type = a.ct, \
     response_headers = a.h, response_body = a.b \
     FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::text[], $5::jsonb[], $6::bytea[]) AS a(t, key, s, ct, h, b) \
     WHERE k.tenant_id = a.t AND k.key = a.key AND k.status_code IS NULL RETURNING k.tenant_id, k.key";
/// Gives back keys claimed in this transaction whose request got no answer
/// to store (an error, or a request sent back to run alone): what a
/// rollback does to the key of a request that runs alone.
const RELEASE_MANY_SQL: &str = "DELETE FROM idempotency_keys k USING unnest($1::uuid[], $2::text[]) AS r(t, key) \
     WHERE k.tenant_id = r.t AND k.key = r.key";

/// A request's key in a batch: its tenant, the key and the request's
/// fingerprint.
pub struct KeyClaim<'a> {
    pub tenant: TenantId,
    pub key: &'a str,
    pub fingerprint: &'a [u8],
}

/// What a batch's statement made of one of its keys.
#[derive(Debug)]
pub enum BatchClaim {
    /// Claimed by this transaction: its request is the batch's to run.
    Owned,
    /// Its request completed before: its stored answer.
    Stored(Stored),
    /// Used by a request still running or in flight (or completed since the
    /// statement's snapshot): that request runs alone, where [`claim`]
    /// tells it which.
    Other,
}

/// Claims `claims` within `tx`, or reads their stored answers, in one
/// statement ([`CLAIM_BATCH_SQL`]), waiting (up to `lock_timeout`) for
/// concurrent requests that hold any of them; one result per claim, in
/// order.
pub async fn claim_batch(
    tx: &Transaction<'_>,
    claims: &[KeyClaim<'_>],
    retention_secs: f64,
) -> Result<Vec<BatchClaim>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<uuid::Uuid> = claims.iter().map(|c| c.tenant.0).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.key).collect();
    let fingerprints: Vec<&[u8]> = claims.iter().map(|c| c.fingerprint).collect();
    let rows = tx.cached_query(CLAIM_BATCH_SQL, &[&tenants, &keys, &fingerprints, &retention_secs]).await?;
    let mut found: std::collections::HashMap<(uuid::Uuid, String), BatchClaim> = std::collections::HashMap::new();
    for row in &rows {
        let status: Option<i16> = row.try_get(1)?;
        let claim = if status.is_some() { BatchClaim::Stored(stored(row)?) } else { BatchClaim::Owned };
        found.insert((row.try_get(5)?, row.try_get(6)?), claim);
    }
    Ok(claims.iter().map(|c| found.remove(&(c.tenant.0, c.key.to_owned())).unwrap_or(BatchClaim::Other)).collect())
}

/// Stores the answers of many owned keys in one statement.
pub async fn store_many(tx: &Transaction<'_>, answers: &[(TenantId, &str, &Answer)]) -> Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let (tenants, keys, statuses, types, headers, bodies) = answer_columns(answers);
    tx.cached_execute(STORE_MANY_SQL, &[&tenants, &keys, &statuses, &types, &headers, &bodies]).await?;
    Ok(())
}

/// Answers for keys as the columns the `_MANY` statements take.
#[allow(clippy::type_complexity)]
fn answer_columns<'a>(
    answers: &[(TenantId, &'a str, &'a Answer)],
) -> (Vec<uuid::Uuid>, Vec<&'a str>, Vec<i16>, Vec<&'a str>, Vec<serde_json::Value>, Vec<&'a [u8]>) {
    let tenants = answers.iter().map(|a| a.0 .0).collect();
    let keys = answers.iter().map(|a| a.1).collect();
    let statuses = answers.iter().map(|a| i16::try_from(a.2.status).expect("an HTTP status fits in i16")).collect();
    let types = answers.iter().map(|a| a.2.content_type.as_str()).collect();
    let headers = answers.iter().map(|a| serde_json::to_value(&a.2.headers).expect("headers serialize")).collect();
    let bodies = answers.iter().map(|a| a.2.body.as_slice()).collect();
    (tenants, keys, statuses, types, headers, bodies)
}

/// [`store_final`] for many keys at once (a batch of card payments
/// recorded): per answer, whether it was stored. One not stored was stored
/// first by another request (that one is the key's answer), or its key is
/// gone.
pub async fn store_final_many(tx: &Transaction<'_>, answers: &[(TenantId, &str, &Answer)]) -> Result<Vec<bool>> {
    if answers.is_empty() {
        return Ok(Vec::new());
    }
    let (tenants, keys, statuses, types, headers, bodies) = answer_columns(answers);
    let rows = tx.cached_query(STORE_FINAL_MANY_SQL, &[&tenants, &keys, &statuses, &types, &headers, &bodies]).await?;
    let stored: std::collections::HashSet<(uuid::Uuid, String)> =
        rows.iter().map(|r| (r.get(0), r.get::<_, String>(1))).collect();
    Ok(answers.iter().map(|(t, key, _)| stored.contains(&(t.0, (*key).to_owned()))).collect())
}

/// Gives back keys claimed in `tx` by [`claim_batch`] whose requests store
/// no answer here.
pub async fn release_many(tx: &Transaction<'_>, keys: &[(TenantId, &str)]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let tenants: Vec<uuid::Uuid> = keys.iter().map(|k| k.0 .0).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.1).collect();
    tx.cached_execute(RELEASE_MANY_SQL, &[&tenants, &names]).await?;
    Ok(())
}
