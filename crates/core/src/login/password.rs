//! Passwords: hashing and verification on the blocking pool (the primitives are in
//! `secureflows_crypto::password`: Argon2id, imported bcrypt), and the workspace's password policy.

use secureflows_crypto::SecretString;
use secureflows_crypto::password::{self as pw, PasswordCheck};

use crate::{Error, FieldError, Result};

/// Longest password accepted (long enough for any passphrase, short enough to bound hashing work).
pub const MAX_LENGTH: usize = 256;

/// Hashes a password with Argon2id; returns the PHC string.
pub async fn hash_password(password: &SecretString) -> Result<String> {
    let password = password.clone();
    blocking(move || Ok(pw::hash_password(password.expose())?)).await
}

/// Checks `password` against a stored hash (Argon2id PHC string or imported bcrypt).
pub async fn verify_password(stored: &str, password: &SecretString) -> Result<PasswordCheck> {
    let stored = stored.to_owned();
    let password = password.clone();
    blocking(move || {
        pw::verify_password(&stored, password.expose()).map_err(|_| Error::Integrity("stored password hash"))
    })
    .await
}

/// Spends as much time as a real verification, for accounts that do not exist (no timing oracle).
pub async fn verify_dummy(password: &SecretString) -> Result<()> {
    let password = password.clone();
    blocking(move || {
        pw::burn_verification(password.expose());
        Ok(())
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Unavailable("password hashing"))?
}

/// A workspace's password policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PasswordPolicy {
    /// NIST SP 800-63B: at least 8 characters (15 without a second factor is recommended, not
    /// required), no composition rules, any characters, not a known-breached password, not the
    /// e-mail address.
    #[default]
    Nist,
    /// The Tuff Flips profile: at least 12 characters with an upper-case letter, a lower-case letter,
    /// a digit and a symbol, at most 72 bytes (bcrypt-compatible), not breached.
    Strict,
}

impl PasswordPolicy {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordPolicy::Nist => "nist",
            PasswordPolicy::Strict => "strict",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "nist" => Some(PasswordPolicy::Nist),
            "strict" => Some(PasswordPolicy::Strict),
            _ => None,
        }
    }

    /// The shortest allowed length in characters.
    pub fn min_length(self) -> usize {
        match self {
            PasswordPolicy::Nist => 8,
            PasswordPolicy::Strict => 12,
        }
    }

    /// Checks the rules that need no look-up (the breached check is separate). Messages never echo the
    /// password.
    pub fn check(self, password: &str, email: &str) -> std::result::Result<(), Vec<FieldError>> {
        let mut problems = Vec::new();
        let chars = password.chars().count();
        if chars < self.min_length() {
            problems.push(format!("must be at least {} characters", self.min_length()));
        }
        let max = match self {
            PasswordPolicy::Nist => MAX_LENGTH,
            PasswordPolicy::Strict => 72,
        };
        if password.len() > max {
            problems.push(format!("must be at most {max} bytes"));
        }
        if password.chars().any(char::is_control) {
            problems.push("must not contain control characters".to_owned());
        }
        let lowered = password.to_lowercase();
        let email = email.trim().to_lowercase();
        let local = email.split('@').next().unwrap_or_default();
        if !email.is_empty() && (lowered == email || (local.len() >= 4 && lowered.contains(local))) {
            problems.push("must not contain your e-mail address".to_owned());
        }
        if chars > 1 && password.chars().all(|c| password.starts_with(c)) {
            problems.push("must not be one repeated character".to_owned());
        }
        if self == PasswordPolicy::Strict {
            let has = |f: fn(&char) -> bool| password.chars().any(|c| f(&c));
            if !has(char::is_ascii_uppercase)
                || !has(char::is_ascii_lowercase)
                || !has(char::is_ascii_digit)
                || !has(|c| !c.is_alphanumeric() && !c.is_whitespace())
            {
                problems.push(
                    "must contain an upper-case letter, a lower-case letter, a digit and a symbol".to_owned(),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems
                .into_iter()
                .map(|message| FieldError {
                    field: "password".into(),
                    message,
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        let nist = PasswordPolicy::Nist;
        assert!(nist.check("short", "a@b.c").is_err());
        assert!(nist.check("long enough words", "a@b.c").is_ok());
        assert!(nist.check("aaaaaaaaaaaa", "a@b.c").is_err());
        assert!(nist.check("alice.smith2024", "alice.smith@example.com").is_err());
        let strict = PasswordPolicy::Strict;
        assert!(strict.check("long enough words", "a@b.c").is_err());
        assert!(strict.check("Long-enough-w0rds", "a@b.c").is_ok());
        assert!(strict.check(&format!("Aa1!{}", "x".repeat(80)), "a@b.c").is_err());
    }
}
