//! Listing payments over a period, page by page: what a reconciliation reads.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway::{ListPayments, PaymentOutcome};

use crate::support::{payment, Fake};

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
