//! Time-based one-time passwords (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps) through `totp-rs`,
//! with a window of one step either side for clock skew. Accepting a step only once is the caller's
//! job (it stores the last step used).

use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::CryptoError;

/// Bytes of a TOTP secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;

fn totp(secret: &[u8]) -> Result<Totp, CryptoError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .build()
        .map_err(|_| CryptoError::Malformed)
}

/// A new random secret.
pub fn new_totp_secret() -> Result<[u8; SECRET_LEN], CryptoError> {
    crate::random_bytes()
}

/// The step (`unix_secs / 30`) a code matches within one step of `unix_secs`, if any.
pub fn totp_check(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret).ok()?.check(&code, unix_secs)
}

/// The code at `unix_secs` (tests and diagnostics).
pub fn totp_code(secret: &[u8], unix_secs: u64) -> Result<String, CryptoError> {
    Ok(totp(secret)?.generate(unix_secs).to_string())
}

/// The code at `unix_secs` for a secret given in base32 (as an authenticator app computes it).
pub fn totp_code_from_base32(secret: &str, unix_secs: u64) -> Result<String, CryptoError> {
    let bytes = Secret::try_from_base32(secret).map_err(|_| CryptoError::Malformed)?;
    totp_code(bytes.as_ref(), unix_secs)
}

/// The secret in base32, as authenticator apps take it when typed in.
pub fn totp_base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector_and_skew_window() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s -> 94287082 (8 digits); the 6-digit
        // code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(totp_code(secret, 59).unwrap(), "287082");
        assert_eq!(totp_check(secret, "287082", 59), Some(1));
        assert_eq!(
            totp_check(secret, "287 082", 59 + 30),
            Some(1),
            "one step late is accepted"
        );
        assert_eq!(
            totp_check(secret, "287082", 59 + 61),
            None,
            "two steps late is not"
        );
        assert_eq!(totp_check(secret, "28708", 59), None);
        assert_eq!(totp_check(secret, "abcdef", 59), None);
        assert_eq!(totp_base32(secret), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            totp_code_from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 59).unwrap(),
            "287082"
        );
    }
}
