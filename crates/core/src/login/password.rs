//! Passwords: hashing and verification on threads of their own, bounded (the primitives are in
//! `secureflows_crypto::password`: Argon2id, imported bcrypt), and the workspace's password policy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secureflows_crypto::SecretString;
use secureflows_crypto::password::{self as pw, PasswordCheck};
use tokio::sync::Semaphore;

use crate::{Error, FieldError, Result};

/// Longest password accepted (long enough for any passphrase, short enough to bound hashing work).
pub const MAX_LENGTH: usize = 256;

/// Password hashing, bounded: it runs on `concurrency` threads of its own, so at most that many
/// Argon2id computations (19 MiB each) run at once, and each thread reuses its memory (the blocking
/// pool would spread the work over many threads, and the allocator keeps what each one used). The
/// other requests wait their turn up to `queue_timeout` — with at most `MAX_WAITING_PER_PERMIT`
/// waiters per thread — and past that get `Unavailable` (503 with `Retry-After`). Memory therefore
/// stays flat under any burst of sign-ins. Unknown accounts' decoy verifications go through the same
/// queue, so they cost what real ones cost.
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    concurrency: usize,
    waiting: AtomicUsize,
    queue_timeout: Duration,
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("concurrency", &self.concurrency)
            .field("queue_timeout", &self.queue_timeout)
            .finish_non_exhaustive()
    }
}

/// Waiters per thread beyond which new requests are refused at once.
const MAX_WAITING_PER_PERMIT: usize = 64;

impl PasswordHasher {
    /// `concurrency` (at least 1) hashing threads; a request waits at most `queue_timeout` for one.
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Result<PasswordHasher> {
        let concurrency = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sf-password-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job; the senders are gone at shutdown.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(Error::internal)?;
        }
        Ok(PasswordHasher {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            waiting: AtomicUsize::new(0),
            queue_timeout,
            jobs: Mutex::new(jobs),
        })
    }

    /// Hashes a password with Argon2id; returns the PHC string.
    pub async fn hash(&self, password: &SecretString) -> Result<String> {
        let password = password.clone();
        self.run(move || Ok(pw::hash_password(password.expose())?)).await
    }

    /// Checks `password` against a stored hash (Argon2id PHC string or imported bcrypt).
    pub async fn verify(&self, stored: &str, password: &SecretString) -> Result<PasswordCheck> {
        let stored = stored.to_owned();
        let password = password.clone();
        self.run(move || {
            pw::verify_password(&stored, password.expose())
                .map_err(|_| Error::Integrity("stored password hash"))
        })
        .await
    }

    /// Spends as much time as a real verification, for accounts that do not exist (no timing oracle).
    pub async fn verify_dummy(&self, password: &SecretString) -> Result<()> {
        let password = password.clone();
        self.run(move || {
            pw::burn_verification(password.expose());
            Ok(())
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let busy = || Error::Unavailable("password hashing is busy");
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // SECURITY: a burst of sign-ins waits here instead of hashing all at once.
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.concurrency * MAX_WAITING_PER_PERMIT {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(busy());
                }
                let acquired =
                    tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned()).await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match acquired {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(busy()),
                }
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
            drop(permit);
        });
        self.jobs
            .lock()
            .map_err(|_| busy())?
            .send(job)
            .map_err(|_| Error::Unavailable("password hashing stopped"))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("password hashing stopped"))?
    }
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
