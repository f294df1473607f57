//! Tenants and their API keys. Keys are random, shown once, stored as SHA-256.
//! A tenant may hold several live keys at once, so a key is rotated without
//! downtime: issue the new one, move the clients over, revoke the old one
//! (its `last_used_at` says when nothing uses it any more).
//!
//! Creating tenants and keys is administrative and runs through diesel; the
//! key lookup and the batched last-used write run through tokio-postgres.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::schema::{api_keys, tenants};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tenants)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
}

/// The caller a request acts for, as established by its API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantId(pub Uuid);

/// A token bucket's shape: `per_sec` tokens added each second (0: no limit),
/// at most `burst` held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

/// What a live key authenticates: its tenant, and the tenant's own rate
/// limit when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub tenant: TenantId,
    pub rate_limit: Option<RateLimit>,
}

/// A key as `list-keys` shows it; the key itself is never stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct KeyInfo {
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The length of a key's printed prefix (`lk_` and 8 hex digits).
pub const PREFIX_LEN: usize = 11;

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

fn new_key() -> String {
    // 244 bits from the OS random source, through uuid's v4 generator
    format!("lk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Whether `key` has the shape of the keys this service issues (`lk_` and
/// 64 lowercase hex digits, [`new_key`]): anything else is refused before
/// any lookup, so a client sending garbage costs the database nothing.
pub fn is_key_shaped(key: &str) -> bool {
    key.len() == 67 && key.starts_with("lk_") && key.bytes().skip(3).all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub async fn connect(database_url: &str) -> crate::Result<AsyncPgConnection> {
    Ok(AsyncPgConnection::establish(database_url).await?)
}

/// Creates a tenant, or finds the one of that name, and issues it a new key.
/// Returns the tenant and the key in clear text, which is never stored.
pub async fn create_with_key(conn: &mut AsyncPgConnection, name: &str) -> crate::Result<(Tenant, String)> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(crate::Error::InvalidTenantName);
    }
    diesel::insert_into(tenants::table)
        .values((tenants::id.eq(Uuid::now_v7()), tenants::name.eq(name)))
        .on_conflict(tenants::name)
        .do_nothing()
        .execute(conn)
        .await?;
    let tenant: Tenant = tenants::table.filter(tenants::name.eq(name)).select(Tenant::as_select()).first(conn).await?;
    let key = issue_key(conn, tenant.id).await?;
    Ok((tenant, key))
}

/// The tenant named `name_or_id`: its id, or else its name.
pub async fn find(conn: &mut AsyncPgConnection, name_or_id: &str) -> crate::Result<Tenant> {
    let name_or_id = name_or_id.trim();
    let by = match name_or_id.parse::<Uuid>() {
        Ok(id) => tenants::table.filter(tenants::id.eq(id)).into_boxed(),
        Err(_) => tenants::table.filter(tenants::name.eq(name_or_id)).into_boxed(),
    };
    by.select(Tenant::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| crate::Error::TenantNotFound(name_or_id.to_owned()))
}

/// Issues the tenant one more key; its other keys stay live. A running API
/// accepts it from its first request (unknown keys are never cached).
pub async fn issue_key(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> crate::Result<String> {
    let key = new_key();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(Uuid::now_v7()),
            api_keys::tenant_id.eq(tenant_id),
            api_keys::key_hash.eq(hash_key(&key)),
            api_keys::prefix.eq(&key[..PREFIX_LEN]),
        ))
        .execute(conn)
        .await?;
    Ok(key)
}

/// Revokes every key that starts with `prefix` (the first 11 characters,
/// which is what the key listing shows). Returns how many were revoked.
pub async fn revoke_keys(conn: &mut AsyncPgConnection, prefix: &str) -> crate::Result<usize> {
    Ok(diesel::update(api_keys::table.filter(api_keys::prefix.eq(prefix)).filter(api_keys::revoked_at.is_null()))
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?)
}

