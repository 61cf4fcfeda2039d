//! Sign-in throttles: attempts per account and per client address, kept in memory per instance
//! (governor's keyed GCRA limiters), shared by every page that takes a password or sends a link.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secureflows_core::{EmailAddress, WorkspaceId};

/// What an attempt for an e-mail address is: sign-ins and link requests share one budget per address,
/// sign-ups have their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A password sign-in, or a request for a sign-in or reset link.
    SignIn,
    /// A sign-up.
    SignUp,
}

/// Sign-in throttles: per account and per client address.
#[derive(Debug)]
pub struct SignInLimits {
    accounts: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<String>,
}

impl SignInLimits {
    /// `per_minute` attempts per account and per client address.
    pub fn new(per_minute: u32) -> SignInLimits {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN));
        SignInLimits {
            accounts: RateLimiter::keyed(quota),
            addresses: RateLimiter::keyed(quota),
        }
    }

    /// Takes one attempt for a client address alone; `Some(retry_after)` if it is used up.
    pub fn check_address(&self, address: String) -> Option<Duration> {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        let result = self
            .addresses
            .check_key(&address)
            .err()
            .map(|n| n.wait_time_from(now).max(Duration::from_secs(1)));
        if self.addresses.len() > 100_000 {
            self.addresses.retain_recent();
        }
        result
    }

    /// Takes one attempt for an address asked for in `workspace` (`what`: a sign-in or link, or a
    /// sign-up) and for the client address; `Err(retry_after)` if either is used up.
    pub fn check_email(
        &self,
        workspace: WorkspaceId,
        what: Attempt,
        email: &str,
        client: Option<&str>,
    ) -> Result<(), Duration> {
        let prefix = match what {
            Attempt::SignIn => "",
            Attempt::SignUp => "signup:",
        };
        let account = format!("{workspace}:{prefix}{}", EmailAddress::throttle_key(email));
        self.check(account, client.unwrap_or_default().to_owned())
    }

    /// Takes one attempt for both keys; `Err(retry_after)` if either is used up.
    fn check(&self, account: String, address: String) -> Result<(), Duration> {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        for (limiter, key) in [(&self.addresses, address), (&self.accounts, account)] {
            if let Err(not_until) = limiter.check_key(&key) {
                return Err(not_until.wait_time_from(now).max(Duration::from_secs(1)));
            }
            if limiter.len() > 100_000 {
                limiter.retain_recent();
            }
        }
        Ok(())
    }
}

/// Requests per minute per source (a client address), e.g. billing webhooks.
#[derive(Debug)]
pub struct PerMinute {
    sources: DefaultKeyedRateLimiter<String>,
}

impl PerMinute {
    /// `per_minute` requests per source.
    pub fn new(per_minute: u32) -> PerMinute {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN));
        PerMinute {
            sources: RateLimiter::keyed(quota),
        }
    }

    /// Takes one request for `source`; `Err(retry_after)` if its budget is used up.
    pub fn check(&self, source: String) -> Result<(), Duration> {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        let result = self
            .sources
            .check_key(&source)
            .map_err(|n| n.wait_time_from(now).max(Duration::from_secs(1)));
        if self.sources.len() > 100_000 {
            self.sources.retain_recent();
        }
        result
    }
}
