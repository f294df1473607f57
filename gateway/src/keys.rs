//! Idempotency keys sent to the provider.
//!
//! A key is a pure function of stable fields, so every resend of the same
//! attempt (a retry, a timeout, the completer) carries the same key, and the
//! provider charges at most once. It is an HMAC under a server secret: another
//! user of the same provider account cannot guess it and collide with it. Each
//! field is length-prefixed, so no two different tuples encode alike (`("a:b",
//! 1)` and `("a", ...)` differ), and a domain label keeps payment, refund,
//! cancellation and capture keys apart.

use ring::hmac;
use uuid::Uuid;

/// Hex characters of the MAC kept in a key: 224 bits, and with the prefix the
/// key stays within [`crate::MAX_KEY_LEN`].
const MAC_HEX_CHARS: usize = 56;

/// The provider idempotency key of a payment attempt.
pub fn provider_key(server_secret: &[u8], tenant: Uuid, order_id: &str, attempt: i32) -> String {
    key("pay_", server_secret, &[b"payment", tenant.as_bytes(), order_id.as_bytes(), &attempt.to_be_bytes()])
}

/// The provider idempotency key of a refund of a charge.
pub fn refund_key(server_secret: &[u8], tenant: Uuid, charge_id: Uuid, refund_reference: &str) -> String {
    key("ref_", server_secret, &[b"refund", tenant.as_bytes(), charge_id.as_bytes(), refund_reference.as_bytes()])
}

/// The provider idempotency key of the cancellation of a charge's payment
/// (one per charge: a payment is canceled at most once).
pub fn cancel_key(server_secret: &[u8], tenant: Uuid, charge_id: Uuid) -> String {
    key("can_", server_secret, &[b"cancel", tenant.as_bytes(), charge_id.as_bytes()])
}

/// The provider idempotency key of the void of a charge's authorization
/// (one per charge). Not [`cancel_key`]: that one cancels a payment left
/// waiting for the buyer's authentication, and a cancel refused under it
/// (the buyer authenticated first, the payment became an authorization)
/// stays stored for the key; the void must be a request of its own.
pub fn void_key(server_secret: &[u8], tenant: Uuid, charge_id: Uuid) -> String {
    key("vod_", server_secret, &[b"void", tenant.as_bytes(), charge_id.as_bytes()])
}

/// The provider idempotency key of the capture of a charge's payment (one
/// per charge: a payment is captured at most once).
pub fn capture_key(server_secret: &[u8], tenant: Uuid, charge_id: Uuid) -> String {
    key("cap_", server_secret, &[b"capture", tenant.as_bytes(), charge_id.as_bytes()])
}

