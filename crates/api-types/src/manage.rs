//! Bodies of the management API (`/api/v1`, USER JWT). Lists page with opaque cursors: pass a
//! response's `next_cursor` as `cursor` to get the next page; it is absent on the last page.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// `null` in a PATCH body removes a setting; an absent field leaves it as it is. A present value must
/// be a JSON object (see [`object`]).
fn double_option<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    object(d).map(Some)
}

/// `null` in a PATCH body clears a plain (non-object) setting; an absent field leaves it as it is.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A nested object field: `null` or absent is `None`, an object is the value, anything else is
/// refused. serde would otherwise accept a struct written as a JSON array (`[..]` in field order),
/// which no client means.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    struct ObjectOnly<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }

        // The members are read in place, so that an error names its path (`branding.color`).
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_option(ObjectOnly(std::marker::PhantomData))
}

/// A role that can be given to a member (ANON comes from guest sessions, SUPPORT from the server only).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantableRole {
    /// Owns the workspace (only an OWNER gives this).
    Owner,
    /// Administers the workspace.
    Admin,
    /// A member without management rights.
    User,
}

impl GrantableRole {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantableRole::Owner => "owner",
            GrantableRole::Admin => "admin",
            GrantableRole::User => "user",
        }
    }
}

/// A console token (USER JWT).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ConsoleToken {
    /// The USER JWT; send it as `Authorization: Bearer …` to the management API.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    pub token_type: String,
}

/// A workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Workspace {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The plan: a name of the instance's plan catalogue (`free`, `base`, `pro` by default).
    pub plan: String,
    /// The hosted login's sign-in policy.
    pub login_policy: LoginPolicy,
    /// The hosted login's branding.
    pub branding: Branding,
    /// Created (RFC 3339, UTC).
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
}

/// `POST /api/v1/workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Display name, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

/// A new workspace and a console token for its first OWNER (the caller's e-mail).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CreatedWorkspace {
    /// The workspace.
    pub workspace: Workspace,
    /// A console token for the new workspace.
    pub owner_token: ConsoleToken,
}

/// `PATCH /api/v1/workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspace {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// New sign-in policy (OWNER only).
    #[serde(default, deserialize_with = "object", skip_serializing_if = "Option::is_none")]
    pub login_policy: Option<LoginPolicy>,
    /// New branding of the hosted login (replaces it).
    #[serde(default, deserialize_with = "object", skip_serializing_if = "Option::is_none")]
    pub branding: Option<Branding>,
}

/// The hosted login's branding besides the workspace name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    /// Accent colour, `#rrggbb`.
    #[serde(default)]
    #[schema(pattern = "^#[0-9a-fA-F]{6}$")]
    pub color: Option<String>,
    /// Logo: an absolute https URL.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub logo_url: Option<String>,
}

/// A workspace's sign-in policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginPolicy {
    /// `nist` (NIST SP 800-63B: 8+ characters, no composition rules, not breached) or `strict` (12+
    /// with upper, lower, digit and symbol, at most 72 bytes, not breached).
    pub password_policy: PasswordPolicyName,
    /// Who must sign in with a second factor: `off`, `admins` (OWNER and ADMIN) or `all`.
    pub mfa_required: MfaRequired,
    /// Sign-up: `immediate` (the default: signed in at once; a taken address is said to be taken) or
    /// `verify_first` (the account is made from a link mailed to the address, so sign-up never tells
    /// whether an address has an account; needs SMTP, otherwise sign-up stays immediate).
    #[serde(default)]
    pub signup: Option<SignupModeName>,
}

/// Sign-up modes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignupModeName {
    /// Signed in at once.
    Immediate,
    /// From a mailed link.
    VerifyFirst,
}

/// Password policy names.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PasswordPolicyName {
    /// NIST SP 800-63B.
    Nist,
    /// The strict (Tuff Flips) profile.
    Strict,
}

/// Second-factor requirements.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MfaRequired {
    /// Nobody must (anyone may).
    Off,
    /// OWNERs and ADMINs.
    Admins,
    /// Everyone.
    All,
}

