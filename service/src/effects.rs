//! The one protocol every effect at the payment provider goes through: a
//! card charge, a card refund, a card authorization's capture and its void,
//! and whatever comes next. Each is an
//! [`Effect`]; what differs between them (their rows, their statements,
//! what the provider is asked) lives in its `ledger` module and in
//! `payments`, and this module owns what they share:
//!
//! 1. the first transaction (`begin`, with the Idempotency-Key's claim in
//!    the API) decides everything the ledger can decide and commits the
//!    effect in flight with its provider key and its recovery point;
//! 2. [`ask`]: the provider is asked with the derived key, no transaction
//!    open and no pooled connection held; past the key window (measured
//!    from the first send) the effect is looked up before it is ever sent
//!    again;
//! 3. `complete`, in a second transaction, records the answer under the
//!    charge's row lock, so the client's retries, the completer
//!    ([`complete_stale`]) and a webhook can race and only the first writes.
//!
//! An unknown outcome leaves the effect in flight: the same key, the
//! completer once the lease has passed, or a webhook finishes it.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use ledger::card_holds::{EndAnswer, Kind};
use ledger::cards::ProviderAnswer;
use ledger::charges::Charge;
use ledger::idempotency::RecoveryPoint;
use ledger::phases::Completion;
use ledger::refunds::{Refund, RefundAnswer, RefundStatus};
use ledger::TenantId;
use uuid::Uuid;

use crate::provider::{Asked, Provider};

/// An effect at the payment provider, as the protocol drives it.
pub trait Effect {
    /// The effect's row (with what asking the provider needs).
    type Row: Debug + Clone + Send + Sync;
    /// What the provider answers, as the ledger records it.
    type Answer: Debug + Clone + Send + Sync;
    /// For logs.
    const NAME: &'static str;
    /// Crash points: the first transaction committed the effect in flight;
    /// the provider answered (or not) and nothing of it is recorded; the
    /// answer is recorded and stored, the client has not heard back.
    const AFTER_BEGIN: &'static str;
    const AFTER_PROVIDER: &'static str;
    const AFTER_COMPLETE: &'static str;

    fn id(row: &Self::Row) -> Uuid;
    /// The Idempotency-Key's recovery point for an effect, and back.
    fn point(id: Uuid) -> RecoveryPoint;
    fn of_point(point: RecoveryPoint) -> Option<Uuid>;
    /// Whether the provider still has to be asked.
    fn in_flight(row: &Self::Row) -> bool;
    /// The effect with a fresh lease (and its first send time set).
    /// On a pooled connection, for its prepared statements.
    fn take(
        client: &deadpool_postgres::Client,
        tenant: TenantId,
        id: Uuid,
        lease: Duration,
    ) -> impl Future<Output = ledger::Result<Self::Row>> + Send;
    /// Effects in flight whose lease passed, leased again.
    fn claim_stale(
        client: &deadpool_postgres::tokio_postgres::Client,
        lease: Duration,
        limit: i64,
    ) -> impl Future<Output = ledger::Result<Vec<(TenantId, Self::Row)>>> + Send;
    fn ask_provider(
        payments: &Provider,
        tenant: TenantId,
        row: &Self::Row,
    ) -> impl Future<Output = Asked<Self::Answer>> + Send;
    fn complete(
        tx: &Transaction<'_>,
        tenant: TenantId,
        id: Uuid,
        answer: Option<&Self::Answer>,
    ) -> impl Future<Output = ledger::Result<Completion<Self::Row>>> + Send;
    /// Whether an answer names nothing at the provider (no payment, no
    /// refund): a conclusion that nothing was made, not the provider's word
    /// about an object ([`record`]).
    fn names_nothing(answer: &Self::Answer) -> bool;
    /// Whether the effect was first sent less than `window` ago.
    fn sent_within(
        tx: &Transaction<'_>,
        id: Uuid,
        window: Duration,
    ) -> impl Future<Output = ledger::Result<bool>> + Send;
    /// A payment a batch of records can take (`ledger::card_batch`): a card
    /// charge the provider paid. `None`: the answer is recorded alone.
    fn paid(_answer: &Self::Answer) -> Option<ledger::card_batch::Payment> {
        None
    }
    /// After the provider refused the request itself (a configuration
    /// error): undoes the first transaction when nothing in the ledger
    /// depends on it (`true`), or leaves the effect in flight for after the
    /// fix (`false`).
    fn abandon(tx: &Transaction<'_>, tenant: TenantId, id: Uuid) -> impl Future<Output = ledger::Result<bool>> + Send;
}

/// A card charge (`ledger::cards`).
pub struct CardCharge;

impl Effect for CardCharge {
    type Row = Charge;
    type Answer = ProviderAnswer;
    const NAME: &'static str = "card charge";
    const AFTER_BEGIN: &'static str = "card-after-charge-created";
    const AFTER_PROVIDER: &'static str = "card-after-provider";
    const AFTER_COMPLETE: &'static str = "card-after-complete";

