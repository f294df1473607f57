//! Reprocessing through the live path: replay republishes outbox events with
//! their original message ids and the consumers' inboxes absorb what they
//! already handled; a dead-lettered message is redriven, after a fix, into
//! the same consumer code. And retention windows that do not nest stop both
//! binaries at start-up. Real PostgreSQL, RabbitMQ and an SMTP listener.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger_tests::broker::Broker;
use ledger_tests::shop::{shop, Shop};
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{eventually, start_workers, workers_binary, Role};
use workers::config::Config;
use workers::replay::Filter;

/// What must not change when events are processed again.
#[derive(Debug, PartialEq, Eq)]
struct Effects {
    buyer: String,
    seller: String,
    on_hand: i64,
    ledger_transactions: i64,
    stock_commits: i64,
    emails: i64,
    mails: usize,
    inventory_inbox: i64,
}

async fn now(s: &Shop) -> DateTime<Utc> {
    s.app.db.client().await.query_one("SELECT now()", &[]).await.unwrap().get(0)
}

// The auditor can replace these assertions: it checks balances against
// entries and stock against its ledger.
async fn effects(s: &Shop, smtp: &SmtpServer) -> Effects {
    Effects {
        buyer: s.app.balance(&s.key, &s.buyer).await,
        seller: s.app.balance(&s.key, &s.seller).await,
        on_hand: s.on_hand().await,
        ledger_transactions: s.scalar("SELECT count(*) FROM ledger_transactions").await,
        stock_commits: s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await,
        emails: s.scalar("SELECT count(*) FROM emails").await,
        mails: smtp.mails().len(),
        inventory_inbox: s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await,
    }
}

async fn consumers(broker: &Broker, queue: &str) -> u32 {
    broker.counts(queue).await.1
}

