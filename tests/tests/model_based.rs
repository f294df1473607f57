//! The real service against a model of its contract: random sequences of
//! requests (accounts, transfers, wallet and card charges, refunds,
//! restocks, reservations),
//! with retries under the same key, reused keys with other bodies, new keys
//! for natural keys already taken, bad bodies and concurrent pairs, sent to
//! the real server on a fresh database. Each answer (status, problem code,
//! whether it was replayed) and every balance after it is compared with a
//! pure model of what the API promises; a retry of a stored answer must be
//! that answer byte for byte. A failure shrinks to a minimal sequence,
//! printed as `curl` lines.
//!
//! `make test` runs a short fixed-seed run; `make model` runs a long one
//! with a random seed, printed (`LEDGER_MODEL_CASES`, `LEDGER_MODEL_SEED`).

use std::collections::{BTreeMap, HashMap};

use awc::http::StatusCode;
use futures::future::join;
use ledger_tests::provider::FakeProvider;
use ledger_tests::{spawn_app_with, Answer, TestApp};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// The accounts every case starts with: external funds (may go negative),
/// two buyers and a seller (floors at zero).
const EXT: usize = 0;
const BUYERS: [usize; 2] = [1, 2];
const SELLER: usize = 3;
const NAMES: [&str; 4] = ["ext", "buyer-1", "buyer-2", "seller"];

/// One request of a sequence.
#[derive(Debug, Clone)]
enum Op {
    /// An account of its own (`extra-{name}`), in USD or EUR, that may go
    /// negative or not: its reference is its natural key.
    OpenAccount {
        name: u8,
        euro: bool,
        allow_negative: bool,
    },
    Transfer {
        from: usize,
        to: usize,
        cents: i64,
    },
    Charge {
        order: u8,
        attempt: u8,
        buyer: usize,
        cents: i64,
    },
    /// A card charge through the fake provider: `pm_card_visa`, or a card
    /// the provider declines.
    CardCharge {
        order: u8,
        attempt: u8,
        declined: bool,
        cents: i64,
    },
    Refund {
        order: u8,
        reference: u8,
        cents: Option<i64>,
    },
    Restock {
        sku: u8,
        qty: i64,
    },
    Reserve {
        order: u8,
        sku: u8,
        qty: i64,
    },
    /// A charge whose amount has three decimals: refused, nothing written.
    BadCharge {
        order: u8,
    },
    /// The `n`-th earlier request again, same key and body.
    Retry(usize),
    /// The `n`-th earlier request's key with another body.
    Reuse(usize),
    /// Two charges by one buyer sent at once.
    Concurrent {
        buyer: usize,
        a: (u8, i64),
        b: (u8, i64),
    },
}

fn op() -> impl Strategy<Value = Op> {
    let cents = 1i64..=4000;
    let account = 0usize..4;
    let buyer = prop::sample::select(BUYERS.to_vec());
    prop_oneof![
        1 => (0u8..3, any::<bool>(), any::<bool>())
            .prop_map(|(name, euro, allow_negative)| Op::OpenAccount { name, euro, allow_negative }),
        3 => (account.clone(), account, cents.clone()).prop_map(|(from, to, cents)| Op::Transfer { from, to, cents }),
        4 => (0u8..4, 1u8..3, buyer.clone(), cents.clone())
            .prop_map(|(order, attempt, buyer, cents)| Op::Charge { order, attempt, buyer, cents }),
        2 => (0u8..4, 1u8..3, any::<bool>(), cents.clone())
            .prop_map(|(order, attempt, declined, cents)| Op::CardCharge { order, attempt, declined, cents }),
        2 => (0u8..4, 0u8..2, prop::option::of(cents.clone()))
            .prop_map(|(order, reference, cents)| Op::Refund { order, reference, cents }),
        1 => (0u8..2, 1i64..5).prop_map(|(sku, qty)| Op::Restock { sku, qty }),
        2 => (0u8..4, 0u8..3, 1i64..4).prop_map(|(order, sku, qty)| Op::Reserve { order, sku, qty }),
        1 => (0u8..4).prop_map(|order| Op::BadCharge { order }),
        2 => (0usize..64).prop_map(Op::Retry),
        1 => (0usize..64).prop_map(Op::Reuse),
        1 => (buyer, (4u8..8, cents.clone()), (4u8..8, cents))
            .prop_map(|(buyer, a, b)| Op::Concurrent { buyer, a, b }),
    ]
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A request as sent: method path, key, body.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    path: String,
    key: String,
    body: Value,
}

