//! Flags and environment variables of the fake provider.

use std::path::PathBuf;

use clap::{Args, Parser};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "fake-provider",
    about = "A local payment provider with Stripe's API shape and semantics, durable state and switchable faults"
)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one. The bound URL is the
    /// first line printed on stdout.
    #[arg(long, env = "FAKE_PROVIDER_LISTEN", default_value = "127.0.0.1:12111")]
    pub listen: String,
    /// Folder of the journal that keeps payments, refunds, idempotency keys and
    /// pending webhooks across restarts (one provider per folder).
    #[arg(long, env = "FAKE_PROVIDER_STATE_DIR", default_value = "target/fake-provider")]
    pub state_dir: PathBuf,
    /// The secret API key clients must send as `Authorization: Bearer ...`.
    #[arg(long, env = "FAKE_PROVIDER_SECRET_KEY", default_value = "sk_test_ledger_local", hide_env_values = true)]
    pub secret_key: String,
    /// The secret webhooks are signed with.
    #[arg(long, env = "FAKE_PROVIDER_WEBHOOK_SECRET", default_value = "whsec_ledger_local", hide_env_values = true)]
    pub webhook_secret: String,
    /// A restricted key (`rk_...`) that may read but not write: a write made
    /// with it gets Stripe's 403 `invalid_request_error`, as a key without
    /// the permission does. Empty: none.
    #[arg(long, env = "FAKE_PROVIDER_RESTRICTED_KEY", default_value = "", hide_env_values = true)]
    pub restricted_key: String,
    /// Milliseconds the search index lags writes: a payment created or changed
    /// more recently is not found by `GET /v1/payment_intents/search` yet (at
    /// Stripe, usually under a minute; the list endpoint has no lag).
    #[arg(long, env = "FAKE_PROVIDER_SEARCH_LAG_MS", default_value_t = 0)]
    pub search_lag_ms: u64,
    /// Webhook endpoint URL (repeat, or comma-separated in the variable).
    /// Replaces the endpoints kept in the state folder when given.
    #[arg(long = "webhook-url", env = "FAKE_PROVIDER_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,
    /// Seconds an idempotency key is kept; past it the same key makes a new
    /// request (fractions allowed, for tests).
    #[arg(long, env = "FAKE_PROVIDER_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400.0)]
    pub idempotency_ttl_secs: f64,
    /// Seconds an authorization made with manual capture is held; past it,
    /// one nobody captured is canceled with `cancellation_reason` `automatic`
    /// (Stripe: 7 days for a customer-initiated card payment; fractions
    /// allowed, for tests). Fixed for each authorization when it is made.
    #[arg(long, env = "FAKE_PROVIDER_AUTHORIZATION_EXPIRY_SECS", default_value_t = 604_800.0)]
    pub authorization_expiry_secs: f64,
    /// Milliseconds a `slow_response` fault holds the answer (the charge is
    /// made first). Choose more than the client's timeout.
    #[arg(long, env = "FAKE_PROVIDER_SLOW_MS", default_value_t = 15_000)]
    pub slow_ms: u64,
    /// Milliseconds a `hang_after_charge` fault holds the connection before
    /// closing it with no answer.
    #[arg(long, env = "FAKE_PROVIDER_HANG_MS", default_value_t = 15_000)]
    pub hang_ms: u64,
    /// Milliseconds a `webhook_late` fault delays a delivery.
    #[arg(long, env = "FAKE_PROVIDER_WEBHOOK_LATE_MS", default_value_t = 2_000)]
    pub webhook_late_ms: u64,
    /// Longest a `webhook_out_of_order` delivery waits for a later event to
    /// overtake it.
    #[arg(long, env = "FAKE_PROVIDER_WEBHOOK_HOLD_MAX_MS", default_value_t = 10_000)]
    pub webhook_hold_max_ms: u64,
    /// First retry delay of a failed webhook delivery; doubles per attempt.
    #[arg(long, env = "FAKE_PROVIDER_WEBHOOK_RETRY_MS", default_value_t = 500)]
    pub webhook_retry_ms: u64,
    /// Longest delay between two attempts of a delivery.
    #[arg(long, env = "FAKE_PROVIDER_WEBHOOK_RETRY_MAX_MS", default_value_t = 30_000)]
    pub webhook_retry_max_ms: u64,
    /// Milliseconds every answer under `/v1` is held once its request was
    /// handled (the effect made, the answer on its way): a real provider's
    /// round trip, hundreds of milliseconds. Held without a thread, so many
    /// requests wait at once. Changeable while running:
    /// `PUT /_fake/latency {"ms": N}`.
    #[arg(long, env = "FAKE_PROVIDER_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// HTTP worker threads.
    #[arg(long, env = "FAKE_PROVIDER_WORKERS", default_value_t = 2)]
    pub workers: usize,
    #[command(flatten)]
    pub faults: RandomFaults,
}