/// Runs the real `ledger-workers` binary with `config`'s settings to completion.
fn run_workers(config: &Config, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(workers_binary());
    cmd.args(args)
        .env("DATABASE_URL", &config.database.database_url)
        .env("AMQP_URL", &config.amqp_url)
        .env("AMQP_PREFIX", &config.amqp_prefix)
        .env("AMQP_DELIVERY_LIMIT", config.delivery_limit.to_string())
        .env("AMQP_QUEUE_DELIVERY_LIMIT", config.queue_delivery_limit.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("LEDGER_CRASH_AT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the workers binary runs")
}

#[actix_web::test]
async fn replaying_a_settled_day_changes_no_balance_stock_or_email() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);
    for i in 0..3 {
        s.purchase(&format!("day-{i}"), 1).await;
    }
    eventually(20, "the pipeline settles", || async {
        s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await == 3
            && smtp.mails().len() == 3
            && s.settled(&broker).await
    })
    .await;
    let before = effects(&s, &smtp).await;
    let events = s.scalar("SELECT count(*) FROM outbox").await;

    // the whole day of this tenant, through the real command
    let since = (now(&s).await - chrono::Duration::days(1)).to_rfc3339();
    let tenant = s.tenant.to_string();
    let args = ["replay", "--tenant", tenant.as_str(), "--since", since.as_str()];
    let dry = run_workers(&config, &[&args[..], &["--dry-run"]].concat(), &[]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{out} {}", String::from_utf8_lossy(&dry.stderr));
    assert!(out.contains(&format!("{events} event(s) would be republished")), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("charge.succeeded")).count(), 3, "{out}");
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await, 0, "a dry run marks nothing");

    let replay_started = now(&s).await;
    let run = run_workers(&config, &args, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains(&format!("{events} event(s) marked")));
    let client = s.app.db.client().await;
    eventually(20, "every event is republished and consumed", || async {
        let republished: i64 = client
            .query_one("SELECT count(*) FROM outbox WHERE published_at > $1", &[&replay_started])
            .await
            .unwrap()
            .get(0);
        republished == events && s.settled(&broker).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(effects(&s, &smtp).await, before, "a replay makes no second effect and sends no email");
}

#[actix_web::test]
async fn messages_lost_before_the_inventory_worker_saw_them_are_recovered_by_a_replay_of_their_range() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _others = start_workers(&config, &[Role::Relay, Role::Email]);
    let inventory = start_workers(&config, &[Role::Inventory]);
    let first = s.purchase("before", 1).await;
    eventually(20, "the first order is committed", || async { s.status(&first).await == "committed" }).await;

    // stop the inventory worker, let a batch of events reach its queue, and lose them
    drop(inventory);
    eventually(10, "the inventory worker is gone", || async { consumers(&broker, &broker.names.inventory).await == 0 })
        .await;
    let from = now(&s).await;
    let mut lost = Vec::new();
    for i in 0..3 {
        lost.push(s.purchase(&format!("lost-{i}"), 1).await);
    }
    let to = now(&s).await;
    let after = s.purchase("after", 1).await;
    eventually(20, "the batch waits in the queue", || async { broker.depth(&broker.names.inventory).await == 4 }).await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge(broker.names.inventory.as_str().into(), Default::default()).await.unwrap();
    let _ = conn.close(200, "".into()).await;
    eventually(20, "every email is sent meanwhile", || async { smtp.mails().len() == 5 }).await;

    let _inventory = start_workers(&config, &[Role::Inventory]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for h in &lost {
        assert_eq!(s.status(h).await, "held", "lost, not processed");
    }
    assert_eq!(s.on_hand().await, 9);

    // replay the range of the lost batch only: "after" stays lost, as it is outside it
    let filter = Filter { tenant: Some(s.tenant), since: Some(from), until: Some(to), ..Default::default() };
    let pool = config.pool().unwrap();
    let planned = workers::replay::plan(&pool, &filter).await.unwrap();
    assert_eq!(planned.iter().filter(|e| e.event_type == "charge.succeeded").count(), 3, "{planned:?}");
    assert!(planned.iter().all(|e| e.order_id.as_deref().is_some_and(|o| o.starts_with("lost-"))), "{planned:?}");
    assert_eq!(workers::replay::replay(&pool, &filter).await.unwrap(), planned.len() as u64);
    eventually(20, "the lost orders are committed", || async {
        let mut all = true;
        for h in &lost {
            all &= s.status(h).await == "committed";
        }
        all && s.settled(&broker).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.status(&first).await, "committed");
    assert_eq!(s.status(&after).await, "held", "outside the replayed range");
    assert_eq!(s.on_hand().await, 6, "exactly the three missing commits");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 4);
    assert_eq!(s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await, 4);
    assert_eq!(smtp.mails().len(), 5, "no email resent");
    assert_eq!(s.scalar("SELECT count(*) FROM emails").await, 5);
}

#[actix_web::test]
async fn a_dead_lettered_message_redriven_after_the_fix_is_processed_exactly_once() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    // The "bug": the database refuses this order's stock commit, so the
    // inventory worker fails it on every delivery until it is dead-lettered.
    let db = s.app.db.client().await;
    db.batch_execute(
        "CREATE FUNCTION test_bug() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'test bug: order %', NEW.order_id; END $$; \
         CREATE TRIGGER test_bug BEFORE INSERT ON stock_entries FOR EACH ROW \
           WHEN (NEW.order_id = 'poison') EXECUTE FUNCTION test_bug();",
    )
    .await
    .unwrap();
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);
    eventually(10, "the queues exist", || async { broker.exists(&broker.names.dead_letter_queue).await }).await;
    let hold = s.purchase("poison", 1).await;
    eventually(30, "the message is dead-lettered", || async {
        broker.depth(&broker.names.dead_letter_queue).await == 1
    })
    .await;
    assert_eq!(s.status(&hold).await, "held");
    let message_id: String = db
        .query_one("SELECT message_id::text FROM outbox WHERE event_type = 'charge.succeeded'", &[])
        .await
        .unwrap()
        .get(0);

    // listing shows why it died and leaves it in place
    let dead = workers::dlq::list(&config).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d.message_id.as_deref(), Some(message_id.as_str()));
    assert_eq!(d.event_type.as_deref(), Some("charge.succeeded"));
    assert_eq!(d.order_id.as_deref(), Some("poison"));
    assert_eq!(d.queue.as_deref(), Some(broker.names.inventory.as_str()));
    // dead-lettered by the worker at its third failure (AMQP_DELIVERY_LIMIT),
    // not by the broker's count
    assert_eq!(d.reason.as_deref(), Some("rejected"), "{d:?}");
    assert_eq!(d.deliveries, None, "{d:?}");
    let applied = s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await;
    assert_eq!(applied, 0, "never applied");
    assert_eq!(d.deaths, Some(1));
    eventually(10, "a listed message stays dead-lettered", || async {
        broker.depth(&broker.names.dead_letter_queue).await == 1
    })
    .await;
    // a redrive that names another message moves nothing
    let none = workers::dlq::redrive(&config, &workers::dlq::Select::Ids(vec!["other".into()])).await.unwrap();
    assert!(none.is_empty());

    // the fix, then the redrive of that message
    db.batch_execute("DROP TRIGGER test_bug ON stock_entries").await.unwrap();
    let moved = workers::dlq::redrive(&config, &workers::dlq::Select::Ids(vec![message_id.clone()])).await.unwrap();
    assert_eq!(moved.len(), 1);
    eventually(20, "the redriven message is processed", || async { s.status(&hold).await == "committed" }).await;
    eventually(20, "every queue drains", || async {
        broker.depth(&broker.names.dead_letter_queue).await == 0 && s.settled(&broker).await
    })
    .await;
    // nothing left to redrive
    assert!(workers::dlq::redrive(&config, &workers::dlq::Select::All).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.on_hand().await, 9, "taken once");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await, 1);
    assert_eq!(smtp.mails().len(), 1, "the email queue got no copy");
}

