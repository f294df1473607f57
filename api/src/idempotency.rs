//! The HTTP idempotency layer.
//!
//! One PostgreSQL transaction holds the key row, the effect and the stored
//! response. The key row is inserted first: a concurrent duplicate blocks on
//! its unique index (bounded by `lock_timeout`) until the first commits, then
//! finds the stored response and replays it. A crash or a 5xx rolls the key
//! back with the effect, so no key is ever stuck "in progress", and a 5xx is
//! always safe to retry.
//!
//! A retry of a completed request is answered from one read outside any
//! transaction: a stored answer never changes while its key lives.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use deadpool_postgres::Transaction;
use ledger::db::Cached;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ProblemCode, PROBLEM_JSON};
use crate::startup::AppState;
use ledger::{Created, TenantId};

pub const HEADER: &str = "Idempotency-Key";
pub const REPLAYED: &str = "Idempotent-Replayed";
/// Set when a write found its natural key (order attempt, order and SKU,
/// account reference) already taken by an equal request and returned the
/// existing resource instead of creating a second one.
pub const NATURAL_KEY_REPLAYED: &str = "Natural-Key-Replayed";
pub const MAX_KEY_LEN: usize = 255;

/// Claims a key, first statement of every effectful request (`ledger-bench`
/// runs these statements in pgbench too).
pub const CLAIM_SQL: &str = "INSERT INTO idempotency_keys (tenant_id, key, fingerprint) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant_id, key) DO UPDATE \
         SET fingerprint = EXCLUDED.fingerprint, status_code = NULL, content_type = NULL, \
             response_headers = '[]', response_body = NULL, created_at = now() \
       WHERE idempotency_keys.created_at < now() - make_interval(secs => $4) \
     RETURNING 1";
/// Stores the answer, last statement before the commit.
pub const STORE_SQL: &str = "UPDATE idempotency_keys SET status_code = $3, content_type = $4, \
     response_headers = $5, response_body = $6 WHERE tenant_id = $1 AND key = $2";

/// A validated `Idempotency-Key`: 1 to 255 printable ASCII characters.
pub struct Key(String);

impl Key {
    pub fn from_request(req: &HttpRequest) -> Result<Key, ApiError> {
        let value = req.headers().get(HEADER).ok_or_else(|| {
            ApiError::bad_request(ProblemCode::MissingIdempotencyKey, "this request needs an `Idempotency-Key` header")
        })?;
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(ApiError::bad_request(
                ProblemCode::InvalidIdempotencyKey,
                "`Idempotency-Key` must be 1 to 255 printable ASCII characters",
            ));
        }
        Ok(Key(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// What a successful (or declined) request answers, as stored for replay.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: StatusCode, value: &impl Serialize) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value).expect("a response serializes"),
        }
    }

    /// 201 with `Location` for a new resource; 200 with `Natural-Key-Replayed`
    /// for one that already existed under the same natural key.
    pub fn created<T: Serialize>(created: &Created<T>, location: String) -> Reply {
        if created.created {
            let mut r = Reply::json(StatusCode::CREATED, &created.resource);
            r.headers.push((header::LOCATION.to_string(), location));
            r
        } else {
            let mut r = Reply::json(StatusCode::OK, &created.resource);
            r.headers.push((NATURAL_KEY_REPLAYED.to_owned(), "true".to_owned()));
            r
        }
    }

    fn problem(e: &ApiError) -> Reply {
        Reply { status: e.status, content_type: PROBLEM_JSON, headers: Vec::new(), body: e.body() }
    }

    fn into_response(self, replayed: bool) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, self.content_type));
        for (name, value) in self.headers {
            res.insert_header((name, value));
        }
        if replayed {
            res.insert_header((REPLAYED, "true"));
        }
        res.body(self.body)
    }
}

fn fingerprint(req: &HttpRequest, canonical_body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(req.method().as_str().as_bytes());
    h.update(b"\n");
    h.update(req.path().as_bytes());
    h.update(b"\n");
    h.update(canonical_body);
    h.finalize().to_vec()
}

enum Claim {
    /// This request owns the key: run the effect.
    Owned,
    /// The key was used before: its stored answer, or a mismatch.
    Replay(Reply),
}

