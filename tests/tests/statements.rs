//! An account's history (`GET /v1/accounts/{id}/balance?as_of=`,
//! `GET /v1/accounts/{id}/statement`): after a random mix of wallet charges,
//! refunds, transfers and authorizations (captured or voided), alone or in
//! group commit, on a buyer and on a platform account that many concurrent
//! charges credit on its slots, every answer is recomputed from
//! `ledger_entries` alone; a statement's opening plus its entries is its
//! closing; its CSV (streamed a page at a time) says what its JSON says;
//! another tenant's account is not found; and an instant that a transaction
//! still open may add to is not answered before that transaction ends.

use std::str::FromStr;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::join_all;
use futures::StreamExt;
use ledger_tests::pages;
use ledger_tests::rng::Rng;
use ledger_tests::{spawn_app, spawn_app_with, TestApp};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not an amount: {v}"))).unwrap()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A tenant with a funded buyer, a seller, a platform and an external account.
struct Shop {
    app: TestApp,
    key: String,
    buyer: String,
    seller: String,
    platform: String,
    ext: String,
}

async fn shop(app: TestApp) -> Shop {
    let key = app.tenant("shop").await;
    let ext = app.account(&key, "ext", "USD", true).await;
    let buyer = app.account(&key, "buyer", "USD", false).await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let platform = app.account(&key, "platform", "USD", false).await;
    let s = Shop { app, key, buyer, seller, platform, ext };
    s.transfer(&s.ext, &s.buyer, "500.00", "fund").await;
    s
}

impl Shop {
    async fn transfer(&self, from: &str, to: &str, amount: &str, idem: &str) -> StatusCode {
        let body =
            json!({"source_account_id": from, "destination_account_id": to, "amount": amount, "currency": "USD"});
        self.app.post("/v1/transfers", &self.key, idem, body).await.status
    }

    /// A wallet charge of `buyer`, with a 10% platform fee; `capture: false`
    /// makes it an authorization. The charge's id when it was made.
    async fn charge(&self, buyer: &str, order: &str, cents: u64, capture: bool) -> Option<String> {
        let amount = Decimal::new(cents as i64, 2);
        let fee = (amount / Decimal::from(10)).round_dp(2);
        let a = self
            .app
            .post(
                "/v1/charges",
                &self.key,
                &format!("{order}:1"),
                json!({"order_id": order, "attempt": 1, "buyer_account_id": buyer, "seller_account_id": self.seller,
                       "amount": amount.to_string(), "currency": "USD", "capture": capture,
                       "platform_fee": {"account_id": self.platform, "amount": fee.to_string()}}),
            )
            .await;
        assert!(a.status == StatusCode::CREATED || a.status == StatusCode::PAYMENT_REQUIRED, "{a:?}");
        (a.status == StatusCode::CREATED).then(|| a.id())
    }

    async fn db_now(&self) -> DateTime<Utc> {
        self.app.db.client().await.query_one("SELECT clock_timestamp()", &[]).await.unwrap().get(0)
    }

