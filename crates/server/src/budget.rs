//! The hourly budgets on the wire: the extractors charge a call to its budgets and leave the outcome
//! in a slot; this middleware turns it into the `RateLimit-Policy` and `RateLimit` header fields of
//! draft-ietf-httpapi-ratelimit-headers-10 (structured fields: `"user-hourly";q=100;w=3600` and
//! `"user-hourly";r=42;t=1800`), on successes and refusals alike. A refusal is a 429 `rate-limited`
//! problem with `Retry-After`.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use secureflows_core::rate::{Charge, WINDOW};
use secureflows_core::{Error, LimitKind};

use crate::problem::Problem;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Where an extractor leaves what charging the call to its budgets gave.
#[derive(Debug, Clone, Default)]
pub struct ChargeSlot(Arc<Mutex<Option<Charge>>>);

impl ChargeSlot {
    /// Records the charge; a refusal becomes the 429 the caller returns.
    pub fn record(slot: Option<&ChargeSlot>, charge: Charge) -> Result<Charge, Problem> {
        if let Some(slot) = slot {
            *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(charge.clone());
        }
        match charge.refused {
            Some(retry_after) => Err(Error::Limited {
                kind: LimitKind::Budget,
                retry_after,
            }
            .into()),
            None => Ok(charge),
        }
    }

    fn take(&self) -> Option<Charge> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Writes the header fields for `charge` (nothing when no budget applied).
pub fn write_headers(charge: &Charge, headers: &mut HeaderMap) {
    if charge.budgets.is_empty() {
        return;
    }
    let join = |f: &dyn Fn(&secureflows_core::rate::Budget) -> String| {
        charge.budgets.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let policy = join(&|b| format!("\"{}\";q={};w={}", b.policy, b.limit, WINDOW.as_secs()));
    let current = join(&|b| {
        format!(
            "\"{}\";r={};t={}",
            b.policy,
            b.remaining,
            b.reset.as_nanos().div_ceil(1_000_000_000)
        )
    });
    for (name, value) in [(&RATELIMIT_POLICY, policy), (&RATELIMIT, current)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name.clone(), v);
        }
    }
}

/// Gives the call a charge slot and writes what was charged into the answer.
pub async fn rate_headers(mut req: Request, next: Next) -> Response {
    let slot = ChargeSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    if let Some(charge) = slot.take() {
        write_headers(&charge, response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secureflows_core::rate::Budget;

    use super::*;

    #[test]
    fn both_budgets_are_listed_in_order() {
        let charge = Charge {
            budgets: vec![
                Budget {
                    policy: "user-hourly",
                    limit: 100,
                    remaining: 42,
                    reset: Duration::from_millis(2_088_500),
                },
                Budget {
                    policy: "workspace-hourly",
                    limit: 100_000,
                    remaining: 99_000,
                    reset: Duration::from_secs(36),
                },
            ],
            refused: None,
        };
        let mut headers = HeaderMap::new();
        write_headers(&charge, &mut headers);
        assert_eq!(
            headers["ratelimit-policy"],
            "\"user-hourly\";q=100;w=3600, \"workspace-hourly\";q=100000;w=3600"
        );
        assert_eq!(
            headers["ratelimit"],
            "\"user-hourly\";r=42;t=2089, \"workspace-hourly\";r=99000;t=36"
        );
        let mut none = HeaderMap::new();
        write_headers(&Charge::default(), &mut none);
        assert!(none.is_empty());
    }
}
