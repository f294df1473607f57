//! Purchases through the real `ledger-api` process and the real worker
//! processes (relay, inventory, email) while a test stops PostgreSQL or
//! RabbitMQ itself. Storefront clients retry every request with the same
//! Idempotency-Key until it gets a final answer, as a careful client would,
//! and record what each order ended with; `Stack::check` then asserts what an
//! outage must leave behind: nothing dead-lettered, every paid order's
//! reservation committed once, one email per paid order (the SMTP sink
//! counts them), every key's retries ended in a final answer, and the real
//! `ledger-api audit --quiesced` clean.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::Child;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_process::{api_binary, post, ApiProcess};
use crate::broker::Broker;
use crate::smtp::SmtpServer;
use crate::{eventually, spawn_worker_process, TestDb};

/// How long one key may be retried before the test calls it stuck: longer
/// than any outage a test causes plus the service's recovery.
pub const KEY_DEADLINE: Duration = Duration::from_secs(150);
/// Between a client's purchases: a steady trickle, not a load test.
const PAUSE: Duration = Duration::from_millis(250);

/// A worker process, killed when dropped however the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The database, the broker's names, the mail sink, one API process and the
/// three workers, with a store set up through the API: a funded buyer per
/// client, a seller and a SKU with plenty of stock.
pub struct Stack {
    pub db: TestDb,
    pub broker: Broker,
    pub smtp: SmtpServer,
    pub api: ApiProcess,
    pub config: workers::config::Config,
    workers: Vec<Proc>,
    pub key: String,
    buyers: Vec<String>,
    seller: String,
}

/// What every client saw: each order's final answers, and every answer that
/// asked for a retry, by status and code.
#[derive(Debug, Default)]
pub struct Log {
    pub purchases: u64,
    /// Orders whose charge succeeded (201, or 200 for a natural-key replay).
    pub paid: Vec<String>,
    /// Orders whose hold was declined (out of stock; never expected here).
    pub declined: Vec<String>,
    pub requests: u64,
    /// Answers or failures that made the client retry, e.g.
    /// `503 service_unavailable`, `connection failed`.
    pub retried: BTreeMap<String, u64>,
    /// The longest any key took from its first try to its final answer.
    pub longest_key: Duration,
    /// Keys that never got a final answer within `KEY_DEADLINE`.
    pub stuck: Vec<String>,
    /// Final answers that are neither a success nor a decline.
    pub unexpected: Vec<String>,
}

impl Stack {
    /// Starts everything on `db`, with the broker names `broker` (on the
    /// machine's RabbitMQ or a private node).
    pub async fn start(db: TestDb, broker: Broker, clients: usize) -> Stack {
        let smtp = SmtpServer::start().await;
        let mut config = workers::config::Config::local(&db.worker_url, &broker.prefix);
        config.amqp_url = broker.url.clone();
        config.smtp_url = Some(smtp.url.clone());
        config.relay_poll_ms = 100;
        // the default limit: an outage must not spend it
        config.delivery_limit = 5;
        // the rate limit is not what these tests are about; clients retrying through an outage would meet it
        let api = ApiProcess::start(&db.url, &[("RATE_LIMIT_PER_SEC", "100000"), ("RATE_LIMIT_BURST", "100000")]).await;
        let key = {
            let mut conn = ledger::tenants::connect(&db.url).await.unwrap();
            ledger::tenants::create_with_key(&mut conn, "outage").await.unwrap().1
        };
        let workers =
            ["relay", "inventory", "email"].iter().map(|r| Proc(spawn_worker_process(&config, r, None))).collect();
        let mut stack =
            Stack { db, broker, smtp, api, config, workers, key, buyers: Vec::new(), seller: String::new() };
        let ext = stack
            .setup("/v1/accounts", "acct:ext", json!({"reference": "ext", "currency": "USD", "allow_negative": true}))
            .await;
        stack.seller =
            stack.setup("/v1/accounts", "acct:seller", json!({"reference": "seller", "currency": "USD"})).await;
        for n in 0..clients {
            let buyer = stack
                .setup(
                    "/v1/accounts",
                    &format!("acct:buyer-{n}"),
                    json!({"reference": format!("buyer-{n}"), "currency": "USD"}),
                )
                .await;
            let fund = json!({"source_account_id": ext, "destination_account_id": buyer, "amount": "1000000.00", "currency": "USD"});
            stack.setup("/v1/transfers", &format!("fund:{n}"), fund).await;
            stack.buyers.push(buyer);
        }
        stack.setup("/v1/skus/mug/restocks", "restock", json!({"quantity": 1_000_000})).await;
        // the relay declares the queues on connecting; a purchase before that would find none
        let names = stack.broker.names.clone();
        eventually(60, "the workers declared their queues", || async {
            stack.broker.exists(&names.inventory).await && stack.broker.exists(&names.email).await
        })
        .await;
        stack
    }

