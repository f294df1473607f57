//! Building the application: the same builder serves production and the
//! end-to-end tests, which bind port 0 and read the port back.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use deadpool_postgres::Pool;
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::error::{ApiError, ProblemCode};
use crate::openapi::ApiDoc;
use crate::routes;

pub struct AppState {
    pub pool: Pool,
    pub config: Config,
}

/// The routes as an app, and the OpenAPI document they make.
pub fn app_parts() -> (
    App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        >,
    >,
    utoipa::openapi::OpenApi,
) {
    let (app, mut spec) =
        App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes::configure).split_for_parts();
    crate::openapi::complete(&mut spec);
    (app, spec)
}

pub struct Application {
    port: u16,
    server: Server,
    pool: Pool,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, String> {
        config.windows().check()?;
        if config.migrate_on_start {
            ledger::db::migrate(&config.database_url).await?;
        }
        let pool = ledger::db::pool(&config.database_url, &config.pool_options())?;
        let listener = TcpListener::bind(&config.http_addr).map_err(|e| format!("bind {}: {e}", config.http_addr))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state = web::Data::new(AppState { pool: pool.clone(), config: config.clone() });
        let max_body = config.max_body_bytes;
        let server =
            HttpServer::new(move || {
                let (app, spec) = app_parts();
                app.app_data(state.clone())
                    .app_data(web::PayloadConfig::new(max_body))
                    .app_data(web::PathConfig::default().error_handler(|_, _| routes::not_found().into()))
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        ApiError::bad_request(ProblemCode::InvalidParameter, e.to_string()).into()
                    }))
                    .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", spec))
                    .default_service(web::to(routes::fallback))
                    .wrap(TracingLogger::default())
            })
            .listen(listener)
            .map_err(|e| e.to_string())?;
        let server = match config.http_workers {
            Some(n) => server.workers(n),
            None => server,
        }
        .run();
        tokio::spawn(crate::purge::run(pool.clone(), config.idempotency_retention, config.idempotency_purge_interval));
        Ok(Application { port, server, pool })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Serves until SIGINT or SIGTERM, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
