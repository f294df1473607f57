//! `make bench`: drives the release `ledger-api` over HTTP with a closed-loop
//! load generator (a fixed number of requests in flight), records HDR
//! histograms, counts wrong answers, and runs pgbench with the SQL of one
//! charge against the same database for the ceiling, and measures the
//! messaging pipeline (relay, consumers, end-to-end lag; see `messaging`)
//! and the webhook deliveries to a receiver of its own (see `webhooks`)
//! with the workers binary.

mod batches;
mod chart;
mod cpu;
mod error;
mod growth;
mod history;
mod load;
mod messaging;
mod pgbench;
mod webhooks;
mod workloads;

use clap::Parser;

use crate::error::Error;
use crate::load::Args;

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let db = format!("ledger_bench_{}", uuid::Uuid::new_v4().simple());
    let admin_url = format!("{}/postgres", args.pg);
    let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.expect("PostgreSQL");
    actix_web::rt::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let db_url = format!("{}/{db}", args.pg);
    eprintln!("database {db}");

    // A panic in the run still drops the database below.
    let outcome = actix_web::rt::spawn({
        let (args, db_url) = (args.clone(), db_url.clone());
        async move { workloads::run(&args, &db_url).await }
    })
    .await
    .unwrap_or_else(|_| Err(Error::Panicked));

    if !args.keep_db {
        admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
    }
    std::process::exit(match outcome {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("FAILED: wrong answers (see above)");
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    });
}