/// An upstream OpenID Connect issuer whose ID tokens an application accepts at `POST /auth/callback`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// Exact `iss`: an absolute http(s) URL without query, fragment or credentials.
    #[schema(max_length = 2048)]
    pub issuer: String,
    /// The `aud` the ID token must contain.
    #[schema(min_length = 1, max_length = 255)]
    pub audience: String,
    /// `amr` values by which this issuer asserts a second factor (any one counts). A user with a second
    /// factor, or whom the workspace requires to have one, is signed in by an ID token only when it
    /// carries one of these (or an `acr` below); otherwise the exchange answers 403
    /// `second-factor-required`.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub second_factor_amr: Vec<String>,
    /// `acr` values by which this issuer asserts a second factor (any one counts).
    #[serde(default)]
    #[schema(max_items = 20)]
    pub second_factor_acr: Vec<String>,
}

/// What kind of client an application is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationKind {
    /// A browser application: public, PKCE, no refresh token (it renews with `prompt=none`).
    Browser,
    /// A native app: public, PKCE, refresh tokens; loopback or private-use-scheme redirect URIs.
    Native,
    /// A server-side application: confidential (a client secret), refresh tokens.
    Server,
}

/// A registered application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Application {
    /// Id; also its `client_id` and the audience of its session tokens.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Browser, native or server.
    pub kind: ApplicationKind,
    /// A public client (kind browser or native) has no secret.
    pub public: bool,
    /// Browser origins allowed to call the Session API.
    pub allowed_origins: Vec<String>,
    /// Where the hosted login may send authorization codes (exact match).
    pub redirect_uris: Vec<String>,
    /// Where sign-out may return to (exact match).
    pub post_logout_uris: Vec<String>,
    /// Visitors may get anonymous (ANON) sessions.
    pub allow_anonymous: bool,
    /// A console client (USER JWTs for the management API).
    pub console: bool,
    /// Trusted upstream issuer.
    pub trust: Option<Trust>,
    /// Lifetime of vault values since their last write, seconds.
    pub session_ttl: u64,
    /// Lifetime of session tokens, seconds.
    pub token_ttl: u64,
    /// End-user tiers the application sells (empty: no per-user hourly budget).
    pub tiers: Vec<Tier>,
    /// The tier a new end user starts on.
    pub default_tier: Option<String>,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
}

/// One end-user tier of an application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Name: 1 to 32 of `a-z 0-9 _ -`, starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,31}$")]
    pub name: String,
    /// Stripe price ids or lookup keys that put a subscriber on this tier (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 20)]
    pub prices: Vec<String>,
    /// Session API requests (with decisions and `limits/consume`) one user may make per hour in this
    /// application; absent: no per-user limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub requests_per_hour: Option<u32>,
    /// Feature flags the tier includes.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub features: Vec<String>,
}

/// The tier an end user is on in one application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct UserTier {
    /// The application.
    pub application: String,
    /// The user.
    pub user: String,
    /// The tier the user is on (absent when the application has no tiers).
    pub tier: Option<Tier>,
    /// Whether that is the application's default tier (nothing assigned, or the assigned tier was
    /// removed from the application).
    pub is_default: bool,
    /// Who set the stored assignment: `api`, `console` or `stripe`.
    pub source: Option<String>,
    /// When it was set (RFC 3339).
    pub updated_at: Option<String>,
}

/// `PUT /api/v1/applications/{id}/billing/stripe`: the Stripe endpoint's signing secret (write only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripeSecret {
    /// The endpoint's signing secret (`whsec_…`); stored sealed, never shown again.
    #[schema(min_length = 16, max_length = 256)]
    pub webhook_secret: String,
}

/// `PUT /api/v1/applications/{id}/users/{user_id}/tier`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUserTier {
    /// One of the application's tiers; `null` puts the user back on the default tier.
    pub tier: Option<String>,
}

