//! A storefront for pipeline tests: a funded buyer, a seller and ten mugs,
//! with the purchase and the reads those tests repeat.

use awc::http::StatusCode;
use serde_json::json;

use crate::broker::Broker;
use crate::smtp::SmtpServer;
use crate::{eventually, spawn_app, spawn_app_on, TestApp, TestDb};

pub struct Shop {
    pub app: TestApp,
    pub key: String,
    pub buyer: String,
    pub seller: String,
    pub tenant: uuid::Uuid,
}

pub async fn shop() -> Shop {
    stock(spawn_app().await).await
}

/// The same shop on a database of a private server, which the test may stop.
pub async fn shop_on(server: &crate::servers::PrivatePostgres) -> Shop {
    stock(spawn_app_on(TestDb::on(server).await, |_| {}).await).await
}

async fn stock(app: TestApp) -> Shop {
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "1000.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let r = app.post("/v1/skus/mug/restocks", &key, "restock", json!({"quantity": 10})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let tenant = app.db.client().await.query_one("SELECT id FROM tenants", &[]).await.unwrap().get(0);
    Shop { app, key, buyer, seller, tenant }
}

impl Shop {
    /// Holds `quantity` mugs for `order`, then charges it (with a receipt
    /// email); returns the reservation's id.
    pub async fn purchase(&self, order: &str, quantity: i64) -> String {
        let hold = self
            .app
            .post(
                "/v1/reservations",
                &self.key,
                &format!("{order}:mug"),
                json!({"order_id": order, "sku": "mug", "quantity": quantity}),
            )
            .await;
        assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
        let charge = self
            .app
            .post(
                "/v1/charges",
                &self.key,
                &format!("{order}:1"),
                json!({"order_id": order, "attempt": 1, "buyer_account_id": self.buyer, "seller_account_id": self.seller,
                       "amount": "12.00", "currency": "USD", "receipt_email": format!("{order}@example.com")}),
            )
            .await;
        assert_eq!(charge.status, StatusCode::CREATED, "{charge:?}");
        hold.id()
    }

    /// Worker settings for this shop's database, the test's broker names and SMTP listener.
    pub fn config(&self, broker: &Broker, smtp: &SmtpServer) -> workers::config::Config {
        let mut c = workers::config::Config::local(&self.app.db.worker_url, &broker.prefix);
        c.amqp_url = broker.url.clone();
        c.smtp_url = Some(smtp.url.clone());
        c.relay_poll_ms = 100;
        c.delivery_limit = 3;
        c
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.app.db.client().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn on_hand(&self) -> i64 {
        self.app.get("/v1/skus/mug", &self.key).await.json()["on_hand"].as_i64().unwrap()
    }

    pub async fn status(&self, hold: &str) -> String {
        self.app.get(&format!("/v1/reservations/{hold}"), &self.key).await.json()["status"].as_str().unwrap().to_owned()
    }

    /// Every outbox row published, and both queues empty.
    pub async fn settled(&self, broker: &Broker) -> bool {
        self.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
            && broker.depth(&broker.names.inventory).await == 0
            && broker.depth(&broker.names.email).await == 0
    }

    /// Waits for the outbox to drain, then audits every invariant (the
    /// quiescence ones too, when the pipeline ran to the end) and asserts none is broken.
    pub async fn audit_clean(&self, quiesced: bool) {
        if quiesced {
            eventually(20, "every event is published", || async {
                self.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
            })
            .await;
        }
        let client = self.app.db.client().await;
        let report = ledger::audit::audit(&client, ledger::audit::Options { quiesced }).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }
}
