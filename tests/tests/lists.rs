//! Lists a page at a time (`GET /v1/accounts`, `/v1/charges`,
//! `/v1/charges/{id}/refunds`, `/v1/transfers`, `/v1/reservations`): newest
//! first, `limit` at a time, `starting_after` and `ending_before` walking
//! both ways over the same rows, `has_more`; no row missed or repeated while
//! rows are created during the walk; filters; a cursor that is not one of
//! the caller's items answered 404, never with another tenant's rows.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::card_shop::CardShop;
use ledger_tests::pages::{self, refuses_bad_pages, rfc3339, with, BY_ID};
use ledger_tests::{spawn_app, TestApp};
use serde_json::{json, Value};

async fn page(app: &TestApp, key: &str, query: &str) -> (Vec<String>, bool) {
    ids(app, key, &format!("/v1/accounts?{query}")).await
}

#[actix_web::test]
async fn pages_walk_every_account_once_both_ways_while_accounts_are_created() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let other = app.tenant("other").await;
    let names: Vec<String> = (0..25).map(|i| format!("buyer-{i:02}")).collect();
    let made = join_all(names.iter().map(|n| app.account(&key, n, "USD", false))).await;
    let theirs = app.account(&other, "theirs", "USD", false).await;

    // newest first, ten at a time; accounts created meanwhile are newer than
    // every cursor, so they never show up on a later page
    let mut seen: Vec<String> = Vec::new();
    let mut query = "limit=10".to_owned();
    let mut pages = Vec::new();
    loop {
        let (ids, has_more) = page(&app, &key, &query).await;
        app.account(&key, &format!("late-{}", seen.len()), "USD", false).await;
        seen.extend(ids.iter().cloned());
        pages.push(ids.clone());
        if !has_more {
            break;
        }
        query = format!("limit=10&starting_after={}", ids.last().unwrap());
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no account twice");
    assert_eq!(unique, made.iter().collect::<BTreeSet<_>>(), "every account that existed, none created later");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    assert!(!seen.contains(&theirs), "never another tenant's");

    // back from the last page with `ending_before`: the same pages
    let (back, has_more) = page(&app, &key, &format!("limit=10&ending_before={}", pages[2][0])).await;
    assert_eq!((back, has_more), (pages[1].clone(), true));
    let (back, _) = page(&app, &key, &format!("limit=10&ending_before={}", pages[1][0])).await;
    assert_eq!(back, pages[0]);
}

#[actix_web::test]
async fn filters_narrow_the_list_and_bad_cursors_are_refused() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let other = app.tenant("other").await;
    let before = chrono::Utc::now();
    let buyer = app.account(&key, "buyer-1", "USD", false).await;
    let seller = app.account(&key, "seller-1", "USD", false).await;
    let euro = app.account(&key, "buyer-eu", "EUR", false).await;
    let theirs = app.account(&other, "buyer-theirs", "USD", false).await;

    let (ids, _) = page(&app, &key, "reference_prefix=buyer-").await;
    assert_eq!(ids, [euro.clone(), buyer.clone()]);
    let (ids, _) = page(&app, &key, "currency=USD").await;
    assert_eq!(ids, [seller.clone(), buyer.clone()]);
    let after = chrono::Utc::now();
    let range = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (ids, _) = page(&app, &key, &format!("created[lt]={}", range(before).replace('+', "%2B"))).await;
    assert!(ids.is_empty(), "{ids:?}");
    let (ids, has_more) =
        page(&app, &key, &format!("limit=2&created[gte]={}&created[lt]={}", range(before), range(after))).await;
    assert_eq!((ids, has_more), (vec![euro.clone(), seller.clone()], true));

    // a cursor from another tenant is not found, like any of its ids: nothing of theirs
    for bad in [format!("starting_after={theirs}"), format!("ending_before={theirs}")] {
        let r = app.get(&format!("/v1/accounts?{bad}"), &key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "account_not_found"), "{bad}");
    }
    for bad in ["limit=0", "limit=101", "starting_after=nope"] {
        let r = app.get(&format!("/v1/accounts?{bad}"), &key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"), "{bad}");
    }
    let both = app.get(&format!("/v1/accounts?starting_after={buyer}&ending_before={seller}"), &key).await;
    assert_eq!((both.status, both.code().as_str()), (StatusCode::CONFLICT, "conflicting_cursors"));
    let r = app.get("/v1/accounts?currency=XYZ", &key).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    let (ids, has_more) = page(&app, &other, "").await;
    assert_eq!((ids, has_more), (vec![theirs], false), "each tenant its own list");
    let body: Value = app.get("/v1/accounts?limit=1", &key).await.json();
    assert_eq!(body["data"][0]["balance"], json!("0.00"));
}

