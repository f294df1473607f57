//! A shop that takes cards through the fake provider: a tenant with a
//! seller and a platform account on the in-process server, and the
//! completer and the real `ledger-api` process pointed at the same database
//! and provider, armed at a crash point when asked. The card tests
//! (`cards`, `card_refunds`) and the crash tests (`cards_crash`,
//! `refunds_crash`) build on it and keep their requests and assertions.

use std::process::Child;
use std::time::Duration;

use crate::api_process::{ApiProcess, Reply};
use crate::provider::FakeProvider;
use crate::{spawn_app_with, spawn_worker_process, start_workers, Role, TestApp, Workers};

pub struct CardShop {
    pub app: TestApp,
    pub fake: FakeProvider,
    pub key: String,
    pub seller: String,
    pub platform: String,
}

impl CardShop {
    /// A shop with a plain fake provider, no webhooks and no tweak.
    pub async fn new() -> CardShop {
        CardShop::with(&[], false, |_| {}).await
    }

    /// A shop whose fake provider runs with `fake_args` and delivers its
    /// webhooks to the API when `webhooks`, its API's provider settings
    /// tweaked. The API gives the provider 5 s a request, as the
    /// `ledger-api` processes below do.
    pub async fn with(
        fake_args: &[&str],
        webhooks: bool,
        tweak: impl FnOnce(&mut service::settings::Gateway),
    ) -> CardShop {
        CardShop::configured(fake_args, webhooks, |c| tweak(&mut c.gateway)).await
    }

    /// [`CardShop::with`], its API's whole configuration tweaked.
    pub async fn configured(
        fake_args: &[&str],
        webhooks: bool,
        tweak: impl FnOnce(&mut api::config::Config),
    ) -> CardShop {
        let fake = FakeProvider::start(fake_args);
        let app = spawn_app_with(|c| {
            fake.configure(&mut c.gateway);
            c.gateway.gateway_timeout_ms = 5_000;
            tweak(c);
        })
        .await;
        if webhooks {
            fake.set_webhook_endpoint(&format!("{}/v1/provider/webhooks", app.base)).await;
        }
        let key = app.tenant("shop").await;
        let seller = app.account(&key, "seller", "USD", false).await;
        let platform = app.account(&key, "platform", "USD", false).await;
        CardShop { app, fake, key, seller, platform }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.app.scalar(sql).await
    }

    pub async fn audit_clean(&self) {
        self.app.audit_clean().await
    }

    /// The workers' settings pointed at this shop's database and provider.
    /// The completer and `reconcile-payments` use no broker, so the prefix
    /// names nothing they touch.
    pub fn worker_config(&self) -> workers::config::Config {
        let mut config = workers::config::Config::local(&self.app.db.url, "card-shop");
        self.fake.configure(&mut config.gateway);
        config
    }

    /// The completer's settings: a lease of `lease_secs`, polling every
    /// 50 ms so that a test waits on it briefly.
    pub fn completer_config(&self, lease_secs: u64) -> workers::config::Config {
        let mut config = self.worker_config();
        config.gateway.card_lease_secs = lease_secs;
        config.completer_poll_ms = 50;
        config
    }

    /// The completer, in this process, with a lease of `lease_secs` and the
    /// provider's key window `key_window_secs`.
    pub fn completer(&self, lease_secs: u64, key_window_secs: u64) -> Workers {
        let mut config = self.completer_config(lease_secs);
        config.gateway.gateway_key_window_secs = key_window_secs;
        config.gateway.gateway_timeout_ms = 5_000;
        start_workers(&config, &[Role::Completer])
    }

    /// The real completer process with a lease of 1 s, armed at `crash_at`
    /// when given.
    pub fn completer_process(&self, crash_at: Option<&str>) -> Child {
        spawn_worker_process(&self.completer_config(1), "completer", crash_at)
    }

    /// The real `ledger-api` process pointed at the fake provider, with
    /// `env` besides.
    pub async fn api_with(&self, env: &[(&str, &str)]) -> ApiProcess {
        let provider = self.fake.env();
        let env: Vec<(&str, &str)> =
            provider.iter().map(|(k, v)| (*k, v.as_str())).chain(env.iter().copied()).collect();
        ApiProcess::start(&self.app.db.url, &env).await
    }

    /// The real `ledger-api` process with a lease of 1 s, armed at
    /// `crash_at` when given.
    pub async fn api(&self, crash_at: Option<&str>) -> ApiProcess {
        let mut env = vec![("CARD_LEASE_SECS", "1"), ("GATEWAY_TIMEOUT_MS", "5000")];
        env.extend(crash_at.map(|point| ("LEDGER_CRASH_AT", point)));
        self.api_with(&env).await
    }

    /// Sends a request (`send`, under one idempotency key) to a process
    /// armed at `point`, which dies there; restarts it unarmed and sends it
    /// again, twice: the first answer is the retry's, the second its replay.
    pub async fn crash_then_retry(
        &self,
        point: &str,
        send: impl AsyncFn(&ApiProcess) -> Result<Reply, String>,
    ) -> Reply {
        let mut victim = self.api(Some(point)).await;
        let first = send(&victim).await;
        assert!(first.is_err(), "the process died at `{point}` without answering: {first:?}");
        assert!(victim.exited(Duration::from_secs(10)).await.is_some_and(|s| !s.success()), "died at `{point}`");
        let api = self.api(None).await;
        let retry = send(&api).await.expect("the retry is answered");
        let again = send(&api).await.expect("answered again");
        assert!(again.replayed, "{again:?}");
        assert_eq!((again.status, &again.body), (retry.status, &retry.body), "the one final answer");
        retry
    }
}
