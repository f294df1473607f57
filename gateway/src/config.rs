//! What the client needs to reach a provider. The service's settings read the
//! environment variables named here; this crate reads none itself.

use std::fmt;
use std::time::Duration;

/// Base URL of the provider's API (default: the fake provider on this machine).
pub const ENV_URL: &str = "GATEWAY_URL";
/// Secret API key, sent as `Authorization: Bearer <key>`.
pub const ENV_SECRET_KEY: &str = "GATEWAY_SECRET_KEY";
/// Secret the provider signs webhooks with (`whsec_...`).
pub const ENV_WEBHOOK_SECRET: &str = "GATEWAY_WEBHOOK_SECRET";
/// Milliseconds one request may take, connection and body included.
pub const ENV_TIMEOUT_MS: &str = "GATEWAY_TIMEOUT_MS";

pub const DEFAULT_URL: &str = "http://127.0.0.1:12111";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest idempotency key this crate makes, so that it fits every provider
/// (Adyen allows 64 characters, Stripe 255).
pub const MAX_KEY_LEN: usize = 64;

/// Where the provider is and how to authenticate to it. Pointing the service at
/// a real provider's test mode changes these and nothing else.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub url: String,
    pub secret_key: String,
    pub webhook_secret: String,
    pub timeout: Duration,
}

impl Config {
    /// A configuration with the default timeout.
    pub fn new(url: impl Into<String>, secret_key: impl Into<String>, webhook_secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret_key: secret_key.into(),
            webhook_secret: webhook_secret.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Secrets never reach a log line through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("secret_key", &redacted(&self.secret_key))
            .field("webhook_secret", &redacted(&self.webhook_secret))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        "<empty>"
    } else {
        "<redacted>"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_both_secrets() {
        let config = Config::new(DEFAULT_URL, "sk_test_very_secret", "whsec_also_secret");
        let printed = format!("{config:?}");
        assert!(printed.contains(DEFAULT_URL), "{printed}");
        assert!(!printed.contains("very_secret"), "{printed}");
        assert!(!printed.contains("also_secret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