    fn id(row: &Charge) -> Uuid {
        row.id
    }
    fn point(id: Uuid) -> RecoveryPoint {
        RecoveryPoint::Charge(id)
    }
    fn of_point(point: RecoveryPoint) -> Option<Uuid> {
        match point {
            RecoveryPoint::Charge(id) => Some(id),
            _ => None,
        }
    }
    fn in_flight(row: &Charge) -> bool {
        row.status.in_flight()
    }
    async fn take(
        client: &deadpool_postgres::Client,
        tenant: TenantId,
        id: Uuid,
        lease: Duration,
    ) -> ledger::Result<Charge> {
        ledger::cards::take(client, tenant, id, lease).await
    }
    async fn claim_stale(
        client: &deadpool_postgres::tokio_postgres::Client,
        lease: Duration,
        limit: i64,
    ) -> ledger::Result<Vec<(TenantId, Charge)>> {
        Ok(ledger::cards::claim_stale(client, lease, limit).await?.into_iter().map(|o| (o.tenant, o.charge)).collect())
    }
    async fn ask_provider(payments: &Provider, tenant: TenantId, row: &Charge) -> Asked<ProviderAnswer> {
        payments.ask(tenant, row).await
    }
    async fn complete(
        tx: &Transaction<'_>,
        tenant: TenantId,
        id: Uuid,
        answer: Option<&ProviderAnswer>,
    ) -> ledger::Result<Completion<Charge>> {
        ledger::cards::complete(tx, tenant, id, answer).await
    }
    fn names_nothing(answer: &ProviderAnswer) -> bool {
        matches!(answer, ProviderAnswer::Declined { payment_id: None, .. })
    }
    fn paid(answer: &ProviderAnswer) -> Option<ledger::card_batch::Payment> {
        match answer {
            ProviderAnswer::Succeeded { payment_id, amount_minor, currency } => Some(ledger::card_batch::Payment {
                payment_id: payment_id.clone(),
                amount_minor: *amount_minor,
                currency: currency.clone(),
            }),
            _ => None,
        }
    }
    async fn sent_within(tx: &Transaction<'_>, id: Uuid, window: Duration) -> ledger::Result<bool> {
        ledger::cards::sent_within(&**tx, id, window).await
    }
    /// Nothing moved in the ledger for a processing charge: it is undone, so
    /// the order is not held by a charge that can never be made.
    async fn abandon(tx: &Transaction<'_>, tenant: TenantId, id: Uuid) -> ledger::Result<bool> {
        ledger::cards::abandon(tx, tenant, id).await
    }
}

/// A card refund (`ledger::refunds`).
pub struct CardRefund;

impl Effect for CardRefund {
    type Row = Refund;
    type Answer = RefundAnswer;
    const NAME: &'static str = "card refund";
    const AFTER_BEGIN: &'static str = "refund-after-created";
    const AFTER_PROVIDER: &'static str = "refund-after-provider";
    const AFTER_COMPLETE: &'static str = "refund-after-complete";

