//! Delivers webhook events: signed at each attempt, retried with backoff on
//! a non-2xx answer or a connection failure, until delivered (at least once;
//! after a restart, pending deliveries are tried again).

use std::time::Duration;

use actix_web::web::Data;
use gateway::webhook::{sign, SIGNATURE_HEADER};

use crate::app::{now_ms, now_secs, App, Stats};
use crate::state::{Delivery, Op};

const POLL: Duration = Duration::from_millis(50);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(app: Data<App>) {
    let http = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
        .build()
        .expect("an HTTP client");
    loop {
        let due = app.state().take_due(now_ms(), app.durable());
        for delivery in due {
            actix_web::rt::spawn(attempt(app.clone(), http.clone(), delivery));
        }
        let _ = actix_web::rt::time::timeout(POLL, app.wake.notified()).await;
    }
}

async fn attempt(app: Data<App>, http: reqwest::Client, delivery: Delivery) {
    Stats::add(&app.stats.webhook_attempts);
    let signature = sign(delivery.payload.as_bytes(), &app.settings.webhook_secret, now_secs());
    let result = http
        .post(&delivery.endpoint)
        .header(SIGNATURE_HEADER, signature)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(delivery.payload.clone())
        .send()
        .await;
    let delivered = matches!(&result, Ok(response) if response.status().is_success());
    if delivered {
        Stats::add(&app.stats.webhook_deliveries);
        app.state().commit(vec![Op::Delivered { id: delivery.id, at_ms: now_ms() }]);
        // Others held until this one went through may go now.
        app.wake.notify_one();
    } else {
        Stats::add(&app.stats.webhook_failures);
        let delay = app.retry_delay(delivery.attempts);
        let outcome = match &result {
            Ok(response) => response.status().to_string(),
            Err(e) => e.to_string(),
        };
        tracing::info!(delivery = delivery.id, endpoint = %delivery.endpoint, %outcome, ?delay, "webhook delivery failed; will retry");
        app.state().retry_later(delivery.id, now_ms() + delay.as_millis() as i64);
    }
}
