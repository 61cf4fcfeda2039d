//! The hosted login: secureFlows as the identity provider of a workspace's applications.
//!
//! * [`password`]: hashing (Argon2id, imported bcrypt) and the workspace's password policy;
//! * [`breached`]: the breached-password check (k-anonymity range API or an offline file);
//! * [`hosted`]: sign-up, sign-in with throttling and lockout, the browser (single sign-on) session;
//! * [`oidc`]: the OpenID Connect provider: authorization requests, codes, tokens, refresh rotation with
//!   reuse detection, revocation, introspection, user info and logout;
//! * [`oauth`]: errors in the OAuth 2.0 format (RFC 6749 §4.1.2.1 and §5.2).
//! * [`federation`]: signing in with an upstream OpenID Connect provider (Google or any issuer);
//! * [`mfa`]: TOTP and recovery codes; [`passkey`]: WebAuthn passkeys, alone or as a second factor.
//!
//! Every workspace is its own issuer, `{public_url}/w/{workspace}`.

pub mod account;
pub mod anonymous;
pub mod breached;
pub mod federation;
pub mod hosted;
pub mod invites;
pub mod links;
pub mod mfa;
pub mod oauth;
pub mod oidc;
pub mod passkey;
pub mod password;
pub mod signup;

use std::time::Duration;

use crate::WorkspaceId;
use crate::login::password::PasswordPolicy;

/// Who must sign in with a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MfaRequirement {
    /// Nobody (users may turn it on).
    #[default]
    Off,
    /// OWNERs and ADMINs.
    Admins,
    /// Everyone.
    All,
}

impl MfaRequirement {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaRequirement::Off => "off",
            MfaRequirement::Admins => "admins",
            MfaRequirement::All => "all",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(MfaRequirement::Off),
            "admins" => Some(MfaRequirement::Admins),
            "all" => Some(MfaRequirement::All),
            _ => None,
        }
    }
}

/// A workspace's hosted-login branding (besides its name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Branding {
    /// Accent colour, `#rrggbb`.
    pub color: Option<String>,
    /// Logo, an absolute https URL.
    pub logo_url: Option<String>,
}

impl Branding {
    /// Field errors for anything but `#rrggbb` and an https URL without credentials (at most 2,000
    /// characters).
    pub fn validate(&self) -> Vec<crate::FieldError> {
        let mut errors = Vec::new();
        if let Some(color) = &self.color {
            let hex = color.strip_prefix('#').unwrap_or_default();
            if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(crate::FieldError {
                    field: "branding.color".into(),
                    message: "must be a colour like #2457c5".into(),
                });
            }
        }
        if let Some(logo) = &self.logo_url {
            let ok = logo.len() <= 2000
                && url::Url::parse(logo).is_ok_and(|u| {
                    u.scheme() == "https" && u.username().is_empty() && u.password().is_none()
                });
            if !ok {
                errors.push(crate::FieldError {
                    field: "branding.logo_url".into(),
                    message: "must be an https URL".into(),
                });
            }
        }
        errors
    }
}

/// How sign-up works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignupMode {
    /// The account is made at once and the browser signed in; a taken address is said to be taken.
    #[default]
    Immediate,
    /// The account is made only from a link mailed to the address (when SMTP is configured): every
    /// sign-up answers "check your e-mail", so the page never tells whether an address has an account.
    VerifyFirst,
}

impl SignupMode {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            SignupMode::Immediate => "immediate",
            SignupMode::VerifyFirst => "verify_first",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "immediate" => Some(SignupMode::Immediate),
            "verify_first" => Some(SignupMode::VerifyFirst),
            _ => None,
        }
    }
}

/// A workspace's sign-in policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginPolicy {
    /// Password rules.
    pub password: PasswordPolicy,
    /// Who must use a second factor (a plan may require it of everyone too).
    pub mfa: MfaRequirement,
    /// How sign-up works.
    pub signup: SignupMode,
}

/// Hosted-login settings (configuration).
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// Failed sign-ins before the account is locked.
    pub max_failures: u32,
    /// How long a lockout lasts (an administrator can end it earlier).
    pub lockout: Duration,
    /// How long a pending authorization request waits for the user.
    pub flow_ttl: Duration,
    /// Lifetime of an authorization code.
    pub code_ttl: Duration,
    /// Lifetime of the single sign-on session of a browser.
    pub browser_session_ttl: Duration,
    /// Lifetime of a refresh token (each rotation starts a new one).
    pub refresh_ttl: Duration,
    /// A rotated refresh token hands out its successor this long (two tabs refreshing at once); after
    /// that, using it again revokes its whole family.
    pub refresh_grace: Duration,
    /// A failed password sign-in is answered no sooner than this after it began.
    pub failure_floor: Duration,
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings {
            max_failures: 10,
            lockout: Duration::from_secs(15 * 60),
            flow_ttl: Duration::from_secs(30 * 60),
            code_ttl: Duration::from_secs(60),
            browser_session_ttl: Duration::from_secs(7 * 24 * 3600),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            refresh_grace: Duration::from_secs(10),
            failure_floor: Duration::from_millis(300),
        }
    }
}

/// A workspace's issuer URL: `{instance}/w/{workspace}`. Its discovery document is at
/// `{issuer}/.well-known/openid-configuration`.
pub fn workspace_issuer(instance: &str, workspace: WorkspaceId) -> String {
    format!("{}/w/{workspace}", instance.trim_end_matches('/'))
}

/// Opaque credentials name their workspace so that they can be looked up under its row-level
/// security: `{prefix}{workspace, 32 hex}_{256 random bits}`.
pub(crate) fn new_credential(prefix: &str, workspace: WorkspaceId) -> crate::Result<String> {
    Ok(secureflows_crypto::random_token(&format!(
        "{prefix}{}_",
        workspace.as_uuid().simple()
    ))?)
}

/// The workspace a credential made by [`new_credential`] names, if it has that shape.
pub(crate) fn credential_workspace(prefix: &str, credential: &str) -> Option<WorkspaceId> {
    let rest = credential.strip_prefix(prefix)?;
    let (ws, random) = rest.split_once('_')?;
    if ws.len() != 32 || random.len() != 43 {
        return None;
    }
    uuid::Uuid::try_parse(ws).ok().map(WorkspaceId::from_uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_name_their_workspace() {
        let ws = WorkspaceId::new();
        let code = new_credential("sfc_", ws).unwrap();
        assert_eq!(credential_workspace("sfc_", &code), Some(ws));
        assert_eq!(credential_workspace("sfr_", &code), None);
        assert_eq!(credential_workspace("sfc_", "sfc_nothex_x"), None);
        assert_eq!(
            workspace_issuer("https://id.example.com/", ws),
            format!("https://id.example.com/w/{ws}")
        );
    }
}
