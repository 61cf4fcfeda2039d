//! Domain records as the services see them. Sealed fields stay sealed here; only services open them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    ApplicationId, BrowserSessionId, FamilyId, FlowId, InviteId, PasskeyId, Plan, ProviderId, Role,
    SessionId, Timestamp, UserId, WorkspaceId,
};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Id.
    pub id: WorkspaceId,
    /// Display name (organisation metadata, not personal data).
    pub name: String,
    /// Plan.
    pub plan: Plan,
    /// Sign-in policy of its hosted login.
    pub login_policy: crate::login::LoginPolicy,
    /// Branding of its hosted login.
    pub branding: crate::login::Branding,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// The upstream OpenID Connect issuer an application trusts for `POST /auth/callback` with an ID token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTrust {
    /// Exact `iss` value.
    pub issuer: String,
    /// The `aud` the ID token must contain (our client id at the upstream provider).
    pub audience: String,
    /// `amr` values by which this issuer asserts a second factor (any one of them counts), e.g. `mfa`.
    pub second_factor_amr: Vec<String>,
    /// `acr` values by which this issuer asserts a second factor (any one of them counts).
    pub second_factor_acr: Vec<String>,
}

impl UpstreamTrust {
    /// Whether an ID token's `amr` or `acr` asserts a second factor, by the values this trust names.
    pub fn asserts_second_factor(&self, amr: &[String], acr: Option<&str>) -> bool {
        amr.iter().any(|m| self.second_factor_amr.contains(m))
            || acr.is_some_and(|a| self.second_factor_acr.iter().any(|c| c == a))
    }
}

/// What kind of client an application is (OAuth 2.0 client types, RFC 6749 §2.1; native apps, RFC
/// 8252).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplicationKind {
    /// A browser application (single-page app): public, PKCE, no refresh token; it renews by a
    /// top-level redirect with `prompt=none`.
    #[default]
    Browser,
    /// A native (desktop or mobile) app: public, PKCE, refresh tokens; redirects to a loopback address
    /// or a private-use scheme.
    Native,
    /// A server-side application: confidential (a client secret), refresh tokens.
    Server,
}

impl ApplicationKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationKind::Browser => "browser",
            ApplicationKind::Native => "native",
            ApplicationKind::Server => "server",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "browser" => Some(ApplicationKind::Browser),
            "native" => Some(ApplicationKind::Native),
            "server" => Some(ApplicationKind::Server),
            _ => None,
        }
    }

    /// A public client: it holds no secret.
    pub fn is_public(self) -> bool {
        self != ApplicationKind::Server
    }

    /// Whether its code exchanges get refresh tokens.
    pub fn gets_refresh_tokens(self) -> bool {
        self != ApplicationKind::Browser
    }
}

/// A registered application of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// Id; also the public client id and the audience of its session tokens.
    pub id: ApplicationId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Trusted upstream issuer, if any.
    pub trust: Option<UpstreamTrust>,
    /// Browser origins allowed to call the Session API with this application's tokens (exact strings).
    pub allowed_origins: Vec<String>,
    /// Lifetime of vault values since their last write.
    pub data_ttl: Duration,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// Browser, native or server.
    pub kind: ApplicationKind,
    /// Where the hosted login may send authorization codes (exact match).
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to (exact match).
    pub post_logout_uris: Vec<String>,
    /// Visitors may get anonymous (ANON) sessions.
    pub allow_anonymous: bool,
    /// A console client: its code exchanges give USER JWTs for the management API (with the user's
    /// own role), not SESSION JWTs.
    pub console: bool,
    /// SHA-256 of the client secret of a confidential client (the secret is shown once, never stored).
    pub secret_hash: Option<Vec<u8>>,
    /// End-user tiers the application sells (none: no per-user hourly budget).
    pub tiers: Vec<crate::Tier>,
    /// The tier a new end user starts on (one of `tiers`; required when there are tiers).
    pub default_tier: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

impl Application {
    /// A public client (browser or native app): it holds no secret.
    pub fn is_public(&self) -> bool {
        self.kind.is_public()
    }
}

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Normal.
    Active,
    /// Locked by an administrator.
    Locked,
}

impl UserStatus {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Locked => "locked",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(UserStatus::Active),
            "locked" => Some(UserStatus::Locked),
            _ => None,
        }
    }
}

/// A user of a workspace. E-mail and name are sealed under the workspace data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Role.
    pub role: Role,
    /// Token revision: every token carries it; raising it ends every login session.
    pub revision: i64,
    /// Status.
    pub status: UserStatus,
    /// Sealed e-mail address.
    pub email_sealed: Option<Vec<u8>>,
    /// Keyed hash of the normalised e-mail address (look-ups without the clear value).
    pub email_index: Option<Vec<u8>>,
    /// Sealed display name.
    pub name_sealed: Option<Vec<u8>>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// An upstream identity that signs a user in, keyed by a keyed hash of (issuer, subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdentity {
    /// Keyed hash of (issuer, subject).
    pub index: Vec<u8>,
    /// Sealed (issuer, subject), for display to administrators.
    pub sealed: Vec<u8>,
}

