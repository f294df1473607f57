//! An account's history: its balance at an instant, and its statement over
//! a period, as JSON or as CSV streamed a page at a time.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use ledger::statements::{self as history, BalanceAt, EntryCursor, Totals};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::routes::accounts::EntryKind;
use crate::state::AppState;
use crate::wire::Currency;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// The instant (RFC 3339): the balance of the entries stamped at or
    /// before it. At least a second in the past, and answered only once no
    /// transaction that may have begun before it is still open; every read
    /// of the same instant then gives the same answer. Absent: now, as
    /// `GET /v1/accounts/{id}` reads it (not repeatable).
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Balance {
    pub account_id: Uuid,
    /// The instant of the balance: the one asked, or the database's clock
    /// at the read when none was.
    pub as_of: DateTime<Utc>,
    #[schema(value_type = Currency)]
    pub currency: ledger::Currency,
    /// The sum of the account's entries up to `as_of`: what it could spend.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "100.00")]
    pub available: Decimal,
    /// What its open authorizations held at `as_of`.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "25.00")]
    pub pending: Decimal,
    /// `available + pending`.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "125.00")]
    pub posted: Decimal,
}

impl From<BalanceAt> for Balance {
    fn from(b: BalanceAt) -> Self {
        Balance {
            account_id: b.account_id,
            as_of: b.as_of,
            currency: b.currency,
            available: b.available,
            pending: b.pending,
            posted: b.posted(),
        }
    }
}

/// Get an account's balance at an instant.
#[utoipa::path(
    operation_id = "get_account_balance",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id"), BalanceQuery),
    responses(
        (status = 200, description = "The balance at `as_of` (zeros before the account existed)", body = Balance),
        (status = 400, description = "`invalid_parameter`: `as_of` is not an RFC 3339 instant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account_not_found`: no such account for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`as_of_too_recent`: `as_of` is in the future or less than a second ago, or a transaction that may have begun before it is still open after 5 s; ask again later", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts/{id}/balance")]
pub async fn balance(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<BalanceQuery>,
) -> Result<HttpResponse, ApiError> {
    // a pooled client outside any transaction: each statement sees what
    // committed before it, which settling relies on
    let client = state.pool.get().await?;
    let balance = match query.as_of {
        Some(as_of) => {
            history::settle(&**client, as_of).await?;
            history::balance_at(&**client, caller.0, *id, as_of).await?
        }
        None => history::balance_now(&**client, caller.0, *id).await?,
    };
    Ok(HttpResponse::Ok().json(Balance::from(balance)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatementFormat {
    Json,
    Csv,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// The period's start (RFC 3339): the opening balance is the balance at
    /// this instant, and the period's entries are those stamped after it.
    pub from: DateTime<Utc>,
    /// The period's end (RFC 3339), after `from`: the closing balance is the
    /// balance at this instant, under the rules of `as_of` (at least a
    /// second in the past, settled).
    pub to: DateTime<Utc>,
    /// `json` (the default) or `csv`; without it, `Accept: text/csv` asks
    /// for CSV.
    #[param(value_type = Option<StatementFormat>)]
    pub format: Option<StatementFormat>,
}

/// The parts of a balance at one end of a statement.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatementBalance {
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "100.00")]
    pub available: Decimal,
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "25.00")]
    pub pending: Decimal,
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "125.00")]
    pub posted: Decimal,
}

impl From<&BalanceAt> for StatementBalance {
    fn from(b: &BalanceAt) -> Self {
        StatementBalance { available: b.available, pending: b.pending, posted: b.posted() }
    }
}

/// What the entries of one kind did in the period.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KindTotal {
    pub kind: EntryKind,
    /// How many entries of this kind.
    pub count: i64,
    /// The sum of their credits.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "40.00")]
    pub credits: Decimal,
    /// The sum of their debits (zero or negative).
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "-15.00")]
    pub debits: Decimal,
    /// `credits + debits`.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "25.00")]
    pub net: Decimal,
}

