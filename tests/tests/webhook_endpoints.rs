//! Webhook endpoints: registered with a signing secret shown once, listed,
//! changed, rotated with an overlap, deleted; destinations checked against
//! the service's own network; every tenant sees only its own.

use awc::http::StatusCode;
use ledger_tests::{spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};

async fn app_allowing_private() -> TestApp {
    spawn_app_with(|c| c.webhook_allow_private = true).await
}

async fn register(app: &TestApp, key: &str, idem: &str, url: &str, events: Value) -> ledger_tests::Answer {
    app.post("/v1/webhook_endpoints", key, idem, json!({"url": url, "enabled_events": events})).await
}

#[actix_web::test]
async fn an_endpoint_is_registered_with_its_secret_shown_once_then_changed_and_deleted() {
    let app = app_allowing_private().await;
    let key = app.tenant("shop").await;
    let made = register(&app, &key, "ep1", "http://127.0.0.1:9/hooks", json!(["charge.succeeded"])).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let body = made.json();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{body}");
    let id = made.id();
    // the same key: the same answer (the same secret); a read never shows it
    let again = register(&app, &key, "ep1", "http://127.0.0.1:9/hooks", json!(["charge.succeeded"])).await;
    assert!(again.replayed && again.body == made.body);
    let read = app.get(&format!("/v1/webhook_endpoints/{id}"), &key).await.json();
    assert!(read.get("secret").is_none(), "{read}");
    assert_eq!((read["enabled"].as_bool(), read["enabled_events"].clone()), (Some(true), json!(["charge.succeeded"])));
    let stored: String = app
        .db
        .client()
        .await
        .query_one("SELECT secret FROM webhook_endpoints WHERE id = $1::text::uuid", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, secret);

    let second = register(&app, &key, "ep2", "http://localhost:9/other", json!(["*"])).await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    let listed = app.get("/v1/webhook_endpoints?limit=1", &key).await.json();
    assert_eq!(
        (listed["data"][0]["id"].as_str(), listed["has_more"].as_bool()),
        (Some(second.id().as_str()), Some(true))
    );
    let next = app.get(&format!("/v1/webhook_endpoints?starting_after={}", second.id()), &key).await.json();
    assert_eq!(next["data"].as_array().unwrap().len(), 1);
    assert_eq!(next["data"][0]["id"], id.as_str());

    let patch = |body: Value| {
        let (app, key, id) = (&app, &key, &id);
        async move {
            app.send("PATCH", &format!("/v1/webhook_endpoints/{id}"), key, None, Some(body.to_string().as_bytes()))
                .await
        }
    };
    let changed = patch(json!({"enabled": false, "enabled_events": ["charge.captured", "charge.voided"],
                               "description": "orders"}))
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    let c = changed.json();
    assert_eq!((c["enabled"].as_bool(), c["description"].as_str()), (Some(false), Some("orders")));
    assert_eq!(c["url"], "http://127.0.0.1:9/hooks", "what was not given is unchanged");
    let cleared = patch(json!({"description": null})).await.json();
    assert!(cleared["description"].is_null() && cleared["enabled"] == false, "{cleared}");
    assert_eq!(patch(json!({"enabled_events": ["charge.exploded"]})).await.code(), "unknown_event_type");
    assert_eq!(patch(json!({"url": "ftp://127.0.0.1/"})).await.code(), "invalid_url");

    let deleted = app.send("DELETE", &format!("/v1/webhook_endpoints/{id}"), &key, None, None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    assert!(deleted.json()["deleted_at"].is_string());
    let gone = app.get(&format!("/v1/webhook_endpoints/{id}"), &key).await;
    assert_eq!((gone.status, gone.code()), (StatusCode::NOT_FOUND, "webhook_endpoint_not_found".to_owned()));
    let again = app.send("DELETE", &format!("/v1/webhook_endpoints/{id}"), &key, None, None).await;
    assert_eq!(again.code(), "webhook_endpoint_not_found");
    let listed = app.get("/v1/webhook_endpoints", &key).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "a deleted endpoint is not listed");
    assert_eq!(app.scalar("SELECT count(*) FROM webhook_endpoints").await, 2, "its row stays, for its attempts");
    // the stored answers of the endpoints' creations name what they made
    app.audit_clean().await;
}

