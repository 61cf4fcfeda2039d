//! In-process caches of the state that request validation needs (applications, workspaces, login
//! sessions, token revisions), kept correct across nodes by the invalidation log.
//!
//! Two guards make a cache safe to trust for revocation:
//! * **Epochs.** A loader notes the cache's epoch before reading the database and inserts its result
//!   only if no invalidation happened meanwhile; otherwise a read that raced a revocation could put
//!   the pre-revocation state back into the cache.
//! * **Coherence.** Caches are consulted only while this node has heard from the invalidation log
//!   recently (`max_staleness`). If the log cannot be read (database down, listener lost), every
//!   check goes to the database and fails closed with it.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{
    Application, ApplicationId, Invalidation, LoginSession, Result, SessionId, UserId, Workspace, WorkspaceId,
};

/// Whether this node's caches are fresh enough to trust.
#[derive(Debug)]
pub struct Coherence {
    start: Instant,
    last_sync_ms: AtomicI64,
    max_staleness: Duration,
}

impl Coherence {
    /// A coherence tracker that trusts caches for `max_staleness` after each successful sync.
    pub fn new(max_staleness: Duration) -> Self {
        Coherence {
            start: Instant::now(),
            last_sync_ms: AtomicI64::new(i64::MIN / 2),
            max_staleness,
        }
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Records that the invalidation log was read successfully just now.
    pub fn mark_synced(&self) {
        self.last_sync_ms.store(self.elapsed_ms(), Ordering::Release);
    }

    /// Whether caches may be trusted now.
    pub fn is_coherent(&self) -> bool {
        let age = self
            .elapsed_ms()
            .saturating_sub(self.last_sync_ms.load(Ordering::Acquire));
        age >= 0 && u128::try_from(age).unwrap_or(u128::MAX) <= self.max_staleness.as_millis()
    }
}

/// A bounded cache whose fills lose against concurrent invalidations.
pub struct GuardedCache<K, V> {
    cache: moka::sync::Cache<K, V>,
    epoch: AtomicU64,
}

impl<K, V> std::fmt::Debug for GuardedCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl<K, V> GuardedCache<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        GuardedCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// The cached value, or `load`'s, which is cached if it is `Some` and no invalidation raced it.
    /// With `trust == false` the cache is bypassed entirely.
    pub async fn get_or_load<F, Fut>(&self, key: &K, trust: bool, load: F) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>>>,
    {
        if trust && let Some(v) = self.cache.get(key) {
            return Ok(Some(v));
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let loaded = load().await?;
        if let Some(v) = &loaded
            && trust
            && self.epoch.load(Ordering::SeqCst) == epoch
        {
            self.cache.insert(key.clone(), v.clone());
            // An invalidation may have slipped in between the check and the insert. It bumps the epoch
            // before it evicts, so an epoch still unchanged *after* the insert proves that any later
            // invalidation will evict this entry; a changed one means this entry may be stale.
            if self.epoch.load(Ordering::SeqCst) != epoch {
                self.cache.invalidate(key);
            }
        }
        Ok(loaded)
    }

    /// Puts a value that the caller itself just wrote (same node, after commit).
    pub fn put(&self, key: K, value: V) {
        self.cache.insert(key, value);
    }

    /// Drops one entry and makes every fill that started before this call lose.
    pub fn invalidate(&self, key: &K) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(key);
    }

    /// Drops everything.
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }
}

/// Sizes of the state caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheSizes {
    /// Applications and workspaces.
    pub tenants: u64,
    /// Login sessions and user revisions.
    pub sessions: u64,
    /// Time to live of every entry (a backstop; invalidations normally evict first).
    pub ttl: Duration,
}

impl Default for CacheSizes {
    fn default() -> Self {
        CacheSizes {
            tenants: 10_000,
            sessions: 200_000,
            ttl: Duration::from_secs(300),
        }
    }
}