    /// The sum of the account's entries stamped at or before `t`: the
    /// balance recomputed from the entries alone.
    async fn entries_sum(&self, account: &str, t: DateTime<Utc>) -> Decimal {
        let account = Uuid::parse_str(account).unwrap();
        self.app
            .db
            .client()
            .await
            .query_one(
                "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account_id = $1 AND created_at <= $2",
                &[&account, &t],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// The tenant's holds account: its entries are what the buyer's open
    /// authorizations hold (the only buyer that authorizes).
    async fn holds(&self) -> String {
        let id: Uuid = self
            .app
            .db
            .client()
            .await
            .query_one("SELECT id FROM accounts WHERE reference = 'holds:USD'", &[])
            .await
            .unwrap()
            .get(0);
        id.to_string()
    }

    async fn balance_at(&self, account: &str, t: DateTime<Utc>) -> ledger_tests::Answer {
        self.app.get(&format!("/v1/accounts/{account}/balance?as_of={}", rfc(t)), &self.key).await
    }

    /// The random mix on the buyer: charges, refunds of them, transfers
    /// both ways, authorizations then captured (whole or in part) or
    /// voided, some of them at once. Returns instants of the database's
    /// clock taken between the steps.
    async fn mix(&self, seed: u64, steps: usize) -> Vec<DateTime<Utc>> {
        let mut rng = Rng::new(seed);
        let mut instants = vec![self.db_now().await];
        let mut paid: Vec<String> = Vec::new();
        let mut held: Vec<String> = Vec::new();
        for step in 0..steps {
            let cents = 100 + rng.below(2_000);
            match rng.below(6) {
                0 => {
                    // several charges at once (one batch under group commit)
                    let orders: Vec<String> = (0..1 + rng.below(5)).map(|i| format!("o{seed}-{step}-{i}")).collect();
                    let made = join_all(orders.iter().map(|o| self.charge(&self.buyer, o, cents, true))).await;
                    paid.extend(made.into_iter().flatten());
                }
                1 if !paid.is_empty() => {
                    let charge = paid.remove(rng.below(paid.len() as u64) as usize);
                    let body = if rng.chance(50) {
                        json!({"reference": format!("r{seed}-{step}")})
                    } else {
                        json!({"reference": format!("r{seed}-{step}"), "amount": "0.50"})
                    };
                    let path = format!("/v1/charges/{charge}/refunds");
                    let r = self.app.post(&path, &self.key, &format!("r{seed}-{step}"), body).await;
                    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
                }
                2 => {
                    let (from, to) =
                        if rng.chance(50) { (&self.buyer, &self.seller) } else { (&self.ext, &self.buyer) };
                    let amount = Decimal::new(cents as i64, 2).to_string();
                    // a transfer the buyer cannot cover is declined and writes nothing
                    let s = self.transfer(from, to, &amount, &format!("t{seed}-{step}")).await;
                    assert!(s == StatusCode::CREATED || s == StatusCode::PAYMENT_REQUIRED, "{s}");
                }
                3 | 4 => {
                    // at least 6.00, so that a capture of 5.00 covers its fee
                    let cents = 600 + rng.below(1_500);
                    if let Some(id) = self.charge(&self.buyer, &format!("a{seed}-{step}"), cents, false).await {
                        held.push(id);
                    }
                }
                _ if !held.is_empty() => {
                    let id = held.remove(rng.below(held.len() as u64) as usize);
                    let (path, body) = match rng.below(3) {
                        0 => ("void", json!({"reference": format!("v{seed}-{step}")})),
                        1 => ("capture", json!({"reference": format!("c{seed}-{step}")})),
                        _ => ("capture", json!({"reference": format!("c{seed}-{step}"), "amount": "5.00"})),
                    };
                    let a = self
                        .app
                        .post(&format!("/v1/charges/{id}/{path}"), &self.key, &format!("e{seed}-{step}"), body)
                        .await;
                    assert_eq!(a.status, StatusCode::OK, "{a:?}");
                    if path == "capture" {
                        paid.push(id);
                    }
                }
                _ => {}
            }
            instants.push(self.db_now().await);
        }
        instants
    }

    /// Every instant answers what the entries alone say: available is the
    /// sum of the account's entries up to it, pending what the holds
    /// account's entries held (for the buyer), posted their sum.
    async fn check_balances(&self, account: &str, instants: &[DateTime<Utc>], pending_from_holds: bool) {
        let holds = if pending_from_holds { Some(self.holds().await) } else { None };
        for &t in instants {
            let a = self.balance_at(account, t).await;
            assert_eq!(a.status, StatusCode::OK, "{a:?}");
            let b = a.json();
            let available = self.entries_sum(account, t).await;
            assert_eq!(dec(&b["available"]), available, "available at {t}: {b}");
            let pending = match &holds {
                Some(h) => self.entries_sum(h, t).await,
                None => Decimal::ZERO,
            };
            assert_eq!(dec(&b["pending"]), pending, "pending at {t}: {b}");
            assert_eq!(dec(&b["posted"]), available + pending, "posted at {t}: {b}");
            assert_eq!(DateTime::parse_from_rfc3339(b["as_of"].as_str().unwrap()).unwrap(), t);
            assert_eq!((b["account_id"].as_str(), b["currency"].as_str()), (Some(account), Some("USD")));
            // the same instant again: the same answer
            assert_eq!(self.balance_at(account, t).await.json(), b, "a second read of {t}");
        }
    }

    /// Checkpointer passes writing a checkpoint every `every` entries, until
    /// the history horizon is past every entry so far. Returns how many
    /// checkpoints there are.
    async fn checkpoint(&self, every: i64) -> i64 {
        let mut client = self.app.db.client().await;
        ledger::checkpoints::catch_up(&mut client, every).await.unwrap();
        client.query_one("SELECT count(*) FROM balance_checkpoints", &[]).await.unwrap().get(0)
    }

    /// Pages through the account's entries, `limit` at a time, and checks
    /// the order (newest first by created_at, then id) and each entry's
    /// `balance_after` against the running sum of the entries alone.
    /// Returns how many there were.
    async fn check_entries(&self, account: &str, limit: usize) -> usize {
        let id = Uuid::parse_str(account).unwrap();
        let rows = self
            .app
            .db
            .client()
            .await
            .query(
                "SELECT id, sum(amount) OVER (ORDER BY created_at, id) FROM ledger_entries \
                  WHERE account_id = $1 ORDER BY created_at DESC, id DESC",
                &[&id],
            )
            .await
            .unwrap();
        let expected: Vec<(String, Decimal)> =
            rows.iter().map(|r| (r.get::<_, i64>(0).to_string(), r.get::<_, Decimal>(1))).collect();
        let list = format!("/v1/accounts/{account}/entries");
        let mut seen = Vec::new();
        let mut path = format!("{list}?limit={limit}");
        loop {
            let a = self.app.get(&path, &self.key).await;
            assert_eq!(a.status, StatusCode::OK, "{a:?}");
            let page = a.json();
            for e in page["data"].as_array().unwrap() {
                seen.push((e["id"].as_str().unwrap().to_owned(), dec(&e["balance_after"])));
            }
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
            path = format!("{list}?limit={limit}&starting_after={}", seen.last().unwrap().0);
        }
        assert_eq!(seen, expected, "entries of {account}, newest first, with the balance after each");
        // and back: `ending_before` from each page's first entry
        let ids: Vec<String> = expected.into_iter().map(|(id, _)| id).collect();
        pages::walks_both_ways(&self.app, &self.key, &list, limit, &ids, pages::BY_ID).await;
        seen.len()
    }

    /// The instants, the entries' own timestamps among them (an entry
    /// stamped exactly at an instant is in its balance).
    async fn with_entry_instants(&self, account: &str, mut instants: Vec<DateTime<Utc>>) -> Vec<DateTime<Utc>> {
        let account = Uuid::parse_str(account).unwrap();
        let rows = self
            .app
            .db
            .client()
            .await
            .query(
                "SELECT DISTINCT created_at FROM ledger_entries WHERE account_id = $1 ORDER BY created_at LIMIT 6",
                &[&account],
            )
            .await
            .unwrap();
        instants.extend(rows.iter().map(|r| r.get::<_, DateTime<Utc>>(0)));
        instants
    }
}

/// Waits until the newest instant is settled (a second behind the clock).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1_200)).await;
}

#[actix_web::test]
async fn balances_at_instants_are_the_entries_sums_after_a_random_mix() {
    // every entry read back, a page at a time: more than the tenant's rate limit allows
    let s = shop(spawn_app_with(|c| c.rate_limit_per_sec = 0).await).await;
    let before = s.db_now().await;
    // the buyer's life begins with the shop: an instant before its account
    let created: DateTime<Utc> = {
        let id = Uuid::parse_str(&s.buyer).unwrap();
        s.app.db.client().await.query_one("SELECT created_at FROM accounts WHERE id = $1", &[&id]).await.unwrap().get(0)
    };
    let instants = s.mix(7, 40).await;
    settle().await;
    let instants = s.with_entry_instants(&s.buyer, instants).await;
    assert!(s.entries_sum(&s.buyer, *instants.last().unwrap()).await != Decimal::ZERO);
    s.check_balances(&s.buyer, &instants, true).await;
    s.check_balances(&s.seller, &instants, false).await;
    // the same instants again once checkpoints cover them (every 3rd
    // entry): read from the nearest checkpoint, the same answers
    assert!(s.checkpoint(3).await > 10);
    s.check_balances(&s.buyer, &instants, true).await;
    assert!(s.check_entries(&s.buyer, 7).await > 20);
    s.check_entries(&s.seller, 100).await;
    // more history, and passes that carry every account on from the last
    let more = s.mix(8, 20).await;
    settle().await;
    s.checkpoint(3).await;
    let entries = s.check_entries(&s.buyer, 7).await;
    s.check_balances(&s.buyer, &more, true).await;
    let settled: i64 =
        s.app.scalar(&format!("SELECT entries FROM balance_settled WHERE account_id = '{}'", s.buyer)).await;
    assert_eq!(settled as usize, entries, "the buyer's settled count is its entries");

    // before the account existed: zeros
    let early = s.balance_at(&s.buyer, created - chrono::Duration::seconds(5)).await.json();
    assert_eq!(
        (&early["available"], &early["pending"], &early["posted"]),
        (&json!("0.00"), &json!("0.00"), &json!("0.00"))
    );
    assert!(before > created);

    // without as_of: now, as the account reads
    let now = s.app.get(&format!("/v1/accounts/{}/balance", s.buyer), &s.key).await.json();
    let account = s.app.get(&format!("/v1/accounts/{}", s.buyer), &s.key).await.json();
    assert_eq!(
        (&now["available"], &now["pending"], &now["posted"]),
        (&account["available"], &account["pending"], &account["posted"])
    );

    // the future, and the last second, are refused
    for t in [s.db_now().await + chrono::Duration::hours(1), s.db_now().await - chrono::Duration::milliseconds(200)] {
        let a = s.balance_at(&s.buyer, t).await;
        assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "as_of_too_recent".to_owned()), "{t}");
    }
    s.app.audit_clean().await;
}

