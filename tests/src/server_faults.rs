//! Server outages for the fault campaign: the campaign's own PostgreSQL
//! cluster and RabbitMQ node (`servers`), stopped and started again at
//! seeded moments for a few seconds to tens of seconds. Private servers make
//! this safe: nothing else runs on them.
//!
//! While a server is down the campaign's other faults that need it (dropping
//! database sessions, duplicating a message) are skipped; `Outages::is_down`
//! says which.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::servers::{PrivatePostgres, PrivateRabbit};

/// The campaign's private servers.
pub struct Servers {
    pub pg: PrivatePostgres,
    pub rabbit: PrivateRabbit,
}

impl Servers {
    pub async fn start() -> Servers {
        let (pg, rabbit) = futures::join!(PrivatePostgres::new(), PrivateRabbit::new());
        Servers {
            pg: pg.expect("a private PostgreSQL cluster starts"),
            rabbit: rabbit.expect("a private RabbitMQ node starts"),
        }
    }
}

/// How a server went down.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// PostgreSQL's fast shutdown, RabbitMQ's graceful stop.
    Graceful,
    /// SIGKILL: no checkpoint, no goodbye to clients; recovery on start.
    Crash,
}

/// What the outages did, for the campaign's summary.
#[derive(Debug, Default, Clone)]
pub struct Restarts {
    pub postgres: u64,
    pub postgres_crashed: u64,
    pub postgres_down: Duration,
    pub rabbitmq: u64,
    pub rabbitmq_crashed: u64,
    pub rabbitmq_down: Duration,
}

impl std::fmt::Display for Restarts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server restarts: postgres {} ({} of them crashes, down {:.0} s in all), \
             rabbitmq {} ({} of them crashes, down {:.0} s in all)",
            self.postgres,
            self.postgres_crashed,
            self.postgres_down.as_secs_f64(),
            self.rabbitmq,
            self.rabbitmq_crashed,
            self.rabbitmq_down.as_secs_f64()
        )
    }
}

/// Which server is down right now, shared with the rest of the campaign.
#[derive(Default)]
pub struct Outages {
    pg_down: Cell<bool>,
    rabbit_down: Cell<bool>,
    restarts: RefCell<Restarts>,
}

impl Outages {
    /// Whether PostgreSQL or RabbitMQ is (or is about to be) unreachable.
    pub fn is_down(&self) -> (bool, bool) {
        (self.pg_down.get(), self.rabbit_down.get())
    }

    pub fn restarts(&self) -> Restarts {
        self.restarts.borrow().clone()
    }
}

/// Longest a server stays down; a client's request is retried for two
/// minutes, so every key still gets its answer.
const MAX_DOWN_SECS: u64 = 30;

/// Stops and restarts the servers until `until`, one outage at a time, with
/// 5 to 25 s between them; returns with both running.
pub async fn run(servers: Rc<Servers>, outages: Rc<Outages>, mut rng: Rng, until: Instant) {
    loop {
        let gap = Duration::from_secs(5 + rng.below(21));
        if Instant::now() + gap >= until {
            break;
        }
        tokio::time::sleep(gap).await;
        let down = Duration::from_secs(2 + rng.below(MAX_DOWN_SECS - 1));
        let stop = if rng.chance(30) { Stop::Crash } else { Stop::Graceful };
        let started = Instant::now();
        if rng.chance(50) {
            outages.pg_down.set(true);
            match stop {
                Stop::Graceful => servers.pg.stop().await.expect("PostgreSQL stops"),
                Stop::Crash => servers.pg.kill().await.expect("PostgreSQL is killed"),
            }
            tokio::time::sleep(down).await;
            servers.pg.start().await.expect("PostgreSQL starts again");
            outages.pg_down.set(false);
            let mut r = outages.restarts.borrow_mut();
            r.postgres += 1;
            r.postgres_crashed += matches!(stop, Stop::Crash) as u64;
            r.postgres_down += started.elapsed();
        } else {
            outages.rabbit_down.set(true);
            match stop {
                Stop::Graceful => servers.rabbit.stop().await.expect("RabbitMQ stops"),
                Stop::Crash => servers.rabbit.kill().await.expect("RabbitMQ is killed"),
            }
            tokio::time::sleep(down).await;
            servers.rabbit.start().await.expect("RabbitMQ starts again");
            outages.rabbit_down.set(false);
            let mut r = outages.restarts.borrow_mut();
            r.rabbitmq += 1;
            r.rabbitmq_crashed += matches!(stop, Stop::Crash) as u64;
            r.rabbitmq_down += started.elapsed();
        }
    }
}

/// A fresh session on the campaign's database, unless PostgreSQL is down
/// (a session made before an outage dies with it).
pub async fn client_unless_down(url: &str, outages: &Outages) -> Option<tokio_postgres::Client> {
    if outages.is_down().0 {
        return None;
    }
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, conn) = tokio::time::timeout(Duration::from_secs(5), connect).await.ok()?.ok()?;
    actix_web::rt::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

/// Publishes a duplicate as the relay would; an error when the broker went
/// away meanwhile (the copy may or may not have arrived, which the consumers
/// absorb either way).
pub async fn publish(broker: &crate::broker::Broker, kind: &str, id: &str, body: &[u8]) -> Result<(), String> {
    let send = async {
        let conn = lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| e.to_string())?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(Default::default()).await.map_err(|e| e.to_string())?;
        let copies =
            workers::relay::publish_event(&ch, &broker.names, id, kind, body).await.map_err(|e| e.to_string())?;
        workers::relay::settle(id, copies).await.map_err(|e| e.to_string())?;
        let _ = conn.close(200, "".into()).await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(20), send).await.map_err(|_| "timed out".to_owned())?
}

/// What the broker holds and who consumes it, for a campaign that did not
/// quiesce: each queue's ready and unacknowledged messages and consumers,
/// and (on a private node) its connections and consumers as it sees them.
pub async fn describe(servers: Option<&Servers>, broker: &crate::broker::Broker) -> String {
    let mut out = String::new();
    for q in [&broker.names.inventory, &broker.names.email, &broker.names.dead_letter_queue] {
        let (ready, consumers) = broker.counts(q).await;
        out.push_str(&format!("{q}: {ready} ready, {consumers} consumers\n"));
    }
    if let Some(s) = servers {
        for args in [
            &["list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers", "state"][..],
            &["list_consumers", "queue_name", "channel_pid", "ack_required", "prefetch_count", "active"][..],
            &["list_channels", "pid", "connection", "consumer_count", "messages_unacknowledged", "prefetch_count"][..],
            &["list_connections", "name", "state", "channels", "blocked_by"][..],
            &["status"][..],
        ] {
            match s.rabbit.rabbitmqctl(args).await {
                Ok(text) => out.push_str(&format!("rabbitmqctl {}:\n{text}\n", args.join(" "))),
                Err(e) => out.push_str(&format!("rabbitmqctl {}: {e}\n", args.join(" "))),
            }
        }
    }
    out
}