/// An invitation to join a workspace. The link's token is stored only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Id.
    pub id: InviteId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Sealed e-mail address.
    pub email_sealed: Vec<u8>,
    /// Keyed hash of the normalised e-mail address.
    pub email_index: Vec<u8>,
    /// The role the invitee gets.
    pub role: Role,
    /// SHA-256 of the single-use token in the link.
    pub token_hash: Vec<u8>,
    /// Who invited.
    pub invited_by: UserId,
    /// Created.
    pub created_at: Timestamp,
    /// The link stops working.
    pub expires_at: Timestamp,
    /// Revoked by an administrator.
    pub revoked_at: Option<Timestamp>,
    /// Accepted (the hosted login sets it).
    pub accepted_at: Option<Timestamp>,
}

impl Invite {
    /// `pending`, `accepted`, `revoked` or `expired` at `now`.
    pub fn state(&self, now: Timestamp) -> &'static str {
        if self.accepted_at.is_some() {
            "accepted"
        } else if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "pending"
        }
    }
}

/// An instance-level SUPPORT operator, created on the server only. The e-mail is sealed under the
/// instance's own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportOperator {
    /// Id (the `sub` of its tokens).
    pub id: UserId,
    /// Sealed e-mail address.
    pub email_sealed: Vec<u8>,
    /// Keyed hash of the normalised e-mail address.
    pub email_index: Vec<u8>,
    /// Token revision.
    pub revision: i64,
    /// Created.
    pub created_at: Timestamp,
}

/// One signed-in device or browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSession {
    /// Id (`sid`).
    pub id: SessionId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Application signed in to; `None` for a console (management) session.
    pub application_id: Option<ApplicationId>,
    /// User.
    pub user_id: UserId,
    /// The hosted-login browser session it was opened from; it ends with it.
    pub browser_session_id: Option<BrowserSessionId>,
    /// Started.
    pub created_at: Timestamp,
    /// When the session stops being active on its own (its last credential expires).
    pub expires_at: Timestamp,
    /// When it was ended by logout or revocation.
    pub ended_at: Option<Timestamp>,
}

impl LoginSession {
    /// Whether the session still counts as signed in at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.ended_at.is_none() && self.expires_at > now
    }
}

/// A validated OpenID Connect authorization request, kept while the user signs in and bound to the
/// code it ends with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The registered redirect URI the request named (exact).
    pub redirect_uri: String,
    /// The client's `state`, returned unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The client's `nonce`, put in the ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// PKCE S256 challenge (mandatory for public clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// `prompt=login`: sign in again even with a single sign-on session.
    #[serde(default)]
    pub force_login: bool,
    /// `max_age`: a single sign-on session older than this many seconds signs in again (OpenID Connect
    /// Core §3.1.2.1; 0: always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// `prompt=select_account`: a signed-in browser chooses between its account and another one.
    #[serde(default)]
    pub select_account: bool,
    /// `prompt=create`: the user starts at the sign-up page.
    #[serde(default)]
    pub create_account: bool,
    /// An anonymous visitor whose sign-up in this flow becomes their account (same user, same vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_user: Option<UserId>,
}

/// A pending authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFlow {
    /// Id (in the hosted login's URLs).
    pub id: FlowId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Client.
    pub application_id: ApplicationId,
    /// The request.
    pub request: AuthorizationRequest,
    /// Created.
    pub created_at: Timestamp,
    /// Abandoned after.
    pub expires_at: Timestamp,
}

/// A browser signed in to a workspace's hosted login. The cookie's token is stored as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSession {
    /// Id.
    pub id: BrowserSessionId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// User.
    pub user_id: UserId,
    /// SHA-256 of the cookie's token.
    pub token_hash: Vec<u8>,
    /// The user's token revision at sign-in.
    pub revision: i64,
    /// When the user last authenticated.
    pub auth_time: Timestamp,
    /// Authentication methods (RFC 8176 names).
    pub amr: Vec<String>,
    /// Sealed device and client address.
    pub client_sealed: Option<Vec<u8>>,
    /// Started.
    pub created_at: Timestamp,
    /// Last used.
    pub last_seen_at: Timestamp,
    /// Ends on its own.
    pub expires_at: Timestamp,
    /// Ended by sign-out.
    pub ended_at: Option<Timestamp>,
}

