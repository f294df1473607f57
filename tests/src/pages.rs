//! Reading the cursor lists as a client does (Stripe's shape: `data`,
//! `has_more`, `starting_after`, `ending_before`), for the list tests and
//! the event feed's: a page's ids, a whole walk, the walk back, and what
//! every list refuses.

use awc::http::StatusCode;
use serde_json::Value;

use crate::TestApp;

/// How a list's items are named by its cursors: the field that holds the
/// id (`id`, or an event's `message_id`), each item checked on the way.
#[derive(Clone, Copy)]
pub struct Items {
    pub id: &'static str,
    pub check: fn(&str, &Value),
}

/// Items named by `id`, nothing more checked.
pub const BY_ID: Items = Items { id: "id", check: |_, _| {} };

/// `list` (a path, perhaps with a query) with `more` added to its query.
pub fn with(list: &str, more: &str) -> String {
    let sep = if list.contains('?') { '&' } else { '?' };
    format!("{list}{sep}{more}")
}

/// A page: its items' ids, in the order given, and `has_more`.
pub async fn ids(app: &TestApp, key: &str, path: &str, items: Items) -> (Vec<String>, bool) {
    let r = app.get(path, key).await;
    assert_eq!((r.status, r.content_type.as_str()), (StatusCode::OK, "application/json"), "{path}: {r:?}");
    let body = r.json();
    let data = body["data"].as_array().unwrap();
    for item in data {
        (items.check)(path, item);
    }
    let ids = data.iter().map(|a| a[items.id].as_str().unwrap().to_owned()).collect();
    (ids, body["has_more"].as_bool().unwrap())
}

/// Every page of `list`, `limit` at a time from the newest, following
/// `starting_after` until `has_more` is false.
pub async fn walk(app: &TestApp, key: &str, list: &str, limit: usize, items: Items) -> Vec<Vec<String>> {
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut path = with(list, &format!("limit={limit}"));
    loop {
        let (page, has_more) = ids(app, key, &path, items).await;
        assert!(page.len() <= limit, "{path}: {page:?}");
        pages.push(page.clone());
        if !has_more {
            return pages;
        }
        assert_eq!(page.len(), limit, "{path}: a page that says more comes is full");
        path = with(list, &format!("limit={limit}&starting_after={}", page.last().unwrap()));
    }
}

/// `list` read `limit` at a time is `expected` (newest first), every item
/// once; and `ending_before` from each page's first item walks back over the
/// same pages, `has_more` until the newest.
pub async fn walks_both_ways(app: &TestApp, key: &str, list: &str, limit: usize, expected: &[String], items: Items) {
    let pages = walk(app, key, list, limit, items).await;
    assert_eq!(pages.concat(), expected, "{list}, {limit} at a time");
    for i in (1..pages.len()).rev() {
        let back = with(list, &format!("limit={limit}&ending_before={}", pages[i][0]));
        assert_eq!(ids(app, key, &back, items).await, (pages[i - 1].clone(), i > 1), "{back}");
    }
    if let Some(newest) = pages[0].first() {
        let before = with(list, &format!("limit={limit}&ending_before={newest}"));
        assert_eq!(ids(app, key, &before, items).await, (vec![], false), "{before}: nothing is newer");
    }
}

/// What every list refuses: `limit` 0 and 101 (400), both cursors at once
/// (409), and another tenant's item (`theirs`) as either cursor (404 with
/// the list's own not-found code).
pub async fn refuses_bad_pages(app: &TestApp, key: &str, list: &str, mine: &str, theirs: &str, not_found: &str) {
    for bad in ["limit=0", "limit=101", "starting_after=nope"] {
        let r = app.get(&with(list, bad), key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"), "{list} {bad}");
    }
    let both = app.get(&with(list, &format!("starting_after={mine}&ending_before={mine}")), key).await;
    assert_eq!((both.status, both.code().as_str()), (StatusCode::CONFLICT, "conflicting_cursors"), "{list}");
    for bad in [format!("starting_after={theirs}"), format!("ending_before={theirs}")] {
        let r = app.get(&with(list, &bad), key).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, not_found), "{list} {bad}");
    }
}

/// An instant as a list's `created[...]` filter takes it.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
