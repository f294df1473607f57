//! What every workload is handed: the APIs and accounts set up once, and
//! the tallies the runner reads afterwards (figures, wrong answers, what was
//! created, for the duplicate-effect checks); and the shape of a workload.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use crate::batches::Profile;
use crate::error::Result;
use crate::load::{peak_rss_kib, Accounts, Args, Figures, Http, Sent, Wrong};

use super::fairness::Fairness;

/// One workload of the table: its name (the row it prints) and what it does
/// at one concurrency.
pub(super) struct Workload {
    pub(super) name: &'static str,
    pub(super) at: At,
    pub(super) run: Run,
}

/// Which of the configured concurrencies a workload runs at.
pub(super) enum At {
    Every,
    /// The first only (one figure is what it is for, and it takes a while).
    First,
}

/// A workload's run at one concurrency; what it measured goes into the context.
pub(super) type Run = for<'a> fn(&'a mut Ctx, usize) -> Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

pub(super) struct Ctx {
    pub(super) args: Args,
    pub(super) db_url: String,
    /// The fake provider the APIs charge cards at (its `/_fake` controls).
    pub(super) provider_url: String,
    /// The API under test (group commit on).
    pub(super) http: Rc<Http>,
    /// A second API process on the same database, every charge alone.
    pub(super) http_alone: Rc<Http>,
    pub(super) accounts: Rc<Accounts>,
    /// The API under test, for its peak RSS and its metrics.
    pub(super) api_pid: u32,
    pub(super) metrics: String,

    pub(super) results: Vec<Figures>,
    pub(super) fairness: Vec<Fairness>,
    pub(super) wrong_by: Vec<(String, usize, Wrong)>,
    /// Charges and reservations answered 201: the database must hold exactly these.
    pub(super) created_total: u64,
    pub(super) reserved_total: u64,
    pub(super) rss_peak: u64,
    /// A charge's stored answer, for pgbench's STORE_SQL (the first one created).
    pub(super) sample_answer: String,
    /// The batches of each new-charge workload, its rate over the same workload alone.
    pub(super) group_commit: Vec<(Profile, f64)>,
    /// The charges the new-charge workload created at this concurrency, for the replays.
    pub(super) replayable: Vec<Sent>,
}

impl Ctx {
    pub(super) fn note_rss(&mut self) {
        self.rss_peak = self.rss_peak.max(peak_rss_kib(self.api_pid).unwrap_or(0));
    }

    /// Prints and keeps a workload's figures and wrong answers.
    pub(super) fn record(&mut self, figures: Figures, wrong_as: &str, wrong: Wrong) {
        eprintln!("  {}", figures.row());
        self.wrong_by.push((wrong_as.into(), figures.concurrency, wrong));
        self.results.push(figures);
    }

    /// The figures of the workload `name` at `concurrency`, if it ran already.
    pub(super) fn figures(&self, name: &str, concurrency: usize) -> Option<&Figures> {
        self.results.iter().find(|f| f.workload == name && f.concurrency == concurrency)
    }
}
