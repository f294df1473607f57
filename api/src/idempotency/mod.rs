//! The idempotency engine: the `Idempotency-Key` extractor, and the one
//! protocol that gives an effect at most once per (tenant, key) and replays
//! its answer byte for byte (replay check, claim, effect, answer, store,
//! commit, each crash point once), run in three modes a handler picks with
//! one call:
//!
//! - alone ([`run`]): one transaction holds the key, the effect and the
//!   stored answer;
//! - batched ([`run_batched`]): a new wallet charge or reservation
//!   committed with its neighbours in one transaction of set-based
//!   statements ([`keyed`]: [`charge_batch`], [`reservation_batch`]), each
//!   with its own key, outcome and stored answer;
//! - two-phase ([`run_two_phase`]): an effect at the payment provider, its
//!   provider phases delegated to the provider-effects protocol
//!   (`service::effects`); a new card charge's first transaction
//!   ([`run_two_phase_batched`], [`card_begins`]) and its payment's record
//!   ([`card_records`]) each batched with its neighbours'.
//!
//! This module is the only place in `api` that claims keys and stores
//! answers (`scripts/check-key-protocol.sh`, run by `make lint`, keeps it so).
//!
//! One PostgreSQL transaction holds the key row, the effect and the stored
//! answer (`ledger::idempotency` owns the statements). A crash or a 5xx rolls
//! the key back with the effect, so no key is ever stuck "in progress", and a
//! 5xx is always safe to retry. A retry of a completed request is answered
//! from one read outside any transaction, or, for a kind of request that is
//! batched, by its batch (the statement that claims the batch's keys).
//!
//! What is stored is decided here, once: every [`Outcome`] (applied,
//! existing by natural key, declined) is the request's answer and is stored;
//! an error is not an answer and is not.

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use deadpool_postgres::Transaction;
use ledger::idempotency::{Answer, Claim, RecoveryPoint};
use ledger::phases::{Begun, Completion};
use ledger::{Outcome, TenantId};
use serde::Serialize;
use service::effects::{self, Effect};
use service::provider::Asked;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{claim_failed, provider_rejected, ApiError, ProblemCode, PROBLEM_JSON};
use crate::state::AppState;

pub mod batches;
pub mod card_begins;
pub mod card_records;
pub mod charge_batch;
mod crash_points;
pub mod keyed;
pub mod reservation_batch;

use batches::{Batcher, Reply};
use crash_points::{committed, keys_locked};
use keyed::{Effects, Job, Keyed};

pub const REPLAYED: &str = "Idempotent-Replayed";
/// Set when a write found its natural key (order attempt, refund reference,
/// order and SKU, account reference) already taken by an equal request and returned the
/// existing resource instead of creating a second one.
pub const NATURAL_KEY_REPLAYED: &str = "Natural-Key-Replayed";

/// The validated `Idempotency-Key` of an effectful request, with the method
/// and path that its fingerprint covers. Taking it as a handler argument is
/// what makes an operation idempotent; listing it in the operation's
/// `params(...)` is what documents the header, and what tells the spec
/// generator (`openapi`) to document the idempotency responses.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Required. 1 to 255 printable ASCII characters, unique per request you
    /// mean to make once; the convention is `{order_id}:{attempt}` (plus the
    /// operation, e.g. `order-1001:1:charge`). A retry with the same key and
    /// the same request returns the first response byte for byte with
    /// `Idempotent-Replayed: true`; the same key with another request is
    /// refused with 409 `idempotency_key_reused`; a retry while the first is
    /// still running waits for it, or gets 409 `request_in_progress` with
    /// `Retry-After`. Keys are kept 24 hours by default (configurable).
    /// Successes and declines (`insufficient_funds`, `card_declined`,
    /// `out_of_stock`, `refund_exceeds_charge`, `refund_failed`) are stored;
    /// validation errors and 5xx are not, and nothing was written, so they
    /// are safe to retry. A card charge's or card refund's 202 (`processing`,
    /// `pending`) is not stored either: retry it with the same key for the
    /// final answer.
    // No `example`: one documented value would be sent by every generated
    // client and "try it out" for every request, each reusing the key with
    // another body (409 `idempotency_key_reused`). The description gives the convention instead.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = r"^[ -~]{1,255}$")]
    idempotency_key: String,
    #[param(ignore)]
    method: String,
    #[param(ignore)]
    path: String,
}

