//! What an operator sees of a running stack: the Prometheus metrics of the
//! API and of the workers, scraped around one purchase, a real Prometheus
//! server reading them, the shipped alerting rules checked by `promtool`,
//! and one request's id followed from its response into the inventory
//! worker's JSON log lines. The API and the workers are the real binaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use awc::http::StatusCode;
use ledger_tests::api_process::{free_port, ApiProcess};
use ledger_tests::broker::Broker;
use ledger_tests::shop::{shop, Shop};
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{eventually, workers_binary};
use serde_json::{json, Value};

/// The real `ledger-workers all`, with its metrics on a port of its own and
/// its log (standard error) in a file; killed when dropped.
struct WorkersProcess {
    child: Child,
    metrics_port: u16,
    log: PathBuf,
}

impl WorkersProcess {
    fn start(config: &workers::config::Config, dir: &Path, log_format: &str) -> WorkersProcess {
        let metrics_port = free_port();
        let log = dir.join("workers.log");
        let mut cmd = Command::new(workers_binary());
        cmd.arg("all")
            .env("DATABASE_URL", &config.database.database_url)
            .env("AMQP_URL", &config.amqp_url)
            .env("AMQP_PREFIX", &config.amqp_prefix)
            .env("RELAY_POLL_MS", config.relay_poll_ms.to_string())
            .env("AMQP_DELIVERY_LIMIT", config.delivery_limit.to_string())
            .env("AMQP_QUEUE_DELIVERY_LIMIT", config.queue_delivery_limit.to_string())
            .env("EMAIL_DIR", &config.email_dir)
            .env("SMTP_URL", config.smtp_url.as_deref().expect("the test's SMTP listener"))
            .env("WORKERS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("LOG_FORMAT", log_format)
            .env("RUST_LOG", "info")
            .env_remove("LEDGER_CRASH_AT")
            .env_remove("DB_POOL_SIZE")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        WorkersProcess { child: cmd.spawn().expect("the workers binary starts"), metrics_port, log }
    }

    fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }
}

impl Drop for WorkersProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ledger-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shop, its real API process and its real workers process, ready: the
/// workers' metrics answer and the relay declared the consumers' queues.
struct Stack {
    shop: Shop,
    broker: Broker,
    smtp: SmtpServer,
    api: ApiProcess,
    /// Where the API serves its metrics (METRICS_ADDR), off its own port.
    api_metrics: String,
    workers: WorkersProcess,
    dir: TempDir,
}

async fn stack(log_format: &str) -> Stack {
    let shop = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = shop.config(&broker, &smtp);
    let dir = TempDir::new("observability");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let api = ApiProcess::start(&shop.app.db.api_url, &[("METRICS_ADDR", &metrics_addr)]).await;
    let api_metrics = format!("http://{metrics_addr}/metrics");
    let workers = WorkersProcess::start(&config, &dir.0, log_format);
    let http = awc::Client::default();
    eventually(30, "the workers serve their metrics and the queues exist", || async {
        let up = matches!(http.get(workers.metrics_url()).send().await, Ok(r) if r.status() == StatusCode::OK);
        up && broker.exists(&broker.names.inventory).await && broker.exists(&broker.names.email).await
    })
    .await;
    Stack { shop, broker, smtp, api, api_metrics, workers, dir }
}

/// What a POST answered, with the headers these tests read.
struct Posted {
    status: StatusCode,
    request_id: Option<String>,
    body: Value,
}