/// Claims the key for this request, or finds what it answered before. A key
/// older than the retention is taken over as if it were new.
async fn claim(
    tx: &Transaction<'_>,
    tenant: TenantId,
    key: &Key,
    fp: &[u8],
    retention_secs: f64,
) -> Result<Claim, ApiError> {
    // Twice at most: the second time only if the purge deleted the row
    // between the insert and the read.
    for _ in 0..2 {
        let owned = tx.cached_opt(CLAIM_SQL, &[&tenant.0, &key.0, &fp, &retention_secs]).await?;
        if owned.is_some() {
            return Ok(Claim::Owned);
        }
        let Some(row) = tx.cached_opt(STORED_SQL, &[&tenant.0, &key.0]).await? else {
            continue;
        };
        return stored_reply(&row, fp).map(Claim::Replay);
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ProblemCode::RequestInProgress,
        "the key changed under this request; retry",
    )
    .retry_after(1))
}

/// The stored answer of a key, whatever its state (read under the claim's lock).
const STORED_SQL: &str = "SELECT fingerprint, status_code, content_type, response_headers, response_body \
     FROM idempotency_keys WHERE tenant_id = $1 AND key = $2";
/// The stored answer of a completed request whose key has not expired.
pub const COMPLETED_SQL: &str = "SELECT fingerprint, status_code, content_type, response_headers, response_body \
     FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status_code IS NOT NULL \
      AND created_at >= now() - make_interval(secs => $3)";

/// The answer stored in a key row, or 422 when the row belongs to a different request.
fn stored_reply(row: &tokio_postgres::Row, fp: &[u8]) -> Result<Reply, ApiError> {
    if row.get::<_, &[u8]>(0) != fp {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request",
        ));
    }
    let status: i16 = row.get(1);
    let content_type: String = row.get(2);
    let headers: serde_json::Value = row.get(3);
    let headers: Vec<(String, String)> = serde_json::from_value(headers).unwrap_or_default();
    Ok(Reply {
        status: StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
        content_type: if content_type == PROBLEM_JSON { PROBLEM_JSON } else { "application/json" },
        headers,
        body: row.get(4),
    })
}

async fn store(tx: &Transaction<'_>, tenant: TenantId, key: &Key, reply: &Reply) -> Result<(), ApiError> {
    let headers = serde_json::to_value(&reply.headers).expect("headers serialize");
    tx.cached_execute(
        STORE_SQL,
        &[&tenant.0, &key.0, &(reply.status.as_u16() as i16), &reply.content_type, &headers, &reply.body],
    )
    .await?;
    Ok(())
}

/// Runs `effect` at most once per (tenant, key): the first request runs it
/// and stores its answer in the same transaction; every retry of the same
/// request gets that answer back byte for byte with `Idempotent-Replayed`.
///
/// Stored: successes and business declines (insufficient funds, out of
/// stock, refund above the charge). Not stored: anything the effect refused
/// before writing (validation, not found, conflicts) and every 5xx; those
/// roll the key back and a retry runs afresh.
pub async fn run<F>(
    state: &AppState,
    tenant: TenantId,
    req: &HttpRequest,
    canonical_body: &[u8],
    effect: F,
) -> Result<HttpResponse, ApiError>
where
    F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, ApiError>,
{
    let key = Key::from_request(req)?;
    let fp = fingerprint(req, canonical_body);
    let retention_secs = state.config.idempotency_retention.as_secs_f64();
    let mut client = state.pool.get().await?;
    // A retry of a completed request: its stored answer never changes until
    // the key expires, so one read outside a transaction replays it (no
    // BEGIN, no row lock, no rollback). Anything else takes the claim below.
    if let Some(row) = client.cached_opt(COMPLETED_SQL, &[&tenant.0, &key.0, &retention_secs]).await? {
        return Ok(stored_reply(&row, &fp)?.into_response(true));
    }
    let tx = client.transaction().await?;
    match claim(&tx, tenant, &key, &fp, retention_secs).await {
        Ok(Claim::Owned) => {}
        Ok(Claim::Replay(reply)) => return Ok(reply.into_response(true)),
        Err(e) if e.code == ProblemCode::Contention => {
            // the first request with this key is still running past our wait
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ProblemCode::RequestInProgress,
                "a request with this Idempotency-Key is still in progress; retry shortly",
            )
            .retry_after(1));
        }
        Err(e) => return Err(e),
    }
    // the key row is locked by this transaction, the effect has not run
    ledger::crash::point("api-after-key-lock");
    let reply = match effect(&tx).await {
        Ok(reply) => reply,
        Err(e) if e.stored => Reply::problem(&e),
        Err(e) => return Err(e), // dropping `tx` rolls the key back
    };
    store(&tx, tenant, &key, &reply).await?;
    tx.commit().await?;
    // committed, the client has not heard back
    ledger::crash::point("api-after-commit");
    Ok(reply.into_response(false))
}
