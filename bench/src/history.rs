//! History reads on a large account: does a page of an account's entries,
//! its balance at a past instant, or a statement cost more once the account
//! holds millions of entries among tens of millions?
//!
//! Measured by the growth step (`growth`) on the platform-fee account, the
//! hot account that takes a leg of every seeded transaction (a third of the
//! seeded entries: 3.3 million of 10 million), right before seeding and
//! right after, same server, concurrencies, warm-up and duration. Before
//! each measurement the balance checkpoints are brought up to date
//! ([`checkpoint`], what the workers' checkpointer does every second) so
//! that both read the ledger as a running service would.
//!
//! Each request reads at one of about 200 points spread evenly over the
//! account's history in its order (`created_at`, then `id`), picked per
//! request as the other workloads pick buyers:
//! - **entries page**: `GET /v1/accounts/{id}/entries?limit=100&starting_after=`
//!   the entry at that point: the 100 entries before it, each with its
//!   `balance_after`;
//! - **balance as of**: `GET /v1/accounts/{id}/balance?as_of=` that entry's
//!   instant;
//! - **statement**: `GET /v1/accounts/{id}/statement?from=&to=` from that
//!   entry's instant to the instant of the entry 100 further on (about 100
//!   entries: the opening balance, the entries, the closing one), as JSON.
//!
//! Every answer must be a 200; anything else is a wrong answer, as in the
//! other workloads.

use std::rc::Rc;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::load::{closed_loop, spread, Args, Figures, Http, Wrong};

/// The reads, by the label of their row.
pub(crate) const READS: [&str; 3] = ["entries page", "balance as of", "statement"];

/// Points of the account's history the reads pick from.
const POINTS: i64 = 200;

/// Entries after a point that a statement's period spans.
const PERIOD: i64 = 100;

/// One point: an entry of the account, its instant, and the instant of the
/// entry [`PERIOD`] further on.
#[derive(Clone)]
pub(crate) struct Point {
    id: i64,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Checkpointer passes until the history horizon is past every entry.
/// Returns the seconds it took.
pub(crate) async fn checkpoint(db: &mut Client) -> Result<f64> {
    let t = std::time::Instant::now();
    ledger::checkpoints::catch_up(db, ledger::checkpoints::EVERY)
        .await
        .map_err(|e| Error::Seeding(format!("checkpoints: {e}")))?;
    Ok(t.elapsed().as_secs_f64())
}

/// About [`POINTS`] points spread evenly over the account's entries.
pub(crate) async fn points(db: &Client, account: &str) -> Result<Vec<Point>> {
    let account = Uuid::parse_str(account).map_err(|e| Error::Seeding(format!("account id {account}: {e}")))?;
    let rows = db
        .query(
            "SELECT id, created_at, until FROM ( \
               SELECT id, created_at, lead(created_at, $3::int) OVER w AS until, \
                      row_number() OVER w AS n, count(*) OVER () AS total \
                 FROM ledger_entries WHERE account_id = $1 \
               WINDOW w AS (ORDER BY created_at, id)) x \
              WHERE until IS NOT NULL AND n % greatest(total / $2, 1) = 0",
            &[&account, &POINTS, &(PERIOD as i32)],
        )
        .await?;
    let points: Vec<Point> = rows.iter().map(|r| Point { id: r.get(0), at: r.get(1), until: r.get(2) }).collect();
    if points.is_empty() {
        return Err(Error::Seeding(format!("account {account} has fewer than {PERIOD} entries to read")));
    }
    Ok(points)
}

/// Each read at every concurrency, labelled `{read} ({size})`.
pub(crate) async fn measure(
    args: &Args,
    http: &Rc<Http>,
    account: &str,
    points: &[Point],
    size: &str,
    wrong: &mut Vec<(String, usize, Wrong)>,
) -> Vec<Figures> {
    let points: Rc<Vec<Point>> = Rc::new(points.to_vec());
    let mut out = Vec::new();
    for (read, name) in READS.iter().enumerate() {
        for &c in &args.concurrency {
            let label = format!("{name} ({size})");
            let (http, points, account) = (http.clone(), points.clone(), account.to_owned());
            let one = move |task: usize, seq: u64, _measured: bool| {
                let (http, points, account) = (http.clone(), points.clone(), account.clone());
                async move {
                    let p = &points[spread(task, seq) % points.len()];
                    let path = match read {
                        0 => format!("/v1/accounts/{account}/entries?limit=100&starting_after={}", p.id),
                        1 => format!("/v1/accounts/{account}/balance?as_of={}", rfc(p.at)),
                        _ => format!("/v1/accounts/{account}/statement?from={}&to={}", rfc(p.at), rfc(p.until)),
                    };
                    let mut w = Wrong::default();
                    match http.get(&path).await {
                        Ok(200) => {}
                        Ok(_) => w.non_2xx += 1,
                        Err(_) => w.transport += 1,
                    }
                    (w, None)
                }
            };
            eprintln!("{label}, concurrency {c}");
            let (f, w, _) = closed_loop(args, &label, c, one).await;
            eprintln!("  {}", f.row());
            wrong.push((label, c, w));
            out.push(f);
        }
    }
    out
}