/// One entry of the period, with the available balance after it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatementEntry {
    /// The entry's id.
    #[schema(example = "1042")]
    pub id: String,
    pub transaction_id: Uuid,
    pub kind: EntryKind,
    /// Signed: positive credits the account, negative debits it.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "-12.50")]
    pub amount: Decimal,
    /// The available balance after this entry.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "87.50")]
    pub balance: Decimal,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Statement {
    pub account_id: Uuid,
    #[schema(value_type = Currency)]
    pub currency: ledger::Currency,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The balance at `from`.
    pub opening: StatementBalance,
    /// The balance at `to`: `opening.available` plus the sum of `entries`.
    pub closing: StatementBalance,
    /// Every kind, zeros included: charge, refund, transfer, authorization,
    /// release, refund_reversal.
    pub totals: Vec<KindTotal>,
    /// The entries stamped after `from` and at or before `to`, oldest first
    /// (by time, then id); at most 1000.
    pub entries: Vec<StatementEntry>,
}

fn kind(k: ledger::accounts::EntryKind) -> EntryKind {
    use ledger::accounts::EntryKind as K;
    match k {
        K::Transfer => EntryKind::Transfer,
        K::Charge => EntryKind::Charge,
        K::Refund => EntryKind::Refund,
        K::RefundReversal => EntryKind::RefundReversal,
        K::Authorization => EntryKind::Authorization,
        K::Release => EntryKind::Release,
    }
}

fn entry(e: &history::StatementEntry) -> StatementEntry {
    StatementEntry {
        id: e.id.to_string(),
        transaction_id: e.transaction_id,
        kind: kind(e.kind),
        amount: e.amount,
        balance: e.balance,
        created_at: e.created_at,
    }
}

fn total(t: &history::KindTotal) -> KindTotal {
    KindTotal { kind: kind(t.kind), count: t.count, credits: t.credits, debits: t.debits, net: t.net() }
}

/// The CSV's columns. Each line says what it is: `opening` (from, the
/// balances), `entry` (one per entry, oldest first, with the available
/// balance after it), `total` (one per kind), `closing` (to, the balances),
/// always last: a body that does not end with it was cut short.
pub const CSV_HEADER: &str =
    "line,created_at,entry_id,transaction_id,kind,amount,available,pending,posted,count,credits,debits\n";

/// Entries per page of a streamed statement (one query, one pooled
/// connection held only for it).
const CSV_PAGE: i64 = 500;

