//! Signatures of billing webhooks, checked in constant time within a tolerance window:
//!
//! * Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA-256 keyed with the
//!   endpoint's signing secret over `{t}.{body}` (Stripe, "Verify webhook signatures manually");
//! * Paddle Billing: `Paddle-Signature: ts=<unix seconds>;h1=<hex>[;h1=<hex>…]`, HMAC-SHA-256 keyed
//!   with the notification destination's secret over `{ts}:{body}` (Paddle, "Verify webhook
//!   signatures").
//!
//! Several signatures may be present (a secret being rolled over): any one that verifies is enough.
//! Other schemes in the header (`v0`, unknown keys) are ignored. The timestamp must be within the
//! tolerance of now in either direction, so a captured delivery cannot be replayed later.

use std::time::Duration;

use aws_lc_rs::hmac;

/// Which provider signed the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookScheme {
    /// `Stripe-Signature` (`t`, `v1`; payload `{t}.{body}`).
    Stripe,
    /// `Paddle-Signature` (`ts`, `h1`; payload `{ts}:{body}`).
    Paddle,
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSignatureError {
    /// The header is missing parts or is not in the scheme's form.
    Malformed,
    /// The timestamp is outside the tolerance window.
    Stale,
    /// No signature in the header verifies with the secret.
    Invalid,
}

impl WebhookScheme {
    /// The header's separator between parts, the timestamp's key, the signature's key, and the byte
    /// between timestamp and body in the signed payload.
    fn form(self) -> (char, &'static str, &'static str, u8) {
        match self {
            WebhookScheme::Stripe => (',', "t", "v1", b'.'),
            WebhookScheme::Paddle => (';', "ts", "h1", b':'),
        }
    }
}

