//! Webhooks out, end to end: charges → outbox → relay → RabbitMQ → the
//! webhooks worker → real HTTP receivers started by the test, healthy,
//! flaky, gone and hanging. Every event reaches every live subscribed
//! endpoint at least once, signed, with the same `webhook-id` and body on
//! every retry; a receiver that dedupes on the id applies each once; a dead
//! endpoint holds up no other; a worker killed between a send and its
//! record sends again.

use std::time::Duration;

use awc::http::StatusCode;
use ledger_tests::broker::Broker;
use ledger_tests::webhook_receiver::{Behaviour, Receiver};
use ledger_tests::{crash_worker, eventually, spawn_app_with, start_workers, Role, TestApp};
use serde_json::json;

struct Store {
    app: TestApp,
    key: String,
    buyer: String,
    seller: String,
}

async fn store() -> Store {
    let app = spawn_app_with(|c| c.webhook_allow_private = true).await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "1000.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    Store { app, key, buyer, seller }
}

impl Store {
    /// Registers an endpoint; returns its id and secret.
    async fn endpoint(&self, url: &str, events: serde_json::Value) -> (String, String) {
        let made = self
            .app
            .post(
                "/v1/webhook_endpoints",
                &self.key,
                &format!("ep:{url}:{events}"),
                json!({"url": url, "enabled_events": events}),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
        (made.id(), made.json()["secret"].as_str().unwrap().to_owned())
    }

    async fn charge(&self, order: &str) {
        let c = self
            .app
            .post(
                "/v1/charges",
                &self.key,
                &format!("{order}:1"),
                json!({"order_id": order, "attempt": 1, "buyer_account_id": self.buyer,
                       "seller_account_id": self.seller, "amount": "5.00", "currency": "USD"}),
            )
            .await;
        assert_eq!(c.status, StatusCode::CREATED, "{c:?}");
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.app.scalar(sql).await
    }

    fn config(&self, broker: &Broker) -> workers::config::Config {
        let mut c = workers::config::Config::local(&self.app.db.worker_url, &broker.prefix);
        c.amqp_url = broker.url.clone();
        c.relay_poll_ms = 100;
        c.webhook_poll_ms = 100;
        c.webhook_timeout_ms = 1000;
        c.webhook_schedule = "0.2,0.2,0.2,0.2".into();
        c.webhook_allow_private = true;
        c
    }
}

#[actix_web::test]
async fn every_event_reaches_every_live_subscribed_endpoint_at_least_once_signed_and_the_same_on_every_retry() {
    let s = store().await;
    let broker = Broker::new();
    let (healthy, flaky, gone, hanging, disabled, closing) = (
        Receiver::start(Behaviour::Ok).await,
        Receiver::start(Behaviour::FailFirst(2)).await,
        Receiver::start(Behaviour::Always(410)).await,
        Receiver::start(Behaviour::Hang(Duration::from_secs(5))).await,
        Receiver::start(Behaviour::Ok).await,
        Receiver::closing(),
    );
    let (_, healthy_secret) = s.endpoint(&healthy.url, json!(["*"])).await;
    let (_, flaky_secret) = s.endpoint(&flaky.url, json!(["charge.succeeded"])).await;
    let (gone_id, _) = s.endpoint(&gone.url, json!(["*"])).await;
    let (hanging_id, _) = s.endpoint(&hanging.url, json!(["*"])).await;
    let (disabled_id, _) = s.endpoint(&disabled.url, json!(["*"])).await;
    let (closing_id, _) = s.endpoint(&closing.url, json!(["charge.succeeded"])).await;
    let off = s
        .app
        .send("PATCH", &format!("/v1/webhook_endpoints/{disabled_id}"), &s.key, None, Some(br#"{"enabled": false}"#))
        .await;
    assert_eq!(off.status, StatusCode::OK);
    // a subscriber of another type gets none of these
    let other = Receiver::start(Behaviour::Ok).await;
    s.endpoint(&other.url, json!(["charge.refunded"])).await;

    let _workers = start_workers(&s.config(&broker), &[Role::Relay, Role::Webhooks]);
    for i in 0..3 {
        s.charge(&format!("o{i}")).await;
    }
    let events: Vec<String> = {
        let client = s.app.db.client().await;
        let rows = client.query("SELECT message_id::text FROM outbox WHERE event_type = 'charge.succeeded'", &[]).await;
        rows.unwrap().iter().map(|r| r.get(0)).collect()
    };
    assert_eq!(events.len(), 3);

    // the healthy endpoint has every event soon, whatever the hanging one does
    eventually(15, "the healthy endpoint receives every event", || async { healthy.applied().len() == 3 }).await;
    assert!(
        s.scalar(&format!(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{hanging_id}' AND failed_at IS NULL"
        ))
        .await
            > 0,
        "the hanging endpoint is still being retried while the healthy one is served"
    );
    eventually(30, "every delivery is delivered or has run out of attempts", || async {
        s.scalar("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL").await == 0
    })
    .await;

    for (receiver, secret) in [(&healthy, &healthy_secret), (&flaky, &flaky_secret)] {
        let applied = receiver.applied();
        let mut ids: Vec<&String> = applied.keys().collect();
        ids.sort();
        let mut expected: Vec<&String> = events.iter().collect();
        expected.sort();
        assert_eq!(ids, expected, "every event, each under its event id");
        for r in receiver.got() {
            assert!(r.signed_by(secret), "signed with the endpoint's secret: {r:?}");
            let envelope: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(envelope["message_id"], r.id.as_str(), "the body is the event's envelope");
        }
        // every retry of an event: the same id and the same bytes
        for id in applied.keys() {
            let bodies: Vec<Vec<u8>> = receiver.got().into_iter().filter(|r| &r.id == id).map(|r| r.body).collect();
            assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{id}: the same body on every attempt");
        }
    }
    assert!(flaky.applied().values().all(|n| *n == 3), "two 500s, then a 2xx: {:?}", flaky.applied());
    assert_eq!(
        s.scalar("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL").await,
        6,
        "the healthy and the flaky endpoints, three events each"
    );
    // the gone one ran out of attempts: five each (the first and four retries), recorded with its status
    assert_eq!(
        s.scalar(&format!(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{gone_id}' AND failed_at IS NOT NULL"
        ))
        .await,
        3
    );
    assert_eq!(
        s.scalar(&format!(
            "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = '{gone_id}' AND status_code = 410"
        ))
        .await,
        15
    );
    assert_eq!(
        s.scalar(&format!(
            "SELECT max(length(response_excerpt))::int8 FROM webhook_attempts WHERE endpoint_id = '{gone_id}'"
        ))
        .await,
        1024,
        "an answer is read up to 1 KiB"
    );
    assert!(
        s.scalar(&format!(
            "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = '{hanging_id}' AND error = 'timed out'"
        ))
        .await
            >= 3
    );
    assert!(
        disabled.got().is_empty() && other.got().is_empty(),
        "a disabled endpoint, or one of other types, gets nothing"
    );
    assert_eq!(
        s.scalar(&format!("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{disabled_id}'")).await,
        0
    );
    // a connection closed without an answer is an error, retried like any other
    assert!(closing.got().len() >= 15, "five attempts of each of three events: {}", closing.got().len());
    let closed = format!(
        "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = '{closing_id}' AND status_code IS NULL AND error IS NOT NULL"
    );
    assert_eq!(s.scalar(&closed).await, 15);
    let failed =
        format!("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{closing_id}' AND failed_at IS NOT NULL");
    assert_eq!(s.scalar(&failed).await, 3);
}

#[actix_web::test]
async fn a_worker_killed_between_a_send_and_its_record_sends_again_and_loses_nothing() {
    let s = store().await;
    let broker = Broker::new();
    let receiver = Receiver::start(Behaviour::Ok).await;
    let (endpoint, secret) = s.endpoint(&receiver.url, json!(["charge.succeeded"])).await;
    let config = s.config(&broker);
    let _relay = start_workers(&config, &[Role::Relay]);
    s.charge("o1").await;
    crash_worker(&config, "webhooks", "webhooks-after-send").await;
    assert_eq!(receiver.got().len(), 1, "sent once before the kill");
    assert_eq!(s.scalar("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL").await, 0);
    assert_eq!(s.scalar("SELECT count(*) FROM webhook_attempts").await, 0, "nothing recorded");

    // a new worker: once the dead one's lease has passed, the delivery goes again
    let _webhooks = start_workers(&config, &[Role::Webhooks]);
    eventually(30, "the delivery is sent again and recorded", || async {
        s.scalar("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL").await == 1
    })
    .await;
    let got = receiver.got();
    assert_eq!(got.len(), 2, "at least once: twice here");
    assert_eq!(got[0].id, got[1].id, "the same webhook-id on both");
    assert_eq!(receiver.applied().len(), 1, "a receiver deduping on it applies the event once");
    assert!(got.iter().all(|r| r.signed_by(&secret)));
    assert_eq!(s.scalar(&format!("SELECT count(*) FROM webhook_attempts WHERE endpoint_id = '{endpoint}'")).await, 1);
}

#[actix_web::test]
async fn attempts_are_listed_newest_first_and_an_event_is_sent_again_on_request() {
    let s = store().await;
    let broker = Broker::new();
    // two 500s: with one retry in the schedule, the delivery fails
    let receiver = Receiver::start(Behaviour::FailFirst(2)).await;
    let (endpoint, _) = s.endpoint(&receiver.url, json!(["*"])).await;
    let mut config = s.config(&broker);
    config.webhook_schedule = "0.2".into();
    let _workers = start_workers(&config, &[Role::Relay, Role::Webhooks]);
    s.charge("o1").await;
    eventually(20, "the delivery runs out of attempts", || async {
        s.scalar("SELECT count(*) FROM webhook_deliveries WHERE failed_at IS NOT NULL").await == 1
    })
    .await;
    let path = format!("/v1/webhook_endpoints/{endpoint}/attempts");
    let all = s.app.get(&path, &s.key).await.json();
    let attempts = all["data"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 2, "{all}");
    assert!(attempts
        .iter()
        .all(|a| a["status_code"] == 500 && a["delivered"] == false && a["event_type"] == "charge.succeeded"));
    assert!(attempts[0]["id"].as_i64() > attempts[1]["id"].as_i64(), "newest first");
    let first = s.app.get(&format!("{path}?limit=1"), &s.key).await.json();
    assert_eq!((first["data"][0]["id"].clone(), first["has_more"].as_bool()), (attempts[0]["id"].clone(), Some(true)));
    let next = s.app.get(&format!("{path}?starting_after={}", attempts[0]["id"]), &s.key).await.json();
    assert_eq!((next["data"][0]["id"].clone(), next["has_more"].as_bool()), (attempts[1]["id"].clone(), Some(false)));
    let back = s.app.get(&format!("{path}?ending_before={}", attempts[1]["id"]), &s.key).await.json();
    assert_eq!(back["data"][0]["id"], attempts[0]["id"]);
    let foreign = s.app.get(&format!("{path}?starting_after=999999"), &s.key).await;
    assert_eq!(foreign.code(), "webhook_attempt_not_found");

    // sent again on request: the third attempt is answered 2xx
    let event = attempts[0]["event_id"].as_str().unwrap().to_owned();
    let again =
        s.app.post(&format!("/v1/events/{event}/redeliver"), &s.key, "again", json!({"endpoint_id": endpoint})).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.json()["endpoint_ids"], json!([endpoint]));
    eventually(20, "the event is delivered on its third attempt", || async {
        s.scalar("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL").await == 1
    })
    .await;
    assert_eq!(receiver.got().len(), 3);
    assert_eq!(receiver.applied().len(), 1, "one event, under one webhook-id");
    let listed = s.app.get(&path, &s.key).await.json();
    assert_eq!(listed["data"][0]["delivered"], true);
    assert_eq!(listed["data"].as_array().unwrap().len(), 3, "the earlier attempts stay in the log");

    let unknown =
        s.app.post(&format!("/v1/events/{}/redeliver", uuid::Uuid::now_v7()), &s.key, "unknown", json!({})).await;
    assert_eq!(unknown.code(), "event_not_found");
    let other_endpoint = s
        .app
        .post(&format!("/v1/events/{event}/redeliver"), &s.key, "other", json!({"endpoint_id": uuid::Uuid::now_v7()}))
        .await;
    assert_eq!(other_endpoint.code(), "webhook_endpoint_not_found");
}

/// An endpoint that fails every attempt for longer than the service allows
/// is disabled, once, and `webhook_endpoint.disabled` goes to the tenant's
/// other endpoints; enabled again, it gets what waited for it.
#[actix_web::test]
async fn an_endpoint_failing_for_too_long_is_disabled_and_the_others_are_told() {
    let s = store().await;
    let broker = Broker::new();
    let dead = Receiver::start(Behaviour::Always(503)).await;
    let watcher = Receiver::start(Behaviour::Ok).await;
    let (dead_id, _) = s.endpoint(&dead.url, json!(["charge.succeeded"])).await;
    s.endpoint(&watcher.url, json!(["webhook_endpoint.disabled"])).await;
    let mut config = s.config(&broker);
    config.webhook_schedule = "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5".into();
    config.webhook_disable_after_secs = 1;
    let _workers = start_workers(&config, &[Role::Relay, Role::Webhooks]);
    s.charge("o1").await;
    eventually(30, "the watcher hears the endpoint was disabled", || async { !watcher.got().is_empty() }).await;
    let endpoint = s.app.get(&format!("/v1/webhook_endpoints/{dead_id}"), &s.key).await.json();
    assert_eq!(endpoint["enabled"], false, "{endpoint}");
    assert!(endpoint["disabled_reason"].as_str().unwrap().contains("failed"), "{endpoint}");
    let told: serde_json::Value = serde_json::from_slice(&watcher.got()[0].body).unwrap();
    assert_eq!(
        (told["type"].as_str(), told["data"]["id"].as_str()),
        (Some("webhook_endpoint.disabled"), Some(dead_id.as_str()))
    );
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'webhook_endpoint.disabled'").await, 1, "once");
    // disabled: its delivery waits, unsent
    let attempts = s.scalar("SELECT count(*) FROM webhook_attempts").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.scalar(&format!("SELECT count(*) FROM webhook_attempts WHERE endpoint_id = '{dead_id}'")).await + 1,
        attempts
    );
    assert_eq!(
        s.scalar("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL").await,
        1
    );
    // enabled again: the reason goes, the streak starts over
    let on = s
        .app
        .send("PATCH", &format!("/v1/webhook_endpoints/{dead_id}"), &s.key, None, Some(br#"{"enabled": true}"#))
        .await
        .json();
    assert_eq!(
        (on["enabled"].as_bool(), on["disabled_reason"].clone(), on["failing_since"].clone()),
        (Some(true), json!(null), json!(null))
    );
}
