//! `AppState`: what every handler and middleware can reach. No global state: tests build their own.

use std::collections::HashSet;
use std::sync::Arc;

use secureflows_core::Services;

use crate::access_log::AccessLog;
use crate::config::Config;

/// Shared application state (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    services: Arc<Services>,
    config: Arc<Config>,
    access_log: AccessLog,
    public_hosts: HashSet<String>,
    issuer: String,
    sign_in_limits: crate::throttle::SignInLimits,
    webhook_limits: crate::throttle::PerMinute,
}

impl AppState {
    /// Assembles the state.
    pub fn new(services: Arc<Services>, config: Arc<Config>, access_log: AccessLog, issuer: String) -> Self {
        let public_hosts = config
            .server
            .public_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let sign_in_limits = crate::throttle::SignInLimits::new(config.login.attempts_per_minute);
        let webhook_limits = crate::throttle::PerMinute::new(config.billing.webhooks_per_minute);
        AppState {
            inner: Arc::new(Inner {
                services,
                config,
                access_log,
                public_hosts,
                issuer,
                sign_in_limits,
                webhook_limits,
            }),
        }
    }

    /// Domain services.
    pub fn services(&self) -> &Services {
        &self.inner.services
    }

    /// Domain services, shared.
    pub fn services_arc(&self) -> Arc<Services> {
        self.inner.services.clone()
    }

    /// Configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The API-access log.
    pub fn access_log(&self) -> &AccessLog {
        &self.inner.access_log
    }

    /// Configured public hosts, lowercase; empty means any.
    pub fn public_hosts(&self) -> &HashSet<String> {
        &self.inner.public_hosts
    }

    /// The hosted login's sign-in throttles.
    pub fn sign_in_limits(&self) -> &crate::throttle::SignInLimits {
        &self.inner.sign_in_limits
    }

    /// Billing webhooks per source per minute.
    pub fn webhook_limits(&self) -> &crate::throttle::PerMinute {
        &self.inner.webhook_limits
    }

    /// This instance's issuer (public base URL).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }
}