#[actix_web::test]
async fn balances_at_instants_hold_under_group_commit_and_on_a_hot_account() {
    let app = spawn_app_with(|c| {
        c.charge_batch_max = 16;
        c.charge_batch_window_us = 300_000;
        c.charge_batch_concurrency = 1;
        c.rate_limit_per_sec = 0;
    })
    .await;
    let s = shop(app).await;
    // more buyers, charging at once: the platform's fees land on its slots
    let mut buyers = Vec::new();
    for i in 0..6 {
        let b = s.app.account(&s.key, &format!("buyer-{i}"), "USD", false).await;
        assert_eq!(s.transfer(&s.ext, &b, "1000.00", &format!("fund-{i}")).await, StatusCode::CREATED);
        buyers.push(b);
    }
    let mut instants = vec![s.db_now().await];
    for round in 0..8 {
        let charges = buyers.iter().enumerate().flat_map(|(i, b)| {
            let s = &s;
            (0..3).map(move |k| async move { s.charge(b, &format!("h{round}-{i}-{k}"), 250 + k * 10, true).await })
        });
        let made = join_all(charges).await;
        assert!(made.iter().all(Option::is_some));
        instants.push(s.db_now().await);
    }
    instants.extend(s.mix(11, 30).await);
    settle().await;
    let slots: i64 = s
        .app
        .scalar(&format!("SELECT count(*) FROM account_slots WHERE account_id = '{}' AND balance <> 0", s.platform))
        .await;
    assert!(slots >= 1, "the platform's fees are on slots");
    let batched: i64 = s
        .app
        .scalar(&format!(
            "SELECT count(*) FROM (SELECT created_at FROM ledger_entries WHERE account_id = '{}' \
              GROUP BY created_at HAVING count(*) > 1) x",
            s.platform
        ))
        .await;
    assert!(batched >= 1, "charges committed together share their transaction's timestamp");
    let instants = s.with_entry_instants(&s.platform, instants).await;
    assert!(s.checkpoint(4).await > 10);
    assert!(s.check_entries(&s.platform, 9).await > 24);
    s.check_entries(&s.buyer, 100).await;
    s.check_balances(&s.platform, &instants, false).await;
    s.check_balances(&s.buyer, &instants, true).await;
    for b in &buyers[..2] {
        s.check_balances(b, &instants, false).await;
    }
    // statements of the hot account too
    check_statements(&s, &s.platform, &instants, 3).await;
    s.app.audit_clean().await;
}

