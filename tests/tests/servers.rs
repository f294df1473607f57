//! Private PostgreSQL and RabbitMQ servers that tests stop, crash and restart
//! themselves: committed rows and confirmed messages survive, clients see the
//! outage, instances do not interfere with each other or with the shared
//! servers, and nothing is left behind, whether the test ends, panics or its
//! process is killed.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use ledger_tests::servers::{process_alive, processes_of, PrivatePostgres, PrivateRabbit};
use tokio_postgres::NoTls;

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("PostgreSQL accepts the connection");
    tokio::spawn(conn);
    client
}

fn refused(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == ErrorKind::ConnectionRefused)
}

async fn ids(client: &tokio_postgres::Client) -> Vec<i32> {
    client.query("SELECT id FROM orders ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

fn lease_file(port: u16) -> PathBuf {
    std::env::temp_dir().join("ledger-private-ports").join(port.to_string())
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// Asserts, within `secs`, that none of `pids` runs, the folder and the port
/// leases are gone, and nothing carries the folder's marker.
async fn assert_cleaned(what: &str, pids: &[u32], dir: &Path, ports: &[u16], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
        let marked = processes_of(dir);
        let leases: Vec<u16> = ports.iter().copied().filter(|&p| lease_file(p).exists()).collect();
        let open: Vec<u16> = ports.iter().copied().filter(|&p| listening(p)).collect();
        if alive.is_empty() && marked.is_empty() && !dir.exists() && leases.is_empty() && open.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: left behind: processes {alive:?}, marked {marked:?}, folder {} exists: {}, leases {leases:?}, listening {open:?}",
                dir.display(),
                dir.exists()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pids of the postmaster's children, seen from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

#[tokio::test]
async fn postgres_keeps_committed_rows_across_stop_and_restart_and_drop_cleans_up() {
    let t = Instant::now();
    let pg = PrivatePostgres::new().await.unwrap();
    eprintln!("postgres: initdb and first start {:?}", t.elapsed());
    assert!(pg.is_running());
    assert_ne!(pg.port(), 5432);
    let url = pg.create_database("shop").await.unwrap();
    let client = pg_connect(&url).await;
    client.batch_execute("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1)").await.unwrap();
    let port = pg.port();

    let t = Instant::now();
    pg.stop().await.unwrap();
    eprintln!("postgres: fast stop {:?}", t.elapsed());
    assert!(!pg.is_running());
    // The open session was cut, and a new one is refused while it is down.
    assert!(client.simple_query("SELECT 1").await.is_err(), "a session survived the stop");
    let err = tokio_postgres::connect(&url, NoTls).await.err().expect("a connection while stopped");
    assert!(refused(&err), "{err}");

    let t = Instant::now();
    pg.start().await.unwrap();
    eprintln!("postgres: start after stop {:?}", t.elapsed());
    assert_eq!(pg.port(), port, "clients reconnect to the same address");
    let client = pg_connect(&url).await;
    assert_eq!(ids(&client).await, vec![1]);
    client.execute("INSERT INTO orders VALUES (2)", &[]).await.unwrap();

    let t = Instant::now();
    pg.restart().await.unwrap();
    eprintln!("postgres: restart {:?}", t.elapsed());
    assert_eq!(ids(&pg_connect(&url).await).await, vec![1, 2]);

    // Drop stops the postmaster and its backends and removes everything.
    let _held = pg_connect(&url).await;
    let postmaster = pg.pid().unwrap();
    let mut pids = children_of(postmaster);
    assert!(pids.len() >= 4, "postmaster children: {pids:?}");
    pids.push(postmaster);
    let dir = pg.dir().to_owned();
    assert!(lease_file(port).exists());
    let t = Instant::now();
    drop(pg);
    eprintln!("postgres: drop {:?}", t.elapsed());
    assert_cleaned("postgres drop", &pids, &dir, &[port], 10).await;
}

#[tokio::test]
async fn postgres_recovers_committed_rows_after_a_kill_and_an_immediate_stop() {
    let pg = PrivatePostgres::new().await.unwrap();
    let url = pg.create_database("shop").await.unwrap();
    let client = pg_connect(&url).await;
    client.batch_execute("CREATE TABLE orders (id int PRIMARY KEY)").await.unwrap();
    for id in 1..=100 {
        client.execute("INSERT INTO orders VALUES ($1)", &[&id]).await.unwrap();
    }
    // Open, never committed: the crash must not keep it.
    let open = pg_connect(&url).await;
    open.batch_execute("BEGIN; INSERT INTO orders VALUES (1000)").await.unwrap();
    let postmaster = pg.pid().unwrap();
    let mut pids = children_of(postmaster);
    pids.push(postmaster);

    let log_before = std::fs::read_to_string(pg.log_path()).unwrap().len();
    let t = Instant::now();
    pg.kill().await.unwrap();
    eprintln!("postgres: kill {:?}", t.elapsed());
    assert!(!pg.is_running());
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    assert!(survivors.is_empty(), "processes outlived the kill: {survivors:?}");
    assert!(client.simple_query("SELECT 1").await.is_err());
    let err = tokio_postgres::connect(&url, NoTls).await.err().expect("a connection while crashed");
    assert!(refused(&err), "{err}");

    let t = Instant::now();
    pg.start().await.unwrap();
    eprintln!("postgres: start with crash recovery {:?}", t.elapsed());
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    assert!(log[log_before..].contains("automatic recovery in progress"), "no crash recovery:\n{}", &log[log_before..]);
    let client = pg_connect(&url).await;
    assert_eq!(ids(&client).await, (1..=100).collect::<Vec<i32>>());

    // Immediate shutdown: no checkpoint either, and the same outcome.
    client.execute("INSERT INTO orders VALUES (101)", &[]).await.unwrap();
    let log_before = log.len();
    let t = Instant::now();
    pg.stop_immediate().await.unwrap();
    eprintln!("postgres: immediate stop {:?}", t.elapsed());
    pg.start().await.unwrap();
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    assert!(log[log_before..].contains("automatic recovery in progress"), "no crash recovery:\n{}", &log[log_before..]);
    assert_eq!(ids(&pg_connect(&url).await).await, (1..=101).collect::<Vec<i32>>());

    // Dropped while crashed: the System V segment the dead postmaster left
    // (a restart would have removed it) goes too.
    pg.kill().await.unwrap();
    let pidfile = std::fs::read_to_string(pg.dir().join("data").join("postmaster.pid")).unwrap();
    let shmid = pidfile.lines().nth(6).unwrap().split_whitespace().nth(1).unwrap().to_owned();
    assert!(shm_ids().contains(&shmid), "segment {shmid} not found");
    drop(pg);
    assert!(!shm_ids().contains(&shmid), "segment {shmid} left behind");
}

/// Ids of the machine's System V shared memory segments.
fn shm_ids() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    table.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).map(str::to_owned).collect()
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

async fn amqp(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default()).await.expect("the node accepts AMQP")
}

/// Publishes persistent messages `ids` into a durable quorum queue and waits
/// until the broker confirmed every one.
async fn publish_confirmed(url: &str, queue: &str, ids: std::ops::Range<u32>) -> Connection {
    let conn = amqp(url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for id in ids {
        let props = BasicProperties::default().with_delivery_mode(2).with_message_id(id.to_string().into());
        let confirm = ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), id.to_string().as_bytes(), props)
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack(), "a publish was not confirmed");
    }
    conn
}

