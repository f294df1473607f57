//! Tenants and their API keys. Keys are random, shown once, stored as SHA-256.
//!
//! Creating tenants and keys is administrative and runs through diesel; the
//! per-request key lookup is on the hot path and runs through tokio-postgres.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantId(pub Uuid);

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

fn new_key() -> String {
    // 244 bits from the OS random source, through uuid's v4 generator
    format!("lk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
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

pub async fn issue_key(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> crate::Result<String> {
    let key = new_key();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(Uuid::now_v7()),
            api_keys::tenant_id.eq(tenant_id),
            api_keys::key_hash.eq(hash_key(&key)),
            api_keys::prefix.eq(&key[..11]),
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

/// The statement that authenticates every request.
pub const AUTHENTICATE_SQL: &str = "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";

/// The tenant that owns an unrevoked key, if any.
pub async fn authenticate(client: &impl crate::db::Cached, key: &str) -> crate::Result<Option<TenantId>> {
    let row = client.cached_opt(AUTHENTICATE_SQL, &[&hash_key(key)]).await?;
    Ok(row.map(|r| TenantId(r.get(0))))
}
