//! Retention: purges expired vault values, used single-use credentials, old login sessions, expired
//! sign-in state (flows, codes, refresh tokens, browser sessions, links), old invalidations and retired
//! signing keys whose tokens can no longer be valid.

use std::sync::Arc;
use std::time::Duration;

use secureflows_core::Services;
use tokio::sync::watch;

/// Batch size of one purge statement.
const BATCH: u32 = 5_000;

/// Runs one sweep.
pub async fn sweep(services: &Services, ended_session_retention: Duration) {
    let now = services.clock.now();
    loop {
        match services.stores.vault.purge_expired_values(now, BATCH).await {
            Ok(n) if n >= u64::from(BATCH) => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(values = n, "purged expired vault values");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging expired vault values failed");
                break;
            }
        }
    }
    // Handled billing webhook events: providers stop retrying after a few days.
    if let Err(e) = services
        .stores
        .billing
        .purge_webhook_events(now.minus(secureflows_core::billing::EVENT_RETENTION))
        .await
    {
        tracing::warn!(error = %e, "purging handled webhook events failed");
    }
    if let Err(e) = services.stores.used_tokens.purge_used(now).await {
        tracing::warn!(error = %e, "purging used credentials failed");
    }
    if let Err(e) = services
        .stores
        .sessions
        .purge_sessions(now.minus(ended_session_retention))
        .await
    {
        tracing::warn!(error = %e, "purging old login sessions failed");
    }
    // Expired flows, codes, refresh tokens, browser sessions and links; successors of refresh tokens
    // rotated longer ago than the grace window.
    if let Err(e) = services
        .stores
        .browsers
        .purge_login_state(now.minus(services.settings.login.refresh_grace))
        .await
    {
        tracing::warn!(error = %e, "purging expired sign-in state failed");
    }
    if let Err(e) = services
        .stores
        .coord
        .prune_invalidations(Duration::from_secs(3600))
        .await
    {
        tracing::warn!(error = %e, "pruning the invalidation log failed");
    }
    // A retired key still verifies the tokens it signed until they expire.
    let keep = services.settings.max_token_ttl + services.settings.leeway + Duration::from_secs(3600);
    match services.keys.prune_signing_keys(now.minus(keep)).await {
        Ok(0) => {}
        Ok(_) => {
            if let Err(e) = services
                .stores
                .coord
                .publish(secureflows_core::Invalidation::SigningKeys)
                .await
            {
                tracing::warn!(error = %e, "announcing pruned signing keys failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "pruning retired signing keys failed"),
    }
}

/// Sweeps every `interval` until `shutdown` changes.
pub async fn run(
    services: Arc<Services>,
    interval: Duration,
    ended_session_retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => sweep(&services, ended_session_retention).await,
            _ = shutdown.changed() => return,
        }
    }
}
