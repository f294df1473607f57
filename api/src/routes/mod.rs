//! Every route, registered in one place.

use actix_web::dev::ResourceDef;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::{ApiError, ProblemCode};

pub mod accounts;
pub mod charges;
pub mod events;
pub mod health;
pub mod inventory;
pub mod provider;
pub mod statements;
pub mod transfers;
pub mod webhook_endpoints;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::healthz).service(health::readyz).service(
        utoipa_actix_web::scope("/v1")
            .service(accounts::create)
            .service(accounts::list)
            .service(accounts::get)
            .service(accounts::entries)
            .service(statements::balance)
            .service(statements::statement)
            .service(transfers::create)
            .service(transfers::list)
            .service(transfers::get)
            .service(charges::create)
            .service(charges::list)
            .service(charges::get)
            .service(charges::refund)
            .service(charges::refunds)
            .service(charges::capture)
            .service(charges::void)
            .service(inventory::restock)
            .service(inventory::get_sku)
            .service(inventory::reserve)
            .service(inventory::list)
            .service(inventory::get_reservation)
            .service(inventory::release)
            .service(events::list)
            .service(events::get)
            .service(events::redeliver)
            .service(webhook_endpoints::create)
            .service(webhook_endpoints::list)
            .service(webhook_endpoints::get)
            .service(webhook_endpoints::update)
            .service(webhook_endpoints::remove)
            .service(webhook_endpoints::rotate_secret)
            .service(webhook_endpoints::attempts)
            // served but not documented (`UNDOCUMENTED`)
            .map(|scope| scope.service(provider::receive)),
    );
}

/// Routes served beside the documented ones but left out of the OpenAPI
/// document, with their methods: the payment provider's webhooks, which
/// only the provider calls (signed, with no API key) and which a client
/// generated for a storefront must not offer.
pub const UNDOCUMENTED: &[(&str, &str)] = &[("/v1/provider/webhooks", "POST")];

/// A caller-chosen identifier: 1 to 255 printable ASCII characters.
pub fn identifier<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| (0x21..=0x7e).contains(&b) || b == b' ')
        && value.trim() == value;
    if ok {
        Ok(value)
    } else {
        Err(ApiError::invalid_field(format!(
            "`{field}` must be 1 to 255 printable ASCII characters without surrounding spaces"
        )))
    }
}

/// A list's page request, Stripe's way: `limit` (1 to 100, default 10) and at
/// most one of `starting_after` and `ending_before`.
pub fn page<Id>(
    limit: Option<i64>,
    starting_after: Option<Id>,
    ending_before: Option<Id>,
) -> Result<(ledger::pagination::Cursor<Id>, i64), ApiError> {
    use ledger::pagination::Cursor;
    let limit = limit.unwrap_or(10);
    if !(1..=ledger::pagination::MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(ProblemCode::InvalidParameter, "`limit` must be from 1 to 100"));
    }
    let cursor = match (starting_after, ending_before) {
        (None, None) => Cursor::Newest,
        (Some(id), None) => Cursor::After(id),
        (None, Some(id)) => Cursor::Before(id),
        // a rule across two parameters, which no schema states
        (Some(_), Some(_)) => {
            return Err(ApiError::rule(
                ProblemCode::ConflictingCursors,
                "give at most one of `starting_after` and `ending_before`",
            ))
        }
    };
    Ok((cursor, limit))
}

/// A SKU: letters, digits and `._:-`, starting with a letter or digit, at most 100.
pub fn sku(value: &str) -> Result<&str, ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(value)
    } else {
        Err(ApiError::invalid_field(
            "`sku` must be 1 to 100 of letters, digits and `._:-`, starting with a letter or digit",
        ))
    }
}

pub fn quantity(value: i64) -> Result<i64, ApiError> {
    if (1..=ledger::inventory::MAX_QUANTITY).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid_field(format!("`quantity` must be from 1 to {}", ledger::inventory::MAX_QUANTITY)))
    }
}

/// Every path the API serves and the methods it allows there, read from the
/// document the routes make plus `UNDOCUMENTED`: what the fallback answers
/// from, and what tells `auth::middleware` which requests take a key.
pub struct RouteTable(Vec<Route>);

struct Route {
    def: ResourceDef,
    /// Its methods, as `Allow` lists them.
    allow: String,
    /// The methods that take an API key (the document's `security`, the
    /// default; the undocumented routes take none).
    keyed: Vec<&'static str>,
}

impl RouteTable {
    pub fn from_spec(spec: &utoipa::openapi::OpenApi) -> RouteTable {
        RouteTable(
            spec.paths
                .paths
                .iter()
                .map(|(path, item)| {
                    let ops =
                        [("GET", &item.get), ("POST", &item.post), ("PATCH", &item.patch), ("DELETE", &item.delete)];
                    let methods = ops.iter().filter(|(_, op)| op.is_some());
                    Route {
                        def: ResourceDef::new(path.as_str()),
                        allow: methods.clone().map(|(m, _)| *m).collect::<Vec<_>>().join(", "),
                        keyed: methods
                            .filter(|(_, op)| op.as_ref().is_some_and(|op| op.security.is_none()))
                            .map(|(m, _)| *m)
                            .collect(),
                    }
                })
                .chain(UNDOCUMENTED.iter().map(|(path, methods)| Route {
                    def: ResourceDef::new(*path),
                    allow: (*methods).to_owned(),
                    keyed: Vec::new(),
                }))
                .collect(),
        )
    }

    /// Whether a request to `path` with `method` reaches a route that takes
    /// an API key (not a 404 or 405, nor a route without one).
    pub fn needs_key(&self, path: &str, method: &str) -> bool {
        self.0.iter().any(|r| r.keyed.contains(&method) && r.def.is_match(path))
    }
}

/// What a request that matched no route gets: 405 `method_not_allowed` with
/// `Allow` when the path exists with other methods, 404 `not_found` otherwise.
pub async fn fallback(req: HttpRequest, routes: web::Data<RouteTable>) -> HttpResponse {
    match routes.0.iter().find(|r| r.def.is_match(req.path())) {
        Some(Route { allow, .. }) => {
            let e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ProblemCode::MethodNotAllowed,
                format!("{} is not allowed here; allowed: {allow}", req.method()),
            );
            let mut res = e.error_response();
            res.headers_mut().insert(header::ALLOW, header::HeaderValue::from_str(allow).expect("ASCII methods"));
            res
        }
        None => not_found().error_response(),
    }
}

pub fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ProblemCode::NotFound, "no such resource")
}