impl IdempotencyKey {
    /// The header's name.
    pub const HEADER: &'static str = "Idempotency-Key";
    /// The longest key accepted (the pattern above says the same).
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.idempotency_key
    }

    /// The request's fingerprint: SHA-256 of method, path and the canonical
    /// body, so that a key reused for another request is caught.
    pub(crate) fn fingerprint(&self, canonical_body: &[u8]) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.method.as_bytes());
        h.update(b"\n");
        h.update(self.path.as_bytes());
        h.update(b"\n");
        h.update(canonical_body);
        h.finalize().to_vec()
    }

    fn parse(req: &HttpRequest) -> Result<IdempotencyKey, ApiError> {
        let value = req.headers().get(Self::HEADER).ok_or_else(|| {
            ApiError::bad_request(ProblemCode::MissingIdempotencyKey, "this request needs an `Idempotency-Key` header")
        })?;
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(ApiError::bad_request(
                ProblemCode::InvalidIdempotencyKey,
                "`Idempotency-Key` must be 1 to 255 printable ASCII characters",
            ));
        }
        Ok(IdempotencyKey {
            idempotency_key: String::from_utf8_lossy(bytes).into_owned(),
            method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
        })
    }
}

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(IdempotencyKey::parse(req))
    }
}

/// What an applied effect answers: 201 (with `Location` when the resource
/// has a path), or 200 for an effect on an existing resource.
pub enum Applied<T> {
    Created,
    CreatedAt(fn(&T) -> String),
    Ok,
}

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    Answer {
        status: status.as_u16(),
        content_type: "application/json".to_owned(),
        headers: Vec::new(),
        body: serde_json::to_vec(value).expect("a response serializes"),
    }
}

/// The answer an outcome gets, for the first request and every replay.
pub fn answer<T: Serialize>(outcome: Outcome<T>, applied: &Applied<T>) -> Answer {
    match outcome {
        Outcome::Applied(resource) => match applied {
            Applied::Created => json(StatusCode::CREATED, &resource),
            Applied::CreatedAt(path) => {
                let mut a = json(StatusCode::CREATED, &resource);
                a.headers.push((header::LOCATION.to_string(), path(&resource)));
                a
            }
            Applied::Ok => json(StatusCode::OK, &resource),
        },
        Outcome::Existing(resource) => {
            let mut a = json(StatusCode::OK, &resource);
            a.headers.push((NATURAL_KEY_REPLAYED.to_owned(), "true".to_owned()));
            a
        }
        Outcome::Declined(decline) => {
            let e = ApiError::from(&decline);
            // counted when it happens, not when replayed (see `metrics`)
            metrics::counter!("ledger_declines_total", "code" => e.code.name()).increment(1);
            Answer {
                status: e.status.as_u16(),
                content_type: PROBLEM_JSON.to_owned(),
                headers: Vec::new(),
                body: e.body(),
            }
        }
    }
}

fn response(answer: Answer, replayed: bool) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(answer.status)
        .map_err(|_| ledger::Error::unknown("stored status", answer.status.to_string()))?;
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CONTENT_TYPE, answer.content_type));
    for (name, value) in answer.headers {
        res.insert_header((name, value));
    }
    if replayed {
        res.insert_header((REPLAYED, "true"));
    }
    Ok(res.body(answer.body))
}

/// The stored answer, or 409 when the key belongs to another request. A
/// replay costs its tenant a fraction of a request's rate-limit token
/// (`limits`), given back here.
fn replay(
    state: &AppState,
    tenant: TenantId,
    stored: ledger::idempotency::Stored,
    fingerprint: &[u8],
) -> Result<HttpResponse, ApiError> {
    if stored.fingerprint != fingerprint {
        return Err(reused());
    }
    state.limits.replayed(tenant);
    response(stored.answer, true)
}

fn reused() -> ApiError {
    ApiError::rule(ProblemCode::IdempotencyKeyReused, "this Idempotency-Key was used for a different request")
}

