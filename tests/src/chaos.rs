//! The seeded fault campaign: concurrent storefront clients run whole
//! purchases against several real `ledger-api` processes and real worker
//! processes while a fault injector, driven by the same seed, SIGKILLs and
//! restarts them (sometimes armed at a crash point, so that they die there on
//! a later request or message), cuts the workers' broker connections and fires duplicate
//! requests and duplicate messages. At the end the pipeline is quiesced, lost
//! emails are reconciled and the auditor runs; any violation fails the run.
//!
//! The seed drives every decision (what each client buys, when and which
//! fault strikes); the interleaving still depends on timing, so a replay
//! explores the same plan, not byte-identical scheduling.
//!
//! On the machine's shared PostgreSQL and RabbitMQ (the short campaign in
//! `make test`) the campaign does not restart the servers: it force-closes
//! the workers' broker connections through a proxy and drops the database
//! sessions instead. With `private_servers` (`make chaos`) it starts its own
//! PostgreSQL cluster and RabbitMQ node and also stops and restarts them
//! (`server_faults`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::broker::Broker;
use crate::proxy::Proxy;
pub use crate::rng::Rng;
use crate::server_faults::{self, Outages, Servers};
use crate::{spawn_worker_process, TestDb};

#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub duration: Duration,
    pub clients: usize,
    pub apis: usize,
    /// Run on a PostgreSQL cluster and a RabbitMQ node of the campaign's
    /// own, and stop and restart them too.
    pub private_servers: bool,
}

/// The flags both campaigns take (`make chaos`, `make chaos-ha`), each also
/// read from the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct CampaignArgs {
    /// The seed to replay; the clock when absent.
    #[arg(long, env = "CHAOS_SEED")]
    pub seed: Option<u64>,
    /// How long the campaign runs, in seconds.
    #[arg(long, env = "CHAOS_SECS", default_value_t = 600)]
    pub secs: u64,
    /// Concurrent clients making purchases.
    #[arg(long, env = "CHAOS_CLIENTS", default_value_t = 8)]
    pub clients: usize,
}