impl Request {
    fn curl(&self) -> String {
        format!(
            "curl -s -X POST \"$API{}\" -H \"Authorization: Bearer $KEY\" -H 'Idempotency-Key: {}' \
             -H 'Content-Type: application/json' -d '{}'",
            self.path, self.key, self.body
        )
    }
}

/// What the model expects of an answer.
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    status: StatusCode,
    code: Option<&'static str>,
    /// Stored for its key (and replayed byte for byte from then on).
    stored: bool,
}

fn ok(status: StatusCode) -> Expect {
    Expect { status, code: None, stored: true }
}

fn refused(status: StatusCode, code: &'static str, stored: bool) -> Expect {
    Expect { status, code: Some(code), stored }
}

/// Who paid a charge: a buyer's wallet, or a card (a declined card leaves a
/// `failed` charge, which holds its order attempt but did not pay the order).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Payer {
    Wallet(usize),
    Card { declined: bool },
}

#[derive(Debug, Clone)]
struct ModelCharge {
    payer: Payer,
    cents: i64,
    refunded: i64,
    /// reference → the amount asked (`None`: all that remained)
    refunds: BTreeMap<u8, Option<i64>>,
}

/// What the API promises, in memory.
#[derive(Debug, Clone, Default)]
struct Model {
    balances: [i64; 4],
    /// (order, attempt) → its charge; a declined wallet charge writes none
    charges: BTreeMap<(u8, u8), ModelCharge>,
    /// sku → (on hand, held)
    stock: BTreeMap<u8, (i64, i64)>,
    /// (order, sku) → quantity
    reservations: BTreeMap<(u8, u8), i64>,
    /// the accounts opened by the sequence: name → (in EUR, may go negative)
    opened: BTreeMap<u8, (bool, bool)>,
}

impl Model {
    fn open_account(&mut self, name: u8, euro: bool, allow_negative: bool) -> Expect {
        match self.opened.get(&name) {
            Some(settings) if *settings == (euro, allow_negative) => ok(StatusCode::OK),
            Some(_) => refused(StatusCode::CONFLICT, "natural_key_conflict", false),
            None => {
                self.opened.insert(name, (euro, allow_negative));
                ok(StatusCode::CREATED)
            }
        }
    }

    fn transfer(&mut self, from: usize, to: usize, cents: i64) -> Expect {
        if from == to {
            return refused(StatusCode::CONFLICT, "same_account", false);
        }
        if from != EXT && self.balances[from] < cents {
            return refused(StatusCode::PAYMENT_REQUIRED, "insufficient_funds", true);
        }
        self.balances[from] -= cents;
        self.balances[to] += cents;
        ok(StatusCode::CREATED)
    }

    fn charge(&mut self, order: u8, attempt: u8, payer: Payer, cents: i64) -> Expect {
        if let Some(c) = self.charges.get(&(order, attempt)) {
            return match (c.payer == payer && c.cents == cents, c.payer) {
                (false, _) => refused(StatusCode::CONFLICT, "natural_key_conflict", false),
                (true, Payer::Card { declined: true }) => refused(StatusCode::PAYMENT_REQUIRED, "card_declined", true),
                (true, _) => ok(StatusCode::OK),
            };
        }
        if self.charges.iter().any(|((o, _), c)| *o == order && c.payer != Payer::Card { declined: true }) {
            return refused(StatusCode::CONFLICT, "order_already_charged", false);
        }
        let charge = ModelCharge { payer, cents, refunded: 0, refunds: BTreeMap::new() };
        match payer {
            Payer::Wallet(buyer) => {
                if self.balances[buyer] < cents {
                    return refused(StatusCode::PAYMENT_REQUIRED, "insufficient_funds", true);
                }
                self.balances[buyer] -= cents;
            }
            Payer::Card { declined: true } => {
                self.charges.insert((order, attempt), charge);
                return refused(StatusCode::PAYMENT_REQUIRED, "card_declined", true);
            }
            // from the provider clearing account, which no step reads
            Payer::Card { declined: false } => {}
        }
        self.balances[SELLER] += cents;
        self.charges.insert((order, attempt), charge);
        ok(StatusCode::CREATED)
    }

