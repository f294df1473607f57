//! Bearer-key authentication. A key names one tenant; everything a request
//! reads or writes is scoped to that tenant. Authentication is also where a
//! request is counted against its tenant's rate limit (`limits`): a request
//! over it is refused before anything else is read or written.

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use ledger::TenantId;

use crate::error::{ApiError, ProblemCode};
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

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|k| k.trim().to_owned());
        Box::pin(async move {
            let state = state.expect("AppState is registered");
            let key = key.ok_or_else(|| unauthorized("send `Authorization: Bearer <api key>`"))?;
            if key.is_empty() || key.len() > 200 {
                return Err(unauthorized("the API key is not valid"));
            }
            let owner = state.keys.authenticate(&state.pool, &key).await?;
            let owner = owner.ok_or_else(|| unauthorized("the API key is not valid"))?;
            state.limits.admit(owner.tenant, owner.rate_limit).map_err(ApiError::rate_limited)?;
            Ok(Caller(owner.tenant))
        })
    }
}
