//! `Services`: the one value that carries what the domain services need (stores, clock, caches, keys,
//! tokens, plans). The services themselves are `impl Services` blocks in their own modules
//! (`auth::session`, `auth::callback`, `vault`, `workspace`, `access`).

use std::sync::Arc;
use std::time::Duration;

use crate::auth::token::TokenService;
use crate::auth::upstream::JwksSource;
use crate::cache::StateCache;
use crate::keyring::KeyService;
use crate::login::LoginSettings;
use crate::login::breached::BreachedPasswords;
use crate::login::password::PasswordHasher;
use crate::mail::Mailer;
use crate::rate::HourlyBudgets;
use crate::store::Stores;
use crate::{Clock, Invalidation, PlanCatalogue};

/// Domain settings that come from configuration.
#[derive(Debug, Clone)]
pub struct DomainSettings {
    /// Tolerated clock skew for token times.
    pub leeway: Duration,
    /// Default access-token lifetime of new applications.
    pub default_token_ttl: Duration,
    /// Default vault data lifetime of new applications.
    pub default_data_ttl: Duration,
    /// Shortest access-token lifetime an application may have.
    pub min_token_ttl: Duration,
    /// Longest access-token lifetime an application may have.
    pub max_token_ttl: Duration,
    /// Hosted login.
    pub login: LoginSettings,
    /// Billing webhooks.
    pub billing: crate::billing::BillingSettings,
}

impl Default for DomainSettings {
    fn default() -> Self {
        DomainSettings {
            leeway: Duration::from_secs(30),
            default_token_ttl: Duration::from_secs(15 * 60),
            default_data_ttl: Duration::from_secs(24 * 3600),
            min_token_ttl: Duration::from_secs(60),
            max_token_ttl: Duration::from_secs(24 * 3600),
            login: LoginSettings::default(),
            billing: crate::billing::BillingSettings::default(),
        }
    }
}

/// Everything the domain services use.
pub struct Services {
    /// Storage.
    pub stores: Stores,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// State caches.
    pub state: StateCache,
    /// Keys.
    pub keys: Arc<KeyService>,
    /// Access tokens.
    pub tokens: TokenService,
    /// The plan catalogue.
    pub plans: PlanCatalogue,
    /// Hourly request budgets of end users and workspaces (this node's).
    pub budgets: HourlyBudgets,
    /// Upstream issuers' keys.
    pub upstream: Arc<dyn JwksSource>,
    /// Outgoing e-mail.
    pub mailer: Arc<dyn Mailer>,
    /// Breached-password source.
    pub breached: Arc<dyn BreachedPasswords>,
    /// Password hashing, bounded.
    pub passwords: PasswordHasher,
    /// Settings.
    pub settings: DomainSettings,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Drops what an invalidation names from every cache of this node. Signing-key changes reload the
    /// key set.
    pub async fn apply_invalidation(&self, invalidation: Invalidation) {
        self.state.apply(invalidation);
        match invalidation {
            Invalidation::Keys(w) | Invalidation::Workspace(w) => self.keys.evict(w),
            Invalidation::SigningKeys => {
                if let Err(e) = self.tokens.load_keys().await {
                    tracing::error!(error = %e, "reloading signing keys failed");
                }
            }
            _ => {}
        }
    }
}
