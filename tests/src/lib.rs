//! Test support: each test gets its own database, copied from a migrated
//! template, and the real server built by the production builder on port 0.

pub mod api_process;
pub mod broker;
pub mod card_shop;
pub mod chaos;
pub mod chaos_ha;
pub mod outages;
pub mod pages;
pub mod provider;
pub mod proxy;
pub mod rng;
pub mod server_faults;
pub mod servers;
pub mod shop;
pub mod smtp;
pub mod webhook_receiver;

use std::sync::OnceLock;

use api::config::Config;
use api::startup::Application;
use awc::http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Admin connection for creating and dropping test databases.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with the user replaced by one of the service's roles (made by the
/// `service_roles` migration), so that the code under test runs with the
/// grants it has in production, not as the superuser. The password is the
/// development default `scripts/ensure-services.sh` sets; a server that
/// trusts loopback ignores it.
pub fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    format!("{scheme}://{role}:{role}@{host}")
}

/// The roles the API and the workers connect as.
pub const API_ROLE: &str = "ledger_api";
pub const WORKER_ROLE: &str = "ledger_worker";

fn url_for(db: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{db}")
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.expect("PostgreSQL is up");
    tokio::spawn(conn);
    client
}

/// The template's name carries a digest of the migrations, so a changed
/// migration gets a new template and an unchanged one is reused across runs.
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<_> = walk(std::path::Path::new(dir));
        files.sort();
        let mut h = Sha256::new();
        for f in files {
            h.update(f.to_string_lossy().as_bytes());
            h.update(std::fs::read(&f).unwrap());
        }
        format!("ledger_tpl_{}", &hex::encode(h.finalize())[..16])
    })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn ensure_template(admin: &tokio_postgres::Client) -> &'static str {
    let name = template_name();
    // One process at a time builds the template; the others wait and reuse it.
    admin.execute("SELECT pg_advisory_lock(727274)", &[]).await.unwrap();
    let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().is_some();
    if !exists {
        let tmp = format!("{name}_build");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {tmp} WITH (FORCE)")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {tmp}")).await.unwrap();
        let applied = ledger::db::migrate(&url_for(&tmp)).await.expect("migrations apply");
        // The name is a digest of migrations/ on disk, the migrations applied
        // are those compiled into this binary: a binary built before a
        // migration was added must not leave a template under the new name,
        // where every later run (of any build) would reuse it.
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations")).unwrap().count();
        if applied.len() != on_disk {
            admin.batch_execute(&format!("DROP DATABASE {tmp} WITH (FORCE)")).await.unwrap();
            admin.execute("SELECT pg_advisory_unlock(727274)", &[]).await.unwrap();
            panic!(
                "this build embeds {} migrations, migrations/ holds {on_disk}: rebuild the ledger crate",
                applied.len()
            );
        }
        admin.batch_execute(&format!("ALTER DATABASE {tmp} RENAME TO {name}")).await.unwrap();
    }
    admin.execute("SELECT pg_advisory_unlock(727274)", &[]).await.unwrap();
    name
}