    fn id(row: &Refund) -> Uuid {
        row.id
    }
    fn point(id: Uuid) -> RecoveryPoint {
        RecoveryPoint::Refund(id)
    }
    fn of_point(point: RecoveryPoint) -> Option<Uuid> {
        match point {
            RecoveryPoint::Refund(id) => Some(id),
            _ => None,
        }
    }
    fn in_flight(row: &Refund) -> bool {
        row.status == RefundStatus::Pending
    }
    async fn take(
        client: &deadpool_postgres::Client,
        tenant: TenantId,
        id: Uuid,
        lease: Duration,
    ) -> ledger::Result<Refund> {
        ledger::refunds::take(client, tenant, id, lease).await
    }
    async fn claim_stale(
        client: &deadpool_postgres::tokio_postgres::Client,
        lease: Duration,
        limit: i64,
    ) -> ledger::Result<Vec<(TenantId, Refund)>> {
        Ok(ledger::refunds::claim_stale(client, lease, limit).await?.into_iter().map(|r| (r.tenant, r)).collect())
    }
    async fn ask_provider(payments: &Provider, tenant: TenantId, row: &Refund) -> Asked<RefundAnswer> {
        payments.ask_refund(tenant, row).await
    }
    async fn complete(
        tx: &Transaction<'_>,
        tenant: TenantId,
        id: Uuid,
        answer: Option<&RefundAnswer>,
    ) -> ledger::Result<Completion<Refund>> {
        ledger::refunds::complete(tx, tenant, id, answer).await
    }
    fn names_nothing(answer: &RefundAnswer) -> bool {
        matches!(answer, RefundAnswer::Failed { refund_id: None, .. })
    }
    async fn sent_within(tx: &Transaction<'_>, id: Uuid, window: Duration) -> ledger::Result<bool> {
        ledger::refunds::sent_within(&**tx, id, window).await
    }
    /// A refund asked for is owed: it stays pending, its money held back,
    /// and is sent again (same key) once the configuration is fixed.
    async fn abandon(_: &Transaction<'_>, _: TenantId, _: Uuid) -> ledger::Result<bool> {
        Ok(false)
    }
}

/// The end of a card authorization (`ledger::card_holds`): its capture
/// ([`CardCapture`]) or its void, asked for or expired ([`CardVoid`]). One
/// effect with two kinds, each with its own key, recovery point and crash
/// points.
pub struct CardEnd<const CAPTURE: bool>;
pub type CardCapture = CardEnd<true>;
pub type CardVoid = CardEnd<false>;

impl<const CAPTURE: bool> CardEnd<CAPTURE> {
    const KIND: Kind = if CAPTURE { Kind::Capture } else { Kind::Void };
}

impl<const CAPTURE: bool> Effect for CardEnd<CAPTURE> {
    type Row = Charge;
    type Answer = EndAnswer;
    const NAME: &'static str = if CAPTURE { "card capture" } else { "card void" };
    const AFTER_BEGIN: &'static str = if CAPTURE { "capture-after-begin" } else { "void-after-begin" };
    const AFTER_PROVIDER: &'static str = if CAPTURE { "capture-after-provider" } else { "void-after-provider" };
    const AFTER_COMPLETE: &'static str = if CAPTURE { "capture-after-complete" } else { "void-after-complete" };

