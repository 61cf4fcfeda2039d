use serde::Deserialize;

/// A workspace's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plan {
    /// Free tier.
    Free,
    /// Base tier.
    Base,
    /// Pro tier.
    Pro,
}

impl Plan {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Base => "base",
            Plan::Pro => "pro",
        }
    }

    /// Parses the stable lowercase name.
    pub fn parse(text: &str) -> Option<Plan> {
        match text {
            "free" => Some(Plan::Free),
            "base" => Some(Plan::Base),
            "pro" => Some(Plan::Pro),
            _ => None,
        }
    }
}

/// The limits of one plan (configuration section `[plans.<name>]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Largest vault value in bytes; larger gets 413.
    pub max_value_bytes: u64,
    /// Concurrent active login sessions in one workspace; a new one over it gets 429.
    pub max_sessions_per_workspace: u32,
    /// Concurrent active login sessions of one user; a new one over it gets 429.
    pub max_sessions_per_user: u32,
    /// Vault keys one user may hold in one application; a new key over it gets 403 quota-exceeded.
    pub max_keys_per_user: u32,
    /// Every user of a workspace on this plan must sign in with a second factor.
    #[serde(default)]
    pub require_mfa: bool,
}

/// The limits of every plan. A plan section given in configuration must list all four limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanTable {
    /// Free.
    pub free: PlanLimits,
    /// Base.
    pub base: PlanLimits,
    /// Pro.
    pub pro: PlanLimits,
}

impl PlanTable {
    /// The limits of `plan`.
    pub fn limits(&self, plan: Plan) -> PlanLimits {
        match plan {
            Plan::Free => self.free,
            Plan::Base => self.base,
            Plan::Pro => self.pro,
        }
    }
}

impl Default for PlanTable {
    fn default() -> Self {
        PlanTable {
            free: PlanLimits {
                max_value_bytes: 64 * 1024,
                max_sessions_per_workspace: 100,
                max_sessions_per_user: 3,
                max_keys_per_user: 100,
                require_mfa: false,
            },
            base: PlanLimits {
                max_value_bytes: 256 * 1024,
                max_sessions_per_workspace: 10_000,
                max_sessions_per_user: 5,
                max_keys_per_user: 1_000,
                require_mfa: false,
            },
            pro: PlanLimits {
                max_value_bytes: 1024 * 1024,
                max_sessions_per_workspace: 100_000,
                max_sessions_per_user: 10,
                max_keys_per_user: 10_000,
                require_mfa: false,
            },
        }
    }
}