/// A browser's session in the console of one workspace. The browser's cookie holds a random secret;
/// the store holds its SHA-256 and the member's USER JWT and refresh token sealed under the workspace
/// data key, so the tokens never reach the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// SHA-256 of the cookie's secret.
    pub session_hash: Vec<u8>,
    /// The signed-in member.
    pub user_id: UserId,
    /// The tokens, sealed.
    pub tokens_sealed: Vec<u8>,
    /// Signed in.
    pub created_at: Timestamp,
    /// Ends on its own.
    pub expires_at: Timestamp,
}

/// An authorization code, stored as its SHA-256, single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    /// SHA-256 of the code.
    pub code_hash: Vec<u8>,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Client.
    pub application_id: ApplicationId,
    /// User.
    pub user_id: UserId,
    /// The browser session that asked.
    pub browser_session_id: BrowserSessionId,
    /// The authorization request.
    pub request: AuthorizationRequest,
    /// When the user authenticated.
    pub auth_time: Timestamp,
    /// How.
    pub amr: Vec<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Expires (about a minute later).
    pub expires_at: Timestamp,
}

/// A refresh token, stored as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Family (one code exchange and every rotation after it).
    pub family_id: FamilyId,
    /// Client.
    pub application_id: ApplicationId,
    /// User.
    pub user_id: UserId,
    /// The login session it keeps alive.
    pub login_session_id: SessionId,
    /// Granted scopes.
    pub scope: String,
    /// When the user authenticated.
    pub auth_time: Timestamp,
    /// How.
    pub amr: Vec<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Expires.
    pub expires_at: Timestamp,
    /// Exchanged for its successor.
    pub rotated_at: Option<Timestamp>,
    /// Revoked (with its family).
    pub revoked_at: Option<Timestamp>,
}

/// What an e-mailed link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Sign in without a password.
    Magic,
    /// Confirm the e-mail address.
    Verify,
    /// Choose a new password.
    Reset,
    /// A pending second-factor step (held in a cookie, not mailed).
    Mfa,
    /// Lets an anonymous visitor's sign-up become that visitor's account (held by the application).
    Upgrade,
}

impl LinkPurpose {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Magic => "magic",
            LinkPurpose::Verify => "verify",
            LinkPurpose::Reset => "reset",
            LinkPurpose::Mfa => "mfa",
            LinkPurpose::Upgrade => "upgrade",
        }
    }
}

/// A single-use e-mailed link, stored as the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLink {
    /// SHA-256 of the token.
    pub link_hash: Vec<u8>,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// What it is for.
    pub purpose: LinkPurpose,
    /// Whose it is.
    pub user_id: UserId,
    /// The authorization request it continues (magic links, second-factor steps).
    pub flow_id: Option<FlowId>,
    /// The first factor's methods (second-factor steps).
    pub amr: Vec<String>,
    /// The user's token revision when the link was made: a link that signs in stops working when it
    /// moves (password change or reset, sign-out everywhere, lock).
    pub revision: Option<i64>,
    /// SHA-256 of the browser id (`sf_device`) of the browser that asked for a magic link: only that
    /// browser continues the link's authorization request.
    pub browser: Option<Vec<u8>>,
    /// Sent.
    pub created_at: Timestamp,
    /// Stops working.
    pub expires_at: Timestamp,
}

/// What kind of upstream identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Google (issuer `https://accounts.google.com`).
    Google,
    /// Any OpenID Connect issuer.
    Oidc,
}

impl ProviderKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Google => "google",
            ProviderKind::Oidc => "oidc",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "google" => Some(ProviderKind::Google),
            "oidc" => Some(ProviderKind::Oidc),
            _ => None,
        }
    }
}

/// An upstream OpenID Connect provider that a workspace's users can sign in with on the hosted pages
/// (authorization code with PKCE). The client secret is sealed under the workspace data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProvider {
    /// Id.
    pub id: ProviderId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Kind.
    pub kind: ProviderKind,
    /// The name on the sign-in button.
    pub name: String,
    /// The issuer (its discovery document is `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret at the provider, sealed; `None` for a public client (PKCE only).
    pub client_secret_sealed: Option<Vec<u8>>,
    /// Added.
    pub created_at: Timestamp,
}

/// A registered passkey. The credential (public key, signature counter) is sealed under the workspace
/// data key; the SHA-256 of its credential id finds it and keeps one credential on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// Id.
    pub id: PasskeyId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Whose it is.
    pub user_id: UserId,
    /// SHA-256 of the WebAuthn credential id.
    pub credential_hash: Vec<u8>,
    /// The credential and its name, sealed.
    pub sealed: Vec<u8>,
    /// Registered.
    pub created_at: Timestamp,
    /// Last used to sign in.
    pub last_used_at: Option<Timestamp>,
}