/// A database of its own, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    /// As the superuser: for fixtures and for assertions on what was written.
    pub url: String,
    /// As the API's role: what the API under test connects with.
    pub api_url: String,
    /// As the workers' role.
    pub worker_url: String,
    /// The server's `postgres` database, where it is dropped from.
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin = admin().await;
        let template = ensure_template(&admin).await;
        let name = format!("ledger_t_{}", Uuid::new_v4().simple());
        admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await.unwrap();
        let url = url_for(&name);
        TestDb::named(name, url, admin_url())
    }

    /// A migrated database on a private server (`servers::PrivatePostgres`),
    /// for tests that stop the database under the service.
    pub async fn on(server: &servers::PrivatePostgres) -> TestDb {
        let name = format!("ledger_t_{}", Uuid::new_v4().simple());
        let url = server.create_database(&name).await.expect("the private server creates a database");
        ledger::db::migrate(&url).await.expect("migrations apply");
        TestDb::named(name, url, server.admin_url())
    }

    fn named(name: String, url: String, admin_url: String) -> TestDb {
        let (api_url, worker_url) = (as_role(&url, API_ROLE), as_role(&url, WORKER_ROLE));
        TestDb { name, url, api_url, worker_url, admin_url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// Rows in a table: the effect tests assert on.
    pub async fn count(&self, table: &str) -> i64 {
        self.client().await.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
    }

    /// Rows in every table that holds an effect or a stored response.
    pub async fn counts(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for t in [
            "accounts",
            "ledger_transactions",
            "ledger_entries",
            "transfers",
            "charges",
            "refunds",
            "skus",
            "stock_entries",
            "reservations",
            "idempotency_keys",
        ] {
            out.push((t.to_owned(), self.count(t).await));
        }
        out
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // Drop runs outside async; a thread of its own with a small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub base: String,
    /// Where the app serves `/metrics` (METRICS_ADDR), when the test set it.
    metrics_url: Option<String>,
    pub db: TestDb,
    handle: actix_web::dev::ServerHandle,
    pub http: awc::Client,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent when `stop` is called; its future only
        // reports completion, which a synchronous drop cannot wait for.
        drop(self.handle.stop(false));
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Batches of up to 16 requests of a kind, one in flight at a time,
/// waiting up to 300 ms to fill while busy: a burst of concurrent requests
/// lands in a few batches (`spawn_app_with(batching)`).
pub fn batching(c: &mut Config) {
    c.charge_batch_max = 16;
    c.charge_batch_window_us = 300_000;
    c.charge_batch_concurrency = 1;
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(TestDb::new().await, tweak).await
}

/// The real server on `db` (a private server's database, say).
pub async fn spawn_app_on(db: TestDb, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::local(&db.api_url);
    config.http_addr = "127.0.0.1:0".into();
    config.http_workers = Some(2);
    config.database.db_pool_size = Some(20);
    tweak(&mut config);
    let app = Application::build(config).await.expect("the app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let metrics_url = app.metrics_port().map(|port| format!("http://127.0.0.1:{port}/metrics"));
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let http = awc::Client::builder().timeout(std::time::Duration::from_secs(60)).finish();
    TestApp { base, metrics_url, db, handle, http }
}

/// What a request answered: status, the headers tests look at, raw body.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub replayed: bool,
    pub natural_key_replayed: bool,
    /// The `Retry-After` header, when there is one.
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} replayed={} {}",
            self.status,
            self.content_type,
            self.replayed,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body));
        })
    }
    /// The problem `code` of an error answer (and checks it is a problem).
    pub fn code(&self) -> String {
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        self.json()["code"].as_str().unwrap().to_owned()
    }
    pub fn id(&self) -> String {
        self.json()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", String::from_utf8_lossy(&self.body)))
            .to_owned()
    }
}

impl TestApp {
    /// A new tenant and its API key.
    pub async fn tenant(&self, name: &str) -> String {
        let mut conn = ledger::tenants::connect(&self.db.url).await.unwrap();
        ledger::tenants::create_with_key(&mut conn, name).await.unwrap().1
    }

    pub async fn send(&self, method: &str, path: &str, key: &str, idem: Option<&str>, body: Option<&[u8]>) -> Answer {
        let mut req = self
            .http
            .request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{}", self.base, path))
            .insert_header(("Authorization", format!("Bearer {key}")));
        if let Some(k) = idem {
            req = req.insert_header(("Idempotency-Key", k));
        }
        let mut res = match body {
            Some(b) => req.insert_header(("Content-Type", "application/json")).send_body(b.to_vec()).await,
            None => req.send().await,
        }
        .expect("the server answers");
        let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let content_type = header("content-type");
        let replayed = header("idempotent-replayed") == "true";
        let natural_key_replayed = header("natural-key-replayed") == "true";
        let retry_after = Some(header("retry-after")).filter(|v| !v.is_empty());
        let body = res.body().limit(10 << 20).await.unwrap().to_vec();
        Answer { status: res.status(), content_type, replayed, natural_key_replayed, retry_after, body }
    }

    pub async fn post(&self, path: &str, key: &str, idem: &str, body: Value) -> Answer {
        self.send("POST", path, key, Some(idem), Some(body.to_string().as_bytes())).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.send("GET", path, key, None, None).await
    }