/// Verifies a delivery: `header` is the signature header's value, `body` the raw request body (exactly
/// as received), `secret` the signing secret, `now` the current time in Unix seconds. Answers the
/// delivery's timestamp.
pub fn verify_webhook(
    scheme: WebhookScheme,
    header: &str,
    body: &[u8],
    secret: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<i64, WebhookSignatureError> {
    let (separator, time_key, signature_key, joiner) = scheme.form();
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(separator) {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(WebhookSignatureError::Malformed);
        };
        if key == time_key {
            if timestamp.replace(value).is_some() {
                return Err(WebhookSignatureError::Malformed);
            }
        } else if key == signature_key {
            let bytes = hex::decode(value).map_err(|_| WebhookSignatureError::Malformed)?;
            if bytes.len() != 32 {
                return Err(WebhookSignatureError::Malformed);
            }
            signatures.push(bytes);
        }
    }
    let timestamp = timestamp.ok_or(WebhookSignatureError::Malformed)?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookSignatureError::Malformed);
    }
    let at: i64 = timestamp.parse().map_err(|_| WebhookSignatureError::Malformed)?;
    if signatures.is_empty() || signatures.len() > 8 {
        return Err(WebhookSignatureError::Malformed);
    }
    let window = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(at) > window.unsigned_abs() {
        return Err(WebhookSignatureError::Stale);
    }
    let mut payload = Vec::with_capacity(timestamp.len() + 1 + body.len());
    payload.extend_from_slice(timestamp.as_bytes());
    payload.push(joiner);
    payload.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    // Every signature is checked (no early exit), each comparison in constant time.
    let verified = signatures
        .iter()
        .fold(false, |ok, tag| hmac::verify(&key, &payload, tag).is_ok() | ok);
    if verified {
        Ok(at)
    } else {
        Err(WebhookSignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_1","type":"customer.subscription.updated"}"#;
    // HMAC-SHA-256("whsec_test_secret", "1700000000." + body), computed with Python's hmac module.
    const STRIPE_V1: &str = "0d61487f09b9af74bab9136d29b42415a42bf22e4ab9eb82886337697ef0fe84";
    const PADDLE_BODY: &[u8] = br#"{"event_id":"evt_01h","event_type":"subscription.updated"}"#;
    // HMAC-SHA-256("pdl_ntfset_secret", "1700000000:" + body), computed with Python's hmac module.
    const PADDLE_H1: &str = "e42e9a00d36cdb77751c45f7f4cb2057ae33cb8888edfa2f7901574fe3fd3711";

    fn stripe(header: &str, body: &[u8], now: i64) -> Result<i64, WebhookSignatureError> {
        verify_webhook(
            WebhookScheme::Stripe,
            header,
            body,
            b"whsec_test_secret",
            now,
            FIVE_MINUTES,
        )
    }

    fn paddle(header: &str, body: &[u8], now: i64) -> Result<i64, WebhookSignatureError> {
        verify_webhook(
            WebhookScheme::Paddle,
            header,
            body,
            b"pdl_ntfset_secret",
            now,
            FIVE_MINUTES,
        )
    }

    #[test]
    fn stripe_signatures_verify_as_stripe_computes_them() {
        let header = format!(
            "t=1700000000,v1={STRIPE_V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
        );
        assert_eq!(stripe(&header, STRIPE_BODY, 1_700_000_100), Ok(1_700_000_000));
        // A secret being rolled over: two v1 signatures, one of them by the old secret.
        let rolled = format!("t=1700000000,v1={},v1={STRIPE_V1}", "00".repeat(32));
        assert_eq!(stripe(&rolled, STRIPE_BODY, 1_700_000_000), Ok(1_700_000_000));
    }

    #[test]
    fn paddle_signatures_verify_as_paddle_computes_them() {
        let header = format!("ts=1700000000;h1={PADDLE_H1}");
        assert_eq!(paddle(&header, PADDLE_BODY, 1_700_000_010), Ok(1_700_000_000));
        // The two schemes' payloads differ: a Paddle signature is no Stripe signature.
        let as_stripe = format!("t=1700000000,v1={PADDLE_H1}");
        assert_eq!(
            verify_webhook(
                WebhookScheme::Stripe,
                &as_stripe,
                PADDLE_BODY,
                b"pdl_ntfset_secret",
                1_700_000_000,
                FIVE_MINUTES
            ),
            Err(WebhookSignatureError::Invalid)
        );
    }

    #[test]
    fn a_changed_body_secret_or_timestamp_is_invalid() {
        let header = format!("t=1700000000,v1={STRIPE_V1}");
        assert_eq!(
            stripe(&header, b"{\"id\":\"evt_2\"}", 1_700_000_000),
            Err(WebhookSignatureError::Invalid)
        );
        assert_eq!(
            verify_webhook(
                WebhookScheme::Stripe,
                &header,
                STRIPE_BODY,
                b"whsec_other",
                1_700_000_000,
                FIVE_MINUTES
            ),
            Err(WebhookSignatureError::Invalid)
        );
        let moved = format!("t=1700000001,v1={STRIPE_V1}");
        assert_eq!(
            stripe(&moved, STRIPE_BODY, 1_700_000_000),
            Err(WebhookSignatureError::Invalid)
        );
        let flipped = format!("t=1700000000,v1={}0", &STRIPE_V1[..63]);
        assert_eq!(
            stripe(&flipped, STRIPE_BODY, 1_700_000_000),
            Err(WebhookSignatureError::Invalid)
        );
    }

    #[test]
    fn deliveries_outside_the_window_are_stale_in_either_direction() {
        let header = format!("t=1700000000,v1={STRIPE_V1}");
        assert_eq!(stripe(&header, STRIPE_BODY, 1_700_000_300), Ok(1_700_000_000));
        assert_eq!(
            stripe(&header, STRIPE_BODY, 1_700_000_301),
            Err(WebhookSignatureError::Stale)
        );
        assert_eq!(
            stripe(&header, STRIPE_BODY, 1_699_999_699),
            Err(WebhookSignatureError::Stale)
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_any_check() {
        for header in [
            "",
            "garbage",
            "t=1700000000",
            &format!("v1={STRIPE_V1}"),
            &format!("t=,v1={STRIPE_V1}"),
            &format!("t=-5,v1={STRIPE_V1}"),
            &format!("t=17e8,v1={STRIPE_V1}"),
            &format!("t=1700000000,t=1700000000,v1={STRIPE_V1}"),
            "t=1700000000,v1=zz",
            "t=1700000000,v1=abcd",
            &format!("t=99999999999999999999,v1={STRIPE_V1}"),
            &format!(
                "t=1700000000,{}",
                format!("v1={STRIPE_V1},").repeat(9).trim_end_matches(',')
            ),
        ] {
            assert_eq!(
                stripe(header, STRIPE_BODY, 1_700_000_000),
                Err(WebhookSignatureError::Malformed),
                "{header}"
            );
        }
        // Paddle's form is not Stripe's.
        assert_eq!(
            paddle(
                &format!("ts=1700000000,h1={PADDLE_H1}"),
                PADDLE_BODY,
                1_700_000_000
            ),
            Err(WebhookSignatureError::Malformed)
        );
    }
}