/// A statement's lines, from its CSV.
fn csv_lines(body: &[u8]) -> Vec<Vec<String>> {
    let text = std::str::from_utf8(body).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(api::routes::statements::CSV_HEADER.trim_end()));
    lines.map(|l| l.split(',').map(str::to_owned).collect()).collect()
}

async fn statement(s: &Shop, account: &str, from: DateTime<Utc>, to: DateTime<Utc>, csv: &str) -> ledger_tests::Answer {
    let path = format!("/v1/accounts/{account}/statement?from={}&to={}{csv}", rfc(from), rfc(to));
    s.app.get(&path, &s.key).await
}

/// The CSV by `Accept: text/csv`.
async fn statement_accepting_csv(s: &Shop, account: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<u8> {
    let url = format!("{}/v1/accounts/{account}/statement?from={}&to={}", s.app.base, rfc(from), rfc(to));
    let mut res = s
        .app
        .http
        .get(url)
        .insert_header(("Authorization", format!("Bearer {}", s.key)))
        .insert_header(("Accept", "text/csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/csv"));
    res.body().limit(64 << 20).await.unwrap().to_vec()
}

/// The JSON statement and the CSV one, checked against each other and the
/// entries: returns the number of entries.
async fn check_statement(s: &Shop, account: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    let a = statement(s, account, from, to, "").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let j = a.json();
    let entries = j["entries"].as_array().unwrap();
    let (opening, closing) = (dec(&j["opening"]["available"]), dec(&j["closing"]["available"]));
    assert_eq!(opening, s.entries_sum(account, from).await, "opening from the entries");
    assert_eq!(closing, s.entries_sum(account, to).await, "closing from the entries");
    let sum: Decimal = entries.iter().map(|e| dec(&e["amount"])).sum();
    assert_eq!(opening + sum, closing, "opening + entries = closing");
    let totals: Decimal = j["totals"].as_array().unwrap().iter().map(|t| dec(&t["net"])).sum();
    assert_eq!(totals, sum, "totals by kind add up to the entries");
    let counted: i64 = j["totals"].as_array().unwrap().iter().map(|t| t["count"].as_i64().unwrap()).sum();
    assert_eq!(counted as usize, entries.len());
    // the period's entries, oldest first, with their running balance
    let ids: Vec<String> = {
        let id = Uuid::parse_str(account).unwrap();
        let rows = s
            .app
            .db
            .client()
            .await
            .query(
                "SELECT id FROM ledger_entries WHERE account_id = $1 AND created_at > $2 AND created_at <= $3 \
                  ORDER BY created_at, id",
                &[&id, &from, &to],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get::<_, i64>(0).to_string()).collect()
    };
    assert_eq!(entries.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>(), ids);
    let mut running = opening;
    for e in entries {
        running += dec(&e["amount"]);
        assert_eq!(dec(&e["balance"]), running);
    }
    // the balance endpoint agrees with both ends
    let end = s.balance_at(account, to).await.json();
    assert_eq!((&end["available"], &end["pending"]), (&j["closing"]["available"], &j["closing"]["pending"]));

    // the CSV: the same, line for line
    let csv = statement(s, account, from, to, "&format=csv").await;
    assert_eq!(csv.status, StatusCode::OK, "{csv:?}");
    assert!(csv.content_type.starts_with("text/csv"), "{csv:?}");
    assert_eq!(statement_accepting_csv(s, account, from, to).await, csv.body, "Accept: text/csv is format=csv");
    let lines = csv_lines(&csv.body);
    let b = |x: &Value| x.as_str().unwrap().to_owned();
    assert_eq!(lines[0][0], "opening");
    assert_eq!(
        (&lines[0][1], &lines[0][6], &lines[0][7], &lines[0][8]),
        (&rfc_json(from), &b(&j["opening"]["available"]), &b(&j["opening"]["pending"]), &b(&j["opening"]["posted"]))
    );
    for (line, e) in lines[1..].iter().zip(entries) {
        assert_eq!(line[0], "entry");
        assert_eq!(
            [&line[1], &line[2], &line[3], &line[4], &line[5], &line[6]],
            [
                &b(&e["created_at"]),
                &b(&e["id"]),
                &b(&e["transaction_id"]),
                &b(&e["kind"]),
                &b(&e["amount"]),
                &b(&e["balance"])
            ]
        );
    }
    let rest = &lines[1 + entries.len()..];
    let totals = j["totals"].as_array().unwrap();
    assert_eq!(rest.len(), totals.len() + 1);
    for (line, t) in rest.iter().zip(totals) {
        assert_eq!(
            [&line[0], &line[4], &line[5], &line[9], &line[10], &line[11]],
            ["total", &b(&t["kind"]), &b(&t["net"]), &t["count"].to_string(), &b(&t["credits"]), &b(&t["debits"])]
        );
    }
    let last = rest.last().unwrap();
    assert_eq!(
        [&last[0], &last[1], &last[6], &last[7], &last[8]],
        [
            "closing",
            &rfc_json(to),
            &b(&j["closing"]["available"]),
            &b(&j["closing"]["pending"]),
            &b(&j["closing"]["posted"])
        ]
    );
    entries.len()
}

/// An instant as the JSON form writes it.
fn rfc_json(t: DateTime<Utc>) -> String {
    serde_json::to_value(t).unwrap().as_str().unwrap().to_owned()
}

/// `n` random periods between the instants, and the whole of them.
async fn check_statements(s: &Shop, account: &str, instants: &[DateTime<Utc>], n: u64) {
    let mut rng = Rng::new(n);
    let mut sorted = instants.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut seen = 0;
    for _ in 0..n {
        let i = rng.below(sorted.len() as u64 - 1) as usize;
        let j = i + 1 + rng.below((sorted.len() - i - 1) as u64) as usize;
        seen += check_statement(s, account, sorted[i], sorted[j]).await;
    }
    seen += check_statement(s, account, sorted[0] - chrono::Duration::seconds(10), *sorted.last().unwrap()).await;
    assert!(seen > 0, "some period held entries");
}

#[actix_web::test]
async fn statements_add_up_and_their_csv_says_what_their_json_says() {
    let s = shop(spawn_app().await).await;
    let instants = s.mix(23, 40).await;
    settle().await;
    let instants = s.with_entry_instants(&s.buyer, instants).await;
    check_statements(&s, &s.buyer, &instants, 6).await;
    // a period over every kind the mix made
    let first = instants.iter().min().unwrap();
    let whole =
        statement(&s, &s.buyer, *first - chrono::Duration::seconds(10), *instants.iter().max().unwrap(), "").await;
    let kinds: Vec<(String, i64)> = whole.json()["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["kind"].as_str().unwrap().to_owned(), t["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        kinds.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["charge", "refund", "transfer", "authorization", "release", "refund_reversal"]
    );
    for kind in ["charge", "refund", "transfer", "authorization", "release"] {
        assert!(kinds.iter().any(|(k, n)| k == kind && *n > 0), "the mix made a {kind}: {kinds:?}");
    }

    // the rules of a period
    let (a, b) = (instants[1], instants[2]);
    let same = statement(&s, &s.buyer, a, a, "").await;
    assert_eq!((same.status, same.code()), (StatusCode::CONFLICT, "invalid_period".to_owned()));
    let back = statement(&s, &s.buyer, b, a, "&format=csv").await;
    assert_eq!((back.status, back.code()), (StatusCode::CONFLICT, "invalid_period".to_owned()));
    let future = statement(&s, &s.buyer, a, s.db_now().await + chrono::Duration::minutes(1), "&format=csv").await;
    assert_eq!((future.status, future.code()), (StatusCode::CONFLICT, "as_of_too_recent".to_owned()));
    let missing = s.app.get(&format!("/v1/accounts/{}/statement?from={}", s.buyer, rfc(a)), &s.key).await;
    assert_eq!((missing.status, missing.code()), (StatusCode::BAD_REQUEST, "invalid_parameter".to_owned()));
    let format = statement(&s, &s.buyer, a, b, "&format=xml").await;
    assert_eq!((format.status, format.code()), (StatusCode::BAD_REQUEST, "invalid_parameter".to_owned()));
}

#[actix_web::test]
async fn a_long_period_streams_as_csv_a_page_at_a_time_and_is_refused_as_json() {
    let app = spawn_app_with(|c| {
        c.charge_batch_max = 16;
        c.charge_batch_window_us = 300_000;
        c.charge_batch_concurrency = 1;
        // a thousand charges in a few seconds, over the default limit
        c.rate_limit_per_sec = 0;
    })
    .await;
    let s = shop(app).await;
    let mut buyers = Vec::new();
    for i in 0..4 {
        let b = s.app.account(&s.key, &format!("buyer-{i}"), "USD", false).await;
        assert_eq!(s.transfer(&s.ext, &b, "10000.00", &format!("fund-{i}")).await, StatusCode::CREATED);
        buyers.push(b);
    }
    let from = s.db_now().await;
    // 1,100 fees to the platform, 16 at a time in batches that share a
    // timestamp: the pages of 500 end inside such ties
    let made: Vec<Option<String>> = futures::stream::iter(0..1_100u64)
        .map(|n| {
            let (s, b) = (&s, &buyers[(n % 4) as usize]);
            async move { s.charge(b, &format!("o{n}"), 1_000 + n, true).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(made.iter().all(Option::is_some));
    let to = s.db_now().await;
    settle().await;

    let json = statement(&s, &s.platform, from, to, "").await;
    assert_eq!((json.status, json.code()), (StatusCode::CONFLICT, "statement_too_large".to_owned()));
    let csv = statement(&s, &s.platform, from, to, "&format=csv").await;
    assert_eq!(csv.status, StatusCode::OK);
    let lines = csv_lines(&csv.body);
    let entries: Vec<&Vec<String>> = lines.iter().filter(|l| l[0] == "entry").collect();
    assert_eq!(entries.len(), 1_100);
    let platform = Uuid::parse_str(&s.platform).unwrap();
    let ids: Vec<String> = s
        .app
        .db
        .client()
        .await
        .query(
            "SELECT id FROM ledger_entries WHERE account_id = $1 AND created_at > $2 AND created_at <= $3 \
              ORDER BY created_at, id",
            &[&platform, &from, &to],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0).to_string())
        .collect();
    assert_eq!(entries.iter().map(|l| l[2].clone()).collect::<Vec<_>>(), ids, "every entry once, in order");
    let (opening, closing) = (lines.first().unwrap(), lines.last().unwrap());
    let sum: Decimal = entries.iter().map(|l| Decimal::from_str(&l[5]).unwrap()).sum();
    assert_eq!(
        Decimal::from_str(&opening[6]).unwrap() + sum,
        Decimal::from_str(&closing[6]).unwrap(),
        "opening + entries = closing"
    );
    assert_eq!(Decimal::from_str(&closing[6]).unwrap(), s.entries_sum(&s.platform, to).await);
    assert_eq!(entries.last().unwrap()[6], closing[6], "the running balance ends at the closing one");
    // a shorter period fits the JSON form
    let some = check_statement(&s, &s.platform, from, entry_time(&s, &ids[600]).await).await;
    assert!((600..=1_000).contains(&some), "{some}");
}

async fn entry_time(s: &Shop, id: &str) -> DateTime<Utc> {
    let id: i64 = id.parse().unwrap();
    s.app
        .db
        .client()
        .await
        .query_one("SELECT created_at FROM ledger_entries WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[actix_web::test]
async fn another_tenants_account_is_not_found() {
    let s = shop(spawn_app().await).await;
    let other = s.app.tenant("other").await;
    let t = s.db_now().await;
    settle().await;
    let from = t - chrono::Duration::seconds(60);
    for path in [
        format!("/v1/accounts/{}/balance", s.buyer),
        format!("/v1/accounts/{}/balance?as_of={}", s.buyer, rfc(t)),
        format!("/v1/accounts/{}/statement?from={}&to={}", s.buyer, rfc(from), rfc(t)),
        format!("/v1/accounts/{}/statement?from={}&to={}&format=csv", s.buyer, rfc(from), rfc(t)),
        format!("/v1/accounts/{}/balance?as_of={}", Uuid::now_v7(), rfc(t)),
    ] {
        let a = s.app.get(&path, &other).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "account_not_found".to_owned()), "{path}");
        // the owner reads it
        if path.contains(&s.buyer) {
            assert_eq!(s.app.get(&path, &s.key).await.status, StatusCode::OK, "{path}");
        }
    }
}

/// A transaction begun before an instant that has not committed yet: the
/// instant is answered only once it has ended (here it commits an entry
/// stamped before the instant, which the answer then holds), or refused
/// while it stays open.
#[actix_web::test]
async fn an_instant_is_answered_only_after_the_transactions_that_began_before_it() {
    let s = shop(spawn_app().await).await;
    let buyer = Uuid::parse_str(&s.buyer).unwrap();
    let ext = Uuid::parse_str(&s.ext).unwrap();
    let write = |tx: Uuid| {
        let db = &s.app.db;
        async move {
            let c = db.client().await;
            c.batch_execute("BEGIN").await.unwrap();
            c.execute(
                "INSERT INTO ledger_transactions (id, tenant_id, kind, currency) \
                 SELECT $1, tenant_id, 'transfer', 'USD' FROM accounts WHERE id = $2",
                &[&tx, &buyer],
            )
            .await
            .unwrap();
            c.execute(
                "INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency) \
                 VALUES ($1, 0, $2, -7.00, 'USD'), ($1, 1, $3, 7.00, 'USD')",
                &[&tx, &ext, &buyer],
            )
            .await
            .unwrap();
            c.execute("UPDATE accounts SET balance = balance - 7.00 WHERE id = $1", &[&ext]).await.unwrap();
            c.execute("UPDATE accounts SET balance = balance + 7.00 WHERE id = $1", &[&buyer]).await.unwrap();
            c
        }
    };
    // committed while the read waits: the read holds it
    let open = write(Uuid::now_v7()).await;
    let t = s.db_now().await;
    let before = s.entries_sum(&s.buyer, t).await;
    settle().await;
    let started = Instant::now();
    let (a, ()) = futures::join!(s.balance_at(&s.buyer, t), async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        open.batch_execute("COMMIT").await.unwrap();
    });
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert!(started.elapsed() >= Duration::from_millis(700), "the read waited for the open transaction");
    assert_eq!(dec(&a.json()["available"]), before + Decimal::new(700, 2), "the late commit is in the answer");
    assert_eq!(dec(&a.json()["available"]), s.entries_sum(&s.buyer, t).await);

    // still open past the wait: refused, and answered once it ends
    let open = write(Uuid::now_v7()).await;
    let t = s.db_now().await;
    settle().await;
    let a = s.balance_at(&s.buyer, t).await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "as_of_too_recent".to_owned()), "{a:?}");
    let st = statement(&s, &s.buyer, t - chrono::Duration::seconds(30), t, "&format=csv").await;
    assert_eq!((st.status, st.code()), (StatusCode::CONFLICT, "as_of_too_recent".to_owned()));
    open.batch_execute("ROLLBACK").await.unwrap();
    let a = s.balance_at(&s.buyer, t).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(dec(&a.json()["available"]), s.entries_sum(&s.buyer, t).await);
}