#[actix_web::test]
async fn a_rotation_keeps_the_previous_secret_signing_for_its_overlap() {
    let app = app_allowing_private().await;
    let key = app.tenant("shop").await;
    let made = register(&app, &key, "ep", "http://127.0.0.1:9/hooks", json!(["*"])).await;
    let (id, first) = (made.id(), made.json()["secret"].as_str().unwrap().to_owned());
    let path = format!("/v1/webhook_endpoints/{id}/rotate_secret");
    let rotated = app.post(&path, &key, "rot1", json!({"expire_previous_in": 3600})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    let second = rotated.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert!(rotated.json()["previous_secret_expires_at"].is_string());
    let uuid: uuid::Uuid = id.parse().unwrap();
    let secrets = ledger::webhook_endpoints::signing_secrets(&app.db.client().await, uuid).await.unwrap();
    assert_eq!(secrets, [second.clone(), first.clone()], "both sign during the overlap");
    // a delivery signs with both: each verifies on its own
    let header = service::signing::header(&secrets.iter().map(String::as_str).collect::<Vec<_>>(), "evt", 1, b"{}");
    let header = header.unwrap();
    assert!(header.contains(&service::signing::sign(&first, "evt", 1, b"{}").unwrap()));
    assert!(header.contains(&service::signing::sign(&second, "evt", 1, b"{}").unwrap()));

    // a rotation with no overlap: only the newest signs
    let third = app.post(&path, &key, "rot2", json!({"expire_previous_in": 0})).await.json();
    let third = third["secret"].as_str().unwrap().to_owned();
    let secrets = ledger::webhook_endpoints::signing_secrets(&app.db.client().await, uuid).await.unwrap();
    assert_eq!(secrets, [third]);
    let bad = app.post(&path, &key, "rot3", json!({"expire_previous_in": 604801})).await;
    assert_eq!(bad.code(), "invalid_field");
}

#[actix_web::test]
async fn destinations_inside_the_service_network_are_refused_by_default() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    for (i, url) in ["http://127.0.0.1:8080/", "http://169.254.169.254/latest", "http://[::1]/", "http://10.0.0.7/hook"]
        .into_iter()
        .enumerate()
    {
        let refused = register(&app, &key, &format!("p{i}"), url, json!(["*"])).await;
        assert_eq!((refused.status, refused.code()), (StatusCode::CONFLICT, "private_destination".to_owned()), "{url}");
    }
    for (i, url) in ["ftp://93.184.216.34/", "https://user:secret@93.184.216.34/"].into_iter().enumerate() {
        assert_eq!(register(&app, &key, &format!("u{i}"), url, json!(["*"])).await.code(), "invalid_url", "{url}");
    }
    let unknown = register(&app, &key, "e", "https://93.184.216.34/", json!(["charge.exploded"])).await;
    assert_eq!(unknown.code(), "unknown_event_type");
    let empty = register(&app, &key, "e2", "https://93.184.216.34/", json!([])).await;
    assert_eq!(empty.code(), "invalid_field");
    assert_eq!(app.scalar("SELECT count(*) FROM webhook_endpoints").await, 0, "nothing refused was written");
    let public = register(&app, &key, "ok", "https://93.184.216.34/hooks", json!(["charge.succeeded"])).await;
    assert_eq!(public.status, StatusCode::CREATED, "{public:?}");
}

