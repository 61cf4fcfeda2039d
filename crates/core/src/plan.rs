//! Workspace plans as data: a catalogue of named plans, each with its limits, read from the
//! configuration (`[plans.<name>]`). `free`, `base` and `pro` always exist with built-in limits; a
//! section for one of them overrides only the fields it names, and any other name adds a plan.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

/// The longest plan or tier name.
pub const MAX_NAME_LEN: usize = 32;

/// Whether `text` is a valid plan or tier name: 1–32 of `a-z 0-9 _ -`, starting with a letter.
pub fn is_valid_name(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A workspace plan's name (`free`, `base`, `pro`, or any catalogued name). Syntactically valid; whether
/// the catalogue holds it is the catalogue's question.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Plan(Arc<str>);

impl Plan {
    /// The free plan: where new workspaces start.
    pub fn free() -> Plan {
        Plan(Arc::from("free"))
    }

    /// The base plan.
    pub fn base() -> Plan {
        Plan(Arc::from("base"))
    }

    /// The pro plan.
    pub fn pro() -> Plan {
        Plan(Arc::from("pro"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A syntactically valid name (see [`is_valid_name`]).
    pub fn parse(text: &str) -> Option<Plan> {
        is_valid_name(text).then(|| Plan(Arc::from(text)))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The limits of one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    /// Name shown in the console (defaults to the plan's name, capitalised).
    pub display_name: String,
    /// Largest vault value in bytes; larger gets 413.
    pub max_value_bytes: u64,
    /// Concurrent active login sessions in one workspace; a new one over it gets 429.
    pub max_sessions_per_workspace: u32,
    /// Concurrent active login sessions of one user; a new one over it gets 429.
    pub max_sessions_per_user: u32,
    /// Vault keys one user may hold in one application; a new key over it gets 403 quota-exceeded.
    pub max_keys_per_user: u32,
    /// OWNERs and ADMINs of the workspace (`None`: no limit); one more gets 403 quota-exceeded.
    pub max_members: Option<u32>,
    /// Applications of the workspace (`None`: no limit); one more gets 403 quota-exceeded.
    pub max_applications: Option<u32>,
    /// Session and management API requests of the whole workspace per hour (`None`: no limit); over it
    /// 429 rate-limited. Each end user's own budget comes from their application tier.
    pub api_requests_per_hour: Option<u32>,
    /// Every user of a workspace on this plan must sign in with a second factor.
    pub require_mfa: bool,
    /// Named features the plan includes (shown in the console and the management API).
    pub features: Vec<String>,
}

/// One `[plans.<name>]` section: every field optional; a built-in plan's section overrides only the
/// fields it names, a new plan must name the four core limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanSection {
    display_name: Option<String>,
    max_value_bytes: Option<u64>,
    max_sessions_per_workspace: Option<u32>,
    max_sessions_per_user: Option<u32>,
    max_keys_per_user: Option<u32>,
    max_members: Option<u32>,
    max_applications: Option<u32>,
    api_requests_per_hour: Option<u32>,
    require_mfa: Option<bool>,
    features: Option<Vec<String>>,
}

/// The catalogue of workspace plans (configuration `[plans.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, PlanSection>")]
pub struct PlanCatalogue {
    plans: BTreeMap<Plan, Arc<PlanLimits>>,
}

/// A core limit: the section's value, else the built-in plan's; a new plan must give it.
fn required<T>(name: &str, field: &str, value: Option<T>, built: Option<T>) -> Result<T, String> {
    value
        .or(built)
        .ok_or_else(|| format!("plans.{name}.{field} is required: a new plan names its four core limits"))
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// The built-in limits of `free`, `base` and `pro`.
fn built_in() -> [(Plan, PlanLimits); 3] {
    let plan = |name: &str, value_kib: u64, workspace, user, keys, requests| PlanLimits {
        display_name: capitalised(name),
        max_value_bytes: value_kib * 1024,
        max_sessions_per_workspace: workspace,
        max_sessions_per_user: user,
        max_keys_per_user: keys,
        max_members: None,
        max_applications: None,
        api_requests_per_hour: requests,
        require_mfa: false,
        features: Vec::new(),
    };
    [
        (Plan::free(), plan("free", 64, 100, 3, 100, Some(100_000))),
        (
            Plan::base(),
            plan("base", 256, 10_000, 5, 1_000, Some(10_000_000)),
        ),
        (Plan::pro(), plan("pro", 1024, 100_000, 10, 10_000, None)),
    ]
}

impl Default for PlanCatalogue {
    fn default() -> Self {
        PlanCatalogue {
            plans: built_in()
                .into_iter()
                .map(|(plan, limits)| (plan, Arc::new(limits)))
                .collect(),
        }
    }
}

impl TryFrom<BTreeMap<String, PlanSection>> for PlanCatalogue {
    type Error = String;

    fn try_from(sections: BTreeMap<String, PlanSection>) -> Result<Self, String> {
        let mut catalogue = PlanCatalogue::default();
        for (name, s) in sections {
            let plan = Plan::parse(&name).ok_or_else(|| {
                format!("plans.{name}: a plan name is 1 to 32 of a-z, 0-9, _ and -, starting with a letter")
            })?;
            let base = catalogue.plans.get(&plan).map(|l| (**l).clone());
            let limits = PlanLimits {
                display_name: s
                    .display_name
                    .or_else(|| base.as_ref().map(|b| b.display_name.clone()))
                    .unwrap_or_else(|| capitalised(&name)),
                max_value_bytes: required(
                    &name,
                    "max_value_bytes",
                    s.max_value_bytes,
                    base.as_ref().map(|b| b.max_value_bytes),
                )?,
                max_sessions_per_workspace: required(
                    &name,
                    "max_sessions_per_workspace",
                    s.max_sessions_per_workspace,
                    base.as_ref().map(|b| b.max_sessions_per_workspace),
                )?,
                max_sessions_per_user: required(
                    &name,
                    "max_sessions_per_user",
                    s.max_sessions_per_user,
                    base.as_ref().map(|b| b.max_sessions_per_user),
                )?,
                max_keys_per_user: required(
                    &name,
                    "max_keys_per_user",
                    s.max_keys_per_user,
                    base.as_ref().map(|b| b.max_keys_per_user),
                )?,
                max_members: s.max_members.or(base.as_ref().and_then(|b| b.max_members)),
                max_applications: s
                    .max_applications
                    .or(base.as_ref().and_then(|b| b.max_applications)),
                api_requests_per_hour: s
                    .api_requests_per_hour
                    .or(base.as_ref().and_then(|b| b.api_requests_per_hour)),
                require_mfa: s
                    .require_mfa
                    .or(base.as_ref().map(|b| b.require_mfa))
                    .unwrap_or(false),
                features: s
                    .features
                    .or_else(|| base.as_ref().map(|b| b.features.clone()))
                    .unwrap_or_default(),
            };
            limits.check(&name)?;
            catalogue.plans.insert(plan, Arc::new(limits));
        }
        Ok(catalogue)
    }
}

impl PlanLimits {
    fn check(&self, name: &str) -> Result<(), String> {
        let positive = [
            ("max_value_bytes", self.max_value_bytes > 0),
            ("max_sessions_per_workspace", self.max_sessions_per_workspace > 0),
            ("max_sessions_per_user", self.max_sessions_per_user > 0),
            ("api_requests_per_hour", self.api_requests_per_hour != Some(0)),
            ("max_members", self.max_members != Some(0)),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err(format!("plans.{name}.{field} must be at least 1"));
        }
        if self.display_name.trim().is_empty() || self.display_name.chars().count() > 64 {
            return Err(format!("plans.{name}.display_name must be 1 to 64 characters"));
        }
        if let Some(f) = self.features.iter().find(|f| !is_valid_name(f)) {
            return Err(format!(
                "plans.{name}.features: `{f}` is not a feature name (a-z, 0-9, _ and -, starting with a letter)"
            ));
        }
        Ok(())
    }
}

impl PlanCatalogue {
    /// The limits of `plan`. A plan the catalogue does not hold (a workspace left on a plan since
    /// removed from the configuration; `serve` warns at start) gets the free plan's limits.
    pub fn limits(&self, plan: &Plan) -> Arc<PlanLimits> {
        self.plans
            .get(plan)
            .or_else(|| self.plans.get(&Plan::free()))
            .cloned()
            .unwrap_or_else(|| Arc::new(built_in()[0].1.clone()))
    }

    /// The catalogued plan named `name`, if there is one.
    pub fn find(&self, name: &str) -> Option<Plan> {
        let plan = Plan::parse(name)?;
        self.plans.contains_key(&plan).then_some(plan)
    }

    /// Whether the catalogue holds `plan`.
    pub fn contains(&self, plan: &Plan) -> bool {
        self.plans.contains_key(plan)
    }

    /// Every plan with its limits, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Plan, &Arc<PlanLimits>)> {
        self.plans.iter()
    }

    /// Changes the limits of a catalogued plan (tests and programmatic configuration).
    pub fn edit(&mut self, name: &str, change: impl FnOnce(&mut PlanLimits)) {
        if let Some(limits) = Plan::parse(name).and_then(|p| self.plans.get_mut(&p)) {
            change(Arc::make_mut(limits));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<PlanCatalogue, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(default)]
            plans: PlanCatalogue,
        }
        let value: serde_json::Value = serde_json::from_str(toml_text).map_err(|e| e.to_string())?;
        serde_json::from_value::<Wrapper>(value)
            .map(|w| w.plans)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn built_ins_exist_and_an_old_section_overrides_only_its_fields() {
        let c = parse(
            r#"{"plans": {"free": {"max_value_bytes": 1000, "max_sessions_per_workspace": 5,
            "max_sessions_per_user": 2, "max_keys_per_user": 7}}}"#,
        )
        .unwrap();
        let free = c.limits(&Plan::free());
        assert_eq!((free.max_value_bytes, free.max_keys_per_user), (1000, 7));
        assert_eq!(free.api_requests_per_hour, Some(100_000));
        assert_eq!(free.display_name, "Free");
        assert_eq!(c.limits(&Plan::pro()).max_value_bytes, 1024 * 1024);
        let partial = parse(r#"{"plans": {"base": {"max_keys_per_user": 9}}}"#).unwrap();
        assert_eq!(partial.limits(&Plan::base()).max_value_bytes, 256 * 1024);
        assert_eq!(partial.limits(&Plan::base()).max_keys_per_user, 9);
    }

    #[test]
    fn a_new_plan_names_its_core_limits() {
        let c = parse(
            r#"{"plans": {"team-gold": {"display_name": "Team Gold", "max_value_bytes": 2048,
            "max_sessions_per_workspace": 50, "max_sessions_per_user": 4, "max_keys_per_user": 20,
            "max_members": 25, "max_applications": 3, "api_requests_per_hour": 5000,
            "require_mfa": true, "features": ["audit_export", "sso"]}}}"#,
        )
        .unwrap();
        let gold = c.find("team-gold").unwrap();
        let l = c.limits(&gold);
        assert_eq!(l.display_name, "Team Gold");
        assert_eq!((l.max_members, l.max_applications), (Some(25), Some(3)));
        assert!(l.require_mfa);
        assert_eq!(l.features, ["audit_export", "sso"]);
        assert_eq!(c.iter().count(), 4);
        let missing = parse(r#"{"plans": {"gold": {"max_value_bytes": 1}}}"#).unwrap_err();
        assert!(
            missing.contains("plans.gold.max_sessions_per_workspace is required"),
            "{missing}"
        );
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        for (text, expected) in [
            (r#"{"plans": {"Gold": {}}}"#, "a plan name is"),
            (
                r#"{"plans": {"free": {"api_requests_per_hour": 0}}}"#,
                "api_requests_per_hour must be",
            ),
            (
                r#"{"plans": {"free": {"features": ["Bad Feature"]}}}"#,
                "not a feature name",
            ),
            (r#"{"plans": {"free": {"max_value": 1}}}"#, "unknown field"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["free", "a", "team_gold-2", "x234567890123456789012345678901"] {
            assert!(Plan::parse(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "Free",
            "1free",
            "free plan",
            "-x",
            "é",
            "x2345678901234567890123456789012x",
        ] {
            assert!(Plan::parse(bad).is_none(), "{bad}");
        }
        let c = PlanCatalogue::default();
        assert_eq!(c.find("gold"), None);
        assert_eq!(c.limits(&Plan::parse("gold").unwrap()), c.limits(&Plan::free()));
    }
}