async fn depth(url: &str, queue: &str) -> u32 {
    let conn = amqp(url).await;
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    let _ = conn.close(200, "".into()).await;
    q.message_count()
}

async fn drain(url: &str, queue: &str) -> BTreeSet<u32> {
    let conn = amqp(url).await;
    let ch = conn.create_channel().await.unwrap();
    let mut seen = BTreeSet::new();
    while let Some(m) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        assert!(seen.insert(std::str::from_utf8(&m.delivery.data).unwrap().parse().unwrap()), "a duplicate");
    }
    let _ = conn.close(200, "".into()).await;
    seen
}

#[tokio::test]
async fn rabbit_keeps_confirmed_messages_across_stop_and_kill() {
    let t = Instant::now();
    let rabbit = PrivateRabbit::new().await.unwrap();
    eprintln!("rabbit: first start {:?}; beam RSS {:?} KiB", t.elapsed(), rabbit.memory_kib());
    assert_ne!(rabbit.port(), 5672);
    // An absolute watermark, not 0.4 × the machine's RAM.
    let limit = rabbit.rabbitmqctl(&["eval", "vm_memory_monitor:get_memory_limit()."]).await.unwrap();
    assert_eq!(limit.trim(), (512u64 << 20).to_string());
    let url = rabbit.amqp_url();
    let port = rabbit.port();
    let queue = "orders";

    let conn = publish_confirmed(&url, queue, 0..50).await;
    let beam = rabbit.beam_pid().unwrap();
    let t = Instant::now();
    rabbit.stop().await.unwrap();
    eprintln!("rabbit: stop {:?}", t.elapsed());
    assert!(!rabbit.is_running());
    assert!(!process_alive(beam), "the node's process outlived stop");
    assert!(Connection::connect(&url, ConnectionProperties::default()).await.is_err(), "AMQP accepted while stopped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn.status().connected() {
        assert!(Instant::now() < deadline, "the client never saw its connection close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let t = Instant::now();
    rabbit.start().await.unwrap();
    eprintln!("rabbit: start after stop {:?}", t.elapsed());
    assert_eq!(rabbit.port(), port, "clients reconnect to the same address");
    assert_eq!(depth(&url, queue).await, 50);

    let _conn = publish_confirmed(&url, queue, 50..100).await;
    let beam = rabbit.beam_pid().unwrap();
    let t = Instant::now();
    rabbit.kill().await.unwrap();
    eprintln!("rabbit: kill -9 {:?}", t.elapsed());
    assert!(!rabbit.is_running());
    assert!(!process_alive(beam));
    assert!(Connection::connect(&url, ConnectionProperties::default()).await.is_err(), "AMQP accepted while killed");

    let t = Instant::now();
    rabbit.start().await.unwrap();
    eprintln!("rabbit: start after kill {:?}; beam RSS {:?} KiB", t.elapsed(), rabbit.memory_kib());
    assert_ne!(rabbit.beam_pid(), Some(beam));
    assert_eq!(drain(&url, queue).await, (0..100).collect::<BTreeSet<u32>>());
}

/// Node names registered with the epmd on `port`, as `epmd -names` lists them.
fn epmd_names(port: u16) -> String {
    let out = std::process::Command::new("epmd").args(["-port", &port.to_string(), "-names"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn two_nodes_and_the_shared_broker_do_not_interfere_and_drop_cleans_up() {
    let t = Instant::now();
    let (a, b) = tokio::join!(PrivateRabbit::new(), PrivateRabbit::new());
    let (a, b) = (a.unwrap(), b.unwrap());
    eprintln!("rabbit: two nodes started side by side in {:?}", t.elapsed());
    assert_ne!(a.node_name(), b.node_name());
    let ports = [a.port(), a.epmd_port(), b.port(), b.epmd_port()];
    assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), 4, "{ports:?}");

    // Each node registered with its own epmd only; the shared one never saw them.
    let short = |n: &str| n.split('@').next().unwrap().to_owned();
    assert!(epmd_names(a.epmd_port()).contains(&short(a.node_name())));
    assert!(!epmd_names(a.epmd_port()).contains(&short(b.node_name())));
    let shared = epmd_names(4369);
    assert!(!shared.contains(&short(a.node_name())) && !shared.contains(&short(b.node_name())), "{shared}");

    let _ = publish_confirmed(&a.amqp_url(), "only-on-a", 0..3).await;
    let on_b = amqp(&b.amqp_url()).await.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    assert!(on_b.queue_declare("only-on-a".into(), passive, FieldTable::default()).await.is_err());

    // Stopping one leaves the other and the shared broker serving.
    a.stop().await.unwrap();
    assert!(b.is_running());
    let _ = publish_confirmed(&b.amqp_url(), "on-b", 0..3).await;
    amqp(&ledger_tests::broker::amqp_url()).await;
    a.start().await.unwrap();
    assert_eq!(depth(&a.amqp_url(), "only-on-a").await, 3);
    assert_eq!(depth(&b.amqp_url(), "on-b").await, 3);

    // Drop stops each node (wrapper, beam, its helpers) and its epmd.
    let mut checks = Vec::new();
    for node in [&a, &b] {
        let pids = processes_of(node.dir());
        assert!(pids.len() >= 3, "wrapper, beam and epmd at least: {pids:?}");
        assert!(pids.contains(&node.beam_pid().unwrap()));
        checks.push((pids, node.dir().to_owned(), vec![node.port(), node.epmd_port()]));
    }
    let t = Instant::now();
    drop(a);
    drop(b);
    eprintln!("rabbit: drop of two nodes {:?}", t.elapsed());
    for (pids, dir, ports) in checks {
        assert_cleaned("rabbit drop", &pids, &dir, &ports, 10).await;
    }
    // The shared broker is untouched.
    amqp(&ledger_tests::broker::amqp_url()).await;
    assert!(listening(4369));
}

#[tokio::test]
async fn a_panicking_test_still_removes_its_server() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let pg = PrivatePostgres::new().await.unwrap();
        let mut pids = children_of(pg.pid().unwrap());
        pids.push(pg.pid().unwrap());
        tx.send((pids, pg.dir().to_owned(), pg.port())).unwrap();
        panic!("a failing assertion while the server runs");
    });
    assert!(task.await.unwrap_err().is_panic());
    let (pids, dir, port) = rx.await.unwrap();
    assert_cleaned("postgres after a panic", &pids, &dir, &[port], 10).await;
}