#[actix_web::test]
async fn another_tenants_endpoint_is_not_found() {
    let app = app_allowing_private().await;
    let (a, b) = (app.tenant("a").await, app.tenant("b").await);
    let id = register(&app, &a, "ep", "http://127.0.0.1:9/hooks", json!(["*"])).await.id();
    let paths = [format!("/v1/webhook_endpoints/{id}"), format!("/v1/webhook_endpoints?starting_after={id}")];
    for path in &paths {
        let other = app.get(path, &b).await;
        assert_eq!((other.status, other.code()), (StatusCode::NOT_FOUND, "webhook_endpoint_not_found".to_owned()));
    }
    let patched =
        app.send("PATCH", &format!("/v1/webhook_endpoints/{id}"), &b, None, Some(br#"{"enabled": false}"#)).await;
    assert_eq!(patched.code(), "webhook_endpoint_not_found");
    let rotated = app.post(&format!("/v1/webhook_endpoints/{id}/rotate_secret"), &b, "r", json!({})).await;
    assert_eq!(rotated.code(), "webhook_endpoint_not_found");
    let deleted = app.send("DELETE", &format!("/v1/webhook_endpoints/{id}"), &b, None, None).await;
    assert_eq!(deleted.code(), "webhook_endpoint_not_found");
    assert!(app.get(&format!("/v1/webhook_endpoints/{id}"), &a).await.json()["enabled"] == true);
    assert_eq!(app.get("/v1/webhook_endpoints", &b).await.json()["data"], json!([]));
}

/// The event types an endpoint may subscribe to are every event the
/// service publishes, and the document lists exactly those (and `*`).
#[test]
fn the_subscribable_event_types_are_every_published_event_and_the_document_says_so() {
    use ledger::events::*;
    let published = [
        ChargeSucceededV1::TYPE,
        ChargeRefundedV1::TYPE,
        ChargeRefundFailedV1::TYPE,
        ChargeAuthorizedV1::TYPE,
        ChargeCapturedV1::TYPE,
        ChargeVoidedV1::TYPE,
        ReservationHeldV1::TYPE,
        ReservationReleasedV1::TYPE,
        ReservationCommittedV1::TYPE,
        WebhookEndpointDisabledV1::TYPE,
    ];
    assert_eq!(ledger::webhook_endpoints::EVENT_TYPES, published);
    let spec: Value = serde_json::to_value(api::openapi::document()).unwrap();
    let documented = &spec["components"]["schemas"]["WebhookEventType"]["enum"];
    let mut expected = vec![ledger::webhook_endpoints::ALL];
    expected.extend(published);
    assert_eq!(documented, &json!(expected));
}

#[actix_web::test]
async fn a_dead_endpoints_backlog_never_hides_another_endpoints_due_deliveries() {
    let app = app_allowing_private().await;
    let key = app.tenant("shop").await;
    let dead = register(&app, &key, "dead", "http://127.0.0.1:9/dead", json!(["*"])).await.json();
    let live = register(&app, &key, "live", "http://127.0.0.1:9/live", json!(["*"])).await.json();
    let client = app.db.client().await;
    // 50 deliveries the dead endpoint owes since an hour, one the live endpoint owes since now
    let owe =
        "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, message_id, event_type, payload, next_attempt_at) \
               SELECT e.tenant_id, e.id, gen_random_uuid(), 'charge.succeeded', '\\x7b7d'::bytea, \
                      now() - make_interval(secs => $2) \
                 FROM webhook_endpoints e, generate_series(1, $3) WHERE e.id = $1";
    let (dead_id, live_id): (uuid::Uuid, uuid::Uuid) =
        (dead["id"].as_str().unwrap().parse().unwrap(), live["id"].as_str().unwrap().parse().unwrap());
    client.execute(owe, &[&dead_id, &3600f64, &50i32]).await.unwrap();
    client.execute(owe, &[&live_id, &0f64, &1i32]).await.unwrap();
    // a scan of 4, at most 2 of an endpoint
    let due = ledger::webhook_deliveries::claim_due(&client, std::time::Duration::from_secs(30), 4, 2).await.unwrap();
    let of = |id: uuid::Uuid| due.iter().filter(|d| d.endpoint_id == id).count();
    assert_eq!((of(dead_id), of(live_id)), (2, 1), "each endpoint its share, the newer one too");
}