/// The state caches of one node.
#[derive(Debug)]
pub struct StateCache {
    /// Whether the caches may be trusted.
    pub coherence: Coherence,
    /// Applications by client id.
    pub applications: GuardedCache<ApplicationId, Arc<Application>>,
    /// Workspaces.
    pub workspaces: GuardedCache<WorkspaceId, Arc<Workspace>>,
    /// Login sessions.
    pub sessions: GuardedCache<SessionId, Arc<LoginSession>>,
    /// Current token revision per user (and per SUPPORT operator); `None` when locked or gone.
    pub revisions: GuardedCache<UserId, i64>,
    /// The tiers each end user was put on, per application.
    pub tiers: GuardedCache<UserId, Arc<Vec<crate::tier::TierAssignment>>>,
    /// Every allowed browser origin (for preflights).
    pub origins: GuardedCache<(), Arc<std::collections::HashSet<String>>>,
}

impl StateCache {
    /// Empty caches.
    pub fn new(sizes: CacheSizes, max_staleness: Duration) -> Self {
        StateCache {
            coherence: Coherence::new(max_staleness),
            applications: GuardedCache::new(sizes.tenants, sizes.ttl),
            workspaces: GuardedCache::new(sizes.tenants, sizes.ttl),
            sessions: GuardedCache::new(sizes.sessions, sizes.ttl),
            revisions: GuardedCache::new(sizes.sessions, sizes.ttl),
            tiers: GuardedCache::new(sizes.sessions, sizes.ttl),
            origins: GuardedCache::new(1, sizes.ttl),
        }
    }

    /// Whether cached state may be used now.
    pub fn trusted(&self) -> bool {
        self.coherence.is_coherent()
    }

    /// Drops what an invalidation names.
    pub fn apply(&self, invalidation: Invalidation) {
        match invalidation {
            Invalidation::Workspace(w) | Invalidation::Keys(w) => self.workspaces.invalidate(&w),
            Invalidation::Application(a) => {
                self.applications.invalidate(&a);
                self.origins.invalidate(&());
            }
            Invalidation::User(_, u) | Invalidation::Support(u) => {
                self.revisions.invalidate(&u);
                self.tiers.invalidate(&u);
            }
            Invalidation::Session(_, s) => self.sessions.invalidate(&s),
            Invalidation::SigningKeys => {}
        }
    }

    /// Drops everything (after losing track of the invalidation log).
    pub fn clear(&self) {
        self.applications.invalidate_all();
        self.workspaces.invalidate_all();
        self.sessions.invalidate_all();
        self.revisions.invalidate_all();
        self.tiers.invalidate_all();
        self.origins.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fill_that_races_an_invalidation_is_not_cached() {
        let cache: GuardedCache<u32, i64> = GuardedCache::new(10, Duration::from_secs(60));
        let v = cache
            .get_or_load(&1, true, || async {
                cache.invalidate(&1); // a revocation lands while the old value is being read
                Ok(Some(1))
            })
            .await
            .unwrap();
        assert_eq!(v, Some(1));
        let again = cache
            .get_or_load(&1, true, || async { Ok(Some(2)) })
            .await
            .unwrap();
        assert_eq!(again, Some(2), "the raced value must not have been cached");
        let cached = cache
            .get_or_load(&1, true, || async { Ok(Some(3)) })
            .await
            .unwrap();
        assert_eq!(cached, Some(2));
    }

    #[tokio::test]
    async fn untrusted_cache_always_loads() {
        let cache: GuardedCache<u32, i64> = GuardedCache::new(10, Duration::from_secs(60));
        cache.put(1, 1);
        let v = cache
            .get_or_load(&1, false, || async { Ok(Some(9)) })
            .await
            .unwrap();
        assert_eq!(v, Some(9));
    }

    #[test]
    fn coherence_expires() {
        let c = Coherence::new(Duration::from_millis(0));
        assert!(!c.is_coherent());
        let c = Coherence::new(Duration::from_secs(5));
        assert!(!c.is_coherent());
        c.mark_synced();
        assert!(c.is_coherent());
    }
}