/// The tenant's keys, oldest first, revoked ones included.
pub async fn list_keys(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> crate::Result<Vec<KeyInfo>> {
    Ok(api_keys::table
        .filter(api_keys::tenant_id.eq(tenant_id))
        .order((api_keys::created_at, api_keys::id))
        .select(KeyInfo::as_select())
        .load(conn)
        .await?)
}

/// Gives the tenant its own rate limit, or (`None`) returns it to the API's
/// default. Running APIs apply it within their key cache period.
pub async fn set_rate_limit(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    limit: Option<RateLimit>,
) -> crate::Result<()> {
    let as_column = |v: u32| i32::try_from(v).map_err(|_| crate::Error::InvalidRateLimit);
    let (per_sec, burst) = match limit {
        Some(l) if l.burst == 0 => return Err(crate::Error::InvalidRateLimit),
        Some(l) => (Some(as_column(l.per_sec)?), Some(as_column(l.burst)?)),
        None => (None, None),
    };
    diesel::update(tenants::table.find(tenant_id))
        .set((tenants::rate_limit_per_sec.eq(per_sec), tenants::rate_limit_burst.eq(burst)))
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenant's own rate limit, if it has one.
pub async fn rate_limit(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> crate::Result<Option<RateLimit>> {
    let (per_sec, burst): (Option<i32>, Option<i32>) = tenants::table
        .find(tenant_id)
        .select((tenants::rate_limit_per_sec, tenants::rate_limit_burst))
        .first(conn)
        .await?;
    Ok(limit_of(per_sec, burst))
}

fn limit_of(per_sec: Option<i32>, burst: Option<i32>) -> Option<RateLimit> {
    match (per_sec, burst) {
        (Some(p), Some(b)) => Some(RateLimit { per_sec: p.max(0) as u32, burst: b.max(1) as u32 }),
        _ => None,
    }
}

/// The statement that authenticates a request whose key is not in the API's
/// cache: the key's owner and the owner's rate limit, by the key's digest.
pub const AUTHENTICATE_SQL: &str = "SELECT k.id, k.tenant_id, t.rate_limit_per_sec, t.rate_limit_burst \
     FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
     WHERE k.key_hash = $1 AND k.revoked_at IS NULL";

/// The owner of an unrevoked key, by the key's SHA-256 digest.
pub async fn authenticate(client: &impl crate::db::Cached, key_hash: &[u8]) -> crate::Result<Option<KeyOwner>> {
    let row = client.cached_opt(AUTHENTICATE_SQL, &[&key_hash]).await?;
    Ok(row.map(|r| KeyOwner { key_id: r.get(0), tenant: TenantId(r.get(1)), rate_limit: limit_of(r.get(2), r.get(3)) }))
}

/// Moves keys' `last_used_at` forward to the given times, in one statement
/// for any number of keys (never backward: several API processes write it).
const RECORD_USE_SQL: &str = "UPDATE api_keys k SET last_used_at = u.at \
     FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
     WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)";

/// Records when each key was last used; returns how many rows moved.
pub async fn record_use(client: &impl crate::db::Cached, used: &[(Uuid, DateTime<Utc>)]) -> crate::Result<u64> {
    if used.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = used.iter().map(|(id, _)| *id).collect();
    let at: Vec<DateTime<Utc>> = used.iter().map(|(_, at)| *at).collect();
    Ok(client.cached_execute(RECORD_USE_SQL, &[&ids, &at]).await?)
}

#[cfg(test)]
mod key_shape_tests {
    use super::{is_key_shaped, new_key};

    #[test]
    fn issued_keys_have_the_key_shape_and_others_do_not() {
        for _ in 0..100 {
            assert!(is_key_shaped(&new_key()));
        }
        let key = new_key();
        assert!(!is_key_shaped(&key[..66]), "too short");
        assert!(!is_key_shaped(&format!("{key}0")), "too long");
        assert!(!is_key_shaped(&key.replace("lk_", "sk_")), "another prefix");
        assert!(!is_key_shaped(&key.to_uppercase()), "upper case");
        assert!(!is_key_shaped("Bearer nonsense"));
    }
}
