//! Webhooks out, signed the Standard Webhooks way (standardwebhooks.com),
//! so that a storefront verifies them with the `standardwebhooks` packages
//! for Python, TypeScript and Rust: three headers, `webhook-id` (the event
//! id, the same on every retry: the receiver's dedupe key),
//! `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
//! `<id>.<timestamp>.<body>`, one per live secret, space-separated, so that
//! both the old and the new secret verify during a rotation).
//!
//! A secret is `whsec_` and the base64 of 24 random bytes; the HMAC key is
//! those bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The prefix of every signing secret.
pub const PREFIX: &str = "whsec_";

/// A new signing secret, from the operating system's randomness.
pub fn new_secret() -> String {
    let mut key = [0u8; 24];
    SystemRandom::new().fill(&mut key).expect("the operating system gives randomness");
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// A secret that is not `whsec_` and base64.
#[derive(Debug, thiserror::Error)]
#[error("a webhook signing secret is `whsec_` and base64")]
pub struct BadSecret;

/// The `v1,<base64>` signature of one message under `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = STANDARD.decode(secret.strip_prefix(PREFIX).ok_or(BadSecret)?).map_err(|_| BadSecret)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    Ok(format!("v1,{}", STANDARD.encode(context.sign().as_ref())))
}

/// The `webhook-signature` header: a signature under each of `secrets`
/// (the current one, and the previous one while a rotation overlaps).
pub fn header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let signatures = secrets.iter().map(|s| sign(s, id, timestamp, body)).collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's example, as the `standardwebhooks` Python
    /// package (1.0.1) signs it.
    #[test]
    fn signs_as_the_standard_webhooks_packages_do() {
        let body = br#"{"test": 2432232314}"#;
        let signed = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signed.unwrap(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotation_signs_with_both_secrets() {
        let (old, new) = (new_secret(), new_secret());
        assert_ne!(old, new);
        assert!(old.starts_with(PREFIX) && STANDARD.decode(&old[PREFIX.len()..]).unwrap().len() == 24);
        let both = header(&[&new, &old], "evt_1", 1, b"{}").unwrap();
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts, [sign(&new, "evt_1", 1, b"{}").unwrap(), sign(&old, "evt_1", 1, b"{}").unwrap()]);
        assert!(sign("not-a-secret", "evt_1", 1, b"{}").is_err());
        assert!(sign("whsec_!!", "evt_1", 1, b"{}").is_err());
    }
}
