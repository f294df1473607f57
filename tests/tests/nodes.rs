//! `AMQP_URL` listing several broker nodes: the relay and the consumers move
//! to the next node when theirs dies, and what the dead node had not
//! confirmed is published again through the next. Real PostgreSQL, a
//! private RabbitMQ node that the test kills, and the machine's node.

use ledger_tests::broker::{amqp_url, Broker};
use ledger_tests::servers::PrivateRabbit;
use ledger_tests::shop::{shop, Shop};
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{eventually, start_workers, Role};
use workers::topology::Names;

async fn committed(s: &Shop, hold: &str) -> bool {
    s.status(hold).await == "committed"
}

#[actix_web::test]
async fn the_workers_move_to_the_next_broker_node_when_theirs_dies() {
    let rabbit = PrivateRabbit::new().await.unwrap();
    let s = shop().await;
    let first = Broker::on(&rabbit.amqp_url());
    // The same names on the second node, so that they are removed there too.
    let second = Broker { prefix: first.prefix.clone(), names: Names::new(&first.prefix), url: amqp_url() };
    let smtp = SmtpServer::start().await;
    let mut config = s.config(&first, &smtp);
    config.amqp_url = format!("{},{}", rabbit.amqp_url(), amqp_url());
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);

    let one = s.purchase("node-1", 1).await;
    eventually(60, "the first order commits through the first node", || committed(&s, &one)).await;
    eventually(30, "its email is sent", || async { smtp.mails().len() == 1 }).await;
    assert!(first.exists(&first.names.inventory).await, "the workers use the first node listed");
    assert!(!second.exists(&second.names.inventory).await, "and only it while it lives");

    rabbit.kill().await.unwrap();
    let two = s.purchase("node-2", 1).await;
    eventually(90, "the second order commits through the second node", || committed(&s, &two)).await;
    assert!(second.exists(&second.names.inventory).await);
    eventually(30, "its email is sent", || async { smtp.mails().len() == 2 }).await;
    eventually(30, "the pipeline settles on the second node", || s.settled(&second)).await;

    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 2);
    assert_eq!(s.on_hand().await, 8);
    assert_eq!(smtp.mails().len(), 2, "no email twice");
    s.audit_clean(true).await;
}