/// Runs `effect` at most once per (tenant, key): the first request runs it
/// and stores its answer in the same transaction; every retry of the same
/// request gets that answer back byte for byte with `Idempotent-Replayed`.
/// An error from the effect rolls everything back, the key included, and a
/// retry runs afresh.
pub async fn run<T: Serialize>(
    state: &AppState,
    tenant: TenantId,
    key: &IdempotencyKey,
    canonical_body: &[u8],
    applied: Applied<T>,
    effect: impl AsyncFnOnce(&Transaction<'_>) -> Result<Outcome<T>, ledger::Error>,
) -> Result<HttpResponse, ApiError> {
    let begin = async |tx: &Transaction<'_>| Ok(Begun::Final(effect(tx).await?));
    // only an effect at the provider leaves a recovery point, and only under its own path
    match first(state, tenant, key, canonical_body, &applied, |t: T| t, |_| None, begin, |_: &T| None).await? {
        First::Answered(response) => Ok(response),
        First::InFlight(_) => Err(ledger::Error::unknown("an effect in flight", "from a request that has none").into()),
    }
}

/// A new request of a kind that batches (a wallet charge, a reservation),
/// batched: through `batcher`, which gives it the answer [`run`] would give
/// it alone and commits it with its neighbours, or alone through [`run`]
/// (`alone` its effect) when batching is off or the batch leaves it to run
/// alone. A retry of a completed request is replayed here, before any
/// batch. The batcher turns outcomes into answers with the function it was
/// started with; `alone`'s outcome is turned by `applied`, the same answer.
// Each argument is one thing the callers differ in.
#[allow(clippy::too_many_arguments)]
pub async fn run_batched<E: Effects, T: Serialize>(
    state: &AppState,
    batcher: Option<&Batcher<Keyed<E>>>,
    tenant: TenantId,
    key: &IdempotencyKey,
    canonical_body: &[u8],
    applied: Applied<T>,
    item: E::Item,
    alone: impl AsyncFnOnce(&Transaction<'_>, &E::Item) -> Result<Outcome<T>, ledger::Error>,
) -> Result<HttpResponse, ApiError> {
    let alone =
        async |item: E::Item| run(state, tenant, key, canonical_body, applied, async |tx| alone(tx, &item).await).await;
    let Some(batcher) = batcher else { return alone(item).await };
    // No read for a stored answer first: the batch reads its keys' in one
    // statement (`Reply::Replay`), so a new request makes one round trip
    // fewer.
    let fingerprint = key.fingerprint(canonical_body);
    match submit(batcher, tenant, key, &fingerprint, item.clone()).await {
        Reply::Answer(answer) => response(answer, false),
        Reply::Replay(stored) => replay(state, tenant, stored, &fingerprint),
        Reply::Failed(e) => Err(e),
        // (a batch of effects the ledger decides leaves none in flight)
        Reply::InFlight(_) => Err(ledger::Error::unknown("an effect in flight", "from a batch that makes none").into()),
        Reply::Alone => alone(item).await,
    }
}

/// Hands a request to its batch and waits for what the batch made of it.
async fn submit<E: Effects>(
    batcher: &Batcher<Keyed<E>>,
    tenant: TenantId,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    item: E::Item,
) -> Reply {
    batcher
        .submit(|reply| Job {
            tenant,
            key: key.as_str().to_owned(),
            fingerprint: fingerprint.to_owned(),
            item,
            request_id: ledger::request_id::current(),
            reply,
        })
        .await
}

/// What a request's first transaction under its key came to.
enum First {
    /// The answer, stored (or replayed).
    Answered(HttpResponse),
    /// An effect at the provider in flight, named by the key's recovery
    /// point: committed by this request, or by an earlier one it resumes.
    InFlight(Uuid),
}

/// The first transaction every request under an Idempotency-Key takes, in
/// one place: the replay of a completed request (one read, no transaction),
/// the claim of the key (a reuse with another request refused here, before
/// any effect), `begin`, and either the answer stored with the effect in the
/// same commit, or (an effect left in flight at the provider) its recovery
/// point, which `resume` turns back into the effect for a retry. Each crash
/// point of the key's first transaction is here.
// Each argument is one thing the two callers differ in; a struct of them
// would only rename the list.
#[allow(clippy::too_many_arguments)]
async fn first<R, T: Serialize>(
    state: &AppState,
    tenant: TenantId,
    key: &IdempotencyKey,
    canonical_body: &[u8],
    applied: &Applied<T>,
    to_wire: impl FnOnce(R) -> T,
    resume: impl FnOnce(RecoveryPoint) -> Option<Uuid>,
    begin: impl AsyncFnOnce(&Transaction<'_>) -> Result<Begun<R>, ledger::Error>,
    recovery_point: impl FnOnce(&R) -> Option<(RecoveryPoint, &'static str)>,
) -> Result<First, ApiError> {
    let fp = key.fingerprint(canonical_body);
    let retention_secs = state.config.retention.idempotency().as_secs_f64();
    let mut client = state.pool.get().await?;
    // A retry of a completed request: its stored answer never changes until
    // the key expires, so one read outside a transaction replays it (no
    // BEGIN, no row lock, no rollback). Anything else takes the claim below.
    if let Some(stored) = ledger::idempotency::completed(&client, tenant, key.as_str(), retention_secs).await? {
        return replay(state, tenant, stored, &fp).map(First::Answered);
    }
    let tx = client.transaction().await?;
    match ledger::idempotency::claim(&tx, tenant, key.as_str(), &fp, retention_secs).await {
        Ok(Claim::Owned) => {}
        Ok(Claim::Taken(stored)) => return replay(state, tenant, stored, &fp).map(First::Answered),
        // nothing to write here: the rollback releases the key row
        Ok(Claim::InFlight { fingerprint, point }) => {
            return match resume(point) {
                Some(id) if fingerprint == fp => Ok(First::InFlight(id)),
                _ => Err(reused()),
            }
        }
        Err(e) => return Err(claim_failed(e)),
    }
    keys_locked();
    // An error drops `tx`, which rolls the key back with whatever was written.
    match begin(&tx).await? {
        Begun::Final(outcome) => {
            let answer = answer(outcome.map(to_wire), applied);
            ledger::idempotency::store(&tx, tenant, key.as_str(), &answer).await?;
            tx.commit().await?;
            committed();
            response(answer, false).map(First::Answered)
        }
        Begun::InFlight(row) => {
            let (point, after_begin) = recovery_point(&row)
                .ok_or_else(|| ledger::Error::unknown("an effect in flight", "without a recovery point"))?;
            ledger::idempotency::mark_in_flight(&tx, tenant, key.as_str(), point).await?;
            tx.commit().await?;
            // in flight and the key names it; the provider was not asked
            ledger::crash::point(after_begin);
            Ok(First::InFlight(point.id()))
        }
    }
}

/// An effect at the payment provider (a card charge, a card refund), in
/// atomic phases with a recovery point (`service::effects`):
///
/// 1. one transaction claims the key, runs `begin` (the effect, created in
///    flight or found by its natural key, or decided by the ledger alone)
///    and, unless that already gave the final answer, records the effect on
///    the key as its recovery point, with no answer, and commits ([`first`]).
///    A key reused for another request is refused there, before anything
///    leaves;
/// 2. the provider is asked, with the effect's provider key, no transaction
///    open (`effects::ask`);
/// 3. a second transaction records the provider's answer (the ledger
///    transaction and the event) and stores the final answer for the key.
///
/// When the provider's outcome is unknown the effect stays in flight and
/// the client gets 202 with it, not stored: a retry with the same key
/// finds the recovery point and resumes from step 2, with the same provider
/// key, until the one final answer is stored and replayed.
pub async fn run_two_phase<E: Effect, T: Serialize>(
    state: &AppState,
    tenant: TenantId,
    key: &IdempotencyKey,
    canonical_body: &[u8],
    applied: Applied<T>,
    to_wire: fn(E::Row) -> T,
    begin: impl AsyncFnOnce(&Transaction<'_>) -> Result<Begun<E::Row>, ledger::Error>,
) -> Result<HttpResponse, ApiError> {
    let in_flight = |row: &E::Row| Some((E::point(E::id(row)), E::AFTER_BEGIN));
    let id = match first(state, tenant, key, canonical_body, &applied, to_wire, E::of_point, begin, in_flight).await? {
        First::Answered(response) => return Ok(response),
        First::InFlight(id) => id,
    };
    finish::<E, T>(state, tenant, key, applied, to_wire, id).await
}

/// [`run_two_phase`] for a new effect of a kind whose first transaction
/// batches (a card charge, [`card_begins`]): that transaction is its
/// batch's, which claims its key, creates the effect in flight and marks
/// the key with it, committed with its neighbours; or [`run_two_phase`]'s
/// own (`begin` with `item`) when batching is off or the batch leaves the
/// request to run alone. The provider is then asked and the answer
/// recorded as [`run_two_phase`] does, with no transaction open meanwhile.
// Each argument is one thing the callers differ in.
#[allow(clippy::too_many_arguments)]
pub async fn run_two_phase_batched<E: Effect, B: Effects<Row = E::Row>, T: Serialize>(
    state: &AppState,
    batcher: Option<&Batcher<Keyed<B>>>,
    tenant: TenantId,
    key: &IdempotencyKey,
    canonical_body: &[u8],
    applied: Applied<T>,
    to_wire: fn(E::Row) -> T,
    item: B::Item,
    begin: impl AsyncFnOnce(&Transaction<'_>, &B::Item) -> Result<Begun<E::Row>, ledger::Error>,
) -> Result<HttpResponse, ApiError> {
    let fingerprint = key.fingerprint(canonical_body);
    let reply = match batcher {
        Some(batcher) => submit(batcher, tenant, key, &fingerprint, item.clone()).await,
        None => Reply::Alone,
    };
    let id = match reply {
        Reply::InFlight(id) => id,
        Reply::Answer(answer) => return response(answer, false),
        Reply::Replay(stored) => return replay(state, tenant, stored, &fingerprint),
        Reply::Failed(e) => return Err(e),
        Reply::Alone => {
            let begin = async |tx: &Transaction<'_>| begin(tx, &item).await;
            return run_two_phase::<E, T>(state, tenant, key, canonical_body, applied, to_wire, begin).await;
        }
    };
    // in flight and the key names it; the provider was not asked
    ledger::crash::point(E::AFTER_BEGIN);
    finish::<E, T>(state, tenant, key, applied, to_wire, id).await
}

/// Phases 2 and 3 of an effect at the provider in flight (`id`): the
/// provider asked with no transaction open, its answer recorded and the
/// final answer stored for the key.
async fn finish<E: Effect, T: Serialize>(
    state: &AppState,
    tenant: TenantId,
    key: &IdempotencyKey,
    applied: Applied<T>,
    to_wire: fn(E::Row) -> T,
    id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let asked = effects::ask::<E>(&state.pool, &state.provider, tenant, id).await?;
    // the provider answered (or not); nothing of it is recorded yet
    ledger::crash::point(E::AFTER_PROVIDER);
    let provider_answer = match asked {
        Some(Asked::Answer(answer)) => Some(answer),
        Some(Asked::Unknown(_)) | None => None,
        // not an answer to store: undone where nothing depends on it, and a
        // retry once the configuration is fixed runs afresh
        Some(Asked::Rejected(why)) => {
            effects::abandon::<E>(&state.pool, tenant, id).await?;
            return Err(provider_rejected(why));
        }
    };
    // A payment, recorded with its neighbours' when batching is on (the
    // answer the route gives a charge, `routes::charges::batched_answer`),
    // or alone below when the batch leaves it to that.
    if let (Some(records), Some(payment)) = (&state.card_records, provider_answer.as_ref().and_then(E::paid)) {
        let reply = records
            .submit(|reply| card_records::Job {
                tenant,
                charge_id: id,
                key: key.as_str().to_owned(),
                payment,
                request_id: ledger::request_id::current(),
                reply,
            })
            .await;
        match reply {
            Reply::Answer(answer) => {
                // the answer is recorded and stored, the client has not heard back
                ledger::crash::point(E::AFTER_COMPLETE);
                return response(answer, false);
            }
            Reply::Failed(e) => return Err(e),
            // (a record batch claims no key, so replays none and leaves
            // none in flight)
            Reply::Alone | Reply::Replay(_) | Reply::InFlight(_) => {}
        }
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    match effects::record::<E>(&tx, &state.provider, tenant, id, provider_answer.as_ref()).await? {
        Completion::Final(outcome) => {
            let answer = answer(outcome.map(to_wire), &applied);
            let first = ledger::idempotency::store_final(&tx, tenant, key.as_str(), &answer).await?;
            tx.commit().await?;
            // the answer is recorded and stored, the client has not heard back
            ledger::crash::point(E::AFTER_COMPLETE);
            match first {
                // a concurrent retry stored the answer first: that one it is
                Some(stored) => response(stored.answer, true),
                None => response(answer, false),
            }
        }
        Completion::Processing(row) => {
            // what it recorded on the way stays: a payment now waiting for
            // the buyer's authentication, a flag for an operator
            tx.commit().await?;
            let mut pending = json(StatusCode::ACCEPTED, &to_wire(row));
            pending.headers.push((header::RETRY_AFTER.to_string(), "1".to_owned()));
            response(pending, false)
        }
    }
}
