//! Retention windows, and the rules that make them nest.
//!
//! A window that deduplicates must outlast every window that can still
//! deliver a duplicate into it, or a late duplicate finds nothing to match
//! and makes a second effect. Both binaries check these rules at start-up
//! with [`Windows::check`] and refuse to start when they do not hold.

/// Every retention the service knows, in seconds, as the environment gives
/// them (the variable names are in the error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// `IDEMPOTENCY_RETENTION_SECS`: how long an Idempotency-Key is replayed.
    pub idempotency_secs: u64,
    /// `CLIENT_MAX_RETRY_SECS`: the longest a client may retry a request
    /// with the same Idempotency-Key (documented to clients).
    pub client_max_retry_secs: u64,
    /// `OUTBOX_RETENTION_SECS`: how long a published outbox row is kept,
    /// and so how far back `replay` can republish.
    pub outbox_secs: u64,
    /// `INBOX_RETENTION_SECS`: how long a consumer remembers a message id.
    pub inbox_secs: u64,
    /// `MAX_REDELIVERY_SECS`: the longest a message can still arrive after
    /// its outbox row was marked published (a backlog, a dead-lettered
    /// message waiting for its redrive).
    pub max_redelivery_secs: u64,
}

/// Defaults, also the documented values.
pub const IDEMPOTENCY_SECS: u64 = 86_400;
pub const CLIENT_MAX_RETRY_SECS: u64 = 86_400;
pub const OUTBOX_SECS: u64 = 604_800;
pub const INBOX_SECS: u64 = 1_209_600;
pub const MAX_REDELIVERY_SECS: u64 = 604_800;

/// Rows a purge deletes per statement: small enough that no statement holds
/// many locks or runs long.
pub const PURGE_BATCH: i64 = 1000;

/// Runs `delete` until a batch comes back short and returns how many rows
/// went. `delete` is a DELETE whose `$1` is the retention in seconds and
/// `$2` the batch size ([`PURGE_BATCH`]), so each statement stays small.
pub async fn purge_in_batches(
    client: &impl tokio_postgres::GenericClient,
    delete: &str,
    retention_secs: f64,
) -> Result<u64, tokio_postgres::Error> {
    let mut total = 0;
    loop {
        let n = client.execute(delete, &[&retention_secs, &PURGE_BATCH]).await?;
        total += n;
        if (n as i64) < PURGE_BATCH {
            return Ok(total);
        }
    }
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            idempotency_secs: IDEMPOTENCY_SECS,
            client_max_retry_secs: CLIENT_MAX_RETRY_SECS,
            outbox_secs: OUTBOX_SECS,
            inbox_secs: INBOX_SECS,
            max_redelivery_secs: MAX_REDELIVERY_SECS,
        }
    }
}

impl Windows {
    /// Every rule that does not hold, each naming the settings involved.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.idempotency_secs < self.client_max_retry_secs {
            out.push(format!(
                "IDEMPOTENCY_RETENTION_SECS ({}) is shorter than CLIENT_MAX_RETRY_SECS ({}): \
                 a client retrying within its documented window would find its key gone",
                self.idempotency_secs, self.client_max_retry_secs
            ));
        }
        let covered = self.outbox_secs.saturating_add(self.max_redelivery_secs);
        if self.inbox_secs < covered {
            out.push(format!(
                "INBOX_RETENTION_SECS ({}) is shorter than OUTBOX_RETENTION_SECS ({}) + MAX_REDELIVERY_SECS ({}): \
                 a replayed or late redelivered message could arrive after its inbox row was purged",
                self.inbox_secs, self.outbox_secs, self.max_redelivery_secs
            ));
        }
        out
    }

    /// `Err` with one line per broken rule.
    pub fn check(&self) -> Result<(), Inconsistent> {
        let v = self.violations();
        if v.is_empty() {
            Ok(())
        } else {
            Err(Inconsistent(v))
        }
    }
}

/// Retention settings that do not nest, one sentence per broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent retention settings: {}", .0.join("; "))]
pub struct Inconsistent(pub Vec<String>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_nest() {
        assert_eq!(Windows::default().check(), Ok(()));
    }

    #[test]
    fn each_rule_names_both_settings() {
        let w = Windows { idempotency_secs: 3600, ..Default::default() };
        let e = w.check().unwrap_err().to_string();
        assert!(e.contains("IDEMPOTENCY_RETENTION_SECS") && e.contains("CLIENT_MAX_RETRY_SECS"), "{e}");
        let w = Windows { inbox_secs: 60, ..Default::default() };
        let e = w.check().unwrap_err().to_string();
        assert!(e.contains("INBOX_RETENTION_SECS") && e.contains("OUTBOX_RETENTION_SECS"), "{e}");
        assert!(e.contains("MAX_REDELIVERY_SECS"), "{e}");
    }
}