    /// The order's charge (an order is paid at most once).
    fn paid(&mut self, order: u8) -> Option<&mut ModelCharge> {
        self.charges
            .iter_mut()
            .find(|((o, _), c)| *o == order && c.payer != Payer::Card { declined: true })
            .map(|(_, c)| c)
    }

    fn refund(&mut self, order: u8, reference: u8, cents: Option<i64>) -> Expect {
        let seller = self.balances[SELLER];
        let Some(charge) = self.paid(order) else {
            return refused(StatusCode::NOT_FOUND, "charge_not_found", false);
        };
        if let Some(asked) = charge.refunds.get(&reference) {
            return if *asked == cents {
                ok(StatusCode::OK)
            } else {
                refused(StatusCode::CONFLICT, "natural_key_conflict", false)
            };
        }
        let remaining = charge.cents - charge.refunded;
        let amount = cents.unwrap_or(remaining);
        if amount > remaining || amount == 0 {
            return refused(StatusCode::CONFLICT, "refund_exceeds_charge", true);
        }
        if seller < amount {
            return refused(StatusCode::PAYMENT_REQUIRED, "insufficient_funds", true);
        }
        charge.refunded += amount;
        charge.refunds.insert(reference, cents);
        let payer = charge.payer;
        self.balances[SELLER] -= amount;
        if let Payer::Wallet(buyer) = payer {
            self.balances[buyer] += amount;
        }
        ok(StatusCode::CREATED)
    }

    fn restock(&mut self, sku: u8, qty: i64) -> Expect {
        self.stock.entry(sku).or_default().0 += qty;
        ok(StatusCode::CREATED)
    }

    fn reserve(&mut self, order: u8, sku: u8, qty: i64) -> Expect {
        let Some((on_hand, held)) = self.stock.get(&sku).copied() else {
            return refused(StatusCode::NOT_FOUND, "sku_not_found", false);
        };
        if let Some(q) = self.reservations.get(&(order, sku)) {
            return if *q == qty {
                ok(StatusCode::OK)
            } else {
                refused(StatusCode::CONFLICT, "natural_key_conflict", false)
            };
        }
        if on_hand - held < qty {
            return refused(StatusCode::CONFLICT, "out_of_stock", true);
        }
        self.stock.insert(sku, (on_hand, held + qty));
        self.reservations.insert((order, sku), qty);
        ok(StatusCode::CREATED)
    }
}

/// The same request with another valid body: one more cent, or one more
/// unit (a reused key must be refused, or, when it stored nothing, the new
/// body evaluated afresh).
fn other_body(mut r: Request) -> Request {
    let b = &mut r.body;
    if let Some(n) = b.get("allow_negative").and_then(Value::as_bool) {
        b["allow_negative"] = json!(!n);
    } else if let Some(q) = b.get("quantity").and_then(Value::as_i64) {
        b["quantity"] = json!(q + 1);
    } else if let Some(a) = b.get("amount").and_then(Value::as_str) {
        let d: Decimal = a.parse().unwrap();
        b["amount"] = json!((d + Decimal::new(1, 2)).to_string());
    } else {
        b["amount"] = json!("0.01");
    }
    r
}

/// A case's server, its accounts and what it has answered.
struct Run<'a> {
    app: &'a TestApp,
    key: String,
    accounts: [String; 4],
    model: Model,
    /// every request sent, in order, for `Retry`, `Reuse` and the trace
    sent: Vec<Request>,
    /// key → (body, first answer) of the stored answers
    stored: HashMap<String, (Value, Answer)>,
    /// the order id → charge id the server gave
    charge_ids: HashMap<u8, String>,
}

