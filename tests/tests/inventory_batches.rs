//! The inventory worker's batches: the deliveries that arrived together are
//! applied in one database transaction and acked after its commit; a poison
//! message among them fails none of its neighbours, and a duplicate among
//! them is applied once.

use ledger_tests::broker::Broker;
use ledger_tests::shop::shop;
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{eventually, start_workers, Role};
use serde_json::json;

#[actix_web::test]
async fn a_backlog_is_committed_in_batches_and_a_poison_among_them_fails_no_neighbour() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _relay = start_workers(&config, &[Role::Relay]);
    eventually(10, "the queues exist", || async { broker.exists(&broker.names.inventory).await }).await;
    let published = || async { s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0 };

    // A backlog: six paid orders queued while no inventory worker runs.
    let mut holds = Vec::new();
    for i in 0..6 {
        holds.push(s.purchase(&format!("b{i}"), 1).await);
    }
    eventually(20, "the backlog is published", published).await;
    let backlog = broker.depth(&broker.names.inventory).await as i64;
    assert!(backlog >= 6, "{backlog} messages queued");
    let worker = start_workers(&config, &[Role::Inventory]);
    eventually(30, "the backlog is drained", || async { broker.depth(&broker.names.inventory).await == 0 }).await;
    for hold in &holds {
        eventually(10, "every paid order is committed", || async { s.status(hold).await == "committed" }).await;
    }
    // One transaction per batch: its inbox rows share its start time.
    let inbox = s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await;
    let commits = s.scalar("SELECT count(DISTINCT received_at) FROM inbox WHERE consumer = 'inventory'").await;
    assert_eq!(inbox, backlog, "every message recorded once");
    assert!(commits < inbox, "{inbox} messages in {commits} transactions: no batch");
    assert_eq!(s.on_hand().await, 4);

    // Stop the worker, then queue a poison (a payment without an order), a
    // copy of a message already applied, and two new paid orders behind them.
    drop(worker);
    eventually(10, "the worker is gone", || async { broker.counts(&broker.names.inventory).await.1 == 0 }).await;
    let failing = json!({"message_id": uuid::Uuid::now_v7(), "type": "charge.succeeded", "version": 1,
                         "tenant_id": s.tenant, "order_id": null, "occurred_at": "2026-01-01T00:00:00Z", "data": {}});
    broker.publish("charge.succeeded", "poison", failing.to_string().as_bytes()).await;
    let (id, payload): (uuid::Uuid, serde_json::Value) = {
        let row = s
            .app
            .db
            .client()
            .await
            .query_one("SELECT message_id, payload FROM outbox WHERE event_type = 'charge.succeeded' LIMIT 1", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    broker.publish("charge.succeeded", &id.to_string(), payload.to_string().as_bytes()).await;
    let late = [s.purchase("c0", 1).await, s.purchase("c1", 1).await];
    eventually(20, "the new orders are published", published).await;

    let _worker = start_workers(&config, &[Role::Inventory]);
    for hold in &late {
        eventually(30, "the poison's neighbours are committed", || async { s.status(hold).await == "committed" }).await;
    }
    eventually(30, "the poison is dead-lettered", || async {
        broker.depth(&broker.names.dead_letter_queue).await == 1
    })
    .await;
    eventually(10, "nothing is left in the queue", || async { broker.depth(&broker.names.inventory).await == 0 }).await;
    assert_eq!(s.on_hand().await, 2, "the copy took no stock");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 8);
    s.audit_clean(true).await;
}
