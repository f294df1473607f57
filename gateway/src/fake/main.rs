//! fake-provider: a local payment provider with Stripe's API shape and
//! semantics (PaymentIntents, Refunds, idempotency keys, signed webhooks),
//! durable state and switchable faults. See the crate's README.

mod app;
mod events;
mod expiry;
mod faults;
mod journal;
mod net;
mod objects;
mod query;
mod records;
mod routes;
mod settings;
mod state;
mod versions;
mod webhooks;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::web::{self, Data};
use actix_web::{App as ActixApp, HttpServer};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::app::App;
use crate::faults::{Delays, Faults};
use crate::settings::Settings;
use crate::state::{Op, State};

/// Form bodies of this API are small.
const MAX_BODY_BYTES: usize = 64 * 1024;

fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_env("FAKE_PROVIDER_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match actix_web::rt::System::new().block_on(serve(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-provider: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    settings.faults.validate()?;
    if settings.idempotency_ttl_secs.is_nan() || settings.idempotency_ttl_secs <= 0.0 {
        return Err("--idempotency-ttl-secs must be positive".into());
    }
    if settings.authorization_expiry_secs.is_nan() || settings.authorization_expiry_secs <= 0.0 {
        return Err("--authorization-expiry-secs must be positive".into());
    }
    let (batches, writer, durable) = journal::open(&settings.state_dir)?;
    let mut state = State::restore(batches, writer, durable.clone());
    tracing::info!(
        state_dir = %settings.state_dir.display(),
        payments = state.payments.len(),
        pending_webhooks = state.pending_deliveries(),
        "state restored"
    );
    if !settings.webhook_urls.is_empty() && settings.webhook_urls != state.endpoints {
        state.commit(vec![Op::Endpoints { urls: settings.webhook_urls.clone() }]);
    }
    let delays = Delays {
        slow: Duration::from_millis(settings.slow_ms),
        hang: Duration::from_millis(settings.hang_ms),
        webhook_late: Duration::from_millis(settings.webhook_late_ms),
    };
    let faults = Faults::new(settings.faults.clone(), delays);
    let listener =
        TcpListener::bind(&settings.listen).map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let address = listener.local_addr()?;
    let workers = settings.workers.max(1);
    let url = format!("http://{address}");
    let app = Data::new(App::new(settings, state, faults, durable, url.clone()));

    let shared = app.clone();
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(shared.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .configure(routes::configure)
    })
    .on_connect(net::on_connect)
    .workers(workers)
    .listen(listener)?
    .run();

    actix_web::rt::spawn(webhooks::run(app.clone()));
    actix_web::rt::spawn(expiry::run(app.clone()));
    // The first line on stdout is the URL, for whoever started us on port 0.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{url}")?;
    stdout.flush()?;
    tracing::info!(%address, "fake provider listening");
    server.await?;
    Ok(())
}
