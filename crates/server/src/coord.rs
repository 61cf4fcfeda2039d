//! Cross-node cache coherence: read the invalidation log when PostgreSQL announces a change (NOTIFY)
//! and at a fixed interval otherwise, and drop what each invalidation names from this node's caches.
//!
//! Every successful read marks the caches coherent; if reads fail for longer than the configured
//! staleness, validation stops trusting the caches (and fails closed with the database). When reads
//! succeed again after such a gap, every cache is cleared.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use secureflows_core::Services;
use tokio::sync::watch;

/// How far back each read looks, to catch transactions that committed out of sequence order.
const LOOKBACK: Duration = Duration::from_secs(10);

/// Runs until `shutdown` changes.
pub async fn run(services: Arc<Services>, poll_interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let wakeups = services.stores.coord.wakeups();
    let mut after = 0i64;
    let mut seen: HashSet<i64> = HashSet::new();
    let mut first = true;
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        match services.stores.coord.invalidations(after, LOOKBACK).await {
            Ok(list) => {
                if failing_since
                    .take()
                    .is_some_and(|t| t.elapsed() > poll_interval * 2)
                {
                    tracing::info!("invalidation log readable again; clearing caches");
                    services.state.clear();
                }
                let mut now_seen = HashSet::with_capacity(list.len());
                for (seq, invalidation) in list {
                    now_seen.insert(seq);
                    after = after.max(seq);
                    // At start-up nothing is cached yet; older entries need no applying.
                    if !first && !seen.contains(&seq) {
                        services.apply_invalidation(invalidation).await;
                    }
                }
                seen = now_seen;
                first = false;
                services.state.coherence.mark_synced();
            }
            Err(e) => {
                if failing_since.is_none() {
                    tracing::warn!(error = %e, "cannot read the invalidation log; caches will be bypassed");
                    failing_since = Some(tokio::time::Instant::now());
                }
            }
        }
        let sleep = tokio::time::sleep(poll_interval);
        match &wakeups {
            Some(notify) => tokio::select! {
                _ = sleep => {}
                _ = notify.notified() => {}
                _ = shutdown.changed() => return,
            },
            None => tokio::select! {
                _ = sleep => {}
                _ = shutdown.changed() => return,
            },
        }
    }
}
