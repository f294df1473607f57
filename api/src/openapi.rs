//! The OpenAPI document: paths come from the `#[utoipa::path]` handlers as
//! they are registered; this adds what is not tied to one handler.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{Problem, ProblemCode};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ledger",
        description = "Money and stock for a marketplace purchase pipeline: accounts, transfers, charges with refunds, inventory and reservations, with exactly-once effects.\n\nEvery effectful POST requires an `Idempotency-Key`. Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`. Amounts are decimal strings.",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem, ProblemCode)),
    tags(
        (name = "accounts", description = "Accounts and their balances and entries"),
        (name = "transfers", description = "Moving money between accounts, e.g. funding a buyer"),
        (name = "inventory", description = "Stock per SKU"),
        (name = "reservations", description = "Holding stock for an order before payment"),
        (name = "charges", description = "Charging a buyer for an order, and refunds"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `ledger-api create-tenant`; it names one tenant."))
                    .build(),
            ),
        );
    }
}

/// The whole document, as the server serves it at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::startup::app_parts().1
}