#[actix_web::test]
async fn start_up_refuses_retention_windows_that_do_not_nest() {
    // the API, as `serve` builds it
    let mut api = api::config::Config::local("postgres://postgres@127.0.0.1:5432/unused");
    api.http_addr = "127.0.0.1:0".into();
    api.retention.idempotency_retention_secs = 3600;
    let e = api::startup::Application::build(api.clone()).await.err().expect("refused").to_string();
    assert!(e.contains("IDEMPOTENCY_RETENTION_SECS") && e.contains("CLIENT_MAX_RETRY_SECS"), "{e}");
    api.retention.idempotency_retention_secs = 86_400;
    api.retention.inbox_retention_secs = 86_400;
    let e = api::startup::Application::build(api).await.err().expect("refused").to_string();
    assert!(e.contains("INBOX_RETENTION_SECS") && e.contains("OUTBOX_RETENTION_SECS"), "{e}");

    // every worker command, through the real binary
    let config = Config::local("postgres://postgres@127.0.0.1:5432/unused", "unused");
    for (args, env, names) in [
        (&["relay"][..], ("INBOX_RETENTION_SECS", "3600"), ["INBOX_RETENTION_SECS", "OUTBOX_RETENTION_SECS"]),
        (&["dlq", "list"][..], ("MAX_REDELIVERY_SECS", "9999999"), ["INBOX_RETENTION_SECS", "MAX_REDELIVERY_SECS"]),
        (
            &["inventory"][..],
            ("CLIENT_MAX_RETRY_SECS", "172800"),
            ["IDEMPOTENCY_RETENTION_SECS", "CLIENT_MAX_RETRY_SECS"],
        ),
    ] {
        let out = run_workers(&config, args, &[env]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started with {env:?}");
        assert!(names.iter().all(|n| err.contains(n)), "{args:?}: {err}");
    }

    // and the API binary
    let api_bin = workers_binary().with_file_name("ledger-api");
    let out = std::process::Command::new(api_bin)
        .arg("serve")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("OUTBOX_RETENTION_SECS", "2000000")
        .output()
        .expect("the API binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("INBOX_RETENTION_SECS") && err.contains("OUTBOX_RETENTION_SECS"), "{err}");
}

#[actix_web::test]
async fn inbox_rows_past_their_retention_are_purged_in_bounded_batches() {
    let db = ledger_tests::TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO inbox (consumer, message_id, received_at) \
               SELECT 'inventory', gen_random_uuid(), now() - interval '30 days' FROM generate_series(1, 2500); \
             INSERT INTO inbox (consumer, message_id) VALUES ('inventory', gen_random_uuid());",
        )
        .await
        .unwrap();
    let config = Config::local(&db.worker_url, "unused");
    let pool = config.pool().unwrap();
    // more than two batches of PURGE_BATCH rows, and the recent one stays
    let removed = service::purge::once(&pool, service::purge::Target::Inbox, config.retention.inbox()).await.unwrap();
    assert_eq!(removed, 2500);
    assert_eq!(db.count("inbox").await, 1);
    assert_eq!(service::purge::once(&pool, service::purge::Target::Inbox, config.retention.inbox()).await.unwrap(), 0);
}

/// Moves every time of `order`'s outbox rows and inbox rows back by `secs`,
/// as if it all happened that much earlier.
async fn age(s: &Shop, order: &str, secs: f64) {
    let c = s.app.db.client().await;
    c.execute(
        "UPDATE inbox SET received_at = received_at - make_interval(secs => $2) \
          WHERE message_id IN (SELECT message_id FROM outbox WHERE order_id = $1)",
        &[&order, &secs],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE outbox SET created_at = created_at - make_interval(secs => $2), \
                           published_at = published_at - make_interval(secs => $2), \
                           first_published_at = first_published_at - make_interval(secs => $2) \
          WHERE order_id = $1",
        &[&order, &secs],
    )
    .await
    .unwrap();
}

#[actix_web::test]
async fn hole_7_a_replayed_event_is_purged_by_its_first_publication() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);
    let hold = s.purchase("old", 1).await;
    eventually(20, "the pipeline settles", || async {
        s.status(&hold).await == "committed" && smtp.mails().len() == 1 && s.settled(&broker).await
    })
    .await;
    let window = config.retention.outbox_retention_secs as f64;
    let rows = "SELECT count(*) FROM outbox WHERE order_id = 'old'";
    let events = s.scalar(rows).await;

    // First published (and received) 30 s short of the outbox window ago,
    // then replayed: republished now, absorbed by the inbox.
    age(&s, "old", window - 30.0).await;
    let filter = Filter { order: Some("old".into()), ..Default::default() };
    let pool = config.pool().unwrap();
    assert_eq!(workers::replay::replay(&pool, &filter).await.unwrap(), events as u64);
    eventually(20, "the replay is republished and consumed", || async {
        s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0 && s.settled(&broker).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 1);

    // A minute later the first publication is past the window, the
    // republication is not: the purge goes by the first. Otherwise the row
    // could be replayed again after its inbox rows, which age from their
    // first receipt, are gone.
    age(&s, "old", 60.0).await;
    // A replay no longer selects it...
    let windowed = Filter { window: Some(config.retention.outbox()), ..filter.clone() };
    assert!(workers::replay::plan(&pool, &windowed).await.unwrap().is_empty());
    assert_eq!(workers::replay::plan(&pool, &filter).await.unwrap().len() as i64, events, "still in the outbox");
    // ...and the purge takes it.
    service::purge::once(&pool, service::purge::Target::PublishedOutbox, config.retention.outbox()).await.unwrap();
    assert_eq!(s.scalar(rows).await, 0, "purged by its first publication");
    assert!(workers::replay::plan(&pool, &filter).await.unwrap().is_empty());
}

