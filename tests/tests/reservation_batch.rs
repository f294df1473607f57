//! Group commit of new reservations: concurrent reservations share one
//! database transaction, and each still gets exactly the outcome it gets
//! alone: its reservation and event, its `out_of_stock` decline with what
//! was left at its turn, its natural-key answer or conflict, its error, its
//! stored answer replayed byte for byte. Which requests shared a
//! transaction is read from the rows themselves: rows written by one
//! transaction carry its `xmin`.

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::{batching, spawn_app_with, TestApp};
use serde_json::{json, Value};

async fn batching_app() -> TestApp {
    spawn_app_with(batching).await
}

fn hold(order: &str, sku: &str, quantity: i64) -> Value {
    json!({"order_id": order, "sku": sku, "quantity": quantity})
}

#[actix_web::test]
async fn concurrent_reservations_share_a_transaction_each_with_the_outcome_it_gets_alone() {
    let app = batching_app().await;
    let key = app.tenant("shop").await;
    for (sku, units) in [("hot", 5), ("cold", 100)] {
        let r = app
            .post(&format!("/v1/skus/{sku}/restocks"), &key, &format!("restock-{sku}"), json!({"quantity": units}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    // 8 orders of one unit of a SKU of 5, 4 orders of 2 of a SKU of 100,
    // one order of a SKU that does not exist
    let mut sent: Vec<(String, Value)> = Vec::new();
    sent.extend((0..8).map(|i| (format!("h{i}:hold"), hold(&format!("h{i}"), "hot", 1))));
    sent.extend((0..4).map(|i| (format!("c{i}:hold"), hold(&format!("c{i}"), "cold", 2))));
    sent.push(("g:hold".to_owned(), hold("g", "ghost", 1)));
    let answers =
        join_all(sent.iter().map(|(idem, body)| app.post("/v1/reservations", &key, idem, body.clone()))).await;

    let status_of = |prefix: &str, status: StatusCode| {
        sent.iter().zip(&answers).filter(|((idem, _), a)| idem.starts_with(prefix) && a.status == status).count()
    };
    assert_eq!(status_of("h", StatusCode::CREATED), 5, "{answers:?}");
    let declined: Vec<_> = answers.iter().filter(|a| a.status == StatusCode::CONFLICT).collect();
    assert_eq!(declined.len(), 3, "{answers:?}");
    for d in &declined {
        assert_eq!(d.code(), "out_of_stock", "{d:?}");
        // each decided at its turn: nothing left of the 5
        assert_eq!(d.json()["detail"], "only 0 of SKU `hot` available, 1 requested", "{d:?}");
    }
    assert_eq!(status_of("c", StatusCode::CREATED), 4, "{answers:?}");
    assert_eq!(answers.last().unwrap().status, StatusCode::NOT_FOUND, "{:?}", answers.last());
    assert_eq!(answers.last().unwrap().code(), "sku_not_found");

    // The effects: one reservation and one event per hold, exact stock.
    let held = |sku: &str| {
        let app = &app;
        let key = &key;
        let sku = sku.to_owned();
        async move { app.get(&format!("/v1/skus/{sku}"), key).await.json() }
    };
    let hot = held("hot").await;
    assert_eq!((hot["on_hand"].as_i64(), hot["reserved"].as_i64()), (Some(5), Some(5)), "{hot}");
    assert_eq!(held("cold").await["reserved"], 8);
    assert_eq!(app.scalar("SELECT count(*) FROM reservations").await, 9);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM outbox o JOIN reservations r ON o.payload->'data'->>'id' = r.id::text \
              WHERE o.event_type = 'reservation.held'"
        )
        .await,
        9,
        "every reservation has its one event"
    );
    app.audit_clean().await;

    // They were committed together: far fewer transactions than holds.
    let commits = app.scalar("SELECT count(DISTINCT xmin::text) FROM reservations").await;
    assert!(commits < 9, "9 reservations in {commits} commits");
    let largest = app.scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM reservations GROUP BY xmin::text) b").await;
    assert!(largest >= 3, "the largest batch held {largest} reservations");

    // Every request sent again with its key: the first answer, byte for
    // byte, replayed when it was stored (an error was not: the same again).
    for ((idem, body), first) in sent.iter().zip(&answers) {
        let again = app.post("/v1/reservations", &key, idem, body.clone()).await;
        assert_eq!((again.status, &again.body), (first.status, &first.body), "{idem}: the same answer");
        assert_eq!(again.replayed, first.status != StatusCode::NOT_FOUND, "{idem}: replayed when stored");
    }

    // The natural key, under new keys, among new holds so that they go in a
    // batch: the same hold is the first one; another quantity is refused.
    let c0 = sent.iter().zip(&answers).find(|((idem, _), _)| idem == "c0:hold").unwrap().1.id();
    let mut more = vec![("c0:again".to_owned(), hold("c0", "cold", 2)), ("c1:more".to_owned(), hold("c1", "cold", 3))];
    more.extend((4..8).map(|i| (format!("c{i}:hold"), hold(&format!("c{i}"), "cold", 1))));
    let again = join_all(more.iter().map(|(idem, body)| app.post("/v1/reservations", &key, idem, body.clone()))).await;
    assert_eq!((again[0].status, again[0].natural_key_replayed), (StatusCode::OK, true), "{:?}", again[0]);
    assert_eq!(again[0].id(), c0);
    assert_eq!(
        (again[1].status, again[1].code().as_str()),
        (StatusCode::CONFLICT, "natural_key_conflict"),
        "{:?}",
        again[1]
    );
    assert!(again[2..].iter().all(|a| a.status == StatusCode::CREATED), "{again:?}");
    assert_eq!(held("cold").await["reserved"], 12);
    app.audit_clean().await;
}
