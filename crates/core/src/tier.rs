//! End-user tiers: an application may sell its own users tiers (Tuff Flips: free, solo, pro, team),
//! each with an hourly API budget and feature flags, and names the tier a new user starts on. A user's
//! tier is set through the management API, the console or a billing webhook; the server looks it up on
//! every request (cached, invalidated like revocation), so a change takes effect on the next request.

use serde::{Deserialize, Serialize};

use crate::plan::is_valid_name;
use crate::{Application, ApplicationId, FieldError, Timestamp, UserId};

/// Most tiers one application may define.
pub const MAX_TIERS: usize = 16;
/// Most features one tier may list.
pub const MAX_FEATURES: usize = 32;

/// One end-user tier of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Name (`a-z 0-9 _ -`, starting with a letter, at most 32).
    pub name: String,
    /// Session API (and decision and `limits/consume`) requests one user may make per hour in this
    /// application; `None`: no per-user limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u32>,
    /// Feature flags the tier includes.
    #[serde(default)]
    pub features: Vec<String>,
    /// Billing provider prices that put a user on this tier (Stripe price ids or lookup keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<String>,
}

/// Who put an end user on a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierSource {
    /// The management API.
    Api,
    /// The console.
    Console,
    /// A verified Stripe webhook.
    Stripe,
}

impl TierSource {
    /// Stable name (stored).
    pub fn as_str(self) -> &'static str {
        match self {
            TierSource::Api => "api",
            TierSource::Console => "console",
            TierSource::Stripe => "stripe",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "api" => Some(TierSource::Api),
            "console" => Some(TierSource::Console),
            "stripe" => Some(TierSource::Stripe),
            _ => None,
        }
    }
}

/// The tier an end user is on in one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierAssignment {
    /// The application.
    pub application: ApplicationId,
    /// The end user.
    pub user: UserId,
    /// The tier (`None`: back on the application's default tier).
    pub tier: Option<String>,
    /// Who set it.
    pub source: TierSource,
    /// The billing provider's event time, for changes made by a webhook.
    pub event_at: Option<Timestamp>,
    /// When it was set.
    pub updated_at: Timestamp,
}

/// The tiers of the Tuff Flips profile (seed 003, section 4) and its default tier.
pub fn tuff_flips() -> (Vec<Tier>, String) {
    let tier = |name: &str, per_hour: u32, features: &[&str]| Tier {
        name: name.to_owned(),
        requests_per_hour: Some(per_hour),
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        prices: Vec::new(),
    };
    (
        vec![
            tier("free", 100, &[]),
            tier("solo", 1_000, &["portfolio"]),
            tier("pro", 10_000, &["portfolio", "bulk_export"]),
            tier("team", 10_000, &["portfolio", "bulk_export", "team"]),
        ],
        "free".to_owned(),
    )
}

/// Checks an application's tiers and default tier: names valid and distinct, budgets at least 1, and
/// a default that is one of the tiers (required when there are tiers, refused when there are none).
pub fn check_tiers(tiers: &[Tier], default: Option<&str>) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut err = |field: String, message: String| errors.push(FieldError { field, message });
    if tiers.len() > MAX_TIERS {
        err("tiers".into(), format!("at most {MAX_TIERS} tiers"));
    }
    for (i, t) in tiers.iter().enumerate() {
        if !is_valid_name(&t.name) {
            err(
                format!("tiers[{i}].name"),
                "1 to 32 of a-z, 0-9, _ and -, starting with a letter".into(),
            );
        } else if tiers[..i].iter().any(|other| other.name == t.name) {
            err(
                format!("tiers[{i}].name"),
                format!("`{}` is defined twice", t.name),
            );
        }
        if t.requests_per_hour == Some(0) {
            err(
                format!("tiers[{i}].requests_per_hour"),
                "at least 1 (leave it out for no limit)".into(),
            );
        }
        if t.features.len() > MAX_FEATURES {
            err(
                format!("tiers[{i}].features"),
                format!("at most {MAX_FEATURES} features"),
            );
        }
        if t.prices.len() > 20
            || t.prices.iter().any(|p| {
                p.is_empty() || p.len() > 255 || p.chars().any(|c| c.is_control() || c.is_whitespace())
            })
        {
            err(
                format!("tiers[{i}].prices"),
                "at most 20 price ids or lookup keys, each 1 to 255 characters without spaces".into(),
            );
        }
        if let Some(p) = t
            .prices
            .iter()
            .find(|p| tiers[..i].iter().any(|other| other.prices.contains(p)))
        {
            err(
                format!("tiers[{i}].prices"),
                format!(
                    "`{}` already puts users on another tier",
                    p.chars().take(40).collect::<String>()
                ),
            );
        }
        if let Some(f) = t.features.iter().find(|f| !is_valid_name(f)) {
            err(
                format!("tiers[{i}].features"),
                format!(
                    "`{}` is not a feature name (a-z, 0-9, _ and -, starting with a letter)",
                    f.chars().take(40).collect::<String>()
                ),
            );
        }
    }
    match default {
        None if !tiers.is_empty() => err("default_tier".into(), "required when there are tiers".into()),
        Some(_) if tiers.is_empty() => err("default_tier".into(), "there are no tiers to choose from".into()),
        Some(d) if !tiers.iter().any(|t| t.name == d) => {
            err("default_tier".into(), "must be one of the tiers".into())
        }
        _ => {}
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

impl Application {
    /// The tier called `name`, if the application defines it.
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// The tier a user is on: the one assigned to them while the application still defines it, else
    /// the default tier; `None` when the application has no tiers.
    pub fn effective_tier(&self, assigned: Option<&str>) -> Option<&Tier> {
        assigned
            .and_then(|name| self.tier(name))
            .or_else(|| self.default_tier.as_deref().and_then(|d| self.tier(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tuff_flips_tiers_are_valid() {
        let (tiers, default) = tuff_flips();
        assert_eq!(check_tiers(&tiers, Some(&default)), Ok(()));
        let limits: Vec<_> = tiers.iter().map(|t| t.requests_per_hour).collect();
        assert_eq!(limits, [Some(100), Some(1_000), Some(10_000), Some(10_000)]);
    }

    #[test]
    fn bad_tiers_are_refused_field_by_field() {
        let (mut tiers, _) = tuff_flips();
        tiers[1].name = "free".into();
        tiers[2].requests_per_hour = Some(0);
        tiers[3].features = vec!["No Spaces".into()];
        let errors = check_tiers(&tiers, Some("gold")).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tiers[1].name",
                "tiers[2].requests_per_hour",
                "tiers[3].features",
                "default_tier"
            ]
        );
        assert!(check_tiers(&[], Some("free")).is_err());
        assert!(check_tiers(&tuff_flips().0, None).is_err());
        assert_eq!(check_tiers(&[], None), Ok(()));
    }
}
