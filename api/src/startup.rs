//! Building the application: the same builder serves production and the
//! end-to-end tests, which bind port 0 and read the port back.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App};
use deadpool_postgres::Pool;
use service::purge::{self, Target};
use service::shutdown::{self, Trigger};
use tracing_actix_web::TracingLogger;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::error::{ApiError, ProblemCode};
use crate::idempotency::batches::Batcher;
use crate::idempotency::card_begins::CardBegins;
use crate::idempotency::charge_batch::Charges;
use crate::idempotency::keyed::Keyed;
use crate::idempotency::reservation_batch::Reservations;
use crate::keys::{self, Keys};
use crate::limits::{FailedAuths, RateLimits};
use crate::routes::{self, RouteTable};
use crate::state::AppState;
use crate::{auth, metrics, openapi, request_id};

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Retention(#[from] ledger::retention::Inconsistent),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("payment provider: {0}")]
    Gateway(#[from] gateway::BuildError),
    #[error(transparent)]
    DevelopmentSecrets(#[from] service::settings::DevelopmentSecrets),
    #[error("bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

pub struct Application {
    port: u16,
    server: Server,
    /// `GET /metrics` on METRICS_ADDR, with its port, when set.
    metrics: Option<(Server, u16)>,
    pool: Pool,
    /// Stops the background loops (the purge, the keys' last use) once the
    /// server has stopped.
    stop: Trigger,
    /// The keys' last-use loop, awaited at shutdown for its final write.
    last_used: tokio::task::JoinHandle<()>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        config.retention.windows().check()?;
        config.gateway.check_secrets()?;
        if config.migrate_on_start {
            ledger::db::migrate(&config.database.database_url).await?;
        }
        let pool = ledger::db::pool(&config.database.database_url, &config.pool_options())?;
        let bind = |source| StartupError::Bind { addr: config.http_addr.clone(), source };
        let listener = TcpListener::bind(&config.http_addr).map_err(bind)?;
        let port = listener.local_addr().map_err(bind)?.port();
        let keys = Arc::new(Keys::new(config.api_key_cache()));
        let retention_secs = config.retention.idempotency().as_secs_f64();
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            config: config.clone(),
            keys: keys.clone(),
            limits: RateLimits::new(config.rate_limit()),
            failed_auths: FailedAuths::new(config.auth_failures()),
            provider: service::provider::Provider::new(&config.gateway)?,
            batcher: Keyed::<Charges>::start(
                config.charge_batches(),
                &pool,
                retention_secs,
                routes::charges::batched_answer,
            ),
            reservations: Keyed::<Reservations>::start(
                config.charge_batches(),
                &pool,
                retention_secs,
                routes::inventory::batched_answer,
            ),
            card_records: config.charge_batches().map(|shape| {
                let records = crate::idempotency::card_records::CardRecords {
                    pool: pool.clone(),
                    answer: routes::charges::batched_answer,
                };
                Batcher::start(records, shape)
            }),
            card_begins: Keyed::<CardBegins>::start(
                config.charge_batches(),
                &pool,
                retention_secs,
                routes::charges::batched_answer,
            ),
        });
        let metrics_state = state.clone();
        // the process's recorder, before the first request counts anything
        service::telemetry::metrics();
        let route_table = web::Data::new(RouteTable::from_spec(&openapi::document()));
        let max_body = config.max_body_bytes;
        let server =
            actix_web::HttpServer::new(move || {
                let (app, spec) = openapi::app_with_spec();
                app.app_data(state.clone())
                    .app_data(route_table.clone())
                    .app_data(web::PayloadConfig::new(max_body))
                    .app_data(web::PathConfig::default().error_handler(|_, _| routes::not_found().into()))
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        ApiError::bad_request(ProblemCode::InvalidParameter, e.to_string()).into()
                    }))
                    .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", spec))
                    .default_service(web::to(routes::fallback))
                    .wrap(from_fn(auth::middleware))
                    .wrap(TracingLogger::<request_id::RootSpan>::new())
                    .wrap(from_fn(request_id::middleware))
                    .wrap(from_fn(metrics::middleware))
            })
            .listen(listener)
            .map_err(bind)?;
        let metrics = match &config.metrics_addr {
            Some(addr) => {
                let bind = |source| StartupError::Bind { addr: addr.clone(), source };
                let listener = TcpListener::bind(addr).map_err(bind)?;
                let port = listener.local_addr().map_err(bind)?.port();
                let state = metrics_state;
                // stopped with the API's server (`run_until_stopped`), not by signals of its own
                let server =
                    actix_web::HttpServer::new(move || App::new().app_data(state.clone()).service(metrics::scrape))
                        .workers(1)
                        .disable_signals()
                        .listen(listener)
                        .map_err(bind)?
                        .run();
                tracing::info!(port, "serving metrics at /metrics");
                Some((server, port))
            }
            None => None,
        };
        let server = match config.http_workers {
            Some(n) => server.workers(n),
            None => server,
        }
        .run();
        let (stop, stopped) = shutdown::channel();
        tokio::spawn(purge::run(
            pool.clone(),
            Target::IdempotencyKeys,
            config.retention.idempotency(),
            config.idempotency_purge_interval(),
            stopped.clone(),
        ));
        let last_used =
            tokio::spawn(keys::record_last_used(keys, pool.clone(), config.api_key_last_used_flush(), stopped));
        Ok(Application { port, server, metrics, pool, stop, last_used })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `GET /metrics`, when METRICS_ADDR is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(_, port)| *port)
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Serves until SIGINT or SIGTERM (or a stop through the handle), then
    /// drains in-flight requests, stops the background loops and writes the
    /// keys' last use one final time.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics.map(|(server, _)| {
            let handle = server.handle();
            tokio::spawn(server);
            handle
        });
        let result = self.server.await;
        if let Some(handle) = metrics {
            handle.stop(true).await;
        }
        self.stop.fire();
        // bounded: a database that is gone must not hold the exit
        if tokio::time::timeout(Duration::from_secs(5), self.last_used).await.is_err() {
            tracing::warn!("gave up writing when API keys were last used");
        }
        result
    }
}
