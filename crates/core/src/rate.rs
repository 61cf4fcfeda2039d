//! Hourly request budgets: each end user's in each application (from their tier) and each workspace's
//! (from its plan). GCRA limiters (governor), so a budget refills smoothly — one request every
//! `3600 / limit` seconds — and never doubles at a window boundary. Kept in memory per node, read off
//! the domain clock so tests can move time.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::{ApplicationId, Clock, UserId, WorkspaceId};

/// The window of every budget.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Whose budget a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetKey {
    /// An end user in one application (their tier's budget).
    User(ApplicationId, UserId),
    /// A whole workspace (its plan's budget).
    Workspace(WorkspaceId),
}

impl BudgetKey {
    /// The policy name in the `RateLimit-Policy` and `RateLimit` headers.
    pub fn policy(&self) -> &'static str {
        match self {
            BudgetKey::User(..) => "user-hourly",
            BudgetKey::Workspace(_) => "workspace-hourly",
        }
    }
}

/// What is left of one budget after a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Policy name (`user-hourly` or `workspace-hourly`).
    pub policy: &'static str,
    /// Requests per hour.
    pub limit: u32,
    /// Requests that may still be made at once.
    pub remaining: u32,
    /// Until the budget is whole again (or, when refused, until the charge would fit).
    pub reset: Duration,
}

/// The outcome of charging a request to its budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Charge {
    /// Every budget the request was charged to.
    pub budgets: Vec<Budget>,
    /// `Some(retry_after)` when a budget refused the request.
    pub refused: Option<Duration>,
}

/// The domain clock as governor's clock (milliseconds since the epoch as a duration).
#[derive(Debug, Clone)]
struct DomainClock(Arc<dyn Clock>);

impl GovernorClock for DomainClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now().millis()).unwrap_or(0))
    }
}

type Limiter = RateLimiter<BudgetKey, DashMapStateStore<BudgetKey>, DomainClock, StateInformationMiddleware>;

/// Keys kept per limiter before idle (fully refilled) ones are dropped.
const RETAIN_ABOVE: usize = 100_000;
/// Distinct hourly limits kept before limiters with no live state are dropped.
const MAX_IDLE_LIMITERS: usize = 256;

/// Every hourly budget of this node: one GCRA limiter per distinct hourly limit, keyed by whose budget.
#[derive(Debug)]
pub struct HourlyBudgets {
    clock: DomainClock,
    limiters: Mutex<HashMap<u32, Arc<Limiter>>>,
}