    /// Creates an account and returns its id.
    pub async fn account(&self, key: &str, reference: &str, currency: &str, allow_negative: bool) -> String {
        let a = self
            .post(
                "/v1/accounts",
                key,
                &format!("acct:{reference}"),
                serde_json::json!({"reference": reference, "currency": currency, "allow_negative": allow_negative}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
        a.id()
    }

    /// An account funded with `amount` from an external-funds account.
    pub async fn funded(&self, key: &str, reference: &str, amount: &str) -> String {
        let external = format!("external-{reference}");
        let ext = self.account(key, &external, "USD", true).await;
        let id = self.account(key, reference, "USD", false).await;
        let t = self
            .post(
                "/v1/transfers",
                key,
                &format!("fund:{reference}"),
                serde_json::json!({"source_account_id": ext, "destination_account_id": id, "amount": amount, "currency": "USD"}),
            )
            .await;
        assert_eq!(t.status, StatusCode::CREATED, "{t:?}");
        id
    }

    /// The app's metrics, from its own listener (start it with
    /// `c.metrics_addr = Some("127.0.0.1:0".into())`).
    pub async fn metrics(&self) -> String {
        let url = self.metrics_url.as_deref().expect("the app was started with a METRICS_ADDR");
        let mut res = self.http.get(url).send().await.expect("the metrics listener answers");
        assert_eq!(res.status(), StatusCode::OK);
        String::from_utf8_lossy(&res.body().limit(8 << 20).await.unwrap()).into_owned()
    }

    /// One number from the test's database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.db.client().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// `ledger-api audit` over the test's database finds nothing wrong.
    pub async fn audit_clean(&self) {
        let report = ledger::audit::audit(&self.db.client().await, Default::default()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }

    pub async fn balance(&self, key: &str, account: &str) -> String {
        self.get(&format!("/v1/accounts/{account}"), key).await.json()["balance"].as_str().unwrap().to_owned()
    }
}

/// Polls `check` until it returns true or `secs` pass; panics with `what` on timeout.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Workers running inside the test process, stopped when dropped.
pub struct Workers {
    trigger: workers::shutdown::Trigger,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.trigger.fire();
    }
}

pub use workers::Role;

pub fn start_workers(config: &workers::config::Config, roles: &[Role]) -> Workers {
    let (trigger, stop) = workers::shutdown::channel();
    let pool = config.pool().unwrap();
    workers::spawn(config, &pool, roles, &stop).detach_all();
    Workers { trigger }
}

/// The real `ledger-workers` binary (built by `make test` before the tests).
pub fn workers_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // a test runs from target/debug/deps, the chaos binary from target/debug
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") { dir.parent().unwrap() } else { dir };
    let bin = dir.join("ledger-workers");
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

/// The real `ledger-workers` binary with `config`'s settings in its
/// environment, and none of this process's that would change them.
fn worker_command(config: &workers::config::Config) -> std::process::Command {
    let mut cmd = std::process::Command::new(workers_binary());
    cmd.env("DATABASE_URL", &config.database.database_url)
        .env("AMQP_URL", &config.amqp_url)
        .env("AMQP_PREFIX", &config.amqp_prefix)
        .env("RELAY_POLL_MS", config.relay_poll_ms.to_string())
        .env("AMQP_DELIVERY_LIMIT", config.delivery_limit.to_string())
        .env("AMQP_QUEUE_DELIVERY_LIMIT", config.queue_delivery_limit.to_string())
        .env("AMQP_PREFETCH", config.prefetch.to_string())
        .env("EMAIL_DIR", &config.email_dir)
        .env("EMAIL_FROM", &config.email_from)
        .env("EXPIRER_POLL_MS", config.expirer_poll_ms.to_string())
        .env("WEBHOOK_POLL_MS", config.webhook_poll_ms.to_string())
        .env("WEBHOOK_TIMEOUT_MS", config.webhook_timeout_ms.to_string())
        .env("WEBHOOK_SCHEDULE", &config.webhook_schedule)
        .env("WEBHOOK_CONCURRENCY", config.webhook_concurrency.to_string())
        .env("WEBHOOK_PER_ENDPOINT", config.webhook_per_endpoint.to_string())
        .env("WEBHOOK_ALLOW_PRIVATE", config.webhook_allow_private.to_string())
        .env("WEBHOOK_DISABLE_AFTER_SECS", config.webhook_disable_after_secs.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("SMTP_URL")
        .env_remove("LEDGER_CRASH_AT")
        .env_remove("LEDGER_FREEZE_AT")
        // one metrics port per test that asks for it, never a shared default
        .env_remove("WORKERS_METRICS_ADDR");
    gateway_env(&mut cmd, config);
    if let Some(url) = &config.smtp_url {
        cmd.env("SMTP_URL", url);
    }
    cmd
}

/// Runs a worker subcommand of the real binary with `config`'s settings,
/// armed at `crash_at` when given.
pub fn spawn_worker_process(
    config: &workers::config::Config,
    role: &str,
    crash_at: Option<&str>,
) -> std::process::Child {
    let mut cmd = worker_command(config);
    cmd.arg(role);
    if let Some(point) = crash_at {
        cmd.env("LEDGER_CRASH_AT", point);
    }
    cmd.spawn().expect("the workers binary starts")
}

/// Runs worker subcommand `role` of the real binary armed to stop itself
/// (SIGSTOP) at freeze point `point`: a host that stops answering.
pub fn spawn_worker_frozen_at(config: &workers::config::Config, role: &str, point: &str) -> std::process::Child {
    let mut cmd = worker_command(config);
    cmd.arg(role).env("LEDGER_FREEZE_AT", point);
    cmd.spawn().expect("the workers binary starts")
}

/// A process's scheduling state from `/proc` (`T` when stopped).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: the state follows the last parenthesis
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Runs worker subcommand `role` of the real binary with its standard
/// error piped, for a test that reads what it logged.
pub fn spawn_worker_logged(config: &workers::config::Config, role: &str) -> std::process::Child {
    let mut cmd = worker_command(config);
    cmd.arg(role).stderr(std::process::Stdio::piped());
    cmd.spawn().expect("the workers binary starts")
}

/// Runs worker `role` armed at crash point `point` until it dies there
/// (waiting on the blocking pool, so that the test's own servers keep
/// serving it meanwhile).
pub async fn crash_worker(config: &workers::config::Config, role: &str, point: &str) {
    let mut victim = spawn_worker_process(config, role, Some(point));
    let status = tokio::task::spawn_blocking(move || victim.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the {role} worker died at its crash point {point}");
}

/// The payment provider settings of `config`, for a workers process.
fn gateway_env(cmd: &mut std::process::Command, config: &workers::config::Config) {
    let g = &config.gateway;
    cmd.env("GATEWAY_URL", &g.gateway_url)
        .env("GATEWAY_SECRET_KEY", &g.gateway_secret_key)
        .env("GATEWAY_WEBHOOK_SECRET", &g.gateway_webhook_secret)
        .env("GATEWAY_TIMEOUT_MS", g.gateway_timeout_ms.to_string())
        .env("GATEWAY_KEY_SECRET", &g.gateway_key_secret)
        .env("GATEWAY_KEY_WINDOW_SECS", g.gateway_key_window_secs.to_string())
        .env("CARD_LEASE_SECS", g.card_lease_secs.to_string())
        .env("GATEWAY_SEARCH_LAG_SECS", g.gateway_search_lag_secs.to_string())
        .env("GATEWAY_ALLOW_DEVELOPMENT_SECRETS", g.gateway_allow_development_secrets.to_string())
        .env("GATEWAY_ACTION_WINDOW_SECS", g.gateway_action_window_secs.to_string())
        .env("COMPLETER_POLL_MS", config.completer_poll_ms.to_string());
}

/// Runs a command of the real `ledger-workers` binary (`reconcile-emails`,
/// `replay`, `dlq ...`) with `config`'s settings, to completion. It waits on
/// the blocking pool, so that the test's own servers (the SMTP listener)
/// keep serving it meanwhile.
pub async fn run_worker_command(config: &workers::config::Config, args: &[&str]) -> std::process::Output {
    let mut cmd = worker_command(config);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("the workers binary runs")).await.unwrap()
}