/// What a WebAuthn ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a passkey from the account page.
    Register,
    /// Signing in with a passkey alone (a discoverable credential).
    SignIn,
    /// A passkey as the second factor of a pending sign-in.
    SecondFactor,
    /// A sign-up waiting for its mailed link (verification-first sign-up).
    SignUp,
}

impl CeremonyPurpose {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyPurpose::Register => "register",
            CeremonyPurpose::SignIn => "sign_in",
            CeremonyPurpose::SecondFactor => "second_factor",
            CeremonyPurpose::SignUp => "sign_up",
        }
    }
}

/// A WebAuthn ceremony in progress: the server-side state that pairs the challenge sent to the browser
/// with the answer, sealed, single-use and short-lived. Found by the SHA-256 of a random token held in a
/// cookie (or, for a pending sign-up, mailed in a link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnCeremony {
    /// SHA-256 of the cookie's token.
    pub ceremony_hash: Vec<u8>,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// The user, when known before the answer (registration, second factor).
    pub user_id: Option<UserId>,
    /// What for.
    pub purpose: CeremonyPurpose,
    /// The ceremony state, sealed.
    pub state_sealed: Vec<u8>,
    /// Started.
    pub created_at: Timestamp,
    /// Stops working.
    pub expires_at: Timestamp,
}

/// A user's TOTP enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrolment {
    /// The secret, sealed under the workspace data key.
    pub secret_sealed: Vec<u8>,
    /// When this secret was made.
    pub created_at: Timestamp,
    /// Confirmed (MFA on) since.
    pub confirmed_at: Option<Timestamp>,
    /// The last step accepted.
    pub last_step: i64,
}

/// A change that other nodes must drop from their caches. Written in the same transaction as the
/// change; PostgreSQL also sends a NOTIFY so nodes learn of it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// Workspace metadata or plan changed, or the workspace was deleted.
    Workspace(WorkspaceId),
    /// An application was created, changed or deleted.
    Application(ApplicationId),
    /// A user's revision, role or status changed.
    User(WorkspaceId, UserId),
    /// A login session ended.
    Session(WorkspaceId, SessionId),
    /// A SUPPORT operator was removed or its revision raised.
    Support(UserId),
    /// A workspace's keys were rotated or destroyed.
    Keys(WorkspaceId),
    /// The instance's signing keys changed.
    SigningKeys,
}

impl Invalidation {
    /// Stable kind name (stored).
    pub fn kind(&self) -> &'static str {
        match self {
            Invalidation::Workspace(_) => "workspace",
            Invalidation::Application(_) => "application",
            Invalidation::User(..) => "user",
            Invalidation::Session(..) => "session",
            Invalidation::Keys(_) => "keys",
            Invalidation::SigningKeys => "signing_keys",
            Invalidation::Support(_) => "support",
        }
    }

    /// The subject as stored: `workspace[/id]`.
    pub fn subject(&self) -> String {
        match self {
            Invalidation::Workspace(w) | Invalidation::Keys(w) => w.to_string(),
            Invalidation::Application(a) => a.to_string(),
            Invalidation::Support(u) => u.to_string(),
            Invalidation::User(w, u) => format!("{w}/{u}"),
            Invalidation::Session(w, s) => format!("{w}/{s}"),
            Invalidation::SigningKeys => String::new(),
        }
    }

    /// Parses what [`Invalidation::kind`] and [`Invalidation::subject`] stored.
    pub fn parse(kind: &str, subject: &str) -> Option<Invalidation> {
        let pair = || {
            let (a, b) = subject.split_once('/')?;
            Some((a.parse().ok()?, b))
        };
        Some(match kind {
            "workspace" => Invalidation::Workspace(subject.parse().ok()?),
            "keys" => Invalidation::Keys(subject.parse().ok()?),
            "application" => Invalidation::Application(subject.parse().ok()?),
            "support" => Invalidation::Support(subject.parse().ok()?),
            "user" => {
                let (w, u) = pair()?;
                Invalidation::User(w, u.parse().ok()?)
            }
            "session" => {
                let (w, s) = pair()?;
                Invalidation::Session(w, s.parse().ok()?)
            }
            "signing_keys" => Invalidation::SigningKeys,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip() {
        let w = WorkspaceId::new();
        for inv in [
            Invalidation::Workspace(w),
            Invalidation::Keys(w),
            Invalidation::Application(ApplicationId::new()),
            Invalidation::User(w, UserId::new()),
            Invalidation::Session(w, SessionId::new()),
            Invalidation::SigningKeys,
            Invalidation::Support(UserId::new()),
        ] {
            assert_eq!(Invalidation::parse(inv.kind(), &inv.subject()), Some(inv));
        }
        assert_eq!(Invalidation::parse("user", "nonsense"), None);
    }
}