impl HourlyBudgets {
    /// Empty budgets read off `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        HourlyBudgets {
            clock: DomainClock(clock),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    fn limiter(&self, per_hour: NonZeroU32) -> Arc<Limiter> {
        let mut map = self
            .limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Tiers are data: limits come and go. A limiter whose every key has refilled holds nothing a
        // fresh one would not, so idle ones are dropped before the map grows past a bound.
        if map.len() >= MAX_IDLE_LIMITERS && !map.contains_key(&per_hour.get()) {
            map.retain(|_, limiter| {
                limiter.retain_recent();
                !limiter.is_empty()
            });
        }
        map.entry(per_hour.get())
            .or_insert_with(|| {
                let quota = Quota::with_period(WINDOW / per_hour.get())
                    .unwrap_or_else(|| Quota::per_hour(per_hour))
                    .allow_burst(per_hour);
                Arc::new(
                    RateLimiter::dashmap_with_clock(quota, self.clock.clone())
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone()
    }

    /// Charges `cost` requests to each `(key, per_hour)` budget in turn and stops at the first that
    /// refuses. A cost larger than a whole budget is refused with the full window as its wait.
    pub fn charge(&self, budgets: &[(BudgetKey, u32)], cost: NonZeroU32) -> Charge {
        let mut charge = Charge::default();
        for &(key, per_hour) in budgets {
            let Some(limit) = NonZeroU32::new(per_hour) else {
                continue;
            };
            let limiter = self.limiter(limit);
            let now = self.clock.now();
            let interval = WINDOW / limit.get();
            let (remaining, reset, refused) = match limiter.check_key_n(&key, cost) {
                Ok(Ok(snapshot)) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    (
                        remaining,
                        interval * (limit.get() - remaining.min(limit.get())),
                        None,
                    )
                }
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(now);
                    (0, wait, Some(wait))
                }
                // More than a whole budget: it never fits.
                Err(_) => (0, WINDOW, Some(WINDOW)),
            };
            charge.budgets.push(Budget {
                policy: key.policy(),
                limit: limit.get(),
                remaining,
                reset,
            });
            charge.refused = refused;
            if limiter.len() > RETAIN_ABOVE {
                limiter.retain_recent();
            }
            if charge.refused.is_some() {
                break;
            }
        }
        charge
    }
}

// governor needs the clock's instants to be references; `Duration` is one.
const _: fn() = || {
    fn is_reference<T: Reference>() {}
    is_reference::<Duration>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn one() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    #[test]
    fn a_budget_refills_smoothly_and_never_doubles_at_a_boundary() {
        let clock = Arc::new(ManualClock::starting_now());
        let budgets = HourlyBudgets::new(clock.clone());
        let key = BudgetKey::Workspace(WorkspaceId::new());
        for i in 0..100u32 {
            let c = budgets.charge(&[(key, 100)], one());
            assert_eq!(c.refused, None, "request {i}");
            assert_eq!(c.budgets[0].remaining, 99 - i);
        }
        let refused = budgets.charge(&[(key, 100)], one());
        assert_eq!(refused.refused, Some(Duration::from_secs(36)));
        assert_eq!(refused.budgets[0].remaining, 0);
        // One request's worth of time gives one request back, not a new hour's worth.
        clock.advance(Duration::from_secs(36));
        assert_eq!(budgets.charge(&[(key, 100)], one()).refused, None);
        assert!(budgets.charge(&[(key, 100)], one()).refused.is_some());
        // A whole hour refills it completely, and no more.
        clock.advance(Duration::from_secs(7200));
        let c = budgets.charge(&[(key, 100)], one());
        assert_eq!(
            (c.budgets[0].remaining, c.budgets[0].reset),
            (99, Duration::from_secs(36))
        );
    }

    #[test]
    fn idle_limiters_of_old_limits_are_dropped() {
        let clock = Arc::new(ManualClock::starting_now());
        let budgets = HourlyBudgets::new(clock.clone());
        let key = BudgetKey::Workspace(WorkspaceId::new());
        for limit in 1..=(MAX_IDLE_LIMITERS as u32 + 10) {
            budgets.charge(&[(key, limit)], one());
        }
        // Two hours later every budget has refilled: the next new limit finds nothing worth keeping.
        clock.advance(Duration::from_secs(7200));
        budgets.charge(&[(key, 5_000)], one());
        let kept = budgets.limiters.lock().unwrap().len();
        assert!(kept <= 2, "{kept} limiters kept");
    }

    #[test]
    fn costs_budgets_and_keys_are_separate() {
        let clock = Arc::new(ManualClock::starting_now());
        let budgets = HourlyBudgets::new(clock);
        let (app, alice, bob) = (ApplicationId::new(), UserId::new(), UserId::new());
        let ws = BudgetKey::Workspace(WorkspaceId::new());
        let five = NonZeroU32::new(5).unwrap();
        let c = budgets.charge(&[(BudgetKey::User(app, alice), 10), (ws, 1000)], five);
        assert_eq!(
            c.budgets.iter().map(|b| b.remaining).collect::<Vec<_>>(),
            [5, 995]
        );
        assert_eq!(c.budgets[0].policy, "user-hourly");
        budgets.charge(&[(BudgetKey::User(app, alice), 10)], five);
        let refused = budgets.charge(&[(BudgetKey::User(app, alice), 10), (ws, 1000)], one());
        assert!(refused.refused.is_some());
        assert_eq!(
            refused.budgets.len(),
            1,
            "the workspace is not charged for a refused request"
        );
        assert_eq!(
            budgets.charge(&[(BudgetKey::User(app, bob), 10)], one()).refused,
            None
        );
        let too_big = budgets.charge(&[(BudgetKey::User(app, bob), 10)], NonZeroU32::new(11).unwrap());
        assert_eq!(too_big.refused, Some(WINDOW));
    }
}