    async fn setup(&self, path: &str, idem: &str, body: Value) -> String {
        let r = post(&self.api.url(path), &self.key, idem, &body, Duration::from_secs(10)).await.unwrap();
        assert!(r.status.is_success(), "{path}: {r:?}");
        r.body["id"].as_str().map(str::to_owned).unwrap_or_default()
    }

    /// Runs `clients` storefront clients, purchase after purchase, until
    /// `until`; each purchase started before then is carried to its final
    /// answer; `Clients::finish` returns their log once every client is done.
    pub fn clients(&self, until: Instant) -> Clients {
        let log = Rc::new(RefCell::new(Log::default()));
        let handles = (0..self.buyers.len())
            .map(|n| {
                let client = Client {
                    url: self.api.url(""),
                    key: self.key.clone(),
                    buyer: self.buyers[n].clone(),
                    seller: self.seller.clone(),
                    log: log.clone(),
                };
                actix_web::rt::spawn(client.run(n, until))
            })
            .collect();
        Clients { log, handles }
    }

    /// Waits until the pipeline settled, then asserts what an outage must
    /// leave behind, and prints the figures.
    pub async fn check(&self, log: &Log, what: &str) {
        eprintln!(
            "{what}: {} purchases, {} paid, {} requests, retried {:?}, longest key {:?}",
            log.purchases,
            log.paid.len(),
            log.requests,
            log.retried,
            log.longest_key
        );
        assert!(log.stuck.is_empty(), "keys with no final answer within {KEY_DEADLINE:?}: {:?}", log.stuck);
        assert!(log.unexpected.is_empty(), "unexpected final answers: {:?}", log.unexpected);
        assert!(log.declined.is_empty(), "declined holds: {:?}", log.declined);
        assert!(!log.paid.is_empty(), "no purchase went through");
        let client = self.db.client().await;
        let scalar = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        // settled: every event published, both queues empty, nothing unacknowledged
        let names = &self.broker.names;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let state = (
                scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await,
                self.broker.counts(&names.inventory).await,
                self.broker.counts(&names.email).await,
                scalar("SELECT count(*) FROM reservations WHERE status = 'held'").await,
            );
            if state.0 == 0 && state.1 .0 == 0 && state.2 .0 == 0 && state.3 == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the pipeline did not settle: (unpublished events, (inventory ready, consumers), \
                 (email ready, consumers), held reservations) = {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(self.broker.depth(&names.dead_letter_queue).await, 0, "{what}: something was dead-lettered");
        let paid = log.paid.len() as i64;
        assert_eq!(scalar("SELECT count(*) FROM charges").await, paid, "{what}: one charge per paid order");
        assert_eq!(
            scalar("SELECT count(*) FROM reservations WHERE status = 'committed'").await,
            paid,
            "{what}: every paid order's reservation committed"
        );
        assert_eq!(
            scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await,
            paid,
            "{what}: each committed once"
        );
        // one email per paid order, counted by the SMTP server that received them
        eventually(60, "every paid order's email arrives", || async { self.smtp.mails().len() as i64 >= paid }).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut received: BTreeMap<String, u64> = BTreeMap::new();
        for mail in self.smtp.mails() {
            for to in mail.to {
                *received.entry(to).or_default() += 1;
            }
        }
        let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{what}: emails received more than once: {twice:?}");
        for order in &log.paid {
            assert_eq!(received.get(&format!("{order}@example.com")), Some(&1), "{what}: {order}'s email");
        }
        assert_eq!(received.len() as i64, paid, "{what}: an email for an order not paid");
        // the real audit command
        let out = tokio::task::spawn_blocking({
            let url = self.db.url.clone();
            move || {
                std::process::Command::new(api_binary())
                    .args(["audit", "--quiesced"])
                    .env("DATABASE_URL", url)
                    .output()
                    .expect("ledger-api audit runs")
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{what}: audit --quiesced: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether every worker process still runs (none gave up during the outage).
    pub fn workers_alive(&mut self) -> bool {
        self.workers.iter_mut().all(|w| matches!(w.0.try_wait(), Ok(None)))
    }
}

/// The running clients.
pub struct Clients {
    log: Rc<RefCell<Log>>,
    handles: Vec<actix_web::rt::task::JoinHandle<()>>,
}

impl Clients {
    /// Waits for every client to finish its last purchase; their log.
    pub async fn finish(self) -> Log {
        for h in self.handles {
            h.await.expect("a client finished");
        }
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

struct Client {
    url: String,
    key: String,
    buyer: String,
    seller: String,
    log: Rc<RefCell<Log>>,
}

impl Client {
    async fn run(self, n: usize, until: Instant) {
        let mut i = 0;
        while Instant::now() < until {
            i += 1;
            let order = format!("c{n}-o{i}");
            self.log.borrow_mut().purchases += 1;
            let hold = json!({"order_id": order, "sku": "mug", "quantity": 1});
            let Some((status, _)) = self.request(&format!("{order}:hold"), "/v1/reservations", &hold).await else {
                continue;
            };
            if status != 201 {
                self.log.borrow_mut().declined.push(order);
                continue;
            }
            let charge = json!({"order_id": order, "attempt": 1, "buyer_account_id": self.buyer,
                "seller_account_id": self.seller, "amount": "12.00", "currency": "USD",
                "receipt_email": format!("{order}@example.com")});
            if let Some((status, answer)) = self.request(&format!("{order}:charge"), "/v1/charges", &charge).await {
                if status == 201 || status == 200 {
                    self.log.borrow_mut().paid.push(order);
                } else {
                    self.log.borrow_mut().unexpected.push(format!("charge {order}: {status} {answer}"));
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// One request retried with the same key until a final answer: anything
    /// but a connection failure, a 5xx, a 429 or a 409 that asks for a retry.
    /// `None` when the key got no final answer within `KEY_DEADLINE`.
    async fn request(&self, idem: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
        let first = Instant::now();
        loop {
            self.log.borrow_mut().requests += 1;
            let why = match post(&format!("{}{path}", self.url), &self.key, idem, body, Duration::from_secs(10)).await {
                Ok(r) => {
                    let status = r.status.as_u16();
                    // a 409 to retry says so with Retry-After; without it, it is final
                    if !(status >= 500 || status == 429 || (status == 409 && r.retry_after.is_some())) {
                        let mut log = self.log.borrow_mut();
                        log.longest_key = log.longest_key.max(first.elapsed());
                        return Some((status, r.body));
                    }
                    format!("{status} {}", r.code())
                }
                Err(e) if e.contains("onnect") => "connection failed".to_owned(),
                Err(e) => format!("no answer: {e}"),
            };
            *self.log.borrow_mut().retried.entry(why).or_default() += 1;
            if first.elapsed() > KEY_DEADLINE {
                self.log.borrow_mut().stuck.push(format!("{idem} ({path})"));
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