/// A timestamp as the JSON form writes it.
fn instant(t: &DateTime<Utc>) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn kind_name(k: ledger::accounts::EntryKind) -> String {
    serde_json::to_value(kind(k)).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn balance_line(line: &str, b: &BalanceAt) -> String {
    format!("{line},{},,,,,{},{},{},,,\n", instant(&b.as_of), b.available, b.pending, b.posted())
}

fn entry_line(e: &history::StatementEntry) -> String {
    format!(
        "entry,{},{},{},{},{},{},,,,,\n",
        instant(&e.created_at),
        e.id,
        e.transaction_id,
        kind_name(e.kind),
        e.amount,
        e.balance
    )
}

fn total_line(t: &history::KindTotal) -> String {
    format!("total,,,,{},{},,,,{},{},{}\n", kind_name(t.kind), t.net(), t.count, t.credits, t.debits)
}

/// Get an account's statement for a period.
#[utoipa::path(
    operation_id = "get_account_statement",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id"), StatementQuery),
    responses(
        (status = 200, description = "The statement. As JSON (the default) with at most 1000 entries; as CSV (`format=csv`, or `Accept: text/csv` without `format`) with any number, streamed a page at a time: a header line, then `opening`, one `entry` line per entry oldest first, one `total` line per kind, and `closing` last (a body without it was cut short)", content(
            (Statement = "application/json"),
            (String = "text/csv", example = "line,created_at,entry_id,transaction_id,kind,amount,available,pending,posted,count,credits,debits\nopening,2026-12-01T00:00:00Z,,,,,100.00,0.00,100.00,,,\nentry,2026-12-01T10:00:00.123456Z,1042,0190f3a8-6d1c-7c8e-9b1a-2f3e4d5c6b7a,charge,-12.50,87.50,,,,,\ntotal,,,,charge,-12.50,,,,1,0.00,-12.50\nclosing,2026-12-02T00:00:00Z,,,,,87.50,0.00,87.50,,,\n"),
        )),
        (status = 400, description = "`invalid_parameter`: `from` or `to` missing or not an RFC 3339 instant, or `format` not `json` or `csv`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account_not_found`: no such account for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid_period`: `from` is not before `to`; `as_of_too_recent`: `to` is in the future or less than a second ago, or a transaction that may have begun before it is still open after 5 s; `statement_too_large`: more than 1000 entries in the period as JSON (ask for CSV or a shorter period)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts/{id}/statement")]
pub async fn statement(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<StatementQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let csv = match q.format {
        Some(f) => f == StatementFormat::Csv,
        None => req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.split(',').any(|m| m.trim().starts_with("text/csv"))),
    };
    let client = state.pool.get().await?;
    if !csv {
        let s = history::statement(&**client, caller.0, *id, q.from, q.to).await?;
        return Ok(HttpResponse::Ok().json(Statement {
            account_id: *id,
            currency: s.opening.currency,
            from: q.from,
            to: q.to,
            opening: StatementBalance::from(&s.opening),
            closing: StatementBalance::from(&s.closing),
            totals: s.totals.iter().map(total).collect(),
            entries: s.entries.iter().map(entry).collect(),
        }));
    }
    // Everything that can refuse the request is checked before the first
    // byte: once streaming, only a lost database can cut the body short.
    history::period(&**client, q.from, q.to).await?;
    let (opening, closing) = history::ends(&**client, caller.0, *id, q.from, q.to).await?;
    drop(client);
    let stream = Csv {
        pool: state.pool.clone(),
        account: *id,
        to: q.to,
        totals: Totals::new(opening.currency),
        step: Step::Head,
        opening,
        closing,
    };
    Ok(HttpResponse::Ok().content_type("text/csv; charset=utf-8").streaming(futures::stream::unfold(stream, Csv::next)))
}

enum Step {
    Head,
    Entries { after: EntryCursor, running: Decimal },
    Tail,
    Done,
}

/// A statement streamed as CSV: a page of entries per chunk, each page read
/// with a pooled connection taken for it alone. Pages may run in different
/// snapshots: `to` is settled, so the entries up to it no longer change.
struct Csv {
    pool: Pool,
    account: Uuid,
    to: DateTime<Utc>,
    opening: BalanceAt,
    closing: BalanceAt,
    totals: Totals,
    step: Step,
}

impl Csv {
    async fn next(mut self) -> Option<(Result<web::Bytes, ApiError>, Csv)> {
        let chunk = match std::mem::replace(&mut self.step, Step::Done) {
            Step::Head => {
                self.step =
                    Step::Entries { after: EntryCursor::start(self.opening.as_of), running: self.opening.available };
                format!("{CSV_HEADER}{}", balance_line("opening", &self.opening))
            }
            Step::Entries { after, running } => match self.page(after, running).await {
                Ok(entries) => {
                    self.step = match entries.last() {
                        Some(last) if entries.len() as i64 == CSV_PAGE => Step::Entries {
                            after: EntryCursor { created_at: last.created_at, id: last.id },
                            running: last.balance,
                        },
                        _ => Step::Tail,
                    };
                    let mut out = String::with_capacity(entries.len() * 120);
                    for e in &entries {
                        self.totals.add(e);
                        out.push_str(&entry_line(e));
                    }
                    out
                }
                Err(e) => return Some((Err(e), self)),
            },
            Step::Tail => {
                let mut out: String = self.totals.clone().into_vec().iter().map(total_line).collect();
                out.push_str(&balance_line("closing", &self.closing));
                out
            }
            Step::Done => return None,
        };
        Some((Ok(web::Bytes::from(chunk)), self))
    }

    async fn page(&self, after: EntryCursor, running: Decimal) -> Result<Vec<history::StatementEntry>, ApiError> {
        let client = self.pool.get().await?;
        let currency = self.opening.currency;
        Ok(history::period_page(&**client, self.account, currency, after, self.to, running, CSV_PAGE).await?)
    }
}
