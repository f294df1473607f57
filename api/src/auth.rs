//! Bearer-key authentication. A key names one tenant; everything a request
//! reads or writes is scoped to that tenant. Authentication is also where a
//! request is counted against its tenant's rate limit (`limits`): a request
//! over it is refused before anything else is read or written.
//!
//! A wrong key costs as little as it can: one without the key shape is
//! refused without a lookup, one looked up and found unknown is remembered
//! for the cache period (`keys`), and an address whose keys keep failing is
//! refused further lookups (429) for a while (`limits::FailedAuths`), except
//! of keys it found live before, so that a legitimate client behind the same
//! address keeps working.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures::future::LocalBoxFuture;
use ledger::TenantId;

use crate::error::{ApiError, ProblemCode};
use crate::keys::Cached;
use crate::routes::RouteTable;
use crate::state::AppState;

/// The authenticated tenant of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub TenantId);

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ProblemCode::Unauthorized, detail)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    /// The tenant `middleware` authenticated; a request it did not (a route
    /// outside the table) is authenticated here.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let authenticated = req.extensions().get::<Caller>().copied();
        match authenticated {
            Some(caller) => Box::pin(futures::future::ready(Ok(caller))),
            None => Box::pin(authenticate(req)),
        }
    }
}

/// Authenticates every request to a route that takes a key before any of
/// its extractors runs. Extractors run side by side: as an extractor of its
/// own, a key's lookup could lose to a malformed body or Idempotency-Key,
/// whose 400 told a caller with no valid key about the request, cost a
/// database lookup for nothing and did not count as a failed
/// authentication, so no address sending such requests was ever limited.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let keyed = req
        .app_data::<web::Data<RouteTable>>()
        .is_some_and(|routes| routes.needs_key(req.path(), req.method().as_str()));
    if keyed {
        match authenticate(req.request()).await {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
            }
            Err(refused) => return Ok(req.error_response(refused)),
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// The tenant of the request's key: refused without a lookup when the key
/// is not shaped like one or is known wrong, or when the address's failures
/// are spent; counted against the tenant's rate limit.
fn authenticate(req: &HttpRequest) -> impl std::future::Future<Output = Result<Caller, ApiError>> + 'static {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_owned());
    let addr = req.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    async move {
        let state = state.expect("AppState is registered");
        let key = key.ok_or_else(|| unauthorized("send `Authorization: Bearer <api key>`"))?;
        let refused = || {
            state.failed_auths.failed(addr);
            unauthorized("the API key is not valid")
        };
        if !ledger::tenants::is_key_shaped(&key) {
            return Err(refused());
        }
        let digest = ledger::tenants::hash_key(&key);
        let owner = match state.keys.cached(&digest) {
            Cached::Owner(owner) => owner,
            Cached::Unknown => return Err(refused()),
            Cached::Ask { known } => {
                // a key found live before is looked up again whatever
                // the address's failures: a client behind the same
                // address as one sending wrong keys keeps working
                if !known {
                    state.failed_auths.check(addr).map_err(ApiError::too_many_failed_authentications)?;
                }
                state.keys.look_up(&state.pool, digest).await?.ok_or_else(refused)?
            }
        };
        state.limits.admit(owner.tenant, owner.rate_limit).map_err(ApiError::rate_limited)?;
        Ok(Caller(owner.tenant))
    }
}