async fn post(url: &str, key: &str, idem: &str, request_id: Option<&str>, body: Value) -> Posted {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut req = http
        .post(url)
        .insert_header(("Authorization", format!("Bearer {key}")))
        .insert_header(("Idempotency-Key", idem))
        .insert_header(("Content-Type", "application/json"));
    if let Some(id) = request_id {
        req = req.insert_header(("X-Request-Id", id));
    }
    let mut res = req.send_body(body.to_string()).await.expect("the API answers");
    let request_id = res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = res.body().await.unwrap();
    Posted { status: res.status(), request_id, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

impl Stack {
    /// Holds a mug for `order` and charges it, through the API process, with
    /// `request_id` on the charge; returns the charge's answer.
    async fn purchase(&self, order: &str, request_id: Option<&str>) -> Posted {
        let s = &self.shop;
        let hold = post(
            &self.api.url("/v1/reservations"),
            &s.key,
            &format!("{order}:mug"),
            None,
            json!({"order_id": order, "sku": "mug", "quantity": 1}),
        )
        .await;
        assert_eq!(hold.status, StatusCode::CREATED, "{:?}", hold.body);
        let charge =
            post(&self.api.url("/v1/charges"), &s.key, &format!("{order}:1"), request_id, self.charge(order)).await;
        assert_eq!(charge.status, StatusCode::CREATED, "{:?}", charge.body);
        charge
    }

    fn charge(&self, order: &str) -> Value {
        let s = &self.shop;
        json!({"order_id": order, "attempt": 1, "buyer_account_id": s.buyer, "seller_account_id": s.seller,
               "amount": "12.00", "currency": "USD", "receipt_email": format!("{order}@example.com")})
    }

    async fn settled(&self) {
        eventually(30, "every event is published and consumed", || async { self.shop.settled(&self.broker).await })
            .await;
    }
}

async fn scrape(url: &str) -> Metrics {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut res = http.get(url).send().await.expect("the metrics endpoint answers");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = String::from_utf8(res.body().limit(16 << 20).await.unwrap().to_vec()).unwrap();
    Metrics::parse(&text)
}

/// Samples of a scrape: (name, labels) → value.
struct Metrics(Vec<(String, BTreeMap<String, String>, f64)>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a sample value: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("a label: {line}"));
                        labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                    }
                    (name.to_owned(), labels)
                }
            };
            assert!(name.starts_with("ledger_"), "every metric is named ledger_*: {name}");
            samples.push((name, labels, value));
        }
        Metrics(samples)
    }

    /// The sum over the series of `name` whose labels include `labels`; 0 when none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

