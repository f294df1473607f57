//! The event feed (`GET /v1/events`, `GET /v1/events/{id}`): exactly the
//! events the outbox holds for the tenant, newest first in the order they
//! were written, each the envelope the relay publishes, byte for byte;
//! paged both ways like every list; filtered by type and creation; another
//! tenant's event is not found, as an id or as a cursor.

use awc::http::StatusCode;
use ledger_tests::pages::{self, rfc3339, Items};
use ledger_tests::{spawn_app, TestApp};
use serde_json::{json, Value};

/// What the relay would publish now, oldest first: every unpublished row
/// as `ledger::outbox::claim_unpublished` claims it (then let go).
async fn relayed(app: &TestApp) -> Vec<ledger::outbox::Message> {
    let pool = ledger::db::pool(&app.db.url, &Default::default()).unwrap();
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let claimed = ledger::outbox::claim_unpublished(&tx, 10_000, 1e9).await.unwrap();
    tx.rollback().await.unwrap();
    claimed
}

/// Events are named by their message id, each of the documented shape.
const EVENTS: Items = Items { id: "message_id", check: documented };

fn documented(path: &str, e: &Value) {
    serde_json::from_value::<api::routes::events::Event>(e.clone())
        .unwrap_or_else(|err| panic!("{path}: an event not of the documented shape ({err}): {e}"));
}

/// A page: its events' message ids in the order given, and `has_more`.
async fn ids(app: &TestApp, key: &str, path: &str) -> (Vec<String>, bool) {
    pages::ids(app, key, path, EVENTS).await
}

async fn walks_both_ways(app: &TestApp, key: &str, list: &str, limit: usize, expected: &[String]) {
    pages::walks_both_ways(app, key, list, limit, expected, EVENTS).await
}

