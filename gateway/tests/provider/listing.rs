//! Listing payments over a period, page by page: what a reconciliation reads.
//! Searching, which lags writes where listing does not.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway::{ListPayments, PaymentOutcome, RefundOutcome, RefundRequest};

use crate::support::{eventually, payment, Fake};

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn list_payments_pages_through_a_period_newest_first() {
    let fake = Fake::start(&[]);
    let client = fake.client(Duration::from_secs(5));
    let from = now_secs();
    let mut created = Vec::new();
    for n in 0..5 {
        let order = format!("order-{n}");
        let PaymentOutcome::Succeeded(intent) =
            client.create_payment(&payment(&order, 100 + n, "pm_card_visa"), &order).await.unwrap()
        else {
            panic!("expected a success");
        };
        created.push(intent.id);
    }
    let until = now_secs() + 1;

    let mut params =
        ListPayments { created_gte: Some(from), created_lt: Some(until), limit: Some(2), starting_after: None };
    let mut pages = Vec::new();
    loop {
        let page = client.list_payments(&params).await.unwrap();
        let ids: Vec<String> = page.data.iter().map(|p| p.id.clone()).collect();
        pages.push((ids.clone(), page.has_more));
        if !page.has_more {
            break;
        }
        params.starting_after = ids.last().cloned();
    }
    assert_eq!(
        pages.iter().map(|(ids, more)| (ids.len(), *more)).collect::<Vec<_>>(),
        [(2, true), (2, true), (1, false)]
    );
    let listed: Vec<String> = pages.into_iter().flat_map(|(ids, _)| ids).collect();
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);

    let all = client.list_all_payments(from, until).await.unwrap();
    assert_eq!(all.iter().map(|p| p.id.clone()).collect::<BTreeSet<_>>(), created.iter().cloned().collect());
    // Periods that hold none of them.
    assert!(client.list_all_payments(from - 3600, from).await.unwrap().is_empty());
    assert!(client.list_all_payments(until, until + 3600).await.unwrap().is_empty());
}

#[tokio::test]
async fn search_lags_writes_and_listing_does_not() {
    let fake = Fake::start(&["--search-lag-ms", "1500"]);
    let client = fake.client(Duration::from_secs(5));
    let from = now_secs();
    let started = Instant::now();
    let PaymentOutcome::Succeeded(intent) =
        client.create_payment(&payment("order-lag", 100, "pm_card_visa"), "key-lag").await.unwrap()
    else {
        panic!("expected a success");
    };
    let by_metadata = [("tenant_id", "tenant-1"), ("order_id", "order-lag")];

    // Listed (and retrieved) at once; not found by search yet.
    let listed = client.list_all_payments(from, now_secs() + 1).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [intent.id.as_str()]);
    assert!(client.retrieve_payment(&intent.id).await.unwrap().is_some());
    assert!(client.search_payments(&by_metadata).await.unwrap().is_empty(), "found within the lag");

    // Found once the index caught up, not before.
    let found = eventually(Duration::from_secs(10), async || {
        let found = client.search_payments(&by_metadata).await.unwrap();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(1500), "found after {:?}", started.elapsed());
    assert_eq!(found.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [intent.id.as_str()]);

    // A change takes it out of the index for the lag again.
    let refund = RefundRequest { payment_intent: intent.id.clone(), amount: Some(40), metadata: Default::default() };
    assert!(matches!(client.create_refund(&refund, "refund-lag").await.unwrap(), RefundOutcome::Created(_)));
    assert!(client.search_payments(&by_metadata).await.unwrap().is_empty(), "changed within the lag");
    assert_eq!(client.list_all_payments(from, now_secs() + 1).await.unwrap().len(), 1);
}
