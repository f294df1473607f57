//! The OpenAPI document: paths come from the `#[utoipa::path]` handlers as
//! they are registered; this adds what is not tied to one handler.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use actix_web::App;
use utoipa_actix_web::AppExt;

use crate::error::{decline_status, Problem, ProblemCode};
use crate::idempotency::{IdempotencyKey, NATURAL_KEY_REPLAYED, REPLAYED};
use crate::{request_id, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ledger",
        description = "Money and stock for a marketplace purchase pipeline: accounts, transfers, charges with refunds, inventory and reservations, with exactly-once effects.\n\nEvery effectful POST requires an `Idempotency-Key`. Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`. Amounts are decimal strings.",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem, ProblemCode, crate::routes::statements::StatementFormat)),
    tags(
        (name = "accounts", description = "Accounts and their balances and entries"),
        (name = "transfers", description = "Moving money between accounts, e.g. funding a buyer"),
        (name = "inventory", description = "Stock per SKU"),
        (name = "reservations", description = "Holding stock for an order before payment"),
        (name = "charges", description = "Charging a buyer for an order (from a wallet or by card), and refunds"),
        (name = "events", description = "What happened, as the relay publishes it to RabbitMQ: a feed to catch up from"),
        (name = "webhooks", description = "Endpoints the events are pushed to, signed (Standard Webhooks)"),
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
                    .description(Some(
                        "An API key from `ledger-api create-tenant` or `create-key`; it names one tenant.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The responses every operation of a kind can give, documented once here
/// rather than on each handler: 401 and 429 on every authenticated operation, the
/// body and Idempotency-Key refusals and the replay header on every
/// effectful POST, 409 `contention` on writes, 500 and 503 everywhere the
/// database is used. Handler annotations list the operation's own codes;
/// these are appended to a response of the same status when there is one.
struct CommonResponses;

const PROBLEM_JSON: &str = crate::error::PROBLEM_JSON;

fn header_ref(name: &str) -> RefOr<utoipa::openapi::Header> {
    RefOr::Ref(Ref::new(format!("#/components/headers/{name}")))
}

/// Adds `codes` to the problem response `status` of `op`, creating it if needed.
fn problem(op: &mut Operation, status: &str, codes: &str, retry_after: bool) {
    let responses = &mut op.responses.responses;
    let entry = responses.entry(status.to_owned()).or_insert_with(|| {
        RefOr::T(
            Response::builder()
                .description("")
                .content(PROBLEM_JSON, Content::new(Some(Ref::from_schema_name("Problem"))))
                .build(),
        )
    });
    if let RefOr::T(resp) = entry {
        if resp.description.is_empty() {
            resp.description = codes.to_owned();
        } else if !resp.description.contains(codes) {
            resp.description = format!("{}\n\nAlso {codes}", resp.description);
        }
        if !resp.content.contains_key(PROBLEM_JSON) {
            resp.content.insert(PROBLEM_JSON.to_owned(), Content::new(Some(Ref::from_schema_name("Problem"))).into());
        }
        if retry_after {
            resp.headers.insert("Retry-After".to_owned(), header_ref("Retry-After"));
        }
        if status == "401" {
            resp.headers.insert("WWW-Authenticate".to_owned(), header_ref("WWW-Authenticate"));
        }
    }
}

fn string_header(description: &str, example: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .example(Some(example.into()))
        .build()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.headers.insert(
            REPLAYED.to_owned(),
            string_header(
                "`true` when this response is the stored answer to an earlier request with the same \
                 `Idempotency-Key` and the same request: the same status, headers and body, byte for byte, \
                 and no second effect. Absent on a first answer.",
                "true",
            )
            .into(),
        );
        components.headers.insert(
            NATURAL_KEY_REPLAYED.to_owned(),
            string_header(
                "`true` when the resource already existed under its natural key (the order attempt of a \
                 charge, the reference of a refund, the order and SKU of a reservation, the reference of an \
                 account) with the same terms, and is returned as it is: no second effect.",
                "true",
            )
            .into(),
        );
        components.headers.insert(
            "Location".to_owned(),
            string_header("The path of the created resource.", "/v1/charges/0190f3a8-6d1c-7c8e-9b1a-2f3e4d5c6b7a")
                .into(),
        );
        components.headers.insert(
            "Retry-After".to_owned(),
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0))))
                .description(Some(
                    "Seconds to wait before retrying (an effectful request with the same `Idempotency-Key`).",
                ))
                .example(Some(1.into()))
                .build()
                .into(),
        );
        components.headers.insert(
            request_id::HEADER.to_owned(),
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(request_id::PATTERN))))
                .description(Some(
                    "This request's id: the client's own `X-Request-Id` when it was 1 to 64 of letters, digits \
                     and `._-`, else a new UUID. The events the request wrote carry it to the workers \
                     (AMQP `correlation_id` and W3C `traceparent`), whose log lines about them show it.",
                ))
                .example(Some("0190f3a8-6d1c-7c8e-9b1a-2f3e4d5c6b7a".into()))
                .build()
                .into(),
        );
        components.headers.insert(
            "WWW-Authenticate".to_owned(),
            string_header("The authentication scheme: `Bearer`.", "Bearer").into(),
        );

        // Links from what a write returns to the operations that use it: they
        // tell clients (and schemathesis' stateful phase) how calls chain.
        let links: &[(&str, &str, &str, &str, &str)] = &[
            // (operation, status, link name, target operation, parameter ← body field)
            ("create_account", "201", "GetAccount", "get_account", "id"),
            ("create_account", "201", "ListAccountEntries", "list_account_entries", "id"),
            ("create_account", "200", "GetAccount", "get_account", "id"),
            ("create_transfer", "201", "GetTransfer", "get_transfer", "id"),
            ("create_charge", "201", "GetCharge", "get_charge", "id"),
            ("create_charge", "201", "RefundCharge", "create_refund", "id"),
            ("create_charge", "201", "CaptureCharge", "capture_charge", "id"),
            ("create_charge", "201", "VoidCharge", "void_charge", "id"),
            ("create_charge", "200", "GetCharge", "get_charge", "id"),
            ("restock_sku", "201", "GetSku", "get_sku", "sku"),
            ("create_reservation", "201", "GetReservation", "get_reservation", "id"),
            ("create_reservation", "201", "ReleaseReservation", "release_reservation", "id"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in [item.get.as_mut(), item.post.as_mut()].into_iter().flatten() {
                for (from, status, name, to, field) in links {
                    if op.operation_id.as_deref() != Some(*from) {
                        continue;
                    }
                    if let Some(RefOr::T(resp)) = op.responses.responses.get_mut(*status) {
                        let param = if *field == "sku" { "sku" } else { "id" };
                        let link = Link::builder()
                            .operation_id(*to)
                            .parameter(param, format!("$response.body#/{field}"))
                            .build();
                        resp.links.insert((*name).to_owned(), link.into());
                    }
                }
            }
        }

        // Declines are stored and replayed like successes (`idempotency`).
        let stored_declines: Vec<String> =
            ledger::DeclineKind::ALL.iter().map(|k| decline_status(*k).0.as_str().to_owned()).collect();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let uses_db = !matches!(path.as_str(), "/healthz");
            let ops = [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (false, item.patch.as_mut()),
                (false, item.delete.as_mut()),
            ];
            for (is_post, op) in ops {
                let Some(op) = op else { continue };
                let authenticated = op.security.is_none();
                // An operation is idempotent when it takes the IdempotencyKey
                // extractor, whose parameter its annotation lists.
                let idempotent = is_post
                    && op
                        .parameters
                        .iter()
                        .flatten()
                        .any(|p| matches!(p, RefOr::T(p) if p.name == IdempotencyKey::HEADER));
                op.parameters.get_or_insert_with(Vec::new).push(RefOr::T(request_id_parameter()));
                for resp in op.responses.responses.values_mut() {
                    if let RefOr::T(resp) = resp {
                        resp.headers.insert(request_id::HEADER.to_owned(), header_ref(request_id::HEADER));
                        for (name, header) in resp.headers.iter_mut() {
                            if components.headers.contains_key(name) {
                                *header = header_ref(name);
                            }
                        }
                    }
                }
                let param =
                    |name: &str| op.parameters.iter().flatten().any(|p| matches!(p, RefOr::T(p) if p.name == name));
                if param("starting_after") && param("ending_before") {
                    // `routes::page`, for every list
                    problem(
                        op,
                        "409",
                        "`conflicting_cursors`: both `starting_after` and `ending_before` were given",
                        false,
                    );
                }
                if idempotent {
                    problem(op, "400", "`missing_idempotency_key`, `invalid_idempotency_key`: fix the header", false);
                    problem(
                        op,
                        "409",
                        "`idempotency_key_reused`: this Idempotency-Key was used for another request; nothing was written",
                        false,
                    );
                    problem(
                        op,
                        "409",
                        "`request_in_progress`: a request with this Idempotency-Key is still running; \
                         `contention`: concurrent requests hold the same rows. Retry after `Retry-After` \
                         seconds with the same key",
                        true,
                    );
                    for (status, resp) in op.responses.responses.iter_mut() {
                        let stored = status.starts_with('2') || stored_declines.contains(status);
                        if let (true, RefOr::T(resp)) = (stored, resp) {
                            resp.headers.insert(REPLAYED.to_owned(), header_ref(REPLAYED));
                        }
                    }
                }
                if op.request_body.is_some() {
                    problem(
                        op,
                        "400",
                        "`malformed_json`: the body is not JSON; `invalid_body`: unknown or missing fields, wrong types",
                        false,
                    );
                    problem(op, "413", "`payload_too_large`: the body is larger than the limit", false);
                    problem(op, "415", "`unsupported_media_type`: send `Content-Type: application/json`", false);
                }
                if authenticated {
                    problem(op, "401", "`unauthorized`: missing or unknown API key", false);
                    problem(
                        op,
                        "429",
                        "`rate_limited`: this tenant is over its rate limit; nothing was read or written (an \
                         Idempotency-Key is not used up). `too_many_failed_authentications`: too many requests \
                         from this client address had a key that is not valid, and its keys are not looked up \
                         for a while. Retry after `Retry-After` seconds",
                        true,
                    );
                }
                if uses_db {
                    problem(
                        op,
                        "503",
                        "`service_unavailable`: the database is unreachable; nothing was written, retry",
                        true,
                    );
                    problem(op, "500", "`internal`: an unexpected failure (logged); nothing was written", false);
                }
            }
        }
    }
}

/// The optional `X-Request-Id` every operation takes (`request_id`).
fn request_id_parameter() -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    ParameterBuilder::new()
        .name(request_id::HEADER)
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(
            "An id of the caller's for this request, echoed in the response and carried to the workers' \
             logs. Kept when it is 1 to 64 of letters, digits and `._-`; otherwise (or when absent) the \
             server makes one up. Never a reason to refuse a request.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .example(Some("checkout-7f3a".into()))
        .build()
}

/// The app with every route, and the document the routes make (with what
/// is added once the handlers' paths are registered: modifiers of `ApiDoc`
/// run before that).
pub fn app_with_spec() -> (
    App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        >,
    >,
    utoipa::openapi::OpenApi,
) {
    let (app, mut spec) =
        App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes::configure).split_for_parts();
    CommonResponses.modify(&mut spec);
    (app, spec)
}

/// The whole document, as the server serves it at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    app_with_spec().1
}
