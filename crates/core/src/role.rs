use std::fmt;

/// Roles, highest first: OWNER → ADMIN → USER → ANON. SUPPORT is an instance-level operator created
/// on the server only and never assigned through an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Owns the workspace.
    Owner,
    /// Administers the workspace.
    Admin,
    /// A signed-in end user.
    User,
    /// An anonymous guest session.
    Anon,
    /// Instance-level support operator (metadata and audit reads only).
    Support,
}

impl Role {
    /// The stable lowercase name used in tokens and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::User => "user",
            Role::Anon => "anon",
            Role::Support => "support",
        }
    }

    /// A member who administers the workspace (OWNER or ADMIN): what a plan's member limit counts.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// Parses the stable lowercase name exactly (no trimming, no case folding).
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            "anon" => Some(Role::Anon),
            "support" => Some(Role::Support),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