#[actix_web::test]
async fn hole_7_a_replay_still_waiting_when_its_window_ends_is_never_published() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let relay = start_workers(&config, &[Role::Relay]);
    let _consumers = start_workers(&config, &[Role::Inventory, Role::Email]);
    let hold = s.purchase("late", 1).await;
    eventually(20, "the pipeline settles", || async {
        s.status(&hold).await == "committed" && smtp.mails().len() == 1 && s.settled(&broker).await
    })
    .await;
    let window = config.retention.outbox_retention_secs as f64;
    let inbox = s.scalar("SELECT count(*) FROM inbox").await;

    // Replayed 30 s before the end of its window while no relay runs, and
    // the relay comes back a minute later: too late for the inbox to be
    // sure to absorb it.
    drop(relay);
    tokio::time::sleep(Duration::from_millis(500)).await;
    age(&s, "late", window - 30.0).await;
    let filter = Filter { order: Some("late".into()), ..Default::default() };
    let pool = config.pool().unwrap();
    let marked = workers::replay::replay(&pool, &filter).await.unwrap();
    assert!(marked > 0);
    age(&s, "late", 60.0).await;
    let _relay = start_workers(&config, &[Role::Relay]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s.scalar("SELECT count(*) FROM outbox WHERE order_id = 'late' AND published_at IS NOT NULL").await,
        0,
        "not republished past its window"
    );
    assert_eq!(s.scalar("SELECT count(*) FROM inbox").await, inbox, "nothing reached a consumer");
    // and the purge removes what the replay left
    service::purge::once(&pool, service::purge::Target::PublishedOutbox, config.retention.outbox()).await.unwrap();
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE order_id = 'late'").await, 0);
}