/// `POST /api/v1/applications`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    /// Display name.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Browser, native or server. Unset: chosen by `public` — a confidential client is `server`, a public
    /// one `native` when all its redirect URIs are loopback or private-use-scheme ones, else `browser`.
    #[serde(default)]
    pub kind: Option<ApplicationKind>,
    /// Without `kind`: a public client (browser or native app) gets no secret.
    #[serde(default)]
    pub public: bool,
    /// Browser origins, exactly `scheme://host[:port]` (lowercase, no path, no default port).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub allowed_origins: Vec<String>,
    /// Redirect URIs for the hosted login (exact; https, http on loopback, or a native app's
    /// private-use scheme).
    #[serde(default)]
    #[schema(max_items = 20)]
    pub redirect_uris: Vec<String>,
    /// Where sign-out may return to (exact).
    #[serde(default)]
    #[schema(max_items = 20)]
    pub post_logout_uris: Vec<String>,
    /// Visitors may get anonymous (ANON) sessions (`POST /auth/anonymous`), upgraded in place on sign-up.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// A console client: the hosted login's code exchange gives the signed-in member a USER JWT for
    /// this management API (with their own role) instead of a SESSION JWT.
    #[serde(default)]
    pub console: bool,
    /// Trusted upstream issuer.
    #[serde(default, deserialize_with = "object")]
    pub trust: Option<Trust>,
    /// Vault value lifetime, seconds (default 86400).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 31536000)]
    pub session_ttl: Option<u64>,
    /// Session token lifetime, seconds (default 900; at most the server's `tokens.max_ttl_secs`).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 86400)]
    pub token_ttl: Option<u64>,
    /// End-user tiers (at most 16).
    #[serde(default)]
    #[schema(max_items = 16)]
    pub tiers: Vec<Tier>,
    /// The tier a new end user starts on; required when there are tiers.
    #[serde(default)]
    pub default_tier: Option<String>,
}

/// A new application; `client_secret` is shown here once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CreatedApplication {
    /// The application.
    pub application: Application,
    /// The client secret of a confidential application.
    pub client_secret: Option<String>,
}

/// `PATCH /api/v1/applications/{id}`: absent fields stay as they are; `"trust": null` removes the
/// trusted issuer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateApplication {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Browser origins (replaces the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub allowed_origins: Option<Vec<String>>,
    /// Redirect URIs (replaces the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub redirect_uris: Option<Vec<String>>,
    /// Post-logout redirect URIs (replaces the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub post_logout_uris: Option<Vec<String>>,
    /// Anonymous sessions allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Trusted upstream issuer; `null` removes it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Trust>)]
    pub trust: Option<Option<Trust>>,
    /// Vault value lifetime, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 31536000)]
    pub session_ttl: Option<u64>,
    /// Session token lifetime, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 86400)]
    pub token_ttl: Option<u64>,
    /// End-user tiers (replaces them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 16)]
    pub tiers: Option<Vec<Tier>>,
    /// The default tier; `null` only when there are no tiers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub default_tier: Option<Option<String>>,
}

/// A new client secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ClientSecret {
    /// The secret.
    pub client_secret: String,
}

/// A page of applications.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ApplicationList {
    /// Applications, oldest first.
    pub items: Vec<Application>,
    /// Cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A member of the workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct User {
    /// Id.
    pub id: String,
    /// E-mail address, when known.
    pub email: Option<String>,
    /// `owner`, `admin`, `user` or `anon`.
    pub role: String,
    /// `active` or `locked`.
    pub status: String,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
}

/// A page of users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct UserList {
    /// Users, oldest first.
    pub items: Vec<User>,
    /// Cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `PUT /api/v1/users/{id}/role`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    /// `owner` (only an OWNER may give it), `admin` or `user`.
    pub role: GrantableRole,
}

/// One vault value of a user, as an administrator sees it (metadata).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct UserValue {
    /// The application the value belongs to.
    pub application_id: String,
    /// Key name.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// First written.
    pub created_at: String,
    /// Last written.
    pub updated_at: String,
    /// Expires unless written again.
    pub expires_at: String,
}

/// `GET /api/v1/users/{id}/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct UserValueList {
    /// Values, by application and key.
    pub items: Vec<UserValue>,
}