    fn id(row: &Charge) -> Uuid {
        row.id
    }
    fn point(id: Uuid) -> RecoveryPoint {
        if CAPTURE {
            RecoveryPoint::Capture(id)
        } else {
            RecoveryPoint::Void(id)
        }
    }
    fn of_point(point: RecoveryPoint) -> Option<Uuid> {
        (Self::point(point.id()) == point).then_some(point.id())
    }
    fn in_flight(row: &Charge) -> bool {
        row.status == Self::KIND.in_flight()
    }
    async fn take(
        client: &deadpool_postgres::Client,
        tenant: TenantId,
        id: Uuid,
        lease: Duration,
    ) -> ledger::Result<Charge> {
        ledger::card_holds::take(client, tenant, id, Self::KIND, lease).await
    }
    async fn claim_stale(
        client: &deadpool_postgres::tokio_postgres::Client,
        lease: Duration,
        limit: i64,
    ) -> ledger::Result<Vec<(TenantId, Charge)>> {
        ledger::card_holds::claim_stale(client, Self::KIND, lease, limit).await
    }
    async fn ask_provider(payments: &Provider, tenant: TenantId, row: &Charge) -> Asked<EndAnswer> {
        if CAPTURE {
            payments.capture(tenant, row).await
        } else {
            payments.void(tenant, row).await
        }
    }
    async fn complete(
        tx: &Transaction<'_>,
        tenant: TenantId,
        id: Uuid,
        answer: Option<&EndAnswer>,
    ) -> ledger::Result<Completion<Charge>> {
        ledger::card_holds::complete(tx, tenant, id, Self::KIND, answer).await
    }
    /// Every answer names the payment as it is.
    fn names_nothing(_: &EndAnswer) -> bool {
        false
    }
    async fn sent_within(tx: &Transaction<'_>, id: Uuid, window: Duration) -> ledger::Result<bool> {
        ledger::card_holds::sent_within(&**tx, id, window).await
    }
    /// The end stays in flight, sent again (same key) once the configuration
    /// is fixed: nothing else may end the authorization meanwhile.
    async fn abandon(_: &Transaction<'_>, _: TenantId, _: Uuid) -> ledger::Result<bool> {
        Ok(false)
    }
}

/// Phase 2 for an effect in flight: takes it (a fresh lease) and asks the
/// provider, unless it is already final (`None`). No transaction is open and
/// no pooled connection is held while the provider answers.
pub async fn ask<E: Effect>(
    pool: &Pool,
    payments: &Provider,
    tenant: TenantId,
    id: Uuid,
) -> ledger::Result<Option<Asked<E::Answer>>> {
    let row = {
        let client = pool.get().await?;
        E::take(&client, tenant, id, payments.lease()).await?
    };
    if !E::in_flight(&row) {
        return Ok(None);
    }
    let asked = E::ask_provider(payments, tenant, &row).await;
    match &asked {
        Asked::Answer(_) => {}
        Asked::Unknown(why) => tracing::info!(effect = E::NAME, %id, %why, "provider outcome unknown; left in flight"),
        Asked::Rejected(why) => rejected::<E>(id, why),
    }
    Ok(Some(asked))
}

/// Phase 3's record of what the provider was asked, in the caller's second
/// transaction: `Effect::complete`, except that an answer naming nothing at
/// the provider (a stored 5xx and a look-up that found nothing; a card
/// refused outright) is recorded only while the provider still keeps the
/// effect's key. Until then any other send of it is replayed by the key and
/// makes nothing, so "nothing was made" stays true; past it another process
/// may have sent it as a new request since this one concluded (a process
/// stalled between its conclusion and this record), and recording the
/// conclusion would fail an effect the provider made. The effect then stays
/// in flight, for a look-up to decide. Checked by the database's clock,
/// right before the write.
pub async fn record<E: Effect>(
    tx: &Transaction<'_>,
    payments: &Provider,
    tenant: TenantId,
    id: Uuid,
    answer: Option<&E::Answer>,
) -> ledger::Result<Completion<E::Row>> {
    let answer = match answer {
        Some(nothing) if E::names_nothing(nothing) && !E::sent_within(tx, id, payments.key_window()).await? => {
            tracing::warn!(effect = E::NAME, %id, "a conclusion that nothing was made came past the key window: left in flight");
            None
        }
        answer => answer,
    };
    E::complete(tx, tenant, id, answer).await
}

/// Counts and logs a request the provider refused as misconfigured
/// (`ledger_provider_rejections_total`, alerted on by `LedgerProviderRejects`).
fn rejected<E: Effect>(id: Uuid, why: &str) {
    metrics::counter!("ledger_provider_rejections_total", "effect" => E::NAME).increment(1);
    tracing::error!(effect = E::NAME, %id, %why, "the payment provider refused the request: fix the configuration");
}

/// Undoes an effect the provider refused as misconfigured, when it can be
/// (`Effect::abandon`), in its own transaction.
pub async fn abandon<E: Effect>(pool: &Pool, tenant: TenantId, id: Uuid) -> ledger::Result<bool> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let undone = E::abandon(&tx, tenant, id).await?;
    tx.commit().await?;
    Ok(undone)
}