impl Run<'_> {
    fn fresh_key(&self) -> String {
        format!("k{}", self.sent.len())
    }

    fn charge_request(&self, key: String, order: u8, attempt: u8, buyer: usize, amount: String) -> Request {
        Request {
            path: "/v1/charges".into(),
            key,
            body: json!({"order_id": format!("o{order}"), "attempt": attempt, "buyer_account_id": self.accounts[buyer],
                         "seller_account_id": self.accounts[SELLER], "amount": amount, "currency": "USD"}),
        }
    }

    fn card_request(&self, key: String, order: u8, attempt: u8, declined: bool, amount: String) -> Request {
        let method = if declined { "pm_card_chargeDeclined" } else { "pm_card_visa" };
        Request {
            path: "/v1/charges".into(),
            key,
            body: json!({"order_id": format!("o{order}"), "attempt": attempt, "payment_method": method,
                         "seller_account_id": self.accounts[SELLER], "amount": amount, "currency": "USD"}),
        }
    }

    /// The request an op sends, and what the model expects of it (applied
    /// to `model`).
    fn plan(&self, op: &Op, model: &mut Model) -> Option<(Request, Expect)> {
        let key = self.fresh_key();
        Some(match op {
            Op::OpenAccount { name, euro, allow_negative } => (
                Request {
                    path: "/v1/accounts".into(),
                    key,
                    body: json!({"reference": format!("extra-{name}"), "currency": if *euro { "EUR" } else { "USD" },
                                 "allow_negative": allow_negative}),
                },
                model.open_account(*name, *euro, *allow_negative),
            ),
            Op::Transfer { from, to, cents } => (
                Request {
                    path: "/v1/transfers".into(),
                    key,
                    body: json!({"source_account_id": self.accounts[*from], "destination_account_id": self.accounts[*to],
                                 "amount": money(*cents), "currency": "USD"}),
                },
                model.transfer(*from, *to, *cents),
            ),
            Op::Charge { order, attempt, buyer, cents } => (
                self.charge_request(key, *order, *attempt, *buyer, money(*cents)),
                model.charge(*order, *attempt, Payer::Wallet(*buyer), *cents),
            ),
            Op::CardCharge { order, attempt, declined, cents } => (
                self.card_request(key, *order, *attempt, *declined, money(*cents)),
                model.charge(*order, *attempt, Payer::Card { declined: *declined }, *cents),
            ),
            Op::Refund { order, reference, cents } => {
                let charge = self.charge_ids.get(order).cloned().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                let mut body = json!({"reference": format!("o{order}:refund:{reference}")});
                if let Some(c) = cents {
                    body["amount"] = json!(money(*c));
                }
                (
                    Request { path: format!("/v1/charges/{charge}/refunds"), key, body },
                    model.refund(*order, *reference, *cents),
                )
            }
            Op::Restock { sku, qty } => (
                Request { path: format!("/v1/skus/sku-{sku}/restocks"), key, body: json!({"quantity": qty}) },
                model.restock(*sku, *qty),
            ),
            Op::Reserve { order, sku, qty } => (
                Request {
                    path: "/v1/reservations".into(),
                    key,
                    body: json!({"order_id": format!("o{order}"), "sku": format!("sku-{sku}"), "quantity": qty}),
                },
                model.reserve(*order, *sku, *qty),
            ),
            Op::BadCharge { order } => (
                self.charge_request(key, *order, 1, BUYERS[0], "1.001".into()),
                refused(StatusCode::CONFLICT, "amount_too_precise", false),
            ),
            Op::Retry(_) | Op::Reuse(_) | Op::Concurrent { .. } => return None,
        })
    }

    async fn send(&self, r: &Request) -> Answer {
        let body = serde_json::to_vec(&r.body).unwrap();
        self.app.send("POST", &r.path, &self.key, Some(&r.key), Some(&body)).await
    }

    /// Compares an answer with the model's expectation.
    fn check(&self, r: &Request, expect: &Expect, got: &Answer) -> Result<(), String> {
        let code = got.status.is_client_error().then(|| got.code());
        if got.status != expect.status || code.as_deref() != expect.code {
            return Err(format!("{}\n  expected {:?}, got {got:?}", r.curl(), expect));
        }
        if got.replayed {
            return Err(format!("{}\n  a first answer marked replayed: {got:?}", r.curl()));
        }
        Ok(())
    }

    /// Sends `r` and checks it against `expect`, or against its stored
    /// answer when its key has one.
    async fn request(&mut self, r: Request, expect: Option<Expect>, next: Model) -> Result<(), String> {
        let got = self.send(&r).await;
        self.sent.push(r.clone());
        if let Some((body, first)) = self.stored.get(&r.key) {
            if *body != r.body {
                let e = refused(StatusCode::CONFLICT, "idempotency_key_reused", false);
                return self.check(&r, &e, &got);
            }
            if !got.replayed || got.status != first.status || got.body != first.body {
                return Err(format!(
                    "{}\n  the retry is not the stored answer: first {first:?}, now {got:?}",
                    r.curl()
                ));
            }
            return Ok(());
        }
        let expect = expect.expect("a new request has an expectation");
        self.check(&r, &expect, &got)?;
        if expect.stored {
            self.stored.insert(r.key.clone(), (r.body.clone(), got.clone()));
        }
        self.learn(&r, &got);
        self.model = next;
        Ok(())
    }

    /// Remembers the charge id of a paid order.
    fn learn(&mut self, r: &Request, got: &Answer) {
        if r.path == "/v1/charges" && got.status.is_success() {
            let order = r.body["order_id"].as_str().unwrap()[1..].parse::<u8>().unwrap();
            self.charge_ids.insert(order, got.id());
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Retry(n) | Op::Reuse(n) if self.sent.is_empty() => {
                let _ = n;
                Ok(())
            }
            Op::Retry(n) => {
                let r = self.sent[n % self.sent.len()].clone();
                self.replan(r).await
            }
            Op::Reuse(n) => {
                let r = other_body(self.sent[n % self.sent.len()].clone());
                self.replan(r).await
            }
            Op::Concurrent { buyer, a, b } => self.concurrent(*buyer, *a, *b).await,
            op => {
                let mut next = self.model.clone();
                let (r, expect) = self.plan(op, &mut next).expect("a plain op");
                self.request(r, Some(expect), next).await
            }
        }
    }

    /// A request sent again (or with its key under another body): stored
    /// answers replay; anything else is evaluated afresh, as the server does.
    async fn replan(&mut self, r: Request) -> Result<(), String> {
        if self.stored.contains_key(&r.key) {
            let model = self.model.clone();
            return self.request(r, None, model).await;
        }
        let mut next = self.model.clone();
        let expect = self.expect_of(&r, &mut next);
        self.request(r, Some(expect), next).await
    }

    /// The model's expectation for a request already sent once, read back
    /// from its body.
    fn expect_of(&self, r: &Request, model: &mut Model) -> Expect {
        let b = &r.body;
        let cents = |v: &Value| -> Option<i64> {
            let d: Decimal = v.as_str()?.parse().ok()?;
            if d.scale() > 2 {
                return None;
            }
            Some((d * Decimal::from(100)).try_into().unwrap())
        };
        let account = |v: &Value| self.accounts.iter().position(|a| Some(a.as_str()) == v.as_str()).unwrap();
        if r.path == "/v1/accounts" {
            let name = b["reference"].as_str().unwrap()["extra-".len()..].parse().unwrap();
            model.open_account(name, b["currency"] == "EUR", b["allow_negative"].as_bool().unwrap())
        } else if r.path == "/v1/transfers" {
            model.transfer(
                account(&b["source_account_id"]),
                account(&b["destination_account_id"]),
                cents(&b["amount"]).unwrap(),
            )
        } else if r.path == "/v1/charges" {
            let Some(c) = cents(&b["amount"]) else {
                return refused(StatusCode::CONFLICT, "amount_too_precise", false);
            };
            let order = b["order_id"].as_str().unwrap()[1..].parse().unwrap();
            let payer = match b["payment_method"].as_str() {
                Some(method) => Payer::Card { declined: method != "pm_card_visa" },
                None => Payer::Wallet(account(&b["buyer_account_id"])),
            };
            model.charge(order, b["attempt"].as_u64().unwrap() as u8, payer, c)
        } else if r.path.ends_with("/refunds") {
            let reference = b["reference"].as_str().unwrap();
            let (order, n) = reference.split_once(":refund:").unwrap();
            let order: u8 = order[1..].parse().unwrap();
            if !self.charge_ids.get(&order).is_some_and(|id| r.path.contains(id.as_str())) {
                return refused(StatusCode::NOT_FOUND, "charge_not_found", false);
            }
            model.refund(order, n.parse().unwrap(), b.get("amount").and_then(cents))
        } else if r.path.ends_with("/restocks") {
            let sku = r.path.trim_start_matches("/v1/skus/sku-").trim_end_matches("/restocks").parse().unwrap();
            model.restock(sku, b["quantity"].as_i64().unwrap())
        } else {
            let order = b["order_id"].as_str().unwrap()[1..].parse().unwrap();
            let sku = b["sku"].as_str().unwrap()[4..].parse().unwrap();
            model.reserve(order, sku, b["quantity"].as_i64().unwrap())
        }
    }

    /// Two charges by one buyer at once: the answers must be those of one
    /// order or the other.
    async fn concurrent(&mut self, buyer: usize, a: (u8, i64), b: (u8, i64)) -> Result<(), String> {
        let ra = self.charge_request(format!("{}a", self.fresh_key()), a.0, 1, buyer, money(a.1));
        let rb = self.charge_request(format!("{}b", self.fresh_key()), b.0, 1, buyer, money(b.1));
        let (mut ab, mut ba) = (self.model.clone(), self.model.clone());
        let w = Payer::Wallet(buyer);
        let ab_expect = (ab.charge(a.0, 1, w, a.1), ab.charge(b.0, 1, w, b.1));
        let ba_second = ba.charge(b.0, 1, w, b.1);
        let ba_expect = (ba.charge(a.0, 1, w, a.1), ba_second);
        let (ga, gb) = join(self.send(&ra), self.send(&rb)).await;
        self.sent.push(ra.clone());
        self.sent.push(rb.clone());
        let fits = |e: &(Expect, Expect)| self.check(&ra, &e.0, &ga).is_ok() && self.check(&rb, &e.1, &gb).is_ok();
        let (expect, next) = if fits(&ab_expect) {
            (ab_expect, ab)
        } else if fits(&ba_expect) {
            (ba_expect, ba)
        } else {
            return Err(format!(
                "concurrent:\n{}\n{}\n  got {ga:?} and {gb:?}, neither order's answers ({ab_expect:?} or {ba_expect:?})",
                ra.curl(),
                rb.curl()
            ));
        };
        for (r, e, g) in [(&ra, &expect.0, &ga), (&rb, &expect.1, &gb)] {
            if e.stored {
                self.stored.insert(r.key.clone(), (r.body.clone(), g.clone()));
            }
            self.learn(r, g);
        }
        self.model = next;
        Ok(())
    }

    /// Every account's balance is the model's.
    async fn check_balances(&self) -> Result<(), String> {
        for (i, id) in self.accounts.iter().enumerate() {
            let got: Decimal = self.app.balance(&self.key, id).await.parse().unwrap();
            let want = Decimal::new(self.model.balances[i], 2);
            if got != want {
                return Err(format!("{}: balance {got}, the model says {want}", NAMES[i]));
            }
        }
        Ok(())
    }
}