/// `POST /api/v1/invites`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// Who is invited.
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: String,
    /// `owner` (OWNER only), `admin` or `user`.
    pub role: GrantableRole,
    /// Seconds until the link stops working (default 604800).
    #[serde(default)]
    #[schema(minimum = 300, maximum = 2592000)]
    pub expires_in: Option<u64>,
}

/// An invitation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Invite {
    /// Id.
    pub id: String,
    /// Who is invited.
    pub email: String,
    /// Role on acceptance.
    pub role: String,
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub state: String,
    /// Who invited.
    pub invited_by: String,
    /// Created.
    pub created_at: String,
    /// The link stops working.
    pub expires_at: String,
}

/// A new invitation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CreatedInvite {
    /// The invitation.
    pub invite: Invite,
    /// `sent` (e-mailed), `disabled` (no mail server configured) or `failed` (the mail server refused).
    pub delivery: String,
    /// The single-use link, only when it was not e-mailed: share it with the invitee yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_url: Option<String>,
}

/// A page of invitations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct InviteList {
    /// Invitations, oldest first.
    pub items: Vec<Invite>,
    /// Cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Who acted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AuditActor {
    /// `user`, `end_user`, `support`, `operator` or `system`.
    pub kind: String,
    /// User or SUPPORT operator id.
    pub id: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AuditResource {
    /// Type, e.g. `application`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Id.
    pub id: String,
}

/// One audit event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AuditEvent {
    /// Position in the workspace's hash chain.
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// When.
    pub at: String,
    /// Who.
    pub actor: AuditActor,
    /// What, e.g. `user.role.change`.
    pub action: String,
    /// On what.
    pub resource: AuditResource,
    /// Value before (secrets redacted).
    pub old: Option<serde_json::Value>,
    /// Value after (secrets redacted).
    pub new: Option<serde_json::Value>,
    /// Client address.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// The event's chained hash (hex).
    pub hash: String,
}

/// A page of audit events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AuditEventList {
    /// Events, newest first.
    pub items: Vec<AuditEvent>,
    /// Cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One API-access log record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ApiAccess {
    /// When.
    pub at: String,
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Vault key name, when the route names one.
    pub key: Option<String>,
    /// Response status.
    pub status: u16,
    /// Application.
    pub application_id: Option<String>,
    /// User.
    pub user_id: Option<String>,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Client address.
    pub client_ip: String,
    /// User agent.
    pub user_agent: String,
    /// Request id.
    pub request_id: String,
    /// Server time, microseconds.
    pub duration_us: u64,
}

/// A page of API-access records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ApiAccessList {
    /// Records, newest first.
    pub items: Vec<ApiAccess>,
    /// Cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The kind of an upstream identity provider.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Google (issuer `https://accounts.google.com`).
    Google,
    /// Any OpenID Connect issuer.
    Oidc,
}

/// `POST /api/v1/identity-providers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentityProvider {
    /// `google` or `oidc`.
    pub kind: ProviderKind,
    /// The name on the sign-in button (default: "Google", or the issuer's host).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// The issuer URL (required for `oidc`; `https://accounts.google.com` for `google`).
    #[serde(default)]
    #[schema(max_length = 512)]
    pub issuer: Option<String>,
    /// Our client id at the provider.
    #[schema(min_length = 1, max_length = 255)]
    pub client_id: String,
    /// Our client secret at the provider (stored sealed, never shown again); omit for a public client.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024)]
    pub client_secret: Option<String>,
}

/// An upstream identity provider of the hosted login.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct IdentityProvider {
    /// Id.
    pub id: String,
    /// `google` or `oidc`.
    pub kind: ProviderKind,
    /// The name on the sign-in button.
    pub name: String,
    /// The issuer.
    pub issuer: String,
    /// Our client id at the provider.
    pub client_id: String,
    /// Whether a client secret is stored.
    pub confidential: bool,
    /// The redirect URI to register at the provider.
    pub redirect_uri: String,
    /// When it was added.
    pub created_at: String,
}

/// The workspace's identity providers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct IdentityProviderList {
    /// Providers, oldest first.
    pub items: Vec<IdentityProvider>,
}