/// A page of any list: its items' ids, in the order given, and `has_more`.
async fn ids(app: &TestApp, key: &str, path: &str) -> (Vec<String>, bool) {
    pages::ids(app, key, path, BY_ID).await
}

/// Newest first: ids are UUIDv7, so a later item has a greater id.
fn newest_first(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_by(|a, b| b.cmp(a));
    ids
}

async fn walks_both_ways(app: &TestApp, key: &str, list: &str, limit: usize, expected: &[String]) {
    pages::walks_both_ways(app, key, list, limit, expected, BY_ID).await
}

/// A wallet charge of `amount` for `order` (attempt 1); its id.
async fn charge(app: &TestApp, key: &str, order: &str, buyer: &str, seller: &str, amount: &str) -> String {
    let body = json!({"order_id": order, "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                      "amount": amount, "currency": "USD"});
    loop {
        let r = app.post("/v1/charges", key, &format!("{order}:1"), body.clone()).await;
        // concurrent charges of one buyer may meet as `contention`: the same key again
        if r.status == StatusCode::CONFLICT && r.code() == "contention" {
            continue;
        }
        assert_eq!(r.status, StatusCode::CREATED, "{order}: {r:?}");
        return r.id();
    }
}

#[actix_web::test]
async fn charges_walk_both_ways_and_filter_by_order_status_buyer_seller_and_creation() {
    let s = CardShop::with(&[], false, |g| g.card_lease_secs = 600).await;
    let (app, key) = (&s.app, s.key.as_str());
    let buyer = app.funded(key, "buyer", "1000.00").await;
    let buyer2 = app.funded(key, "buyer2", "1000.00").await;
    let seller2 = app.account(key, "seller2", "USD", false).await;
    let card = |order: &str, attempt: i32, pm: &str| {
        json!({"order_id": order, "attempt": attempt, "payment_method": pm, "seller_account_id": s.seller,
               "amount": "25.00", "currency": "USD"})
    };

    let mut wallet = Vec::new();
    for i in 0..9 {
        wallet.push(charge(app, key, &format!("w{i}"), &buyer, &s.seller, "10.00").await);
    }
    let mut second = Vec::new();
    for i in 0..3 {
        second.push(charge(app, key, &format!("v{i}"), &buyer2, &seller2, "10.00").await);
    }
    let between = chrono::Utc::now();
    // an order declined, then paid by its second attempt
    let declined = app.post("/v1/charges", key, "c1:1", card("c1", 1, "pm_card_chargeDeclined")).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{declined:?}");
    let failed: uuid::Uuid = app
        .db
        .client()
        .await
        .query_one("SELECT id FROM charges WHERE order_id = 'c1' AND attempt = 1", &[])
        .await
        .unwrap()
        .get(0);
    let failed = failed.to_string();
    let paid = app.post("/v1/charges", key, "c1:2", card("c1", 2, "pm_card_visa")).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let paid = paid.id();
    let action = app.post("/v1/charges", key, "c2:1", card("c2", 1, "pm_card_threeDSecure2Required")).await;
    assert_eq!((action.status, action.json()["status"].as_str()), (StatusCode::ACCEPTED, Some("requires_action")));
    let action = action.id();
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "c3"}})).await;
    let processing = app.post("/v1/charges", key, "c3:1", card("c3", 1, "pm_card_visa")).await;
    assert_eq!((processing.status, processing.json()["status"].as_str()), (StatusCode::ACCEPTED, Some("processing")));
    let processing = processing.id();
    // one wallet charge refunded in part, one whole
    let part = app
        .post(&format!("/v1/charges/{}/refunds", wallet[0]), key, "rp", json!({"reference": "rp", "amount": "4.00"}))
        .await;
    assert_eq!(part.status, StatusCode::CREATED, "{part:?}");
    let whole = app.post(&format!("/v1/charges/{}/refunds", wallet[1]), key, "rw", json!({"reference": "rw"})).await;
    assert_eq!(whole.status, StatusCode::CREATED, "{whole:?}");

    let other = app.tenant("other").await;
    let their_buyer = app.funded(&other, "buyer", "100.00").await;
    let their_seller = app.account(&other, "seller", "USD", false).await;
    let theirs = charge(app, &other, "w0", &their_buyer, &their_seller, "10.00").await;

    let every: Vec<String> =
        [wallet.clone(), second.clone(), vec![failed.clone(), paid.clone(), action.clone(), processing.clone()]]
            .concat();
    let every = newest_first(every);
    walks_both_ways(app, key, "/v1/charges", 4, &every).await;
    walks_both_ways(app, key, "/v1/charges", 100, &every).await;
    assert_eq!(ids(app, &other, "/v1/charges").await, (vec![theirs.clone()], false), "each tenant its own list");

    // an order's attempts, the latest first
    assert_eq!(ids(app, key, "/v1/charges?order_id=c1").await, (vec![paid.clone(), failed.clone()], false));
    assert_eq!(ids(app, key, "/v1/charges?order_id=w0").await, (vec![wallet[0].clone()], false), "not theirs");
    assert_eq!(ids(app, key, "/v1/charges?order_id=nothing").await, (vec![], false));
    // a status as the charge shows it
    let succeeded = newest_first([wallet[2..].to_vec(), second.clone(), vec![paid.clone()]].concat());
    walks_both_ways(app, key, "/v1/charges?status=succeeded", 3, &succeeded).await;
    for (status, expected) in [
        ("partially_refunded", vec![wallet[0].clone()]),
        ("refunded", vec![wallet[1].clone()]),
        ("failed", vec![failed.clone()]),
        ("requires_action", vec![action.clone()]),
        ("processing", vec![processing.clone()]),
    ] {
        let list = format!("/v1/charges?status={status}");
        assert_eq!(ids(app, key, &list).await, (expected, false), "{list}");
    }
    // a wallet's charges (card charges have none), a seller's
    walks_both_ways(app, key, &format!("/v1/charges?buyer_account_id={buyer}"), 4, &newest_first(wallet.clone())).await;
    walks_both_ways(app, key, &format!("/v1/charges?seller_account_id={seller2}"), 2, &newest_first(second.clone()))
        .await;
    let sellers =
        newest_first([wallet.clone(), vec![failed.clone(), paid.clone(), action.clone(), processing.clone()]].concat());
    walks_both_ways(app, key, &format!("/v1/charges?seller_account_id={}", s.seller), 5, &sellers).await;
    let list = format!("/v1/charges?buyer_account_id={buyer2}&seller_account_id={}", s.seller);
    assert_eq!(ids(app, key, &list).await, (vec![], false), "filters combine");
    // created in a range
    let cards = newest_first(vec![failed.clone(), paid.clone(), action.clone(), processing.clone()]);
    let after = format!("/v1/charges?created[gte]={}", rfc3339(between));
    walks_both_ways(app, key, &after, 3, &cards).await;
    let before = format!("/v1/charges?created[lt]={}&buyer_account_id={buyer}", rfc3339(between));
    walks_both_ways(app, key, &before, 4, &newest_first(wallet.clone())).await;

    refuses_bad_pages(app, key, "/v1/charges", &paid, &theirs, "charge_not_found").await;
    refuses_bad_pages(app, key, "/v1/charges?order_id=c1", &paid, &theirs, "charge_not_found").await;
    for bad in ["status=paid", "buyer_account_id=nope", "created[gte]=yesterday"] {
        let r = app.get(&format!("/v1/charges?{bad}"), key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"), "{bad}");
    }
    for bad in ["order_id=", "order_id=%20c1"] {
        let r = app.get(&format!("/v1/charges?{bad}"), key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"), "{bad}");
    }
    // the charge's shape is the one `GET /v1/charges/{id}` gives
    let listed: Value = app.get("/v1/charges?order_id=c1&limit=1", key).await.json();
    let one = app.get(&format!("/v1/charges/{paid}"), key).await.json();
    assert_eq!((&listed["data"][0], listed["has_more"].as_bool()), (&one, Some(true)));
}

#[actix_web::test]
async fn a_charges_refunds_walk_both_ways_filter_by_status_and_stay_within_the_charge() {
    let s = CardShop::with(&[], false, |g| g.card_lease_secs = 600).await;
    let (app, key) = (&s.app, s.key.as_str());
    let card = |order: &str| {
        json!({"order_id": order, "attempt": 1, "payment_method": "pm_card_visa", "seller_account_id": s.seller,
               "amount": "25.00", "currency": "USD"})
    };
    let paid = app.post("/v1/charges", key, "r1:1", card("r1")).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let charge = paid.id();
    let refunds = format!("/v1/charges/{charge}/refunds");
    assert_eq!(ids(app, key, &refunds).await, (vec![], false), "none yet");
    let mut succeeded = Vec::new();
    for i in 0..6 {
        let r = app
            .post(&refunds, key, &format!("refund:r1:{i}"), json!({"reference": format!("r1:{i}"), "amount": "1.00"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        succeeded.push(r.id());
    }
    s.fake.arm(json!({"kind": "refund_pending", "count": 1, "metadata": {"reference": "r1:pending"}})).await;
    let pending = app.post(&refunds, key, "r1:pending", json!({"reference": "r1:pending", "amount": "1.00"})).await;
    assert_eq!((pending.status, pending.json()["status"].as_str()), (StatusCode::ACCEPTED, Some("pending")));
    let pending = pending.id();

    let every = newest_first([succeeded.clone(), vec![pending.clone()]].concat());
    walks_both_ways(app, key, &refunds, 3, &every).await;
    walks_both_ways(app, key, &with(&refunds, "status=succeeded"), 4, &newest_first(succeeded.clone())).await;
    assert_eq!(ids(app, key, &with(&refunds, "status=pending")).await, (vec![pending.clone()], false));
    assert_eq!(ids(app, key, &with(&refunds, "status=failed")).await, (vec![], false));
    let listed: Value = app.get(&with(&refunds, "limit=1"), key).await.json();
    assert_eq!(
        (listed["data"][0]["id"].as_str(), listed["data"][0]["charge_id"].as_str()),
        (Some(pending.as_str()), Some(charge.as_str()))
    );

    // another charge's refund is no cursor of this list, nor another tenant's
    let other_charge = app.post("/v1/charges", key, "r2:1", card("r2")).await.id();
    let elsewhere = app
        .post(
            &format!("/v1/charges/{other_charge}/refunds"),
            key,
            "refund:r2:0",
            json!({"reference": "r2:0", "amount": "1.00"}),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{elsewhere:?}");
    refuses_bad_pages(app, key, &refunds, &pending, &elsewhere.id(), "refund_not_found").await;
    assert_eq!(ids(app, key, &format!("/v1/charges/{other_charge}/refunds")).await, (vec![elsewhere.id()], false));
    let other = app.tenant("other").await;
    for list in [refunds.clone(), format!("/v1/charges/{}/refunds", uuid::Uuid::now_v7())] {
        let r = app.get(&list, &other).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "charge_not_found"), "{list}");
    }
    let r = app.get("/v1/charges/nope/refunds", key).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let r = app.get(&with(&refunds, "status=refunded"), key).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"));
}

#[actix_web::test]
async fn transfers_walk_both_ways_and_filter_by_either_account_and_creation() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let external = app.account(&key, "external", "USD", true).await;
    let [a, b, c] = [
        app.account(&key, "a", "USD", false).await,
        app.account(&key, "b", "USD", false).await,
        app.account(&key, "c", "USD", false).await,
    ];
    let transfer = async |from: &str, to: &str, n: usize| {
        let r = app
            .post(
                "/v1/transfers",
                &key,
                &format!("t:{from}:{to}:{n}"),
                json!({"source_account_id": from, "destination_account_id": to, "amount": "5.00", "currency": "USD"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.id()
    };
    let mut funding = Vec::new();
    for n in 0..5 {
        funding.push(transfer(&external, &a, n).await);
    }
    let between = chrono::Utc::now();
    let mut a_to_b = Vec::new();
    for n in 0..3 {
        a_to_b.push(transfer(&a, &b, n).await);
    }
    let b_to_c = vec![transfer(&b, &c, 0).await, transfer(&b, &c, 1).await];
    let c_to_a = transfer(&c, &a, 0).await;

    let other = app.tenant("other").await;
    let their_ext = app.account(&other, "external", "USD", true).await;
    let their_a = app.account(&other, "a", "USD", false).await;
    let theirs = app
        .post(
            "/v1/transfers",
            &other,
            "t",
            json!({"source_account_id": their_ext, "destination_account_id": their_a, "amount": "1.00", "currency": "USD"}),
        )
        .await
        .id();

    let every = newest_first([funding.clone(), a_to_b.clone(), b_to_c.clone(), vec![c_to_a.clone()]].concat());
    walks_both_ways(&app, &key, "/v1/transfers", 5, &every).await;
    assert_eq!(ids(&app, &other, "/v1/transfers").await, (vec![theirs.clone()], false), "each tenant its own list");
    // an account's: sent and received
    let of_a = newest_first([funding.clone(), a_to_b.clone(), vec![c_to_a.clone()]].concat());
    walks_both_ways(&app, &key, &format!("/v1/transfers?account_id={a}"), 4, &of_a).await;
    walks_both_ways(&app, &key, &format!("/v1/transfers?account_id={a}"), 1, &of_a).await;
    let of_c = newest_first([b_to_c.clone(), vec![c_to_a.clone()]].concat());
    walks_both_ways(&app, &key, &format!("/v1/transfers?account_id={c}"), 2, &of_c).await;
    assert_eq!(ids(&app, &key, &format!("/v1/transfers?account_id={their_a}")).await, (vec![], false), "not theirs");
    // created in a range
    let list = format!("/v1/transfers?account_id={a}&created[gte]={}", rfc3339(between));
    walks_both_ways(&app, &key, &list, 2, &newest_first([a_to_b.clone(), vec![c_to_a.clone()]].concat())).await;
    let list = format!("/v1/transfers?created[lt]={}", rfc3339(between));
    walks_both_ways(&app, &key, &list, 2, &newest_first(funding.clone())).await;

    refuses_bad_pages(&app, &key, "/v1/transfers", &c_to_a, &theirs, "transfer_not_found").await;
    refuses_bad_pages(&app, &key, &format!("/v1/transfers?account_id={a}"), &c_to_a, &theirs, "transfer_not_found")
        .await;
    let r = app.get("/v1/transfers?account_id=a", &key).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"));
}

#[actix_web::test]
async fn reservations_walk_both_ways_and_filter_by_order_sku_and_status() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    for sku in ["mug", "cup"] {
        let r = app.post(&format!("/v1/skus/{sku}/restocks"), &key, sku, json!({"quantity": 100})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    let reserve = async |order: &str, sku: &str| {
        let r = app
            .post(
                "/v1/reservations",
                &key,
                &format!("{order}:{sku}"),
                json!({"order_id": order, "sku": sku, "quantity": 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.id()
    };
    let mut mugs = Vec::new();
    for i in 0..6 {
        mugs.push(reserve(&format!("o{i}"), "mug").await);
    }
    let mut cups = Vec::new();
    for i in 0..3 {
        cups.push(reserve(&format!("o{i}"), "cup").await);
    }
    for released in [&mugs[1], &cups[2]] {
        let r = app
            .post(&format!("/v1/reservations/{released}/release"), &key, &format!("release:{released}"), json!(null))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let other = app.tenant("other").await;
    let r = app.post("/v1/skus/mug/restocks", &other, "mug", json!({"quantity": 1})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let theirs =
        app.post("/v1/reservations", &other, "o0", json!({"order_id": "o0", "sku": "mug", "quantity": 1})).await.id();

    let every = newest_first([mugs.clone(), cups.clone()].concat());
    walks_both_ways(&app, &key, "/v1/reservations", 4, &every).await;
    assert_eq!(ids(&app, &other, "/v1/reservations").await, (vec![theirs.clone()], false), "each tenant its own list");
    walks_both_ways(
        &app,
        &key,
        "/v1/reservations?order_id=o0",
        1,
        &newest_first(vec![mugs[0].clone(), cups[0].clone()]),
    )
    .await;
    walks_both_ways(&app, &key, "/v1/reservations?sku=cup", 2, &newest_first(cups.clone())).await;
    walks_both_ways(&app, &key, "/v1/reservations?sku=mug&order_id=o5", 2, &[mugs[5].clone()]).await;
    let released = newest_first(vec![mugs[1].clone(), cups[2].clone()]);
    walks_both_ways(&app, &key, "/v1/reservations?status=released", 1, &released).await;
    let held: Vec<String> = every.iter().filter(|id| !released.contains(id)).cloned().collect();
    walks_both_ways(&app, &key, "/v1/reservations?status=held", 3, &held).await;
    assert_eq!(ids(&app, &key, "/v1/reservations?status=committed").await, (vec![], false));
    let listed: Value = app.get("/v1/reservations?sku=cup&limit=1", &key).await.json();
    let one = app.get(&format!("/v1/reservations/{}", cups[2]), &key).await.json();
    assert_eq!((&listed["data"][0], listed["has_more"].as_bool()), (&one, Some(true)));

    refuses_bad_pages(&app, &key, "/v1/reservations", &mugs[0], &theirs, "reservation_not_found").await;
    refuses_bad_pages(&app, &key, "/v1/reservations?sku=mug", &mugs[0], &theirs, "reservation_not_found").await;
    for bad in ["sku=-mug", "sku=m%20g", "order_id=", "order_id=o1%20"] {
        let r = app.get(&format!("/v1/reservations?{bad}"), &key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"), "{bad}");
    }
    let r = app.get("/v1/reservations?status=lost", &key).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"));
}

/// Stripe's cursors under concurrent inserts. A walk from the newest page to
/// the oldest, while charges are created, sees:
/// - ids strictly decreasing from page to page, so no charge twice;
/// - every charge that existed when the walk began, exactly once;
/// - of the charges created during the walk, any subset (none promised: one
///   newer than the first page's top is above every later cursor, and one
///   committed late with an id below a cursor already passed is behind it),
///   each at most once.
///
/// Once the writes are over, a fresh walk sees every charge exactly once,
/// and walks back over the same pages.
#[actix_web::test]
async fn a_walk_while_charges_are_created_sees_every_earlier_charge_once_and_none_twice() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let names: Vec<String> = (0..4).map(|i| format!("buyer-{i}")).collect();
    let buyers = join_all(names.iter().map(|n| app.funded(&key, n, "1000.00"))).await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let orders: Vec<String> = (0..30).map(|i| format!("early-{i}")).collect();
    let earlier: Vec<String> =
        join_all(orders.iter().enumerate().map(|(i, o)| charge(&app, &key, o, &buyers[i % 4], &seller, "1.00"))).await;

    // four writers, 15 charges each, while a reader walks 4 at a time
    let written = AtomicUsize::new(0);
    let writers = join_all((0..4).map(|w| {
        let (app, key, buyer, seller, written) = (&app, &key, &buyers[w], &seller, &written);
        async move {
            let mut made = Vec::new();
            for i in 0..15 {
                made.push(charge(app, key, &format!("late-{w}-{i}"), buyer, seller, "1.00").await);
                written.fetch_add(1, Ordering::SeqCst);
            }
            made
        }
    }));
    let reader = async {
        let mut seen: Vec<String> = Vec::new();
        let mut writes_at_page = Vec::new();
        let mut path = "/v1/charges?limit=4".to_owned();
        loop {
            writes_at_page.push(written.load(Ordering::SeqCst));
            let (page, has_more) = ids(&app, &key, &path).await;
            seen.extend(page.iter().cloned());
            if !has_more {
                return (seen, writes_at_page);
            }
            path = format!("/v1/charges?limit=4&starting_after={}", page.last().unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let (created, (seen, writes_at_page)) = futures::join!(writers, reader);
    let created: Vec<String> = created.concat();
    assert_eq!(created.len(), 60);
    let (first, last) = (writes_at_page[0], *writes_at_page.last().unwrap());
    assert!(first < 60 && last > first, "charges were created during the walk: {writes_at_page:?}");

    assert!(seen.windows(2).all(|w| w[0] > w[1]), "strictly newest first, so never twice: {seen:?}");
    let seen_set: BTreeSet<&String> = seen.iter().collect();
    for id in &earlier {
        assert!(seen_set.contains(id), "{id} existed when the walk began and was missed");
    }
    let all: BTreeSet<&String> = earlier.iter().chain(&created).collect();
    assert!(seen_set.is_subset(&all), "only this tenant's charges");

    // after the writes: every charge once, both ways
    let every = newest_first(all.into_iter().cloned().collect());
    assert_eq!(every.len(), 90);
    walks_both_ways(&app, &key, "/v1/charges", 7, &every).await;
}