/// Runs `ops` against a fresh server; the first disagreement, with the
/// requests sent so far as `curl` lines.
async fn run(ops: &[Op]) -> Result<(), String> {
    let fake = FakeProvider::start(&[]);
    let app = spawn_app_with(|c| fake.configure(&mut c.gateway)).await;
    let key = app.tenant("model").await;
    let mut accounts: [String; 4] = Default::default();
    for (i, name) in NAMES.iter().enumerate() {
        accounts[i] = app.account(&key, name, "USD", i == EXT).await;
    }
    let mut run = Run {
        app: &app,
        key,
        accounts,
        model: Model::default(),
        sent: Vec::new(),
        stored: HashMap::new(),
        charge_ids: HashMap::new(),
    };
    for op in ops {
        let step = match run.step(op).await {
            Ok(()) => run.check_balances().await,
            Err(e) => Err(e),
        };
        if let Err(e) = step {
            let trace: Vec<String> = run.sent.iter().map(Request::curl).collect();
            return Err(format!("{e}\nrequests sent:\n{}", trace.join("\n")));
        }
    }
    let report = ledger::audit::audit(&app.db.client().await, Default::default()).await.unwrap();
    if !report.is_clean() {
        return Err(format!("audit: {report}"));
    }
    Ok(())
}

/// The seed of a run: `LEDGER_MODEL_SEED` (hex, 64 digits), or fixed.
fn seed() -> [u8; 32] {
    let mut seed = [7u8; 32];
    if let Ok(hex) = std::env::var("LEDGER_MODEL_SEED") {
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("LEDGER_MODEL_SEED is 64 hex digits");
        }
    }
    seed
}

#[test]
fn the_service_answers_as_the_model_of_its_contract_says() {
    let cases = std::env::var("LEDGER_MODEL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(12);
    let seed = seed();
    eprintln!(
        "model-based run: {cases} cases, LEDGER_MODEL_SEED={}",
        seed.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let result = runner.run(&prop::collection::vec(op(), 1..30), |ops| {
        actix_web::rt::System::new().block_on(run(&ops)).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            panic!("the service disagrees with the model ({} ops): {why}\nops: {ops:?}", ops.len())
        }
        Err(e) => panic!("{e}"),
    }
}
