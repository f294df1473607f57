//! Lists a page at a time (`GET /v1/accounts`): newest first, `limit` at a
//! time, `starting_after` and `ending_before` walking both ways over the
//! same rows, `has_more`; no row missed or repeated while rows are created
//! during the walk; filters; a cursor that is not one of the caller's
//! accounts answered 404, never with another tenant's rows.

use std::collections::BTreeSet;

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::{spawn_app, TestApp};
use serde_json::{json, Value};

async fn page(app: &TestApp, key: &str, query: &str) -> (Vec<String>, bool) {
    let r = app.get(&format!("/v1/accounts?{query}"), key).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {r:?}");
    let body = r.json();
    let ids = body["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    (ids, body["has_more"].as_bool().unwrap())
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
    assert_eq!((both.status, both.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "conflicting_cursors"));
    let r = app.get("/v1/accounts?currency=XYZ", &key).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    let (ids, has_more) = page(&app, &other, "").await;
    assert_eq!((ids, has_more), (vec![theirs], false), "each tenant its own list");
    let body: Value = app.get("/v1/accounts?limit=1", &key).await.json();
    assert_eq!(body["data"][0]["balance"], json!("0.00"));
}
