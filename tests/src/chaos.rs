//! The seeded fault campaign: concurrent storefront clients run whole
//! purchases against several real `ledger-api` processes and real worker
//! processes while a fault injector, driven by the same seed, SIGKILLs and
//! restarts them (sometimes armed at a crash point, so that they die there on
//! a later request or message), cuts the workers' broker connections and fires duplicate
//! requests and duplicate messages. At the end the pipeline is quiesced, lost
//! emails are reconciled and the auditor runs; any violation fails the run.
//!
//! Card purchases, and refunds of a share of them, go through the fake
//! payment provider with its random faults on; the clients retry a 202 with
//! its key until final, or sometimes walk away for the completer to finish,
//! and sometimes have the provider hold a refund `pending` or fail one later,
//! as the card network does. At the end every payment's refunds at the
//! provider are compared with its charge's in the ledger, and
//! `reconcile-payments` must be clean.
//!
//! A share of the card purchases pay with a card that wants 3-D Secure (202
//! `requires_action`): the buyer mostly authenticates (sometimes failing,
//! sometimes too late) and the storefront retries with its key until final;
//! sometimes the buyer abandons, and the completer cancels the payment past
//! the buyer's window (a short one here); after a failure or a cancellation
//! the purchase goes on with its next attempt. At the end every 3-D Secure
//! payment at the provider is `succeeded` with the one succeeded charge
//! recording it, or `canceled` / `requires_payment_method` with its charge
//! `failed`.
//!
//! The tenant's storefront has three webhook endpoints, each a receiver in
//! this process: a healthy one, a flaky one (500 to the first attempts of
//! some events) and a dead one (503, always), served by a webhooks worker
//! on a short retry schedule, killed and armed like the others. At the end
//! every event owed to a live endpoint must have been answered 2xx there
//! (repeats are counted, not faults), and the dead endpoint's must all be in
//! the delivery log as failed attempts, never as delivered.
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
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::broker::Broker;
use crate::proxy::Proxy;
pub use crate::rng::Rng;
use crate::server_faults::{self, Outages, Servers};
use crate::webhook_receiver::{Behaviour, Receiver};
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
    /// Checkouts that authorized (`"capture": false`, on a wallet or a card
    /// through the provider, its faults on): of them, those
    /// captured, voided, and left open until the end moved the clock past
    /// their deadline (voided by the expirer).
    pub authorized: u64,
    pub captured: u64,
    pub voided: u64,
    pub expired: u64,
    /// Card purchases, the cards declined (then paid with the next
    /// attempt), and the 202 `processing` answers the clients retried.
    pub card_charges: u64,
    pub cards_declined: u64,
    pub processing_answers: u64,
    /// The fake provider's own largest count of payments for one (tenant,
    /// order, attempt), and its faults applied.
    pub provider_max_payments_per_attempt: u64,
    pub provider_faults: u64,
    /// 3-D Secure: the card charges sent with a card that wants the buyer's
    /// authentication (202 `requires_action`); of them, those the buyer
    /// authenticated and that paid, those whose authentication failed (402,
    /// then the next attempt), those the buyer abandoned at
    /// `requires_action` (and of these, the purchases walked away from for
    /// good, the charge left to the completer), and authentications that
    /// came after the payment had been cancelled past its window.
    pub three_ds_payments: u64,
    pub three_ds_authenticated: u64,
    pub three_ds_failed_authentication: u64,
    pub three_ds_abandoned: u64,
    pub three_ds_walked_away: u64,
    pub three_ds_too_late: u64,
    /// The 202 `requires_action` answers asked again with their key.
    pub action_answers: u64,
    /// At the end, at the provider: the 3-D Secure payments cancelled past
    /// their window, and all its 3-D Secure payments, compared with their
    /// charges.
    pub three_ds_cancelled: u64,
    pub three_ds_compared: u64,
    /// 3-D Secure charges whose decline code is not the one their payment's
    /// end at the provider calls for (printed, not violations: the charge
    /// is `failed` and the order free either way).
    pub three_ds_notes: Vec<String>,
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
    /// Webhooks out, to the storefront's live endpoints (the healthy and
    /// the flaky one): how many they are, the deliveries owed to them (each
    /// of the tenant's events of a subscribed type, once per endpoint),
    /// those their receivers answered 2xx, and those never delivered (lost:
    /// a violation).
    pub webhooks_live_endpoints: u64,
    pub webhooks_owed: u64,
    pub webhooks_delivered: u64,
    pub webhooks_lost: u64,
    /// Requests the live receivers got for an event beyond its first
    /// (allowed: at least once), and of them those for an event the
    /// receiver had already answered 2xx (the rest retry a failed attempt).
    pub webhooks_duplicates: u64,
    pub webhooks_duplicates_after_2xx: u64,
    /// The dead endpoint's events: owed, never delivered and not lost; of
    /// them those failed for good (out of attempts) and those still being
    /// retried; and the attempts the delivery log recorded for them.
    pub webhooks_dead_owed: u64,
    pub webhooks_dead_failed: u64,
    pub webhooks_dead_retrying: u64,
    pub webhooks_dead_attempts: u64,
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
            "  authorized at checkout {} (captured {}, voided {}, left open and expired {})",
            self.authorized, self.captured, self.voided, self.expired
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
            "  3-D Secure payments {} (authenticated and paid {}, failed authentication {}, abandoned at \
             requires_action {} of which walked away {}, authenticated too late {}), cancelled past the window {}, \
             202 requires_action answers retried {}; compared with the provider: {} payments",
            self.three_ds_payments,
            self.three_ds_authenticated,
            self.three_ds_failed_authentication,
            self.three_ds_abandoned,
            self.three_ds_walked_away,
            self.three_ds_too_late,
            self.three_ds_cancelled,
            self.action_answers,
            self.three_ds_compared
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
        writeln!(
            f,
            "  webhooks owed {} (to {} live endpoints), delivered {}, lost {}, duplicates {} (after a 2xx {}); \
             dead endpoint: owed {}, failed {}, still retried {}, attempts logged {}",
            self.webhooks_owed,
            self.webhooks_live_endpoints,
            self.webhooks_delivered,
            self.webhooks_lost,
            self.webhooks_duplicates,
            self.webhooks_duplicates_after_2xx,
            self.webhooks_dead_owed,
            self.webhooks_dead_failed,
            self.webhooks_dead_retrying,
            self.webhooks_dead_attempts
        )?;
        for n in &self.three_ds_notes {
            writeln!(f, "  NOTE 3-D Secure decline code: {n}")?;
        }
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
        // the campaign's webhook receivers listen on loopback
        .env("WEBHOOK_ALLOW_PRIVATE", "true")
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
/// card charge still `processing` or waiting for the buyer's authentication,
/// a card refund still `pending`), against any API process.
pub(crate) async fn request(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    send(shared, rng, key, idem, path, body, Until::Final).await
}

