//! Order emails are at most once: an email whose send may have happened is
//! never sent again automatically, and every send attempt is recorded
//! before the SMTP call. Real PostgreSQL, RabbitMQ, the real worker binary
//! and an SMTP listener that keeps every message it accepted.

use ledger_tests::broker::Broker;
use ledger_tests::shop::shop;
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{crash_worker, run_worker_command, start_workers, Role};

#[actix_web::test]
async fn hole_3_reconcile_never_resends_an_email_whose_send_is_unknown() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _relay = start_workers(&config, &[Role::Relay]);
    s.purchase("order-u", 1).await;

    // The worker hands the email to the SMTP server and dies before it can
    // record that the server took it.
    crash_worker(&config, "email", "email-after-send").await;
    assert_eq!(smtp.mails().len(), 1, "the SMTP server accepted the email");

    // The nightly reconciliation, twice: nothing is sent a second time.
    for _ in 0..2 {
        let out = run_worker_command(&config, &["reconcile-emails", "--send", "--older-than", "0"]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(smtp.mails().len(), 1, "a send whose outcome is unknown is not repeated automatically");
    }
    // The attempt was recorded before the SMTP call, once; the audit agrees.
    assert_eq!(s.scalar("SELECT count(*) FROM email_sends WHERE sender = 'worker'").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM email_sends").await, 1);
    s.audit_clean(false).await;

    // The email carries a Message-ID made from the tenant and the order, and
    // reconcile lists the order for an operator with it.
    let id = workers::email::message_id(s.tenant, "order-u", &config.email_from).unwrap();
    let mail = &smtp.mails()[0];
    assert!(mail.data.contains(&format!("Message-ID: {id}")), "{}", mail.data);
    let out = run_worker_command(&config, &["reconcile-emails", "--older-than", "0"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    let line = listed.lines().find(|l| l.contains("order-u")).unwrap_or_else(|| panic!("not listed: {listed}"));
    assert!(line.contains(&id) && line.contains("outcome unknown"), "{listed}");

    // An operator who found no trace of it in the mail server's log resends
    // it, explicitly: the same Message-ID, recorded as a resend.
    let resend = ["reconcile-emails", "--send", "--resend-claimed", "--older-than", "0"];
    let out = run_worker_command(&config, &resend).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert!(mails[1].data.contains(&format!("Message-ID: {id}")), "{}", mails[1].data);
    assert_eq!(s.scalar("SELECT count(*) FROM email_sends WHERE sender = 'resend'").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM emails WHERE status = 'sent'").await, 1);
    // Sent now: nothing is left to resend.
    let out = run_worker_command(&config, &resend).await;
    assert!(out.status.success());
    assert_eq!(smtp.mails().len(), 2);
    s.audit_clean(false).await;
}

#[actix_web::test]
async fn an_order_never_claimed_is_sent_by_reconcile_once_and_recorded_as_such() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _relay = start_workers(&config, &[Role::Relay]);
    s.purchase("order-n", 1).await;
    // acked, then died before the claim: never claimed, never sent
    crash_worker(&config, "email", "email-after-ack").await;
    assert_eq!(s.scalar("SELECT count(*) FROM emails").await, 0);

    let out = run_worker_command(&config, &["reconcile-emails", "--send", "--older-than", "0"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l.contains("order-n") && l.contains("never sent -> sent")), "{listed}");
    assert_eq!(smtp.mails().len(), 1);
    assert_eq!(s.scalar("SELECT count(*) FROM email_sends WHERE sender = 'reconcile'").await, 1);
    // a late duplicate of the event finds the claim and sends nothing
    let row = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT message_id::text, payload::text FROM outbox WHERE event_type = 'charge.succeeded'", &[])
        .await
        .unwrap();
    let (id, body): (String, String) = (row.get(0), row.get(1));
    broker.publish("charge.succeeded", &id, body.as_bytes()).await;
    let _email = start_workers(&config, &[Role::Email]);
    ledger_tests::eventually(20, "the duplicate is consumed", || async {
        broker.depth(&broker.names.email).await == 0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 1);
    assert_eq!(s.scalar("SELECT count(*) FROM email_sends").await, 1);
    s.audit_clean(false).await;
}