async fn created(app: &TestApp, path: &str, key: &str, idem: &str, body: Value) -> Value {
    let r = app.post(path, key, idem, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{path}: {r:?}");
    r.json()
}

#[actix_web::test]
async fn the_feed_is_the_outbox_newest_first_each_event_as_the_relay_publishes_it() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "1000.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let charge = async |order: &str| {
        let body = json!({"order_id": order, "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                          "amount": "10.00", "currency": "USD"});
        created(&app, "/v1/charges", &key, &format!("{order}:1"), body).await["id"].as_str().unwrap().to_owned()
    };
    let mut charges = Vec::new();
    for i in 0..4 {
        charges.push(charge(&format!("o{i}")).await);
    }
    // a transfer writes no event
    let transfer =
        json!({"source_account_id": buyer, "destination_account_id": seller, "amount": "1.00", "currency": "USD"});
    created(&app, "/v1/transfers", &key, "t1", transfer).await;
    let between = chrono::Utc::now();
    let refund = created(
        &app,
        &format!("/v1/charges/{}/refunds", charges[0]),
        &key,
        "r1",
        json!({"reference": "r1", "amount": "4.00"}),
    )
    .await;
    created(&app, "/v1/skus/mug/restocks", &key, "mug", json!({"quantity": 5})).await;
    let held =
        created(&app, "/v1/reservations", &key, "o9:mug", json!({"order_id": "o9", "sku": "mug", "quantity": 1})).await;
    let r =
        app.post(&format!("/v1/reservations/{}/release", held["id"].as_str().unwrap()), &key, "rel", json!(null)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    charges.push(charge("o4").await);

    let other = app.tenant("other").await;
    let their_buyer = app.funded(&other, "buyer", "100.00").await;
    let their_seller = app.account(&other, "seller", "USD", false).await;
    let body = json!({"order_id": "o0", "attempt": 1, "buyer_account_id": their_buyer,
                      "seller_account_id": their_seller, "amount": "10.00", "currency": "USD"});
    created(&app, "/v1/charges", &other, "o0:1", body).await;

    // what the relay would publish, split by tenant, newest first
    let tenant: uuid::Uuid = app
        .db
        .client()
        .await
        .query_one("SELECT tenant_id FROM accounts WHERE id = $1::text::uuid", &[&buyer])
        .await
        .unwrap()
        .get(0);
    let all = relayed(&app).await;
    let (mut mine, mut theirs): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|m| serde_json::from_str::<Value>(&m.payload).unwrap()["tenant_id"] == json!(tenant.to_string()));
    mine.reverse();
    theirs.reverse();
    assert_eq!(mine.len(), 5 + 1 + 2, "five charges, a refund, a hold and its release: {mine:?}");
    assert_eq!(theirs.len(), 1);
    let theirs = theirs[0].message_id.to_string();
    let every: Vec<String> = mine.iter().map(|m| m.message_id.to_string()).collect();
    let types: Vec<&str> = mine.iter().map(|m| m.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "charge.succeeded",
            "reservation.released",
            "reservation.held",
            "charge.refunded",
            "charge.succeeded",
            "charge.succeeded",
            "charge.succeeded",
            "charge.succeeded"
        ],
        "newest first, in the order they were written"
    );

    walks_both_ways(&app, &key, "/v1/events", 3, &every).await;
    walks_both_ways(&app, &key, "/v1/events", 100, &every).await;
    assert_eq!(ids(&app, &key, "/v1/events").await, (every.clone(), false), "ten by default");
    assert_eq!(ids(&app, &other, "/v1/events").await, (vec![theirs.clone()], false), "each tenant its own feed");

    // each event: the relay's bytes, alone and in a page
    let page = app.get("/v1/events?limit=100", &key).await;
    let page_text = String::from_utf8(page.body.clone()).unwrap();
    for m in &mine {
        let one = app.get(&format!("/v1/events/{}", m.message_id), &key).await;
        assert_eq!((one.status, one.content_type.as_str()), (StatusCode::OK, "application/json"), "{one:?}");
        assert_eq!(String::from_utf8(one.body.clone()).unwrap(), m.payload, "the bytes the relay publishes");
        assert!(page_text.contains(&m.payload), "the page holds {} as the relay publishes it", m.message_id);
    }
    let listed = page.json();
    for (e, m) in listed["data"].as_array().unwrap().iter().zip(&mine) {
        assert_eq!(e, &serde_json::from_str::<Value>(&m.payload).unwrap());
    }

    // the envelope as documented: id, type, version, tenant, order, data
    let newest = &listed["data"][0];
    assert_eq!(newest["message_id"], json!(every[0]));
    assert_eq!(newest["type"], "charge.succeeded");
    assert_eq!(newest["version"], 1);
    assert_eq!(newest["tenant_id"], json!(tenant.to_string()));
    assert_eq!(newest["order_id"], "o4");
    assert_eq!(newest["data"]["id"], json!(charges[4]));
    assert_eq!(newest["data"]["amount"], "10.00");
    assert!(newest["occurred_at"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
    let refunded = &listed["data"][3];
    assert_eq!((refunded["type"].as_str(), refunded["order_id"].as_str()), (Some("charge.refunded"), Some("o0")));
    assert_eq!((&refunded["data"]["id"], &refunded["data"]["charge_id"]), (&refund["id"], &json!(charges[0])));

    // by type
    let of = |t: &str| -> Vec<String> {
        mine.iter().filter(|m| m.event_type == t).map(|m| m.message_id.to_string()).collect()
    };
    walks_both_ways(&app, &key, "/v1/events?type=charge.succeeded", 2, &of("charge.succeeded")).await;
    assert_eq!(ids(&app, &key, "/v1/events?type=charge.refunded").await, (of("charge.refunded"), false));
    walks_both_ways(&app, &key, "/v1/events?type=reservation.held", 1, &of("reservation.held")).await;
    assert_eq!(ids(&app, &key, "/v1/events?type=charge.refund_failed").await, (vec![], false));
    assert_eq!(ids(&app, &other, "/v1/events?type=charge.refunded").await, (vec![], false), "not theirs");
    for bad in ["type=", "type=charge", "type=Charge.succeeded", "type=charge.succeeded%20", "type=charge..x"] {
        let r = app.get(&format!("/v1/events?{bad}"), &key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"), "{bad}");
    }
    // created in a range: the refund and what followed, or the charges before it
    let after = format!("/v1/events?created[gte]={}", rfc3339(between));
    walks_both_ways(&app, &key, &after, 2, &every[..4]).await;
    let before = format!("/v1/events?created[lt]={}", rfc3339(between));
    walks_both_ways(&app, &key, &before, 3, &every[4..]).await;
    let both = format!("/v1/events?type=charge.succeeded&created[gte]={}", rfc3339(between));
    assert_eq!(ids(&app, &key, &both).await, (vec![every[0].clone()], false), "filters combine");

    // another tenant's event, or none: not found, as an id and as a cursor
    for (who, id) in [(&key, theirs.clone()), (&other, every[0].clone()), (&key, uuid::Uuid::now_v7().to_string())] {
        let r = app.get(&format!("/v1/events/{id}"), who).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "event_not_found"), "{id}");
        for cursor in ["starting_after", "ending_before"] {
            let list = format!("/v1/events?{cursor}={id}");
            let r = app.get(&list, who).await;
            assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "event_not_found"), "{list}");
        }
    }
    let r = app.get("/v1/events/nope", &key).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
    // the bounds of every list
    for bad in ["limit=0", "limit=101", "limit=ten", "starting_after=nope", "created[gte]=yesterday"] {
        let r = app.get(&format!("/v1/events?{bad}"), &key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"), "{bad}");
    }
    assert_eq!(ids(&app, &key, "/v1/events?limit=1").await, (vec![every[0].clone()], true));
    let both = app.get(&format!("/v1/events?starting_after={}&ending_before={}", every[1], every[0]), &key).await;
    assert_eq!((both.status, both.code().as_str()), (StatusCode::CONFLICT, "conflicting_cursors"));
}

/// The document bounds what the server enforces: `limit` 1 to 100, the
/// cursors UUIDs, `type` the pattern the server checks.
#[actix_web::test]
async fn the_documented_parameters_are_the_enforced_ones() {
    let spec = serde_json::to_value(api::openapi::document()).unwrap();
    let op = &spec["paths"]["/v1/events"]["get"];
    let param = |name: &str| {
        op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}"))
            ["schema"]
            .clone()
    };
    assert_eq!((param("limit")["minimum"].as_i64(), param("limit")["maximum"].as_i64()), (Some(1), Some(100)));
    for cursor in ["starting_after", "ending_before"] {
        assert_eq!(param(cursor)["format"], "uuid", "{cursor}");
    }
    assert_eq!(param("type")["pattern"], r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$");
    for code in ["400", "404", "409", "422"] {
        assert!(op["responses"][code].is_object(), "{code}");
    }
    assert!(spec["paths"]["/v1/events/{id}"]["get"]["responses"]["404"].is_object());
}