fn key(prefix: &str, server_secret: &[u8], fields: &[&[u8]]) -> String {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, server_secret));
    for field in fields {
        let len = u64::try_from(field.len()).expect("a field longer than u64");
        ctx.update(&len.to_be_bytes());
        ctx.update(field);
    }
    let mut out = String::with_capacity(prefix.len() + MAC_HEX_CHARS);
    out.push_str(prefix);
    out.push_str(&hex::encode(ctx.sign().as_ref())[..MAC_HEX_CHARS]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_KEY_LEN;

    const SECRET: &[u8] = b"server secret";
    const TENANT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

    #[test]
    fn deterministic() {
        assert_eq!(provider_key(SECRET, TENANT, "order-1", 1), provider_key(SECRET, TENANT, "order-1", 1));
        let charge = Uuid::from_u128(7);
        assert_eq!(refund_key(SECRET, TENANT, charge, "r1"), refund_key(SECRET, TENANT, charge, "r1"));
        assert_eq!(cancel_key(SECRET, TENANT, charge), cancel_key(SECRET, TENANT, charge));
        assert!(cancel_key(SECRET, TENANT, charge).starts_with("can_"));
        assert_eq!(capture_key(SECRET, TENANT, charge), capture_key(SECRET, TENANT, charge));
        assert!(capture_key(SECRET, TENANT, charge).starts_with("cap_"));
        assert_eq!(void_key(SECRET, TENANT, charge), void_key(SECRET, TENANT, charge));
        assert!(void_key(SECRET, TENANT, charge).starts_with("vod_"));
    }

    #[test]
    fn every_field_and_the_secret_change_the_key() {
        let base = provider_key(SECRET, TENANT, "order-1", 1);
        assert_ne!(base, provider_key(b"another secret", TENANT, "order-1", 1));
        assert_ne!(base, provider_key(SECRET, Uuid::from_u128(2), "order-1", 1));
        assert_ne!(base, provider_key(SECRET, TENANT, "order-2", 1));
        assert_ne!(base, provider_key(SECRET, TENANT, "order-1", 2));

        let charge = Uuid::from_u128(7);
        let refund = refund_key(SECRET, TENANT, charge, "r1");
        assert_ne!(refund, refund_key(b"another secret", TENANT, charge, "r1"));
        assert_ne!(refund, refund_key(SECRET, Uuid::from_u128(2), charge, "r1"));
        assert_ne!(refund, refund_key(SECRET, TENANT, Uuid::from_u128(8), "r1"));
        assert_ne!(refund, refund_key(SECRET, TENANT, charge, "r2"));

        let cancel = cancel_key(SECRET, TENANT, charge);
        assert_ne!(cancel, cancel_key(b"another secret", TENANT, charge));
        assert_ne!(cancel, cancel_key(SECRET, Uuid::from_u128(2), charge));
        assert_ne!(cancel, cancel_key(SECRET, TENANT, Uuid::from_u128(8)));

        let capture = capture_key(SECRET, TENANT, charge);
        assert_ne!(capture, capture_key(b"another secret", TENANT, charge));
        assert_ne!(capture, capture_key(SECRET, Uuid::from_u128(2), charge));
        assert_ne!(capture, capture_key(SECRET, TENANT, Uuid::from_u128(8)));
    }

    #[test]
    fn short_enough_for_every_provider_and_url_safe() {
        let long_order = "o".repeat(10_000);
        for key in [
            provider_key(SECRET, TENANT, "", 0),
            provider_key(SECRET, TENANT, &long_order, i32::MAX),
            refund_key(SECRET, TENANT, Uuid::nil(), &long_order),
            cancel_key(SECRET, TENANT, Uuid::max()),
            capture_key(SECRET, TENANT, Uuid::max()),
            void_key(SECRET, TENANT, Uuid::max()),
        ] {
            assert!(key.len() <= MAX_KEY_LEN, "{key} is {} characters", key.len());
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{key}");
        }
    }

    #[test]
    fn no_two_encodings_collide() {
        // A naive "tenant:order:attempt" would make these equal.
        assert_ne!(provider_key(SECRET, TENANT, "a:b", 1), provider_key(SECRET, TENANT, "a", 1));
        assert_ne!(refund_key(SECRET, TENANT, Uuid::nil(), "a:b"), refund_key(SECRET, TENANT, Uuid::nil(), "a"));
        // Attempt bytes cannot spill into the order: "a" + attempt 0x62 ('b')
        // against "ab" + attempt 0.
        assert_ne!(provider_key(SECRET, TENANT, "a", 0x62), provider_key(SECRET, TENANT, "ab", 0));
        // A payment and a refund never share a key, even over the same bytes.
        let order = String::from_utf8(Uuid::nil().as_bytes().to_vec()).unwrap();
        assert_ne!(provider_key(SECRET, TENANT, &order, 0)[4..], refund_key(SECRET, TENANT, Uuid::nil(), "")[4..]);
        // Nor does a cancellation share one with either: not with a refund of
        // the same charge with an empty reference, nor with a payment whose
        // order is the charge's bytes.
        let cancel = cancel_key(SECRET, TENANT, Uuid::nil());
        assert_ne!(cancel[4..], refund_key(SECRET, TENANT, Uuid::nil(), "")[4..]);
        assert_ne!(cancel[4..], provider_key(SECRET, TENANT, &order, 0)[4..]);
        let charge = Uuid::from_u128(7);
        assert_ne!(cancel_key(SECRET, TENANT, charge)[4..], refund_key(SECRET, TENANT, charge, "")[4..]);
        // The capture and the cancellation of one charge are two requests:
        // same fields, different labels.
        assert_ne!(capture_key(SECRET, TENANT, charge)[4..], cancel_key(SECRET, TENANT, charge)[4..]);
        assert_ne!(capture_key(SECRET, TENANT, charge)[4..], refund_key(SECRET, TENANT, charge, "")[4..]);
        assert_ne!(void_key(SECRET, TENANT, charge)[4..], cancel_key(SECRET, TENANT, charge)[4..]);
        assert_ne!(void_key(SECRET, TENANT, charge)[4..], capture_key(SECRET, TENANT, charge)[4..]);
    }
}