#[actix_web::test]
async fn the_metrics_of_both_processes_move_as_a_purchase_says() {
    let st = stack("text").await;
    let s = &st.shop;
    // The shop's setup (its restock) went through; from here on, what moves is the purchase's.
    st.settled().await;
    let api_url = st.api_metrics.clone();
    // never on the API's own port: they count every tenant's requests
    let public = awc::Client::default().get(st.api.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND, "the API's port does not serve /metrics");
    let (api0, workers0) = (scrape(&api_url).await, scrape(&st.workers.metrics_url()).await);
    let last_event = s.scalar("SELECT coalesce(max(id), 0) FROM outbox").await;

    st.purchase("m-1", None).await;
    // a retry of the charge (replayed), the same order under another key
    // (natural key), and a reservation the stock cannot cover (declined)
    let retry = post(&st.api.url("/v1/charges"), &s.key, "m-1:1", None, st.charge("m-1")).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    let again = post(&st.api.url("/v1/charges"), &s.key, "m-1:1:again", None, st.charge("m-1")).await;
    assert_eq!(again.status, StatusCode::OK);
    let big = json!({"order_id": "m-2", "sku": "mug", "quantity": 1000});
    let declined = post(&st.api.url("/v1/reservations"), &s.key, "m-2:mug", None, big).await;
    assert_eq!(declined.body["code"], "out_of_stock");
    let unauthorized = post(&st.api.url("/v1/charges"), "nope", "m-3:1", None, st.charge("m-3")).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);

    st.settled().await;
    eventually(20, "the email arrives", || async { st.smtp.mails().len() == 1 }).await;
    let types: Vec<String> = s
        .app
        .db
        .client()
        .await
        .query("SELECT event_type FROM outbox WHERE id > $1 ORDER BY event_type", &[&last_event])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["charge.succeeded", "reservation.committed", "reservation.held"]);
    let events = types.len();
    let api1 = scrape(&api_url).await;
    // (the inventory worker's `reservation.committed` may still wait for the
    // relay's next poll when the email is consumed)
    let workers1 = eventually_scrape(&st.workers.metrics_url(), |m| {
        m.get("ledger_consumer_messages_total", &[("consumer", "email")])
            > workers0.get("ledger_consumer_messages_total", &[("consumer", "email")])
            && m.get("ledger_outbox_unpublished", &[]) == 0.0
            && m.get("ledger_relay_published_total", &[]) - workers0.get("ledger_relay_published_total", &[])
                >= events as f64
    })
    .await;

    let moved = |after: &Metrics, before: &Metrics, name: &str, labels: &[(&str, &str)]| {
        after.get(name, labels) - before.get(name, labels)
    };
    let http = "ledger_http_requests_total";
    let post_ = ("method", "POST");
    assert_eq!(moved(&api1, &api0, http, &[("route", "/v1/reservations"), post_, ("status", "201")]), 1.0);
    assert_eq!(moved(&api1, &api0, http, &[("route", "/v1/reservations"), post_, ("status", "409")]), 1.0);
    assert_eq!(moved(&api1, &api0, http, &[("route", "/v1/charges"), post_, ("status", "201")]), 2.0);
    assert_eq!(moved(&api1, &api0, http, &[("route", "/v1/charges"), post_, ("status", "200")]), 1.0);
    assert_eq!(moved(&api1, &api0, http, &[("route", "/v1/charges"), post_, ("status", "401")]), 1.0);
    let timed = "ledger_http_request_duration_seconds_count";
    assert_eq!(moved(&api1, &api0, timed, &[("route", "/v1/charges"), post_]), 4.0);
    assert!(api1.has("ledger_http_request_duration_seconds_bucket"));
    assert_eq!(moved(&api1, &api0, "ledger_idempotent_replays_total", &[("route", "/v1/charges")]), 1.0);
    assert_eq!(moved(&api1, &api0, "ledger_natural_key_replays_total", &[("route", "/v1/charges")]), 1.0);
    assert_eq!(moved(&api1, &api0, "ledger_declines_total", &[("code", "out_of_stock")]), 1.0);
    assert_eq!(moved(&api1, &api0, "ledger_http_problems_total", &[("code", "unauthorized")]), 1.0);
    assert_eq!(api1.get("ledger_db_pool_max_connections", &[("pool", "api")]), 16.0);
    assert!(api1.has("ledger_db_pool_waiting"));
    // a path nobody serves is one series, whatever the path
    let http_client = awc::Client::default();
    for path in ["/nothing/1", "/nothing/2"] {
        let r = http_client.get(st.api.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let api2 = scrape(&api_url).await;
    assert_eq!(moved(&api2, &api1, http, &[("route", "unmatched"), ("status", "404")]), 2.0);

    let consumed = "ledger_consumer_messages_total";
    assert_eq!(moved(&workers1, &workers0, "ledger_relay_published_total", &[]), events as f64);
    // charge.succeeded into the inventory and email queues, and every event
    // into the webhooks queue, confirmed
    let confirms = "ledger_relay_confirms_total";
    assert_eq!(moved(&workers1, &workers0, confirms, &[("copy", "required"), ("result", "ack")]), 2.0 + events as f64);
    assert_eq!(moved(&workers1, &workers0, confirms, &[("copy", "optional"), ("result", "ack")]), events as f64);
    assert_eq!(moved(&workers1, &workers0, consumed, &[("consumer", "inventory"), ("outcome", "applied")]), 1.0);
    assert_eq!(moved(&workers1, &workers0, consumed, &[("consumer", "email"), ("outcome", "applied")]), 1.0);
    for outcome in ["duplicate", "requeued", "dead_lettered"] {
        assert_eq!(moved(&workers1, &workers0, consumed, &[("outcome", outcome)]), 0.0, "{outcome}");
    }
    assert_eq!(moved(&workers1, &workers0, "ledger_emails_total", &[("outcome", "sent")]), 1.0);
    assert_eq!(workers1.get("ledger_outbox_unpublished", &[]), 0.0);
    assert_eq!(workers1.get("ledger_outbox_oldest_unpublished_age_seconds", &[]), 0.0);
    assert_eq!(workers1.get("ledger_queue_messages", &[("queue", "dead_letter")]), 0.0);
    assert_eq!(workers1.get("ledger_queue_consumers", &[("queue", "inventory")]), 1.0);
    assert_eq!(workers1.get("ledger_metrics_source_up", &[("source", "database")]), 1.0);
    assert_eq!(workers1.get("ledger_metrics_source_up", &[("source", "broker")]), 1.0);
    assert_eq!(workers1.get("ledger_db_pool_max_connections", &[("pool", "workers")]), 8.0);

    // an event written but not published yet is counted, with its age
    s.app
        .db
        .client()
        .await
        .execute(
            "INSERT INTO outbox (message_id, tenant_id, event_type, payload, created_at, retry_at) \
             VALUES (gen_random_uuid(), $1, 'test.held_back', '{}', now() - interval '1 hour', now() + interval '1 hour')",
            &[&s.tenant],
        )
        .await
        .unwrap();
    let held = scrape(&st.workers.metrics_url()).await;
    assert_eq!(held.get("ledger_outbox_unpublished", &[]), 1.0);
    assert!(held.get("ledger_outbox_oldest_unpublished_age_seconds", &[]) >= 3600.0);
    // and a poison message, rejected by the three consumers it reaches,
    // shows in the dead-letter queue's depth
    st.broker.publish("charge.succeeded", "poison-1", b"not json").await;
    let dead = eventually_scrape(&st.workers.metrics_url(), |m| {
        m.get("ledger_queue_messages", &[("queue", "dead_letter")]) == 3.0
            && ["inventory", "email", "webhooks"].iter().all(|c| {
                m.get("ledger_consumer_messages_total", &[("consumer", c), ("outcome", "dead_lettered")]) >= 1.0
            })
    })
    .await;
    for consumer in ["inventory", "email", "webhooks"] {
        let labels = [("consumer", consumer), ("outcome", "dead_lettered")];
        assert_eq!(moved(&dead, &workers1, consumed, &labels), 1.0, "{consumer}");
    }
    // anything but /metrics is not found
    let other = http_client.get(format!("http://127.0.0.1:{}/", st.workers.metrics_port)).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

/// Scrapes until `ready` holds (the workers count a delivery after its ack).
async fn eventually_scrape(url: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    for _ in 0..100 {
        let m = scrape(url).await;
        if ready(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the metrics at {url} did not reach the expected values");
}

#[actix_web::test]
async fn one_request_id_runs_from_the_response_to_the_inventory_workers_log() {
    let st = stack("json").await;
    let s = &st.shop;
    // an optional subscriber of the topic exchange, to read the message as sent
    let conn = st.broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let probe = format!("{}.probe", st.broker.prefix);
    ch.queue_declare(probe.as_str().into(), Default::default(), Default::default()).await.unwrap();
    let events = st.broker.names.events.as_str();
    ch.queue_bind(
        probe.as_str().into(),
        events.into(),
        "charge.succeeded".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();

    let id = format!("checkout-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let charge = st.purchase("c-1", Some(&id)).await;
    assert_eq!(charge.request_id.as_deref(), Some(id.as_str()), "the id is echoed");
    let stored: Option<String> = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT request_id FROM outbox WHERE event_type = 'charge.succeeded'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_deref(), Some(id.as_str()), "the event carries it");

    // The relay sends it as the message's correlation id, and a W3C traceparent.
    let mut sent = None;
    for _ in 0..100 {
        sent = ch.basic_get(probe.as_str().into(), Default::default()).await.unwrap();
        if sent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sent.expect("the relay published the charge");
    let props = &sent.delivery.properties;
    assert_eq!(props.correlation_id().as_ref().map(|c| c.as_str()), Some(id.as_str()));
    let traceparent = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("traceparent").cloned())
        .and_then(|v| v.as_long_string().map(|s| s.to_string()))
        .expect("a traceparent header");
    assert_eq!(traceparent, workers::request_id::traceparent(Some(&id), props.message_id().as_ref().unwrap().as_str()));
    assert!(traceparent.starts_with(&format!("00-{}-", workers::request_id::trace_id(&id))), "{traceparent}");
    let _ = conn.close(200, "".into()).await;

    // The inventory worker logs the event it handled inside the message's
    // span, which carries the request's id: follow it there.
    let log = &st.workers.log;
    let handled = |line: &Value| {
        line["target"] == "workers::inventory"
            && line["fields"]["message"] == "inventory event handled"
            && line["span"]["request_id"] == id.as_str()
    };
    eventually(30, "the inventory worker logs the purchase's request id", || async {
        read_json_lines(log).iter().any(handled)
    })
    .await;
    let lines = read_json_lines(log);
    let line = lines.iter().find(|l| handled(l)).unwrap();
    assert_eq!(line["fields"]["applied"], true);
    assert_eq!(line["span"]["consumer"], "inventory");
    let message_id: String = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT message_id::text FROM outbox WHERE event_type = 'charge.succeeded'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(line["span"]["message_id"], message_id.as_str());
    // the event the inventory worker wrote in turn carries it on
    let committed: Option<String> = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT request_id FROM outbox WHERE event_type = 'reservation.committed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed.as_deref(), Some(id.as_str()));
    // the email worker's lines about the same message carry it too
    eventually(20, "the email worker logs it too", || async {
        read_json_lines(log).iter().any(|l| l["target"] == "workers::email" && l["span"]["request_id"] == id.as_str())
    })
    .await;

    // an ill-formed id is replaced by a UUID, and none gets one too
    for given in [Some("has spaces and !"), Some(&*"x".repeat(65)), None] {
        let order = format!("c-{}", uuid::Uuid::new_v4().simple());
        let r = st.purchase(&order, given).await;
        let made = r.request_id.expect("always echoed");
        assert!(uuid::Uuid::parse_str(&made).is_ok(), "{given:?} became {made}");
    }
    // a problem response carries one as well
    let refused = post(&st.api.url("/v1/charges"), "nope", "k", Some("refused-1"), st.charge("c-x")).await;
    assert_eq!((refused.status, refused.request_id.as_deref()), (StatusCode::UNAUTHORIZED, Some("refused-1")));
    drop(st.dir);
}

/// Every line of a JSON log; each must be one JSON object.
fn read_json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

/// The repository's `ops/prometheus` folder.
fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus")
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs (Debian's `prometheus` package; `make services` installs it)")
}

#[test]
fn the_shipped_configuration_and_rules_pass_promtool() {
    let dir = ops_dir();
    for args in [
        vec!["check", "config", dir.join("prometheus.yml").to_str().unwrap()],
        vec!["check", "rules", dir.join("rules.yml").to_str().unwrap()],
        vec!["test", "rules", dir.join("rules.test.yml").to_str().unwrap()],
    ] {
        let out = promtool(&args);
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A real Prometheus server, on a private port with a temporary folder.
struct PrometheusServer {
    child: Child,
    port: u16,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn a_prometheus_server_scrapes_the_stack_and_answers_queries() {
    let st = stack("text").await;
    let dir = &st.dir.0;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: ledger-api\n    static_configs:\n      - targets: ['{}']\n\
         \x20 - job_name: ledger-workers\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        ops_dir().join("rules.yml").display(),
        st.api_metrics.trim_start_matches("http://").trim_end_matches("/metrics"),
        st.workers.metrics_port
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("prometheus.log")).unwrap()))
        .spawn()
        .expect("prometheus runs (Debian's `prometheus` package; `make services` installs it)");
    let prometheus = PrometheusServer { child, port };

    st.purchase("p-1", None).await;
    st.settled().await;
    let query = |q: &'static str| {
        let url = format!("http://127.0.0.1:{}/api/v1/query", prometheus.port);
        async move {
            let http = awc::Client::default();
            let mut res = http.get(url).query(&[("query", q)]).ok()?.send().await.ok()?;
            let body: Value = res.json().limit(1 << 20).await.ok()?;
            let result = body["data"]["result"].as_array()?.first()?.clone();
            result["value"][1].as_str()?.parse::<f64>().ok()
        }
    };
    eventually(60, "Prometheus has scraped the charge and the inventory worker", || async {
        query(r#"sum(ledger_http_requests_total{job="ledger-api",route="/v1/charges",status="201"})"#).await
            == Some(1.0)
            && query(
                r#"sum(ledger_consumer_messages_total{job="ledger-workers",consumer="inventory",outcome="applied"})"#,
            )
            .await
                == Some(1.0)
    })
    .await;
    assert_eq!(query(r#"up{job="ledger-workers"}"#).await, Some(1.0));
    assert_eq!(query(r#"max(ledger_outbox_unpublished{job="ledger-workers"})"#).await, Some(0.0));
    // the shipped rules load and evaluate against this stack: nothing fires
    let http = awc::Client::default();
    let mut res =
        http.get(format!("http://127.0.0.1:{}/api/v1/rules", prometheus.port)).send().await.expect("rules answer");
    let rules: Value = res.json().limit(1 << 20).await.unwrap();
    let groups = rules["data"]["groups"].as_array().expect("rule groups");
    let all: Vec<&Value> = groups.iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert!(all.len() >= 5, "{rules}");
    eventually(20, "every rule has been evaluated", || async {
        let mut res = http.get(format!("http://127.0.0.1:{}/api/v1/rules", prometheus.port)).send().await.unwrap();
        let rules: Value = res.json().limit(1 << 20).await.unwrap();
        rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .all(|r| r["health"] == "ok")
    })
    .await;
    let mut res = http.get(format!("http://127.0.0.1:{}/api/v1/alerts", prometheus.port)).send().await.unwrap();
    let alerts: Value = res.json().limit(1 << 20).await.unwrap();
    let firing: Vec<&Value> =
        alerts["data"]["alerts"].as_array().unwrap().iter().filter(|a| a["state"] == "firing").collect();
    assert!(firing.is_empty(), "{firing:?}");
}