impl CampaignArgs {
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
        })
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub purchases: u64,
    pub charged: u64,
    pub refunded: u64,
    pub released: u64,
    pub declined: u64,
    /// Card purchases, the cards declined (then paid with the next
    /// attempt), and the 202 `processing` answers the clients retried.
    pub card_charges: u64,
    pub cards_declined: u64,
    pub processing_answers: u64,
    /// The fake provider's own largest count of payments for one (tenant,
    /// order, attempt), and its faults applied.
    pub provider_max_payments_per_attempt: u64,
    pub provider_faults: u64,
    /// Card refunds asked (one per charge and reference, each a refund row):
    /// of them, second ones for what a first left (or the same amount again
    /// after a first failed), those the provider held `pending` until the
    /// campaign settled them as the card network does, and succeeded ones
    /// the campaign then made the provider fail.
    pub card_refunds: u64,
    pub card_refunds_second: u64,
    pub refunds_held: u64,
    pub refunds_failed_later: u64,
    /// The 202 `pending` answers of card refunds the clients asked again
    /// with the same key, and the refunds they walked away from at a 202
    /// (left to the completer or a webhook).
    pub refund_pending_answers: u64,
    pub refunds_abandoned: u64,
    /// Refunds that ended `failed` (the ledger undid them), and of them
    /// those the provider never made (`provider_error`).
    pub refunds_failed: u64,
    pub refunds_provider_error: u64,
    /// What the end compared with the provider: its payments, and the
    /// refunds listed for them.
    pub provider_payments_compared: u64,
    pub provider_refunds_compared: u64,
    pub requests: u64,
    pub retries: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub duplicates_absorbed: u64,
    pub duplicate_mismatches: u64,
    pub emails_lost: u64,
    pub emails_recovered: u64,
    /// Emails whose send has an unknown outcome (a worker died after it
    /// recorded the attempt), never resent automatically; and how many of
    /// them the mail sink shows delivered (an operator's check).
    pub emails_unknown: u64,
    pub emails_unknown_delivered: u64,
    /// The private servers' restarts, when the campaign ran on its own.
    pub restarts: Option<server_faults::Restarts>,
    pub violations: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "chaos campaign, seed {}", self.seed)?;
        writeln!(
            f,
            "  purchases {} (charged {}, refunded {}, released {}, declined {})",
            self.purchases, self.charged, self.refunded, self.released, self.declined
        )?;
        writeln!(
            f,
            "  card charges {} (declined then paid {}), 202 processing answers {}, provider faults {}, \
             provider payments per order attempt at most {}",
            self.card_charges,
            self.cards_declined,
            self.processing_answers,
            self.provider_faults,
            self.provider_max_payments_per_attempt
        )?;
        writeln!(
            f,
            "  card refunds {} (second refunds {}, held pending at the provider {}, failed later {}), \
             202 pending answers retried {}, abandoned to the completer {}, refunds failed {} (provider_error {}); \
             compared with the provider: {} payments, {} refunds",
            self.card_refunds,
            self.card_refunds_second,
            self.refunds_held,
            self.refunds_failed_later,
            self.refund_pending_answers,
            self.refunds_abandoned,
            self.refunds_failed,
            self.refunds_provider_error,
            self.provider_payments_compared,
            self.provider_refunds_compared
        )?;
        writeln!(f, "  requests {}, retries {}", self.requests, self.retries)?;
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(f, "  faults: {}", faults.join(", "))?;
        if let Some(r) = &self.restarts {
            writeln!(f, "  {r}")?;
        }
        writeln!(
            f,
            "  duplicates absorbed {} (answers differing from the first: {})",
            self.duplicates_absorbed, self.duplicate_mismatches
        )?;
        writeln!(
            f,
            "  emails lost {}, recovered by reconcile {}; unknown outcomes left to an operator {} ({} found delivered)",
            self.emails_lost, self.emails_recovered, self.emails_unknown, self.emails_unknown_delivered
        )?;
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        write!(f, "  violations {}", self.violations.len())
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api_binary() -> std::path::PathBuf {
    crate::workers_binary().with_file_name("ledger-api")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn serve(db_url: &str, port: u16, crash_at: Option<&str>, provider: &[(&'static str, String)]) -> Proc {
    let mut cmd = Command::new(api_binary());
    cmd.envs(provider.iter().map(|(k, v)| (*k, v.as_str())));
    if let Some(point) = crash_at {
        cmd.env("LEDGER_CRASH_AT", point);
    } else {
        cmd.env_remove("LEDGER_CRASH_AT");
    }
    let child = cmd
        .arg("serve")
        .env("DATABASE_URL", db_url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("HTTP_WORKERS", "2")
        .env("DB_POOL_SIZE", "8")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("ledger-api starts");
    let proc = Proc(child);
    let http = awc::Client::default();
    for _ in 0..200 {
        if let Ok(res) = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            if res.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc
}

pub(crate) struct Shared {
    pub(crate) ports: Vec<u16>,
    pub(crate) summary: Summary,
    /// Every attempt, when the campaign measures unavailability from them
    /// (`chaos_ha`).
    pub(crate) attempts: Option<Vec<Attempt>>,
}

/// One attempt of a request, as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) at: Instant,
    /// None: no answer (connection refused or cut, timeout).
    pub(crate) status: Option<u16>,
    pub(crate) code: Option<String>,
    pub(crate) retry_after: bool,
    pub(crate) problem: bool,
    /// The answer was a stored one (`Idempotent-Replayed`) after an earlier
    /// attempt of the same key got no answer or a 5xx: a commit whose
    /// acknowledgement was lost, found by the retry.
    pub(crate) found_after_failure: bool,
}

/// A careful client: the same Idempotency-Key on every retry; retries on
/// connection errors, timeouts, 5xx, the 409s that say to retry
/// (`contention`, `request_in_progress`), 429 (`rate_limited`) and 202 (a
/// card charge still `processing`, a card refund still `pending`), against
/// any API process.
pub(crate) async fn request(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    send(shared, rng, key, idem, path, body, false).await
}

/// [`request`], or, with `abandon_pending`, a client that walks away from
/// the first 202 it gets (returned as it is): what is in flight is left to
/// the completer (or a webhook).
async fn send(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    path: &str,
    body: &Value,
    abandon_pending: bool,
) -> (u16, Value) {
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = false;
    loop {
        let port = {
            let s = shared.borrow();
            s.ports[rng.below(s.ports.len() as u64) as usize]
        };
        shared.borrow_mut().summary.requests += 1;
        let sent = http
            .post(format!("http://127.0.0.1:{port}{path}"))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Idempotency-Key", idem))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body.to_string())
            .await;
        let mut attempt = Attempt {
            at: Instant::now(),
            status: None,
            code: None,
            retry_after: false,
            problem: false,
            found_after_failure: false,
        };
        if let Ok(mut res) = sent {
            let status = res.status().as_u16();
            let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            attempt.retry_after = header("retry-after").is_some();
            attempt.problem = header("content-type").is_some_and(|t| t.starts_with("application/problem+json"));
            attempt.found_after_failure = failed && header("idempotent-replayed").as_deref() == Some("true");
            if let Ok(bytes) = res.body().limit(1 << 20).await {
                let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                attempt.status = Some(status);
                attempt.code = answer["code"].as_str().map(str::to_owned);
                // a fault is never the client's nor a bug's: 503 or 409 to retry, never a 500
                if status == 500 {
                    shared.borrow_mut().summary.violations.push(format!("VIOLATION no_500: {path} {idem}: {answer}"));
                }
                // a refusal by a natural key is final; contention and a key in use are retried
                let refused = answer["code"] == "order_already_charged" || answer["code"] == "natural_key_conflict";
                // a card charge still `processing` (202), or a card refund still
                // `pending`, is asked again with its key for its final answer
                if status == 202 && abandon_pending {
                    record(shared, attempt);
                    return (status, answer);
                }
                if status == 202 {
                    let mut s = shared.borrow_mut();
                    match path.ends_with("/refunds") {
                        true => s.summary.refund_pending_answers += 1,
                        false => s.summary.processing_answers += 1,
                    }
                }
                let retry = status >= 500 || status == 429 || status == 202 || (status == 409 && !refused);
                if !retry {
                    record(shared, attempt);
                    return (status, answer);
                }
            }
        }
        failed |= attempt.status.is_none_or(|s| s >= 500);
        record(shared, attempt);
        assert!(Instant::now() < deadline, "{path} with key {idem} never got an answer");
        shared.borrow_mut().summary.retries += 1;
        tokio::time::sleep(Duration::from_millis(50 + rng.below(150))).await;
    }
}

fn record(shared: &Rc<RefCell<Shared>>, attempt: Attempt) {
    if let Some(log) = &mut shared.borrow_mut().attempts {
        log.push(attempt);
    }
}

pub(crate) struct Store {
    pub(crate) key: String,
    pub(crate) seller: String,
    pub(crate) platform: String,
    pub(crate) buyers: Vec<String>,
    pub(crate) skus: Vec<String>,
    /// The fake payment provider's URL, when the campaign may arm its
    /// faults and settle its refunds as the card network does (`chaos`).
    pub(crate) provider: std::cell::OnceCell<String>,
}

/// One storefront client: purchase after purchase until `until`.
pub(crate) async fn client(shared: Rc<RefCell<Shared>>, store: Rc<Store>, n: usize, mut rng: Rng, until: Instant) {
    let buyer = &store.buyers[n];
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let order = format!("c{n}-o{i}");
        shared.borrow_mut().summary.purchases += 1;
        let sku = &store.skus[rng.below(store.skus.len() as u64) as usize];
        let quantity = 1 + rng.below(2);
        let hold_body = json!({"order_id": order, "sku": sku, "quantity": quantity});
        let hold_key = format!("{order}:hold");
        let (status, hold) = request(&shared, &mut rng, &store.key, &hold_key, "/v1/reservations", &hold_body).await;
        if status != 201 {
            shared.borrow_mut().summary.declined += 1;
            continue;
        }
        duplicate(&shared, &mut rng, &store.key, &hold_key, "/v1/reservations", &hold_body, &hold).await;
        if rng.chance(15) {
            let path = format!("/v1/reservations/{}/release", hold["id"].as_str().unwrap());
            request(&shared, &mut rng, &store.key, &format!("{order}:release"), &path, &Value::Null).await;
            shared.borrow_mut().summary.released += 1;
            continue;
        }
        let cents = 100 + rng.below(5000);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let fee = format!("{}.{:02}", cents / 1000, (cents / 10) % 100);
        let mut charge_body = json!({"order_id": order, "attempt": 1, "buyer_account_id": buyer,
            "seller_account_id": store.seller, "amount": amount, "currency": "USD",
            "platform_fee": {"account_id": store.platform, "amount": fee},
            "receipt_email": format!("{order}@example.com")});
        let mut charge_key = format!("{order}:charge");
        // beside wallet purchases, card purchases through the provider (its faults on)
        let card = rng.chance(40);
        if card {
            shared.borrow_mut().summary.card_charges += 1;
            let body = charge_body.as_object_mut().unwrap();
            body.remove("buyer_account_id");
            if rng.chance(10) {
                // a declined card first: a stored 402, then the next attempt with a good card
                body.insert("payment_method".into(), json!("pm_card_chargeDeclined"));
                let (status, declined) =
                    request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await;
                assert_eq!(status, 402, "declined card for {order}: {declined}");
                shared.borrow_mut().summary.cards_declined += 1;
                charge_body["attempt"] = json!(2);
                charge_key = format!("{order}:charge:2");
            }
            charge_body["payment_method"] = json!("pm_card_visa");
        }
        let (mut status, mut charge) =
            request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await;
        // an attempt the provider failed for good (a stored 5xx, no payment:
        // `provider_error`) is over; the storefront charges the next attempt
        while card && status == 402 && charge_body["attempt"].as_i64().unwrap() < 10 {
            let attempt = charge_body["attempt"].as_i64().unwrap() + 1;
            charge_body["attempt"] = json!(attempt);
            charge_key = format!("{order}:charge:{attempt}");
            (status, charge) = request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await;
        }
        assert!(status == 201 || status == 200, "charge {order}: {status} {charge}");
        shared.borrow_mut().summary.charged += 1;
        duplicate(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body, &charge).await;
        if rng.chance(10) {
            // a storefront that bumps the attempt instead of retrying with its key: refused, naming the charge
            let mut bumped = charge_body.clone();
            let attempt = charge_body["attempt"].as_i64().unwrap() + 1;
            bumped["attempt"] = json!(attempt);
            let bumped_key = format!("{order}:charge:{attempt}");
            let (status, refused) = request(&shared, &mut rng, &store.key, &bumped_key, "/v1/charges", &bumped).await;
            natural_key_duplicate(&shared, status == 409 && refused["charge_id"] == charge["id"], &order, &refused);
        }
        // card refunds go through the provider, its faults on (`card_refunds`)
        if card && rng.chance(35) {
            card_refunds(&shared, &mut rng, &store, &order, &charge, cents).await;
        }
        if !card && rng.chance(25) {
            let refund = format!("{}.{:02}", cents / 200, (cents / 2) % 100);
            let path = format!("/v1/charges/{}/refunds", charge["id"].as_str().unwrap());
            let body = json!({"amount": refund, "reference": format!("{order}:refund:1")});
            let (status, first) =
                request(&shared, &mut rng, &store.key, &format!("{order}:refund"), &path, &body).await;
            assert_eq!(status, 201, "refund of {order}");
            shared.borrow_mut().summary.refunded += 1;
            if rng.chance(20) {
                // the same refund under another key (the first one lost or expired): its reference finds it
                let (status, again) =
                    request(&shared, &mut rng, &store.key, &format!("{order}:refund:again"), &path, &body).await;
                natural_key_duplicate(&shared, status == 200 && again == first, &order, &again);
            }
        }
    }
}

/// What one card refund came to, as its client saw it.
enum Refunded {
    /// 201 (or 200): the refund, `succeeded`.
    Succeeded(Value),
    /// 402 `refund_failed`: the provider failed it (or never made it) and
    /// the ledger undid it. Final.
    Failed(Value),
    /// A 202 the client walked away from: the refund, `pending`, for the
    /// completer (or a webhook) to finish.
    Abandoned(Value),
    /// 422 `refund_exceeds_charge`: nothing left to refund, no refund made.
    Exceeded,
    /// Anything else: a violation, already recorded.
    Unexpected,
}

/// Card refunds of a paid card charge of `cents`, through the provider with
/// its faults on: a first refund of part of it or of all that remains;
/// sometimes the same reference again under another Idempotency-Key (one
/// refund, whatever the key); sometimes a second refund under a new
/// reference (what the first left, or the same again after the first
/// failed); and, where the campaign holds the provider's admin, sometimes a
/// succeeded refund the card network fails later.
async fn card_refunds(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    store: &Store,
    order: &str,
    charge: &Value,
    cents: u64,
) {
    let charge_id = charge["id"].as_str().unwrap();
    let path = format!("/v1/charges/{charge_id}/refunds");
    // part of it (at least a cent, never all), or no amount: all that remains
    let amount = (!rng.chance(35)).then(|| money(1 + rng.below(cents - 1)));
    let first = card_refund(shared, rng, store, order, charge, 1, amount.as_deref()).await;
    if rng.chance(20) {
        // the same refund under another key (the first one lost, or walked
        // away from): its reference finds it, and the provider is not asked twice
        let reference = format!("{order}:refund:1");
        let mut body = json!({"reference": reference});
        if let Some(a) = &amount {
            body["amount"] = json!(a);
        }
        let again_key = format!("{order}:refund:1:again");
        let (status, again) = request(shared, rng, &store.key, &again_key, &path, &body).await;
        let absorbed = match &first {
            Refunded::Succeeded(r) => status == 200 && &again == r,
            Refunded::Failed(f) => status == 402 && again["code"] == "refund_failed" && again["detail"] == f["detail"],
            // whoever finishes it first: this request (201), or the completer
            // or a webhook before it (200); or the provider failed it
            Refunded::Abandoned(r) => {
                ((status == 200 || status == 201) && again["id"] == r["id"] && again["status"] == "succeeded")
                    || (status == 402 && again["code"] == "refund_failed")
            }
            Refunded::Exceeded | Refunded::Unexpected => true,
        };
        natural_key_duplicate(shared, absorbed, order, &again);
    }
    if let (Some(url), Refunded::Succeeded(r)) = (store.provider.get(), &first) {
        if rng.chance(8) {
            // the card network fails a refund the provider had accepted: its
            // webhook undoes the ledger's refund, once
            let re = r["provider_refund_id"].as_str().unwrap();
            fake_admin(url, "POST", &format!("/refunds/{re}/fail"), json!({})).await;
            shared.borrow_mut().summary.refunds_failed_later += 1;
        }
    }
    if rng.chance(25) {
        // a second refund under a new reference: after a failure, the same
        // again; else all that remains (nothing, after a whole first one)
        let second = match first {
            Refunded::Failed(_) => amount.as_deref(),
            _ => None,
        };
        card_refund(shared, rng, store, order, charge, 2, second).await;
        shared.borrow_mut().summary.card_refunds_second += 1;
    }
}

/// One card refund of `charge` under reference `{order}:refund:{n}` (its
/// Idempotency-Key too): 202 `pending` answers are asked again with the
/// same key until final, or sometimes walked away from; sometimes the
/// provider holds the refund `pending` (an armed `refund_pending` fault)
/// until the campaign, as the card network, makes it succeed or fail.
async fn card_refund(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    store: &Store,
    order: &str,
    charge: &Value,
    n: u32,
    amount: Option<&str>,
) -> Refunded {
    let charge_id = charge["id"].as_str().unwrap();
    let path = format!("/v1/charges/{charge_id}/refunds");
    let reference = format!("{order}:refund:{n}");
    let mut body = json!({"reference": reference});
    if let Some(a) = amount {
        body["amount"] = json!(a);
    }
    let provider = store.provider.get();
    let held = provider.is_some() && rng.chance(15);
    if let (Some(url), true) = (provider, held) {
        let metadata = json!({"charge_id": charge_id, "reference": reference});
        fake_admin(url, "POST", "/faults", json!({"kind": "refund_pending", "count": 1, "metadata": metadata})).await;
    }
    let abandon = rng.chance(15);
    let (mut status, mut answer) = send(shared, rng, &store.key, &reference, &path, &body, held || abandon).await;
    if let (Some(url), true, 202) = (provider, held, status) {
        // the provider made it `pending` (unless a fault stopped it first):
        // the card network decides, and the provider's webhook tells the ledger
        let payment = charge["provider_payment_id"].as_str().unwrap_or_default();
        let mut made = provider_refund(url, payment, charge_id, &reference).await;
        for _ in 0..5 {
            if made.is_some() {
                break;
            }
            // not there (yet): a send the fake was slow to run, or never ran
            // (`error_before_charge`); what is still held at the end, the
            // campaign settles then
            tokio::time::sleep(Duration::from_millis(200)).await;
            made = provider_refund(url, payment, charge_id, &reference).await;
        }
        if let Some(re) = made.filter(|r| r.status == gateway::RefundStatus::Pending) {
            tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
            let fate = if rng.chance(70) { "succeed" } else { "fail" };
            fake_admin(url, "POST", &format!("/refunds/{}/{fate}", re.id), json!({})).await;
            shared.borrow_mut().summary.refunds_held += 1;
        }
        if !abandon {
            shared.borrow_mut().summary.refund_pending_answers += 1;
            (status, answer) = request(shared, rng, &store.key, &reference, &path, &body).await;
        }
    }
    let code = answer["code"].as_str().unwrap_or_default().to_owned();
    let ended = match (status, code.as_str()) {
        (201 | 200, _) if answer["status"] == "succeeded" => Refunded::Succeeded(answer.clone()),
        (402, "refund_failed") => Refunded::Failed(answer.clone()),
        (202, _) if answer["status"] == "pending" => Refunded::Abandoned(answer.clone()),
        (422, "refund_exceeds_charge") if n > 1 && amount.is_none() => Refunded::Exceeded,
        _ => {
            shared.borrow_mut().summary.violations.push(format!(
                "VIOLATION card_refund_answer: refund {reference} of charge {charge_id} answered {status} {answer}"
            ));
            Refunded::Unexpected
        }
    };
    {
        let mut s = shared.borrow_mut();
        s.summary.card_refunds += 1;
        if matches!(ended, Refunded::Succeeded(_) | Refunded::Failed(_) | Refunded::Abandoned(_)) {
            // one refund row each, a failed one included (it moved no money)
            s.summary.refunded += 1;
        }
        if matches!(ended, Refunded::Abandoned(_)) {
            s.summary.refunds_abandoned += 1;
        }
    }
    if matches!(ended, Refunded::Succeeded(_) | Refunded::Failed(_) | Refunded::Exceeded) {
        // a final answer is stored for its key and replayed
        duplicate(shared, rng, &store.key, &reference, &path, &body, &answer).await;
    }
    ended
}

/// `cents` as the API writes an amount of USD.
fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// An admin call to the fake provider at `url` (`/_fake{path}`); the fake
/// never goes down in a campaign, so a failure here is the campaign's own.
async fn fake_admin(url: &str, method: &str, path: &str, body: Value) -> Value {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut res = http
        .request(method, format!("{url}/_fake{path}"))
        .insert_header(("Content-Type", "application/json"))
        .send_body(body.to_string())
        .await
        .unwrap_or_else(|e| panic!("the fake provider answers {path}: {e}"));
    let bytes = res.body().limit(1 << 20).await.unwrap();
    assert!(res.status().is_success(), "{path}: {} {}", res.status(), String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The provider's refund of (charge, reference), as its payment's refunds
/// list it, if the provider made one.
async fn provider_refund(url: &str, payment: &str, charge_id: &str, reference: &str) -> Option<gateway::Refund> {
    let client = crate::provider::api_client(url);
    let listed = client.list_refunds(payment).await.unwrap_or_else(|e| panic!("the refunds of {payment}: {e}"));
    listed.into_iter().find(|r| {
        r.metadata.get("charge_id").map(String::as_str) == Some(charge_id)
            && r.metadata.get("reference").map(String::as_str) == Some(reference)
    })
}

/// Counts a request sent again under another key on purpose: its natural key
/// must have absorbed it (`absorbed`), or it is a violation.
fn natural_key_duplicate(shared: &Rc<RefCell<Shared>>, absorbed: bool, order: &str, answer: &Value) {
    let mut s = shared.borrow_mut();
    s.summary.duplicates_absorbed += 1;
    if !absorbed {
        s.summary.duplicate_mismatches += 1;
        s.summary.violations.push(format!("order {order}: a duplicate under another key answered {answer}"));
    }
}

/// Fires the same request again on purpose, sometimes; its answer must be the first one.
async fn duplicate(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    path: &str,
    body: &Value,
    first: &Value,
) {
    if !rng.chance(20) {
        return;
    }
    let (_, again) = request(shared, rng, key, idem, path, body).await;
    let mut s = shared.borrow_mut();
    s.summary.duplicates_absorbed += 1;
    if &again != first {
        s.summary.duplicate_mismatches += 1;
        s.summary.violations.push(format!("duplicate request {idem} answered {again} after {first}"));
    }
}

/// Runs a campaign and returns its summary (violations included).
pub async fn run(settings: Settings) -> Summary {
    let mut rng = Rng::new(settings.seed);
    let servers = match settings.private_servers {
        true => Some(Rc::new(Servers::start().await)),
        false => None,
    };
    let outages = Rc::new(Outages::default());
    let (db, broker, proxy) = match &servers {
        Some(s) => (
            TestDb::on(&s.pg).await,
            Broker::on(&s.rabbit.amqp_url()),
            Proxy::start(&format!("127.0.0.1:{}", s.rabbit.port())).await,
        ),
        None => (TestDb::new().await, Broker::new(), Proxy::start("127.0.0.1:5672").await),
    };
    let email_dir = std::env::temp_dir().join(format!("ledger-chaos-{}", uuid::Uuid::new_v4().simple()));
    let mut config = workers::config::Config::local(&db.worker_url, &broker.prefix);
    config.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=10", proxy.port);
    config.relay_poll_ms = 100;
    config.email_dir = email_dir.to_string_lossy().into_owned();

    // the payment provider, its faults drawn from the campaign's seed
    let started = chrono::Utc::now();
    let fake_seed = settings.seed.to_string();
    let fake = crate::provider::FakeProvider::start(&[
        "--fault-seed",
        &fake_seed,
        "--fault-error-rate",
        "0.04",
        "--fault-drop-rate",
        "0.06",
        "--fault-cut-rate",
        "0.03",
        "--fault-hang-rate",
        "0.02",
        "--fault-slow-rate",
        "0.02",
        "--hang-ms",
        "1500",
        "--slow-ms",
        "1500",
        "--fault-webhook-late-rate",
        "0.2",
        "--fault-webhook-twice-rate",
        "0.2",
        "--fault-webhook-out-of-order-rate",
        "0.2",
        "--webhook-late-ms",
        "500",
        "--webhook-hold-max-ms",
        "2000",
    ]);
    fake.configure(&mut config.gateway);
    config.gateway.card_lease_secs = 2;
    config.gateway.gateway_timeout_ms = 3000;
    config.gateway.gateway_search_lag_secs = 2;
    config.completer_poll_ms = 200;
    let mut provider = fake.env();
    provider.push(("CARD_LEASE_SECS", "2".to_owned()));
    provider.push(("GATEWAY_TIMEOUT_MS", "3000".to_owned()));
    provider.push(("GATEWAY_SEARCH_LAG_SECS", "2".to_owned()));
    let provider = provider;

    let mut apis = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..settings.apis {
        let port = free_port();
        apis.push(serve(&db.api_url, port, None, &provider).await);
        ports.push(port);
    }
    fake.set_webhook_endpoint(&format!("http://127.0.0.1:{}/v1/provider/webhooks", ports[0])).await;
    let roles = ["relay", "inventory", "email", "completer"];
    let points = ["relay-after-publish", "inventory-after-commit", "email-after-ack", "completer-after-provider"];
    let mut workers: Vec<Proc> = roles.iter().map(|r| Proc(spawn_worker_process(&config, r, None))).collect();
    // which processes were restarted armed at a crash point
    let mut api_armed = vec![false; apis.len()];
    let mut worker_armed = vec![false; workers.len()];
    let shared = Rc::new(RefCell::new(Shared { ports: ports.clone(), summary: Summary::default(), attempts: None }));
    shared.borrow_mut().summary.seed = settings.seed;

    // the store: accounts funded from an external account, stock on a few SKUs
    let store = open_store(&shared, &rng, &db.url, "chaos", settings.clients).await;
    // the clients arm the fake's refund faults and settle its held refunds
    store.provider.set(fake.url().to_owned()).expect("set once");

    // the clients
    let until = Instant::now() + settings.duration;
    let handles = start_clients(&shared, &store, settings.seed, settings.clients, until);

    // the servers' outages, on a task of their own
    let server_outages = servers.clone().map(|s| {
        let faults_rng = Rng::new(settings.seed ^ 0x5e4e_4e45);
        actix_web::rt::spawn(server_faults::run(s, outages.clone(), faults_rng, until))
    });

    // the fault injector, on this task
    let fault =
        |s: &Rc<RefCell<Shared>>, kind: &'static str| *s.borrow_mut().summary.faults.entry(kind).or_default() += 1;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        // a process that died at its crash point is restarted unarmed, as a supervisor would
        for i in 0..apis.len() {
            if let Ok(Some(_)) = apis[i].0.try_wait() {
                apis[i] = serve(&db.api_url, ports[i], None, &provider).await;
                api_armed[i] = false;
                fault(&shared, "api died at a crash point");
            }
        }
        for i in 0..workers.len() {
            if let Ok(Some(_)) = workers[i].0.try_wait() {
                workers[i] = Proc(spawn_worker_process(&config, roles[i], None));
                worker_armed[i] = false;
                fault(&shared, "worker died at a crash point");
            }
        }
        match rng.below(5) {
            0 => {
                let i = rng.below(apis.len() as u64) as usize;
                let _ = apis[i].0.kill(); // SIGKILL
                let _ = apis[i].0.wait();
                // sometimes restarted armed: it dies at that point on a later request
                const POINTS: [&str; 8] = [
                    "api-after-key-lock",
                    "api-after-commit",
                    "card-after-charge-created",
                    "card-after-provider",
                    "card-after-complete",
                    "refund-after-created",
                    "refund-after-provider",
                    "refund-after-complete",
                ];
                let arm = rng.chance(30).then(|| POINTS[rng.below(POINTS.len() as u64) as usize]);
                apis[i] = serve(&db.api_url, ports[i], arm, &provider).await;
                api_armed[i] = arm.is_some();
                fault(&shared, "api killed");
            }
            1 => {
                let i = rng.below(workers.len() as u64) as usize;
                let _ = workers[i].0.kill();
                let _ = workers[i].0.wait();
                // the email worker dies before its claim or after its send
                let arm = rng.chance(30).then(|| if i == 2 && rng.chance(50) { "email-after-send" } else { points[i] });
                workers[i] = Proc(spawn_worker_process(&config, roles[i], arm));
                worker_armed[i] = arm.is_some();
                fault(&shared, "worker killed");
            }
            2 => {
                proxy.cut();
                fault(&shared, "broker connections cut");
            }
            3 => {
                // What a PostgreSQL restart does to the service: every session of
                // the campaign's database dies at once, mid-transaction or idle.
                // Other databases on the shared server are left alone.
                let Some(pg) = server_faults::client_unless_down(&db.url, &outages).await else { continue };
                let dropped = pg
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&db.name],
                    )
                    .await;
                if dropped.is_ok() {
                    fault(&shared, "database connections dropped");
                }
            }
            _ => {
                let Some(pg) = server_faults::client_unless_down(&db.url, &outages).await else { continue };
                let row = pg
                    .query_opt(
                        "SELECT message_id::text, event_type, payload::text FROM outbox \
                          WHERE published_at IS NOT NULL ORDER BY random() LIMIT 1",
                        &[],
                    )
                    .await;
                if let (Ok(Some(row)), false) = (row, outages.is_down().1) {
                    let (id, kind, body): (String, String, String) = (row.get(0), row.get(1), row.get(2));
                    if server_faults::publish(&broker, &kind, &id, body.as_bytes()).await.is_ok() {
                        fault(&shared, "duplicate message");
                    }
                }
            }
        }
    }
    // the last outage ends with both servers running
    if let Some(task) = server_outages {
        task.await.expect("the server outages ended");
    }
    // the last in-flight requests and the quiescence run on unarmed processes
    for i in 0..apis.len() {
        if api_armed[i] || apis[i].0.try_wait().ok().flatten().is_some() {
            let _ = apis[i].0.kill();
            let _ = apis[i].0.wait();
            apis[i] = serve(&db.api_url, ports[i], None, &provider).await;
        }
    }
    for i in 0..workers.len() {
        if worker_armed[i] || workers[i].0.try_wait().ok().flatten().is_some() {
            let _ = workers[i].0.kill();
            let _ = workers[i].0.wait();
            workers[i] = Proc(spawn_worker_process(&config, roles[i], None));
        }
    }
    for h in handles {
        h.await.expect("a client finished");
    }
    // the card network decides every refund the provider still holds pending
    shared.borrow_mut().summary.refunds_held += settle_held_refunds(&fake, started).await;

    // the provider's last webhooks delivered (a refund the card network
    // failed late is undone in the ledger by its webhook), then quiesce:
    // everything relayed and consumed, however long a loaded machine takes
    webhooks_delivered(&fake).await;
    let pg = db.client().await;
    match quiesce(&pg, &broker).await {
        Ok(took) => eprintln!("chaos: the pipeline drained the campaign's backlog in {:.0} s", took.as_secs_f64()),
        Err(stuck) => panic!("{stuck}\n{}", server_faults::describe(servers.as_deref(), &broker).await),
    }
    let mut summary = std::mem::take(&mut shared.borrow_mut().summary);
    settle(&pg, &config, &fake, &email_dir, started, &mut summary).await;
    summary.provider_faults = fake.stats().await["faults_applied"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    summary.restarts = servers.as_ref().map(|_| outages.restarts());
    // a fault is never a message's own: nothing may end in the dead-letter queue
    // (checked where the campaign owns its broker; the short shared run leaves it out)
    if servers.is_some() {
        let dead = broker.depth(&broker.names.dead_letter_queue).await;
        if dead > 0 {
            summary.violations.push(format!("VIOLATION nothing_dead_lettered: {dead} message(s) dead-lettered"));
        }
    }
    drop(apis);
    drop(workers);
    let _ = std::fs::remove_dir_all(&email_dir);
    summary
}

/// A tenant named `name` made on `db_url`, and its store over the API: a
/// funded buyer for each of `clients`, a seller, a platform-fee account and
/// four stocked SKUs. Its requests draw from a copy of `rng`, so that the
/// campaign's own draws stay the seed's.
pub(crate) async fn open_store(
    shared: &Rc<RefCell<Shared>>,
    rng: &Rng,
    db_url: &str,
    name: &str,
    clients: usize,
) -> Rc<Store> {
    let key = {
        let mut conn = ledger::tenants::connect(db_url).await.unwrap();
        ledger::tenants::create_with_key(&mut conn, name).await.unwrap().1
    };
    let mut setup = rng.clone();
    let mut account = async |reference: String, negative: bool| -> String {
        let body = json!({"reference": reference, "currency": "USD", "allow_negative": negative});
        let (_, a) = request(shared, &mut setup, &key, &format!("acct:{reference}"), "/v1/accounts", &body).await;
        a["id"].as_str().unwrap().to_owned()
    };
    let ext = account("external".into(), true).await;
    let seller = account("seller".into(), false).await;
    let platform = account("platform".into(), false).await;
    let mut buyers = Vec::new();
    for n in 0..clients {
        buyers.push(account(format!("buyer-{n}"), false).await);
    }
    for (n, b) in buyers.iter().enumerate() {
        let body =
            json!({"source_account_id": ext, "destination_account_id": b, "amount": "1000000.00", "currency": "USD"});
        request(shared, &mut setup, &key, &format!("fund:{n}"), "/v1/transfers", &body).await;
    }
    let skus: Vec<String> = (0..4).map(|i| format!("sku-{i}")).collect();
    for s in &skus {
        let body = json!({"quantity": 1_000_000});
        request(shared, &mut setup, &key, &format!("restock:{s}"), &format!("/v1/skus/{s}/restocks"), &body).await;
    }
    Rc::new(Store { key, seller, platform, buyers, skus, provider: std::cell::OnceCell::new() })
}

/// `clients` storefront clients buying from `store` until `until`, each
/// with a random stream of its own derived from `seed`.
pub(crate) fn start_clients(
    shared: &Rc<RefCell<Shared>>,
    store: &Rc<Store>,
    seed: u64,
    clients: usize,
    until: Instant,
) -> Vec<actix_web::rt::task::JoinHandle<()>> {
    (0..clients)
        .map(|n| {
            let client_rng = Rng::new(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9));
            actix_web::rt::spawn(client(shared.clone(), store.clone(), n, client_rng, until))
        })
        .collect()
}

/// Makes every refund the fake provider still holds `pending` succeed (a
/// held refund whose client did not find it at the provider); returns how
/// many.
async fn settle_held_refunds(fake: &crate::provider::FakeProvider, started: chrono::DateTime<chrono::Utc>) -> u64 {
    let (from, to) = (started.timestamp() - 60, chrono::Utc::now().timestamp() + 60);
    let client = crate::provider::api_client(fake.url());
    let listed = client.list_all_refunds(from, to).await.unwrap_or_else(|e| panic!("the provider's refunds: {e}"));
    let mut settled = 0;
    for refund in listed.iter().filter(|r| r.status == gateway::RefundStatus::Pending) {
        fake.admin("POST", &format!("/refunds/{}/succeed", refund.id), Some(json!({}))).await;
        settled += 1;
    }
    settled
}

/// Waits until the fake provider has delivered every webhook it holds (it
/// retries a failed delivery for as long as it takes), for at most two
/// minutes.
async fn webhooks_delivered(fake: &crate::provider::FakeProvider) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = fake.stats().await["webhooks"]["pending"].as_u64().unwrap_or(0);
        if pending == 0 {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("chaos: the fake provider still holds {pending} webhook delivery(ies) after 120 s");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the pipeline is quiet: every outbox row relayed, both queues
/// consumed, no card charge `processing` and no card refund `pending`;
/// returns how long that took. What a
/// campaign leaves behind can be a backlog of thousands of events on a
/// loaded machine, which the workers drain at their pace: this fails (with
/// the counts) when the pipeline stops moving, no progress for two minutes,
/// not when it is slow. The work left is the rows to relay (each makes a copy
/// for both queues) and the copies waiting in the queues.
pub(crate) async fn quiesce(pg: &tokio_postgres::Client, broker: &Broker) -> Result<Duration, String> {
    let started = Instant::now();
    let (mut least, mut progressed) = (i64::MAX, Instant::now());
    loop {
        let unpublished: i64 =
            pg.query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[]).await.unwrap().get(0);
        let processing: i64 =
            pg.query_one("SELECT count(*) FROM charges WHERE status = 'processing'", &[]).await.unwrap().get(0);
        let pending: i64 =
            pg.query_one("SELECT count(*) FROM refunds WHERE status = 'pending'", &[]).await.unwrap().get(0);
        let depth = broker.depth(&broker.names.inventory).await + broker.depth(&broker.names.email).await;
        if unpublished == 0 && depth == 0 && processing == 0 && pending == 0 {
            return Ok(started.elapsed());
        }
        // a charge or a refund the completer finishes makes an event to relay
        let left = 2 * unpublished + i64::from(depth) + processing + pending;
        if left < least {
            (least, progressed) = (left, Instant::now());
        }
        if progressed.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the pipeline stopped moving: {unpublished} unpublished, {depth} queued, {processing} processing, \
                 {pending} refund(s) pending, none drained for 120 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checks a campaign runs once quiesced, shared by `make chaos` and
/// `make chaos-ha`, each violation pushed onto `summary`: lost emails
/// reconciled (never one whose send is unknown), `audit --quiesced`,
/// `reconcile-payments` and the provider's own count of payments per order
/// attempt, one effect per purchase, and every paid order's email delivered
/// exactly once (counted in the mail sink, `email_dir`).
pub(crate) async fn settle(
    pg: &tokio_postgres::Client,
    config: &workers::config::Config,
    fake: &crate::provider::FakeProvider,
    email_dir: &std::path::Path,
    started: chrono::DateTime<chrono::Utc>,
    summary: &mut Summary,
) {
    // the last emails' sends settle (the email worker acks before it sends)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pool = config.pool().unwrap();
    let mailer = workers::email::Mailer::from_config(config).unwrap();
    let sends = workers::email::Sends { never_claimed: true, resend_claimed: false };
    let reconciled = workers::email::reconcile_with(&pool, &mailer, &config.email_from, 2, sends).await.unwrap();
    let report = ledger::audit::audit(pg, ledger::audit::Options { quiesced: true }).await.unwrap();
    // the provider's payments against the ledger, and the provider's own count per order attempt
    let payments = service::payments::Payments::new(&config.gateway).unwrap();
    let (from, to) = (started - chrono::Duration::minutes(1), chrono::Utc::now() + chrono::Duration::minutes(1));
    // what `reconcile-payments` runs (exit 0 clean, 1 differences, 2 could not run): it must run, and be clean
    let differences = match workers::reconcile_payments::reconcile(&pool, &payments, from, to).await {
        Ok(differences) => differences,
        Err(e) => vec![workers::reconcile_payments::Difference { kind: "could_not_run", detail: e.to_string() }],
    };
    // every card charge's refunds at the provider against the ledger's
    let (refund_differences, compared) = provider_refunds_match(pg, fake).await;
    (summary.provider_payments_compared, summary.provider_refunds_compared) = compared;
    let provider_max = fake.max_payments_per_attempt().await;
    let count = async |sql: &str| -> u64 { pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 };
    // every paid order with a receipt address has its email claimed, now that reconcile ran
    let unclaimed = count(
        "SELECT count(*) FROM (SELECT DISTINCT tenant_id, order_id FROM charges WHERE receipt_email IS NOT NULL) c \
          WHERE NOT EXISTS (SELECT 1 FROM emails m WHERE m.tenant_id = c.tenant_id AND m.order_id = c.order_id)",
    )
    .await;
    // and the mail sink holds each order's email at most once, every email
    // marked sent exactly once
    let delivered = delivered_by_message_id(email_dir);
    let sent: Vec<(uuid::Uuid, String)> = pg
        .query("SELECT tenant_id, order_id FROM emails WHERE status = 'sent'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let message_id = |tenant, order: &str| workers::email::message_id(tenant, order, &config.email_from).unwrap();
    let missing = sent.iter().filter(|(t, o)| !delivered.contains_key(&message_id(*t, o))).count();
    let twice: Vec<String> = delivered.iter().filter(|(_, n)| **n > 1).map(|(id, n)| format!("{id} ×{n}")).collect();
    // a declined card leaves its charge, declined; the next attempt pays
    let charges = count("SELECT count(*) FROM charges WHERE status = 'succeeded'").await;
    let refunds = count("SELECT count(*) FROM refunds").await;
    // each refund posted one transaction, and each failed one one reversal (it moved no money)
    let refund_transactions = count("SELECT count(*) FROM ledger_transactions WHERE kind = 'refund'").await;
    let reversals = count("SELECT count(*) FROM ledger_transactions WHERE kind = 'refund_reversal'").await;
    let failed = count("SELECT count(*) FROM refunds WHERE status = 'failed'").await;
    summary.refunds_failed = failed;
    summary.refunds_provider_error = count(
        "SELECT count(*) FROM refunds r JOIN card_refunds q ON q.refund_id = r.id \
          WHERE r.status = 'failed' AND q.failure_code = 'provider_error'",
    )
    .await;

    summary.emails_lost = reconciled.len() as u64;
    summary.emails_recovered = reconciled.iter().filter(|r| r.sent).count() as u64;
    let unknown: Vec<_> = reconciled.iter().filter(|r| r.lost.state == ledger::emails::Unsent::Claimed).collect();
    summary.emails_unknown = unknown.len() as u64;
    summary.emails_unknown_delivered = unknown.iter().filter(|r| delivered.contains_key(&r.message_id)).count() as u64;
    summary.provider_max_payments_per_attempt = provider_max;
    let violations = &mut summary.violations;
    for v in report.violations {
        violations.push(format!("VIOLATION {}: {}", v.invariant, v.row));
    }
    for d in differences {
        violations.push(format!("VIOLATION reconcile_payments: {} {}", d.kind, d.detail));
    }
    if provider_max > 1 {
        violations.push(format!(
            "VIOLATION provider_one_payment_per_attempt: the provider holds {provider_max} payments for one order attempt"
        ));
    }
    violations.extend(refund_differences);
    if (charges, refunds) != (summary.charged, summary.refunded) {
        violations.push(format!(
            "VIOLATION one_effect_per_purchase: {charges} charge(s) and {refunds} refund(s) for {} and {} asked",
            summary.charged, summary.refunded
        ));
    }
    if (refund_transactions, reversals) != (refunds, failed) {
        violations.push(format!(
            "VIOLATION one_effect_per_purchase: {refund_transactions} refund transaction(s) for {refunds} refund(s), \
             {reversals} reversal(s) for {failed} failed refund(s)"
        ));
    }
    if unclaimed > 0 {
        violations.push(format!(
            "VIOLATION email_exactly_once_after_reconcile: {unclaimed} paid order(s) whose email was never sent"
        ));
    }
    if missing > 0 {
        violations.push(format!(
            "VIOLATION email_exactly_once_after_reconcile: {missing} email(s) marked sent, not delivered"
        ));
    }
    if !twice.is_empty() {
        violations.push(format!("VIOLATION email_at_most_once_delivered: {}", twice.join(", ")));
    }
}

/// Every card charge's refunds at the provider against the ledger, once
/// quiesced, as violations: each payment's `amount_refunded` is its
/// charge's `refunded_amount` (a payment the ledger has no succeeded charge
/// for refunded nothing), and the provider made at most one refund per
/// (charge, reference), every one of them carrying both. Also returns how
/// many payments and refunds it compared.
async fn provider_refunds_match(
    pg: &tokio_postgres::Client,
    fake: &crate::provider::FakeProvider,
) -> (Vec<String>, (u64, u64)) {
    // the campaign charges USD: minor units are cents
    let rows = pg
        .query(
            "SELECT k.provider_payment_id, c.id::text, c.order_id, (c.refunded_amount * 100)::int8 \
               FROM charges c JOIN card_charges k ON k.charge_id = c.id \
              WHERE c.status = 'succeeded' AND k.provider_payment_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let mut ledger: BTreeMap<String, (String, String, i64)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect();
    let (mut out, mut compared) = (Vec::new(), (0, 0));
    for payment in fake.payments().await {
        compared.0 += 1;
        let id = payment["id"].as_str().unwrap_or_default().to_owned();
        let at_provider = payment["amount_refunded"].as_i64().unwrap_or(0);
        let order = payment["metadata"]["order_id"].as_str().unwrap_or("-").to_owned();
        let (charge, in_ledger) = match ledger.remove(&id) {
            Some((charge, _, refunded)) => (charge, refunded),
            None => ("-".to_owned(), 0),
        };
        if at_provider != in_ledger {
            out.push(format!(
                "VIOLATION provider_refunds_match_ledger: payment {id} (order {order}, charge {charge}) has \
                 {at_provider} cent(s) refunded at the provider, {in_ledger} in the ledger"
            ));
        }
        if payment["status"] != "succeeded" {
            continue;
        }
        let mut per_reference: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for refund in fake.refunds_of_payment(&id).await {
            compared.1 += 1;
            let (Some(c), Some(r)) = (refund.metadata.get("charge_id"), refund.metadata.get("reference")) else {
                out.push(format!(
                    "VIOLATION provider_one_refund_per_reference: refund {} of payment {id} (order {order}) \
                     names no charge and reference: {:?}",
                    refund.id, refund.metadata
                ));
                continue;
            };
            per_reference.entry((c.clone(), r.clone())).or_default().push(format!("{} {:?}", refund.id, refund.status));
        }
        for ((c, r), made) in per_reference.into_iter().filter(|(_, made)| made.len() > 1) {
            out.push(format!(
                "VIOLATION provider_one_refund_per_reference: charge {c} reference {r} has {} refunds at the \
                 provider (payment {id}): {}",
                made.len(),
                made.join(", ")
            ));
        }
    }
    // a succeeded card charge whose payment the provider does not list
    // (reconcile-payments says so too) refunded nothing there
    for (payment, (charge, order, refunded)) in ledger.into_iter().filter(|(_, (_, _, refunded))| *refunded != 0) {
        out.push(format!(
            "VIOLATION provider_refunds_match_ledger: charge {charge} (order {order}) has {refunded} cent(s) refunded \
             in the ledger, its payment {payment} is not at the provider"
        ));
    }
    (out, compared)
}

/// How many emails the file transport wrote for each Message-ID.
pub(crate) fn delivered_by_message_id(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let id = text.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("message-id").then(|| value.trim().to_owned())
        });
        if let Some(id) = id {
            *out.entry(id).or_default() += 1;
        }
    }
    out
}