#[actix_web::test]
async fn an_entry_gets_its_balance_after_once_settled_and_another_accounts_cursor_is_refused() {
    let s = shop(spawn_app().await).await;
    assert_eq!(s.transfer(&s.buyer, &s.seller, "20.00", "pay").await, StatusCode::CREATED);
    // just made: a transaction that began before them could still commit
    let page = s.app.get(&format!("/v1/accounts/{}/entries", s.buyer), &s.key).await.json();
    let amounts: Vec<&Value> = page["data"].as_array().unwrap().iter().map(|e| &e["amount"]).collect();
    assert_eq!(amounts, [&json!("-20.00"), &json!("500.00")], "{page}");
    assert!(page["data"].as_array().unwrap().iter().all(|e| e["balance_after"].is_null()), "{page}");

    settle().await;
    assert_eq!(s.checkpoint(1_000).await, 0, "two entries complete no checkpoint of 1,000");
    let page = s.app.get(&format!("/v1/accounts/{}/entries", s.buyer), &s.key).await.json();
    let after: Vec<&Value> = page["data"].as_array().unwrap().iter().map(|e| &e["balance_after"]).collect();
    assert_eq!(after, [&json!("480.00"), &json!("500.00")], "{page}");
    // settled: final, the same on every read
    assert_eq!(s.app.get(&format!("/v1/accounts/{}/entries", s.buyer), &s.key).await.json(), page);
    let first = page["data"][1]["id"].as_str().unwrap().to_owned();
    let older = s.app.get(&format!("/v1/accounts/{}/entries?starting_after={first}", s.buyer), &s.key).await.json();
    assert_eq!((&older["data"], &older["has_more"]), (&json!([]), &json!(false)), "{older}");

    // an entry of another account, or of another tenant, is no cursor here
    let seller = s.app.get(&format!("/v1/accounts/{}/entries", s.seller), &s.key).await.json();
    let theirs = seller["data"][0]["id"].as_str().unwrap().to_owned();
    let other = s.app.tenant("other").await;
    let (ext, buyer) =
        (s.app.account(&other, "ext", "USD", true).await, s.app.account(&other, "buyer", "USD", false).await);
    let body = json!({"source_account_id": ext, "destination_account_id": buyer, "amount": "5.00", "currency": "USD"});
    assert_eq!(s.app.post("/v1/transfers", &other, "fund", body).await.status, StatusCode::CREATED);
    let foreign = s.app.get(&format!("/v1/accounts/{buyer}/entries"), &other).await.json();
    let foreign = foreign["data"][0]["id"].as_str().unwrap().to_owned();
    let list = format!("/v1/accounts/{}/entries", s.buyer);
    pages::refuses_bad_pages(&s.app, &s.key, &list, &first, &theirs, "entry_not_found").await;
    pages::refuses_bad_pages(&s.app, &s.key, &list, &first, &foreign, "entry_not_found").await;
    s.app.audit_clean().await;
}