const OWNER_REPORT: &str = "PRIVATE_SERVERS_OWNER_REPORT";

/// Run twice: as the test, which starts this same test in a process of its
/// own, lets it start servers, kills it with SIGKILL and checks that the
/// watchdogs removed everything; and, in that process, as the owner.
#[tokio::test]
async fn a_killed_test_process_leaves_nothing_behind() {
    if let Ok(report) = std::env::var(OWNER_REPORT) {
        let (pg, rabbit) = tokio::join!(PrivatePostgres::new(), PrivateRabbit::new());
        let (pg, rabbit) = (pg.unwrap(), rabbit.unwrap());
        let mut pids = processes_of(rabbit.dir());
        pids.extend(children_of(pg.pid().unwrap()));
        pids.push(pg.pid().unwrap());
        let text = format!(
            "{}\n{}\n{} {} {}\n{}\n",
            pg.dir().display(),
            rabbit.dir().display(),
            pg.port(),
            rabbit.port(),
            rabbit.epmd_port(),
            pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
        );
        std::fs::write(format!("{report}.tmp"), text).unwrap();
        std::fs::rename(format!("{report}.tmp"), &report).unwrap();
        tokio::time::sleep(Duration::from_secs(600)).await;
        unreachable!("the test kills this process");
    }

    let report = std::env::temp_dir().join(format!("ledger-owner-report-{}", std::process::id()));
    let mut owner = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_killed_test_process_leaves_nothing_behind", "--nocapture", "--test-threads=1"])
        .env(OWNER_REPORT, &report)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !report.exists() {
        assert!(owner.try_wait().unwrap().is_none(), "the owner process exited early");
        assert!(Instant::now() < deadline, "the owner process did not start its servers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&report).unwrap();
    std::fs::remove_file(&report).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (pg_dir, rabbit_dir) = (PathBuf::from(lines[0]), PathBuf::from(lines[1]));
    let ports: Vec<u16> = lines[2].split(' ').map(|p| p.parse().unwrap()).collect();
    let pids: Vec<u32> = lines[3].split(' ').map(|p| p.parse().unwrap()).collect();
    assert!(pids.iter().all(|&p| process_alive(p)));
    assert!(ports.iter().all(|&p| listening(p)));

    owner.kill().unwrap();
    owner.wait().unwrap();
    let t = Instant::now();
    assert_cleaned("postgres of a killed process", &pids, &pg_dir, &ports[..1], 30).await;
    assert_cleaned("rabbit of a killed process", &pids, &rabbit_dir, &ports[1..], 30).await;
    eprintln!("watchdogs cleaned up {:?} after the owner was killed", t.elapsed());
}

/// Compiles only if the servers can be shared and driven from spawned tasks
/// (an outage task stops and starts them while purchases run elsewhere).
#[allow(dead_code)]
fn servers_can_be_driven_from_spawned_tasks(
    pg: std::sync::Arc<PrivatePostgres>,
    rabbit: std::sync::Arc<PrivateRabbit>,
) {
    tokio::spawn(async move {
        pg.restart().await.unwrap();
        pg.kill().await.unwrap();
        pg.start().await.unwrap();
    });
    tokio::spawn(async move {
        rabbit.restart().await.unwrap();
        rabbit.kill().await.unwrap();
        rabbit.rabbitmqctl(&["close_all_connections", "outage"]).await.unwrap();
    });
}
