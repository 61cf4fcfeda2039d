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

/// Invalidations read per query.
const BATCH: u32 = 1000;

/// Runs until `shutdown` changes.
pub async fn run(services: Arc<Services>, poll_interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let wakeups = services.stores.coord.wakeups();
    let mut after = 0i64;
    let mut seen: HashSet<i64> = HashSet::new();
    let mut first = true;
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        match sync(&services, &mut after, &mut seen, first).await {
            Ok(()) => {
                if failing_since
                    .take()
                    .is_some_and(|t| t.elapsed() > poll_interval * 2)
                {
                    tracing::info!("invalidation log readable again; clearing caches");
                    services.state.clear();
                }
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

/// Reads everything after `after` (in batches, until drained), then the look-back window, applying each
/// invalidation once. At start-up nothing is cached yet, so nothing needs applying.
async fn sync(
    services: &Services,
    after: &mut i64,
    seen: &mut HashSet<i64>,
    first: bool,
) -> secureflows_core::Result<()> {
    loop {
        let list = services.stores.coord.invalidations_after(*after, BATCH).await?;
        let count = list.len();
        for (seq, invalidation) in list {
            *after = (*after).max(seq);
            if seen.insert(seq) && !first {
                services.apply_invalidation(invalidation).await;
            }
        }
        if count < BATCH as usize {
            break;
        }
    }
    let recent = services.stores.coord.recent_invalidations(LOOKBACK).await?;
    let mut window = HashSet::with_capacity(recent.len());
    for (seq, invalidation) in recent {
        window.insert(seq);
        if !seen.contains(&seq) && !first {
            services.apply_invalidation(invalidation).await;
        }
        *after = (*after).max(seq);
    }
    // Remember only what the look-back window can still return.
    *seen = window;
    Ok(())
}