/// Faults drawn at random from a seeded generator, per executed write (the
/// first five, exclusive) and per webhook event (the last three). Rates are
/// probabilities in [0, 1]. The same seed and the same request order give the
/// same faults.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct RandomFaults {
    #[arg(long = "fault-seed", env = "FAKE_PROVIDER_FAULT_SEED", default_value_t = 0)]
    pub seed: u64,
    /// 500 `api_error` before charging, stored for the key.
    #[arg(long = "fault-error-rate", env = "FAKE_PROVIDER_FAULT_ERROR_RATE", default_value_t = 0.0)]
    #[serde(default)]
    pub error_before_charge: f64,
    /// Charge, then close the connection with no answer.
    #[arg(long = "fault-drop-rate", env = "FAKE_PROVIDER_FAULT_DROP_RATE", default_value_t = 0.0)]
    #[serde(default)]
    pub drop_after_charge: f64,
    /// Charge, then send half the answer and close the connection.
    #[arg(long = "fault-cut-rate", env = "FAKE_PROVIDER_FAULT_CUT_RATE", default_value_t = 0.0)]
    #[serde(default)]
    pub cut_after_charge: f64,
    /// Charge, then hold the connection past the client's timeout and close it.
    #[arg(long = "fault-hang-rate", env = "FAKE_PROVIDER_FAULT_HANG_RATE", default_value_t = 0.0)]
    #[serde(default)]
    pub hang_after_charge: f64,
    /// Charge, then answer late (the key stays in flight meanwhile).
    #[arg(long = "fault-slow-rate", env = "FAKE_PROVIDER_FAULT_SLOW_RATE", default_value_t = 0.0)]
    #[serde(default)]
    pub slow_response: f64,
    #[arg(long = "fault-webhook-late-rate", env = "FAKE_PROVIDER_FAULT_WEBHOOK_LATE_RATE", default_value_t = 0.0)]
    #[serde(default)]
    pub webhook_late: f64,
    #[arg(long = "fault-webhook-twice-rate", env = "FAKE_PROVIDER_FAULT_WEBHOOK_TWICE_RATE", default_value_t = 0.0)]
    #[serde(default)]
    pub webhook_twice: f64,
    #[arg(
        long = "fault-webhook-out-of-order-rate",
        env = "FAKE_PROVIDER_FAULT_WEBHOOK_OUT_OF_ORDER_RATE",
        default_value_t = 0.0
    )]
    #[serde(default)]
    pub webhook_out_of_order: f64,
}

/// Fault rates that cannot be probabilities of one request's fate.
#[derive(Debug, thiserror::Error)]
pub enum RateError {
    #[error("fault rates are probabilities between 0 and 1")]
    OutOfRange,
    #[error("the request fault rates add up to more than 1")]
    SumAboveOne,
}

impl RandomFaults {
    pub fn validate(&self) -> Result<(), RateError> {
        let request = self.error_before_charge
            + self.drop_after_charge
            + self.cut_after_charge
            + self.hang_after_charge
            + self.slow_response;
        let all = [
            self.error_before_charge,
            self.drop_after_charge,
            self.cut_after_charge,
            self.hang_after_charge,
            self.slow_response,
            self.webhook_late,
            self.webhook_twice,
            self.webhook_out_of_order,
        ];
        if all.iter().any(|r| !(0.0..=1.0).contains(r)) {
            return Err(RateError::OutOfRange);
        }
        if request > 1.0 {
            return Err(RateError::SumAboveOne);
        }
        Ok(())
    }
}