/// Which answer a client stops retrying at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// A final one: every 202 is asked again with its key.
    Final,
    /// The first 202 too (returned as it is): what is in flight is left to
    /// the completer (or a webhook).
    Accepted,
    /// A 202 `requires_action` too (the buyer must authenticate a card
    /// payment first); a 202 `processing` is asked again.
    Action,
}

/// [`request`], stopping at the answers `until` names.
async fn send(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    path: &str,
    body: &Value,
    until: Until,
) -> (u16, Value) {
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = false;
    // the last answer, for the message when none is final in time
    let mut last = None;
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
                last = Some(format!("{status} {answer}"));
                attempt.status = Some(status);
                attempt.code = answer["code"].as_str().map(str::to_owned);
                // a fault is never the client's nor a bug's: 503 or 409 to retry, never a 500
                if status == 500 {
                    shared.borrow_mut().summary.violations.push(format!("VIOLATION no_500: {path} {idem}: {answer}"));
                }
                // a 409 with Retry-After (contention, a key in use) is retried;
                // without it (a natural key, a rule, the charge's state) it is final
                let to_retry = status == 409 && attempt.retry_after;
                // a card charge still `processing` (202), or a card refund still
                // `pending`, is asked again with its key for its final answer
                let action = status == 202 && answer["status"] == "requires_action";
                if (status == 202 && until == Until::Accepted) || (action && until == Until::Action) {
                    record(shared, attempt);
                    return (status, answer);
                }
                if status == 202 {
                    let mut s = shared.borrow_mut();
                    match (path.ends_with("/refunds"), action) {
                        (true, _) => s.summary.refund_pending_answers += 1,
                        (false, true) => s.summary.action_answers += 1,
                        (false, false) => s.summary.processing_answers += 1,
                    }
                }
                let retry = status >= 500 || status == 429 || status == 202 || to_retry;
                if !retry {
                    record(shared, attempt);
                    return (status, answer);
                }
            }
        }
        failed |= attempt.status.is_none_or(|s| s >= 500);
        record(shared, attempt);
        assert!(
            Instant::now() < deadline,
            "{path} with key {idem} never got a final answer (the last: {})",
            last.as_deref().unwrap_or("none")
        );
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
        let mut card = rng.chance(40);
        // a card payment the buyer authenticated (3-D Secure), already paid
        let mut paid = None;
        if card {
            shared.borrow_mut().summary.card_charges += 1;
            let body = charge_body.as_object_mut().unwrap();
            body.remove("buyer_account_id");
            // where the campaign holds the provider's admin (the buyer's
            // browser goes through the challenge there), some cards want 3-D Secure
            let three_ds = match store.provider.get() {
                Some(url) if rng.chance(THREE_DS_SHARE) => Some(url.clone()),
                _ => None,
            };
            if let Some(url) = three_ds {
                body.insert("payment_method".into(), json!(THREE_DS_CARD));
                match three_d_secure(&shared, &mut rng, &store.key, &url, &order, &charge_key, &charge_body).await {
                    Authentication::Paid(status, answer) => paid = Some((status, answer)),
                    // the attempt is over: the next one, with a card that
                    // needs no authentication or from the buyer's wallet
                    Authentication::Over => {
                        charge_body["attempt"] = json!(2);
                        charge_key = format!("{order}:charge:2");
                        if rng.chance(30) {
                            card = false;
                            let body = charge_body.as_object_mut().unwrap();
                            body.remove("payment_method");
                            body.insert("buyer_account_id".into(), json!(buyer));
                        }
                    }
                    // the buyer left the checkout: the hold stays, the
                    // charge is the completer's to cancel past its window
                    Authentication::WalkedAway | Authentication::Unexpected => continue,
                }
            } else if rng.chance(10) {
                // a declined card first: a stored 402, then the next attempt with a good card
                body.insert("payment_method".into(), json!("pm_card_chargeDeclined"));
                let (status, declined) =
                    request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await;
                assert_eq!(status, 402, "declined card for {order}: {declined}");
                shared.borrow_mut().summary.cards_declined += 1;
                charge_body["attempt"] = json!(2);
                charge_key = format!("{order}:charge:2");
            }
            if card && paid.is_none() {
                charge_body["payment_method"] = json!("pm_card_visa");
            }
        }
        // beside purchases charged at once, checkouts that authorize now and
        // capture (or void, or let expire) later: on a wallet, or on a card
        // (the provider holds it) that wants no authentication
        let authorize = (!card || paid.is_none()) && rng.chance(AUTHORIZE_SHARE);
        if authorize {
            charge_body["capture"] = json!(false);
            charge_body["expires_in"] = json!(600);
        }
        let (mut status, mut charge) = match paid {
            Some(answer) => answer,
            None => request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await,
        };
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
        // what the purchase took: less than it held when a capture took part of it
        let mut taken = cents;
        if authorize {
            shared.borrow_mut().summary.authorized += 1;
            let ends = rng.below(100);
            if ends >= 85 {
                // left open: the campaign's end moves the clock past its deadline
                continue;
            }
            let id = charge["id"].as_str().unwrap();
            let (path, body, end) = if ends < 60 {
                // shipped: all of it, or part (never less than the fee)
                let amount = if rng.chance(50) {
                    json!(null)
                } else {
                    taken = cents - cents / 4;
                    json!(money(taken))
                };
                (
                    format!("/v1/charges/{id}/capture"),
                    json!({"reference": format!("{order}:ship"), "amount": amount}),
                    "capture",
                )
            } else {
                (format!("/v1/charges/{id}/void"), json!({"reference": format!("{order}:cancel")}), "void")
            };
            let (status, ended) = request(&shared, &mut rng, &store.key, &format!("{order}:{end}"), &path, &body).await;
            assert_eq!(status, 200, "{end} of {order}: {ended}");
            if rng.chance(20) {
                // the same end asked again under another key: its reference finds it
                let (status, again) =
                    request(&shared, &mut rng, &store.key, &format!("{order}:{end}:again"), &path, &body).await;
                natural_key_duplicate(&shared, status == 200 && again["id"] == ended["id"], &order, &again);
            }
            if end == "void" {
                shared.borrow_mut().summary.voided += 1;
                continue;
            }
            shared.borrow_mut().summary.captured += 1;
        }
        // card refunds go through the provider, its faults on (`card_refunds`)
        if card && rng.chance(35) {
            card_refunds(&shared, &mut rng, &store, &order, &charge, taken).await;
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

/// The share of wallet purchases (percent) that authorize at checkout and
/// capture, void or expire later.
const AUTHORIZE_SHARE: u64 = 30;

/// The fake provider's card that wants 3-D Secure on every payment.
const THREE_DS_CARD: &str = "pm_card_threeDSecure2Required";

/// The share of card purchases (percent) paid with [`THREE_DS_CARD`].
const THREE_DS_SHARE: u64 = 15;

/// The buyer's window to authenticate (`GATEWAY_ACTION_WINDOW_SECS` of the
/// campaign's API and worker processes): short, so that the completer
/// cancels abandoned payments while the campaign runs.
const ACTION_WINDOW_SECS: u64 = 3;

/// The provider's key window the campaign's processes count on: shorter than
/// the fake keeps its keys (20 s), so that past it they look up, never
/// resend blindly.
const KEY_WINDOW_SECS: u64 = 15;

/// How one 3-D Secure charge attempt ended, as its client saw it.
enum Authentication {
    /// 201 or 200, `succeeded`: the buyer authenticated and was charged.
    Paid(u16, Value),
    /// 402: the attempt is over (authentication failed, the payment was
    /// cancelled past its window, or the provider never made it); the next
    /// attempt may follow.
    Over,
    /// The buyer left at `requires_action`, and the storefront with them:
    /// the purchase ends unpaid, its charge the completer's to cancel.
    WalkedAway,
    /// Anything else: a violation, already recorded.
    Unexpected,
}

/// A card charge attempt with [`THREE_DS_CARD`], as a storefront drives
/// it: sent with its key until the provider's answer (a 202
/// `requires_action`, or a 402 when the provider failed the attempt); then
/// the buyer goes through the challenge (through the fake's admin route, as
/// the buyer's browser would), mostly passing it, sometimes failing it,
/// sometimes only once the window has passed, and the storefront asks again
/// with the same key until final. Sometimes the buyer abandons the
/// challenge: the storefront asks again once the window has passed (the
/// completer cancelled the payment: 402 `authentication_required`), or has
/// walked away for good.
async fn three_d_secure(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    url: &str,
    order: &str,
    idem: &str,
    body: &Value,
) -> Authentication {
    shared.borrow_mut().summary.three_ds_payments += 1;
    let violation = |what: String| {
        shared.borrow_mut().summary.violations.push(format!("VIOLATION three_d_secure_answer: {what}"));
        Authentication::Unexpected
    };
    let (status, answer) = send(shared, rng, key, idem, "/v1/charges", body, Until::Action).await;
    match status {
        // the provider failed the attempt for good (`provider_error`): no payment
        402 if answer["code"] == "card_declined" => return Authentication::Over,
        202 => {}
        _ => return violation(format!("order {order}: the first answer is {status} {answer}")),
    }
    let Some(payment) = answer["provider_payment_id"].as_str().filter(|p| !p.is_empty()) else {
        return violation(format!("order {order}: a 202 requires_action without a payment: {answer}"));
    };
    if answer["next_action"].is_null() || !answer["client_secret"].as_str().is_some_and(|c| c.contains("_secret_")) {
        violation(format!("order {order}: a 202 requires_action without what the front end needs: {answer}"));
    }
    let window_ms = ACTION_WINDOW_SECS * 1000;
    let choice = rng.below(100);
    if choice < 20 {
        shared.borrow_mut().summary.three_ds_abandoned += 1;
        if rng.chance(40) {
            shared.borrow_mut().summary.three_ds_walked_away += 1;
            return Authentication::WalkedAway;
        }
        // the storefront asks again once the window has passed: the
        // completer (or this request) cancelled the payment
        tokio::time::sleep(Duration::from_millis(window_ms + 300 + rng.below(2000))).await;
        // (its decline code is compared at the end, with the provider's payment)
        let Some((status, answer)) = finish(shared, rng, key, idem, body).await else {
            return violation(format!("order {order}: payment {payment} still requires action long past its window"));
        };
        if status != 402 || answer["code"] != "card_declined" {
            return violation(format!("order {order}: abandoned, then answered {status} {answer}"));
        }
        return Authentication::Over;
    }
    let passes = choice >= 35;
    // the buyer takes a moment, sometimes about as long as the window
    let think = match rng.chance(10) {
        true => window_ms - 600 + rng.below(1200),
        false => rng.below(1000),
    };
    tokio::time::sleep(Duration::from_millis(think)).await;
    let result = if passes { "succeed" } else { "fail" };
    let (done, at_provider) = authenticate(url, payment, result).await;
    // 400: the payment no longer waits for the buyer (cancelled past its window)
    let late = match done {
        200 => false,
        400 => true,
        _ => return violation(format!("order {order}: authenticating {payment} answered {done} {at_provider}")),
    };
    {
        let mut s = shared.borrow_mut();
        match (late, passes) {
            (true, _) => s.summary.three_ds_too_late += 1,
            (false, false) => s.summary.three_ds_failed_authentication += 1,
            (false, true) => {}
        }
    }
    // the storefront asks again with the same key until final (the
    // provider's webhook may have finished the charge first); a decline's
    // code is compared at the end, with the provider's payment (a failure,
    // or a cancellation that read the payment before it)
    let Some((status, answer)) = finish(shared, rng, key, idem, body).await else {
        return violation(format!("order {order}: payment {payment} still requires action long past its window"));
    };
    let ok = match (late, passes, status) {
        (false, true, 200 | 201) => answer["status"] == "succeeded" && answer["provider_payment_id"] == payment,
        (false, false, 402) | (true, _, 402) => answer["code"] == "card_declined",
        _ => false,
    };
    if !ok {
        let what = if late { "too late" } else { result };
        return violation(format!(
            "order {order}: authentication {what} of {payment}, then answered {status} {answer}"
        ));
    }
    if status == 402 {
        return Authentication::Over;
    }
    shared.borrow_mut().summary.three_ds_authenticated += 1;
    Authentication::Paid(status, answer)
}

/// A 3-D Secure charge asked again with its key until final, as
/// [`request`] does, but for at most a minute past the buyer's window: a
/// payment still waiting for the buyer then (one its cancellation never
/// reached) is `None`, for the caller to record.
async fn finish(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let deadline = Instant::now() + Duration::from_secs(ACTION_WINDOW_SECS + 60);
    loop {
        let (status, answer) = send(shared, rng, key, idem, "/v1/charges", body, Until::Action).await;
        if !(status == 202 && answer["status"] == "requires_action") {
            return Some((status, answer));
        }
        if Instant::now() > deadline {
            return None;
        }
        shared.borrow_mut().summary.action_answers += 1;
        tokio::time::sleep(Duration::from_millis(200 + rng.below(300))).await;
    }
}

/// The buyer's answer to a 3-D Secure challenge (`succeed` or `fail`), as
/// the fake provider's challenge page posts it: its status (400 when the
/// payment no longer waits for it) and body.
async fn authenticate(url: &str, payment: &str, result: &str) -> (u16, Value) {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let path = format!("/_fake/payment_intents/{payment}/authenticate");
    let mut res = http
        .post(format!("{url}{path}"))
        .insert_header(("Content-Type", "application/json"))
        .send_body(json!({ "result": result }).to_string())
        .await
        .unwrap_or_else(|e| panic!("the fake provider answers {path}: {e}"));
    let bytes = res.body().limit(1 << 20).await.unwrap();
    (res.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// What one card refund came to, as its client saw it.
enum Refunded {
    /// 201 (or 200): the refund, `succeeded`.
    Succeeded(Value),
    /// 402 `refund_failed`: the provider failed it (or never made it) and
    /// the ledger undid it. Final.
    Failed(Value),
    /// A 202 the client walked away from: the refund, `pending`, for the
    /// completer (or a webhook) to finish; `true` when it may still be held
    /// at the provider until the end of the campaign (a held refund its
    /// client did not find there).
    Abandoned(Value, bool),
    /// 409 `refund_exceeds_charge`: nothing left to refund, no refund made.
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
    // (not while the provider may hold it until the end: it would wait until then)
    if rng.chance(20) && !matches!(first, Refunded::Abandoned(_, true)) {
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
            Refunded::Abandoned(r, _) => {
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
    let until = if held || abandon { Until::Accepted } else { Until::Final };
    let (mut status, mut answer) = send(shared, rng, &store.key, &reference, &path, &body, until).await;
    let mut unsettled = false;
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
            // (`error_before_charge`)
            tokio::time::sleep(Duration::from_millis(200)).await;
            made = provider_refund(url, payment, charge_id, &reference).await;
        }
        // not found: walked away from, whatever `abandon` said (the
        // completer fails a refund never made; one made late and held, the
        // campaign settles at its end)
        unsettled = made.is_none();
        if let Some(re) = made.filter(|r| r.status == gateway::RefundStatus::Pending) {
            tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
            let fate = if rng.chance(70) { "succeed" } else { "fail" };
            fake_admin(url, "POST", &format!("/refunds/{}/{fate}", re.id), json!({})).await;
            shared.borrow_mut().summary.refunds_held += 1;
        }
        if !abandon && !unsettled {
            shared.borrow_mut().summary.refund_pending_answers += 1;
            (status, answer) = request(shared, rng, &store.key, &reference, &path, &body).await;
        }
    }
    let code = answer["code"].as_str().unwrap_or_default().to_owned();
    let ended = match (status, code.as_str()) {
        (201 | 200, _) if answer["status"] == "succeeded" => Refunded::Succeeded(answer.clone()),
        (402, "refund_failed") => Refunded::Failed(answer.clone()),
        (202, _) if answer["status"] == "pending" => Refunded::Abandoned(answer.clone(), unsettled),
        (409, "refund_exceeds_charge") if n > 1 && amount.is_none() => Refunded::Exceeded,
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
        if matches!(ended, Refunded::Succeeded(_) | Refunded::Failed(_) | Refunded::Abandoned(..)) {
            // one refund row each, a failed one included (it moved no money)
            s.summary.refunded += 1;
        }
        if matches!(ended, Refunded::Abandoned(..)) {
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
        // The provider forgets a key after 20 s and the service counts on 15:
        // an answer lost for longer (a server down, a process killed) is
        // looked up by listing before anything is sent again.
        "--idempotency-ttl-secs",
        "20",
    ]);
    fake.configure(&mut config.gateway);
    config.gateway.gateway_key_window_secs = KEY_WINDOW_SECS;
    config.gateway.card_lease_secs = 2;
    config.gateway.gateway_timeout_ms = 3000;
    config.gateway.gateway_search_lag_secs = 2;
    config.gateway.gateway_action_window_secs = ACTION_WINDOW_SECS;
    config.completer_poll_ms = 200;
    // webhooks on a retry schedule of seconds, so that the flaky endpoint's
    // events are delivered and the dead one's fail while the campaign runs;
    // scans large enough to keep up with the campaign's events (a scan takes
    // at most `per_endpoint` of any one endpoint, and looks at the 4 ×
    // `concurrency` deliveries due first); and the dead endpoint never
    // disabled, so that its events stay owed to it
    config.webhook_poll_ms = 100;
    config.webhook_timeout_ms = WEBHOOK_TIMEOUT_MS;
    config.webhook_schedule = WEBHOOK_SCHEDULE.to_owned();
    config.webhook_per_endpoint = 16;
    config.webhook_concurrency = 48;
    config.webhook_disable_after_secs = 86_400;
    config.webhook_allow_private = true;
    let mut provider = fake.env();
    provider.push(("CARD_LEASE_SECS", "2".to_owned()));
    provider.push(("GATEWAY_TIMEOUT_MS", "3000".to_owned()));
    provider.push(("GATEWAY_SEARCH_LAG_SECS", "2".to_owned()));
    provider.push(("GATEWAY_ACTION_WINDOW_SECS", ACTION_WINDOW_SECS.to_string()));
    provider.push(("GATEWAY_KEY_WINDOW_SECS", KEY_WINDOW_SECS.to_string()));
    let provider = provider;

    let mut apis = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..settings.apis {
        let port = free_port();
        apis.push(serve(&db.api_url, port, None, &provider).await);
        ports.push(port);
    }
    fake.set_webhook_endpoint(&format!("http://127.0.0.1:{}/v1/provider/webhooks", ports[0])).await;
    let roles = ["relay", "inventory", "email", "completer", "expirer", "webhooks"];
    let points = [
        "relay-after-publish",
        "inventory-after-commit",
        "email-after-ack",
        "completer-after-provider",
        "expirer-after-void",
        "webhooks-after-send",
    ];
    let mut workers: Vec<Proc> = roles.iter().map(|r| Proc(spawn_worker_process(&config, r, None))).collect();
    // which processes were restarted armed at a crash point
    let mut api_armed = vec![false; apis.len()];
    let mut worker_armed = vec![false; workers.len()];
    let shared = Rc::new(RefCell::new(Shared { ports: ports.clone(), summary: Summary::default(), attempts: None }));
    shared.borrow_mut().summary.seed = settings.seed;

    // the storefront's webhook endpoints, registered before the tenant has
    // any event, so that each is owed every event of the types it subscribes to
    let (_, key) = new_tenant(&db.url, "chaos").await;
    let hooks = register_hooks(&shared, &rng, &key, settings.seed).await;
    // the store: accounts funded from an external account, stock on a few SKUs
    let store = stock_store(&shared, &rng, key, settings.clients).await;
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

    // a week passes for the checkouts left open: the expirer voids them
    shared.borrow_mut().summary.expired += expire_open_authorizations(&db.client().await).await;

    // the provider's last webhooks delivered (a refund the card network
    // failed late is undone in the ledger by its webhook), then quiesce:
    // everything relayed and consumed, however long a loaded machine takes
    webhooks_delivered(&fake).await;
    let pg = db.client().await;
    match quiesce(&pg, &broker).await {
        Ok(took) => eprintln!("chaos: the pipeline drained the campaign's backlog in {:.0} s", took.as_secs_f64()),
        Err(stuck) => panic!(
            "{stuck}{}\n{}",
            cancels_of_stuck_payments(&pg, &config, &fake).await,
            server_faults::describe(servers.as_deref(), &broker).await
        ),
    }
    let mut summary = std::mem::take(&mut shared.borrow_mut().summary);
    settle(&pg, &config, &fake, &email_dir, started, &mut summary).await;
    webhooks_settle(&pg, &hooks, &mut summary).await;
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

/// Moves every open authorization's deadline into the past (the clock of a
/// week later) and waits for the expirer to void them all; returns how many.
pub(crate) async fn expire_open_authorizations(pg: &tokio_postgres::Client) -> u64 {
    let moved = pg
        .execute(
            "UPDATE charge_authorizations h SET expires_at = now() - interval '1 second' FROM charges c \
              WHERE c.id = h.charge_id AND c.status = 'authorized'",
            &[],
        )
        .await
        .unwrap();
    crate::eventually(120, "the expirer voids every authorization past its deadline", || async {
        let open: i64 =
            pg.query_one("SELECT count(*) FROM charges WHERE status = 'authorized'", &[]).await.unwrap().get(0);
        open == 0
    })
    .await;
    moved
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
    let (_, key) = new_tenant(db_url, name).await;
    stock_store(shared, rng, key, clients).await
}

/// A tenant named `name` made on `db_url`: its id and API key.
async fn new_tenant(db_url: &str, name: &str) -> (uuid::Uuid, String) {
    let mut conn = ledger::tenants::connect(db_url).await.unwrap();
    let (tenant, key) = ledger::tenants::create_with_key(&mut conn, name).await.unwrap();
    (tenant.id, key)
}

/// The store of the tenant whose API key is `key`, as [`open_store`] makes it.
async fn stock_store(shared: &Rc<RefCell<Shared>>, rng: &Rng, key: String, clients: usize) -> Rc<Store> {
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
/// consumed, no card charge `processing` or `requires_action` (the
/// completer cancels one past its window) and no card refund `pending`;
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
        let processing: i64 = pg
            .query_one("SELECT count(*) FROM charges WHERE status IN ('processing', 'requires_action')", &[])
            .await
            .unwrap()
            .get(0);
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
            // the charges still in flight, for the report
            let stuck: Vec<String> = pg
                .query(
                    "SELECT jsonb_build_object('charge_id', c.id, 'order_id', c.order_id, 'attempt', c.attempt, \
                            'status', c.status, 'payment_method', k.payment_method, \
                            'provider_payment_id', k.provider_payment_id, 'first_sent_at', k.first_sent_at, \
                            'lease_until', k.lease_until, 'now', now())::text \
                       FROM charges c JOIN card_charges k ON k.charge_id = c.id \
                      WHERE c.status IN ('processing', 'requires_action') ORDER BY c.id LIMIT 20",
                    &[],
                )
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            return Err(format!(
                "the pipeline stopped moving: {unpublished} unpublished, {depth} queued, {processing} charge(s) \
                 processing or requires_action, {pending} refund(s) pending, none drained for 120 s{}",
                stuck.iter().map(|c| format!("\n  {c}")).collect::<String>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// For a report when quiescing failed: what the provider answers the
/// cancellation of each payment still waiting for its buyer past the
/// window, under the key the service derives for it (the provider replays
/// a result stored for the key; one never stored is the cancel made now).
async fn cancels_of_stuck_payments(
    pg: &tokio_postgres::Client,
    config: &workers::config::Config,
    fake: &crate::provider::FakeProvider,
) -> String {
    let rows = pg
        .query(
            "SELECT c.tenant_id, c.id, k.provider_payment_id FROM charges c JOIN card_charges k ON k.charge_id = c.id \
              WHERE c.status = 'requires_action' AND k.provider_payment_id IS NOT NULL ORDER BY c.id LIMIT 20",
            &[],
        )
        .await
        .unwrap_or_default();
    let client = crate::provider::api_client(fake.url());
    let secret = config.gateway.gateway_key_secret.as_bytes();
    let mut out = String::new();
    for r in rows {
        let (tenant, charge, payment): (uuid::Uuid, uuid::Uuid, String) = (r.get(0), r.get(1), r.get(2));
        let answer = client.cancel_payment(&payment, &gateway::cancel_key(secret, tenant, charge)).await;
        out.push_str(&format!("\n  charge {charge}: its cancel of {payment} answers {answer:?}"));
    }
    out
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
    let payments = service::provider::Provider::new(&config.gateway).unwrap();
    let (from, to) = (started - chrono::Duration::minutes(1), chrono::Utc::now() + chrono::Duration::minutes(1));
    // what `reconcile-payments` runs (exit 0 clean, 1 differences, 2 could not run): it must run, and be clean
    let differences = match workers::reconcile_payments::reconcile(&pool, &payments, from, to).await {
        Ok(differences) => differences,
        Err(e) => vec![workers::reconcile_payments::Difference { kind: "could_not_run", detail: e.to_string() }],
    };
    // every card charge's refunds at the provider against the ledger's
    let (refund_differences, compared) = provider_refunds_match(pg, fake).await;
    (summary.provider_payments_compared, summary.provider_refunds_compared) = compared;
    // every 3-D Secure payment at the provider against its charge
    let (three_ds_differences, three_ds_notes, (three_ds_compared, three_ds_cancelled)) =
        three_ds_payments_match(pg, fake, from.timestamp(), to.timestamp()).await;
    (summary.three_ds_notes, summary.three_ds_compared) = (three_ds_notes, three_ds_compared);
    summary.three_ds_cancelled = three_ds_cancelled;
    let provider_max = fake.max_payments_per_attempt().await;
    let count = async |sql: &str| -> u64 { pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 };
    // every paid order with a receipt address has its email claimed, now
    // that reconcile ran (an order whose every attempt failed sends none: a
    // 3-D Secure purchase walked away from)
    let unclaimed = count(
        "SELECT count(*) FROM (SELECT DISTINCT tenant_id, order_id FROM charges \
                                 WHERE receipt_email IS NOT NULL AND status = 'succeeded') c \
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
    // a charged purchase is one charge that paid, or an authorization that ended (captured: paid; voided)
    let charges = count("SELECT count(*) FROM charges WHERE status IN ('succeeded', 'voided')").await;
    let ends = [
        "SELECT count(*) FROM charge_authorizations",
        "SELECT count(*) FROM charge_authorizations WHERE captured_at IS NOT NULL",
        "SELECT count(*) FROM charge_authorizations WHERE voided_at IS NOT NULL AND void_reason = 'requested'",
        "SELECT count(*) FROM charge_authorizations WHERE voided_at IS NOT NULL AND void_reason = 'expired'",
    ];
    let mut authorizations = Vec::new();
    for sql in ends {
        authorizations.push(count(sql).await);
    }
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
    violations.extend(three_ds_differences);
    if (charges, refunds) != (summary.charged, summary.refunded) {
        violations.push(format!(
            "VIOLATION one_effect_per_purchase: {charges} charge(s) and {refunds} refund(s) for {} and {} asked",
            summary.charged, summary.refunded
        ));
    }
    let asked = [summary.authorized, summary.captured, summary.voided, summary.expired];
    if authorizations != asked {
        violations.push(format!(
            "VIOLATION one_end_per_authorization: (authorized, captured, voided, expired) {authorizations:?} in the \
             ledger for {asked:?} asked"
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

/// Every 3-D Secure payment at the provider (created in [from, to)) against
/// the ledger, once quiesced, as violations: one `succeeded` is recorded by
/// exactly one succeeded charge, the one its metadata names; one `canceled`
/// (past its window) or `requires_payment_method` (authentication failed)
/// has that charge `failed` and no succeeded one; none is still waiting for
/// the buyer. A cancelled payment's charge records `authentication_required`
/// and a failed authentication's `payment_intent_authentication_failure`;
/// other codes are returned as notes. Also returns how many payments it
/// compared, and how many of them were `canceled`.
async fn three_ds_payments_match(
    pg: &tokio_postgres::Client,
    fake: &crate::provider::FakeProvider,
    from: i64,
    to: i64,
) -> (Vec<String>, Vec<String>, (u64, u64)) {
    let listed = crate::provider::api_client(fake.url())
        .list_all_payments(from, to)
        .await
        .unwrap_or_else(|e| panic!("the provider's payments: {e}"));
    let (mut out, mut notes, mut compared, mut cancelled) = (Vec::new(), Vec::new(), 0, 0);
    for payment in listed.iter().filter(|p| p.payment_method.as_deref() == Some(THREE_DS_CARD)) {
        compared += 1;
        let (id, status) = (payment.id.as_str(), payment.status);
        cancelled += u64::from(status == gateway::PaymentStatus::Canceled);
        let meta = |k: &str| payment.metadata.get(k).map_or("-", String::as_str).to_owned();
        let named = meta("charge_id");
        let where_ = format!(
            "payment {id} ({status:?}, cancellation_reason {:?}, order {}, attempt {}, charge {named})",
            payment.cancellation_reason,
            meta("order_id"),
            meta("attempt")
        );
        // the charges recording it, and the one its metadata names
        let recording: Vec<(String, String)> = pg
            .query(
                "SELECT c.id::text, c.status FROM charges c JOIN card_charges k ON k.charge_id = c.id \
                  WHERE k.provider_payment_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let charge: Option<(String, String, Option<String>)> = pg
            .query_opt(
                "SELECT c.status, coalesce(k.decline_code, ''), k.provider_payment_id \
                   FROM charges c JOIN card_charges k ON k.charge_id = c.id WHERE c.id::text = $1",
                &[&named],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1), r.get(2)));
        let succeeded = recording.iter().filter(|(_, s)| s == "succeeded").count();
        let recorded = |p: &Option<String>| p.as_deref().is_none_or(|p| p == id);
        use gateway::PaymentStatus as P;
        let wrong = match (status, &charge) {
            (P::Succeeded, Some((s, _, p))) => (succeeded != 1 || s != "succeeded" || p.as_deref() != Some(id))
                .then(|| format!("its charge is {s}, recording {p:?}")),
            (P::Canceled | P::RequiresPaymentMethod, Some((s, code, p))) => {
                let expected = match status {
                    P::Canceled => "authentication_required",
                    _ => "payment_intent_authentication_failure",
                };
                if s == "failed" && code != expected {
                    notes.push(format!("{where_}: its charge is failed with decline code `{code}`, not `{expected}`"));
                }
                (s != "failed" || succeeded > 0 || !recorded(p)).then(|| format!("its charge is {s}, recording {p:?}"))
            }
            (_, None) => Some("no charge of the ledger is the one its metadata names".to_owned()),
            (_, Some((s, _, _))) => Some(format!("it is not final at the provider; its charge is {s}")),
        };
        if let Some(wrong) = wrong {
            out.push(format!(
                "VIOLATION three_d_secure_payment_matches_charge: {where_}: {wrong}; succeeded charges recording it: \
                 {succeeded} of {recording:?}"
            ));
        }
    }
    (out, notes, (compared, cancelled))
}

/// The campaign's webhook retry schedule (`WEBHOOK_SCHEDULE`): five
/// attempts over about four seconds, so that the dead endpoint's events fail
/// for good while the campaign runs, and the flaky one's (at most
/// [`FLAKY_FAILURES`] failures each) have attempts to spare for a timeout
/// on a loaded machine. Every attempt to the dead endpoint is work for the
/// webhooks worker: a longer schedule multiplies it.
const WEBHOOK_SCHEDULE: &str = "0.2,0.5,1,2";

/// How long an endpoint has to answer an attempt (`WEBHOOK_TIMEOUT_MS`).
/// The receivers answer at once; a loaded machine still needs some slack.
/// A worker killed mid-send leaves its deliveries leased for twice this
/// and 5 s more before they are sent again.
const WEBHOOK_TIMEOUT_MS: u64 = 2000;

/// The most 500s the flaky endpoint answers one event before a 2xx.
const FLAKY_FAILURES: usize = 2;

/// How long the end waits, once quiesced, for the webhooks to settle while
/// nothing moves: past a killed worker's lease and the longest wait of the
/// schedule. While deliveries progress it waits on, however long a loaded
/// machine (or `make chaos`'s backlog) takes.
const WEBHOOK_STALL_SECS: u64 = 30;

/// One of the storefront's webhook endpoints and its receiver.
struct Hook {
    name: &'static str,
    id: uuid::Uuid,
    secret: String,
    receiver: Receiver,
    /// A live endpoint must be delivered every event owed to it; the dead
    /// one never answers 2xx.
    live: bool,
}

/// Starts the storefront's receivers and registers an endpoint of `tenant`
/// for each: a healthy one and a flaky one (its failures drawn from
/// `seed`), subscribed to every event type, and a dead one (503, always),
/// subscribed to the charges' and refunds' events only, so that what is
/// owed follows the subscription. Registered through the API, as a
/// storefront does (its requests draw from a copy of `rng`).
async fn register_hooks(shared: &Rc<RefCell<Shared>>, rng: &Rng, key: &str, seed: u64) -> Vec<Hook> {
    let mut setup = rng.clone();
    let mut hooks = Vec::new();
    for (name, behaviour, events, live) in [
        ("healthy", Behaviour::Ok, &["*"][..], true),
        ("flaky", Behaviour::FailFirstSome { most: FLAKY_FAILURES, seed }, &["*"][..], true),
        ("dead", Behaviour::Always(503), &["charge.succeeded", "charge.refunded"][..], false),
    ] {
        let receiver = Receiver::start(behaviour).await;
        let body = json!({"url": receiver.url, "enabled_events": events,
                          "description": format!("the chaos storefront, {name}")});
        let (status, made) =
            request(shared, &mut setup, key, &format!("hook:{name}"), "/v1/webhook_endpoints", &body).await;
        assert_eq!(status, 201, "the {name} endpoint: {made}");
        let id: uuid::Uuid = made["id"].as_str().unwrap().parse().unwrap();
        let secret = made["secret"].as_str().unwrap().to_owned();
        hooks.push(Hook { name, id, secret, receiver, live });
    }
    hooks
}

/// An endpoint's deliveries, as the delivery log holds them.
struct DeliveryLog {
    /// By event id: attempts recorded, delivered, failed for good.
    rows: BTreeMap<String, (i32, bool, bool)>,
    /// Rows in `webhook_attempts`, and those that recorded a 2xx.
    attempts: i64,
    attempts_2xx: i64,
}

impl DeliveryLog {
    /// Read in one statement, so that the deliveries and the attempts are
    /// of one snapshot while the worker goes on retrying.
    async fn of(pg: &tokio_postgres::Client, endpoint: uuid::Uuid) -> DeliveryLog {
        let rows = pg
            .query(
                "SELECT d.message_id::text, d.attempts, d.delivered_at IS NOT NULL, d.failed_at IS NOT NULL, a.n, a.ok \
                   FROM webhook_deliveries d \
                  CROSS JOIN (SELECT count(*) AS n, count(*) FILTER (WHERE status_code BETWEEN 200 AND 299) AS ok \
                                FROM webhook_attempts WHERE endpoint_id = $1) a \
                  WHERE d.endpoint_id = $1",
                &[&endpoint],
            )
            .await
            .unwrap();
        DeliveryLog {
            rows: rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect(),
            attempts: rows.first().map_or(0, |r| r.get(4)),
            attempts_2xx: rows.first().map_or(0, |r| r.get(5)),
        }
    }

    /// Neither delivered nor failed for good: still being retried.
    fn retrying(&self) -> usize {
        self.rows.values().filter(|(_, delivered, failed)| !delivered && !failed).count()
    }
}

/// The events owed to an endpoint: its tenant's events of the types it
/// subscribes to (of those the webhooks worker delivers).
async fn owed_to(pg: &tokio_postgres::Client, endpoint: uuid::Uuid) -> BTreeSet<String> {
    pg.query(
        "SELECT o.message_id::text FROM outbox o JOIN webhook_endpoints e ON e.tenant_id = o.tenant_id \
          WHERE e.id = $1 AND o.event_type = ANY($2) \
            AND (o.event_type = ANY(e.enabled_events) OR $3 = ANY(e.enabled_events))",
        &[&endpoint, &ledger::webhook_endpoints::EVENT_TYPES, &ledger::webhook_endpoints::ALL],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// What is left before the webhooks settle: for a live endpoint, the
/// events owed to it that its receiver has not answered 2xx and that did
/// not run out of attempts, and its deliveries still being retried (one
/// answered 2xx whose record a killed worker never made is sent again once
/// its lease passes); for the dead one, the events owed to it without an
/// attempt in the delivery log.
async fn webhooks_left(pg: &tokio_postgres::Client, hook: &Hook) -> usize {
    let (owed, log) = (owed_to(pg, hook.id).await, DeliveryLog::of(pg, hook.id).await);
    let attempted = |id: &String| log.rows.get(id).is_some_and(|(attempts, _, _)| *attempts > 0);
    if !hook.live {
        return owed.iter().filter(|id| !attempted(id)).count();
    }
    let delivered = hook.receiver.tally(&hook.secret).delivered;
    let failed = |id: &String| log.rows.get(id).is_some_and(|(_, _, failed)| *failed);
    owed.iter().filter(|id| !delivered.contains(*id) && !failed(id)).count() + log.retrying()
}

/// Once quiesced: waits until the webhooks settle (nothing left by
/// [`webhooks_left`]), or until nothing has moved for
/// [`WEBHOOK_STALL_SECS`]; then counts, and records as violations: an event
/// owed to a live endpoint never answered 2xx there (`webhooks_none_lost`);
/// a request not signed with the endpoint's secret, or whose body is not
/// the envelope of the event its `webhook-id` names (`webhooks_signed`); a
/// request for an event not owed to the endpoint (`webhooks_only_owed`);
/// and a dead endpoint's event missing from the delivery log or without an
/// attempt there, or logged delivered, or attempts logged that do not add
/// up (`webhooks_failures_logged`).
async fn webhooks_settle(pg: &tokio_postgres::Client, hooks: &[Hook], summary: &mut Summary) {
    let started = Instant::now();
    let (mut least, mut progressed) = (usize::MAX, Instant::now());
    loop {
        let mut left = 0;
        for hook in hooks {
            left += webhooks_left(pg, hook).await;
        }
        if left == 0 {
            eprintln!("chaos: the webhooks settled {:.0} s after quiescing", started.elapsed().as_secs_f64());
            break;
        }
        if left < least {
            (least, progressed) = (left, Instant::now());
        }
        if progressed.elapsed() > Duration::from_secs(WEBHOOK_STALL_SECS) {
            eprintln!(
                "chaos: the webhooks stopped settling {:.0} s after quiescing, {left} delivery(ies) left, none \
                 for {WEBHOOK_STALL_SECS} s",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for hook in hooks {
        let (owed, log) = (owed_to(pg, hook.id).await, DeliveryLog::of(pg, hook.id).await);
        let tally = hook.receiver.tally(&hook.secret);
        let what = format!("endpoint {} ({})", hook.name, hook.id);
        let violations = &mut summary.violations;
        if !tally.bad.is_empty() {
            violations.push(format!(
                "VIOLATION webhooks_signed: {what}: {} request(s) not signed with its secret or not the envelope of \
                 the event named, e.g. {:?}",
                tally.bad.len(),
                &tally.bad[..tally.bad.len().min(5)]
            ));
        }
        let unowed: Vec<&String> = tally.seen.difference(&owed).collect();
        if !unowed.is_empty() {
            violations.push(format!(
                "VIOLATION webhooks_only_owed: {what}: {} event(s) not owed to it, e.g. {:?}",
                unowed.len(),
                &unowed[..unowed.len().min(5)]
            ));
        }
        if hook.live {
            let lost: Vec<&String> = owed.difference(&tally.delivered).collect();
            summary.webhooks_live_endpoints += 1;
            summary.webhooks_owed += owed.len() as u64;
            summary.webhooks_delivered += owed.intersection(&tally.delivered).count() as u64;
            summary.webhooks_lost += lost.len() as u64;
            summary.webhooks_duplicates += tally.repeats;
            summary.webhooks_duplicates_after_2xx += tally.after_delivered;
            if !lost.is_empty() {
                // each with what the receiver and the delivery log say of it
                let got = hook.receiver.got();
                let examples: Vec<String> = lost
                    .iter()
                    .take(5)
                    .map(|id| {
                        let seen = got.iter().filter(|r| &&r.id == id).count();
                        let row =
                            log.rows.get(*id).map_or("no delivery".to_owned(), |(attempts, delivered, failed)| {
                                format!("{attempts} attempt(s) logged, delivered {delivered}, failed {failed}")
                            });
                        format!("{id}: {seen} request(s) received, {row}")
                    })
                    .collect();
                violations.push(format!(
                    "VIOLATION webhooks_none_lost: {what}: {} of {} event(s) owed never answered 2xx: {}",
                    lost.len(),
                    owed.len(),
                    examples.join("; ")
                ));
            }
            continue;
        }
        summary.webhooks_dead_owed += owed.len() as u64;
        summary.webhooks_dead_failed += log.rows.values().filter(|(_, _, failed)| *failed).count() as u64;
        summary.webhooks_dead_retrying += log.retrying() as u64;
        summary.webhooks_dead_attempts += log.attempts as u64;
        let unlogged = owed.iter().filter(|id| log.rows.get(*id).is_none_or(|(attempts, _, _)| *attempts == 0)).count();
        let delivered = log.rows.values().filter(|(_, delivered, _)| *delivered).count();
        let counted: i64 = log.rows.values().map(|(attempts, _, _)| i64::from(*attempts)).sum();
        if unlogged > 0 || delivered > 0 || log.attempts_2xx > 0 || counted != log.attempts {
            violations.push(format!(
                "VIOLATION webhooks_failures_logged: {what}: of {} event(s) owed, {unlogged} without an attempt in \
                 the delivery log; {delivered} delivery(ies) and {} attempt(s) logged as 2xx, where it never \
                 answers one; {} attempt(s) logged for {counted} counted by its deliveries",
                owed.len(),
                log.attempts_2xx,
                log.attempts
            ));
        }
    }
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
