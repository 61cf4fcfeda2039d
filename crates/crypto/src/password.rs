//! Password hashing: Argon2id with the OWASP parameters (RustCrypto `argon2`), verification of
//! imported bcrypt hashes (`bcrypt`), and the SHA-1 prefix the breached-password range API uses
//! (k-anonymity; SHA-1 is that API's format, not a password hash).
//!
//! These functions are CPU-bound by design; callers run them on a blocking thread.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha1::{Digest, Sha1};

use crate::CryptoError;

/// OWASP Password Storage Cheat Sheet: Argon2id, 19 MiB, 2 iterations, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

fn argon2() -> Result<Argon2<'static>, CryptoError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).map_err(|_| CryptoError::Malformed)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with Argon2id and a random salt; returns the PHC string.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt_bytes: [u8; 16] = crate::random_bytes()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| CryptoError::Malformed)?;
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| CryptoError::Malformed)
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// Wrong password.
    Mismatch,
    /// Right, and the hash is current.
    Match,
    /// Right, but the hash is an imported bcrypt hash or has weaker parameters: re-hash it.
    MatchOutdated,
}

fn is_bcrypt(stored: &str) -> bool {
    stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$")
}

/// Checks a password against a PHC string (Argon2id) or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
/// `Malformed` if the stored hash is neither.
pub fn verify_password(stored: &str, password: &str) -> Result<PasswordCheck, CryptoError> {
    if is_bcrypt(stored) {
        // bcrypt reads only the first 72 bytes: a longer password must not match on its prefix.
        if password.len() > 72 {
            return Ok(PasswordCheck::Mismatch);
        }
        return match bcrypt::verify(password, stored) {
            Ok(true) => Ok(PasswordCheck::MatchOutdated),
            Ok(false) => Ok(PasswordCheck::Mismatch),
            Err(_) => Err(CryptoError::Malformed),
        };
    }
    let parsed = PasswordHash::new(stored).map_err(|_| CryptoError::Malformed)?;
    if parsed.algorithm.as_str() != "argon2id" && parsed.algorithm.as_str() != "argon2i" {
        return Err(CryptoError::Malformed);
    }
    if argon2()?.verify_password(password.as_bytes(), &parsed).is_err() {
        return Ok(PasswordCheck::Mismatch);
    }
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed)
            .is_ok_and(|p| p.m_cost() >= MEMORY_KIB && p.t_cost() >= ITERATIONS && p.p_cost() >= LANES);
    Ok(if current {
        PasswordCheck::Match
    } else {
        PasswordCheck::MatchOutdated
    })
}

/// Spends the time of one verification without a stored hash (accounts that do not exist must not
/// answer faster).
pub fn burn_verification(password: &str) {
    if let (Ok(salt), Ok(argon)) = (SaltString::encode_b64(&[7u8; 16]), argon2()) {
        let _ = argon.hash_password(password.as_bytes(), &salt);
    }
}

/// Whether an imported hash is one we can verify.
pub fn is_supported_hash(stored: &str) -> bool {
    if is_bcrypt(stored) {
        return stored.len() == 60;
    }
    PasswordHash::new(stored).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

/// The upper-case hex SHA-1 of a password, as the k-anonymity range API indexes it: the first five
/// characters are sent, the rest compared locally.
pub fn breach_digest(password: &str) -> String {
    let digest = Sha1::digest(password.as_bytes());
    digest.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_with_owasp_parameters() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert_eq!(
            verify_password(&hash, "correct horse battery").unwrap(),
            PasswordCheck::Match
        );
        assert_eq!(
            verify_password(&hash, "correct horse batterY").unwrap(),
            PasswordCheck::Mismatch
        );
    }

    #[test]
    fn bcrypt_imports_and_weak_argon2_ask_for_an_upgrade() {
        let imported = bcrypt::hash("Tr0ub4dor&3xyz", 4).unwrap();
        assert!(is_supported_hash(&imported));
        assert_eq!(
            verify_password(&imported, "Tr0ub4dor&3xyz").unwrap(),
            PasswordCheck::MatchOutdated
        );
        assert_eq!(
            verify_password(&imported, "Tr0ub4dor&3xyZ").unwrap(),
            PasswordCheck::Mismatch
        );
        let long = "x".repeat(72);
        let truncated = bcrypt::hash(&long, 4).unwrap();
        assert_eq!(
            verify_password(&truncated, &format!("{long}y")).unwrap(),
            PasswordCheck::Mismatch
        );
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw-pw-pw-pw", &SaltString::encode_b64(&[1u8; 16]).unwrap())
        .unwrap()
        .to_string();
        assert_eq!(
            verify_password(&weak, "pw-pw-pw-pw").unwrap(),
            PasswordCheck::MatchOutdated
        );
        assert!(!is_supported_hash("$1$md5crypt"));
        assert!(verify_password("garbage", "x").is_err());
    }

    #[test]
    fn breach_digest_is_the_range_api_format() {
        // SHA-1("password"), as published by the range API.
        assert_eq!(
            breach_digest("password"),
            "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"
        );
    }
}