/// What one stale effect came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Its final status is recorded (now, or by someone else first).
    Final,
    /// Still no answer: left for the next lease.
    Unknown,
}

/// Drives one effect in flight once, outside any request: asks the provider
/// ([`ask`], which takes it again first) and records the answer in its own
/// transaction ([`record`]). `after_provider` is the caller's crash point
/// between the two. What the completer does for each effect it claims, and
/// the expirer for the void it began.
pub async fn drive<E: Effect>(
    pool: &Pool,
    payments: &Provider,
    tenant: TenantId,
    id: Uuid,
    after_provider: &str,
) -> ledger::Result<Done> {
    let asked = ask::<E>(pool, payments, tenant, id).await?;
    ledger::crash::point(after_provider);
    let answer = match asked {
        Some(Asked::Answer(answer)) => answer,
        // final meanwhile: recorded by someone else
        None => return Ok(Done::Final),
        // logged by `ask`
        Some(Asked::Unknown(_)) => return Ok(Done::Unknown),
        Some(Asked::Rejected(_)) => {
            // counted and logged by `ask`
            abandon::<E>(pool, tenant, id).await?;
            return Ok(Done::Unknown);
        }
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let completion = record::<E>(&tx, payments, tenant, id, Some(&answer)).await?;
    tx.commit().await?;
    Ok(match completion {
        Completion::Final(_) => {
            tracing::info!(effect = E::NAME, %id, "completed");
            Done::Final
        }
        Completion::Processing(_) => Done::Unknown,
    })
}

/// The crash (or freeze) point between a completer scan's claim and its
/// first send.
pub const COMPLETER_AFTER_CLAIM: &str = "completer-after-claim";

/// One completer scan for one kind of effect: claims those whose lease
/// passed (at most `limit`) and drives each once. `after_provider` is the
/// caller's crash point between the provider's answer and its record.
///
/// Each claimed effect is taken again right before it is sent ([`ask`]),
/// not sent from the claim: the scan drives its effects one after another,
/// each provider call up to its timeout, so the last of a scan may be sent
/// long after its claim, past its lease, when a client's retry may have
/// recorded its outcome. Sent from a stale read, a charge recorded failed
/// (a stored 5xx and a look-up that found nothing) could be sent again once
/// the provider had forgotten its key, and paid.
pub async fn complete_stale<E: Effect>(
    pool: &Pool,
    payments: &Provider,
    limit: i64,
    after_provider: &str,
) -> ledger::Result<Vec<Done>> {
    let stale = {
        let client = pool.get().await?;
        E::claim_stale(&client, payments.lease(), limit).await?
    };
    if !stale.is_empty() {
        // claimed and leased, nothing sent
        ledger::crash::point(COMPLETER_AFTER_CLAIM);
    }
    let mut done = Vec::with_capacity(stale.len());
    for (tenant, row) in stale {
        done.push(drive::<E>(pool, payments, tenant, E::id(&row), after_provider).await?);
    }
    Ok(done)
}
