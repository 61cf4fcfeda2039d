//! The store traits: one narrow trait per aggregate. Each backend (SQLite, PostgreSQL) implements all of
//! them; `Stores` holds the chosen backend behind trait objects.
//!
//! Rules every implementation keeps:
//! * every workspace-owned method takes the `WorkspaceId` and filters on it;
//! * a change that other nodes cache writes its [`Invalidation`] in the same transaction;
//! * a multi-row change is one transaction inside one method;
//! * driver errors become `Error::Conflict` (named unique constraint), `Error::NotFound` or
//!   `Error::Internal` / `Error::Unavailable` (connection lost), never a driver message to a client.

use std::sync::Arc;

use async_trait::async_trait;
use secureflows_crypto::KeyPurpose;

use crate::audit::{EventFilter, PendingEvent, StoredEvent};
use crate::keyring::WorkspaceKeys;
use crate::model::NewIdentity;
use crate::{
    Application, ApplicationId, AuthorizationCode, BrowserSession, BrowserSessionId, CeremonyPurpose,
    ConsoleSession, FamilyId, FlowId, IdentityProvider, Invalidation, Invite, InviteId, LinkPurpose,
    LoginFlow, LoginLink, LoginSession, PasskeyId, PasskeyRecord, Plan, ProviderId, RefreshToken, Result,
    Role, SessionId, SupportOperator, Timestamp, TotpEnrolment, User, UserId, UserStatus, WebauthnCeremony,
    Workspace, WorkspaceId,
};

/// Workspaces.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Inserts a workspace.
    async fn insert_workspace(&self, workspace: &Workspace) -> Result<()>;
    /// The workspace, if it exists.
    async fn find_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>>;
    /// All workspaces (operator listing).
    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;
    /// Changes the plan. `NotFound` if the workspace does not exist.
    async fn update_plan(&self, id: WorkspaceId, plan: Plan, now: Timestamp) -> Result<()>;
    /// Deletes the workspace and everything it owns. `NotFound` if it does not exist.
    async fn delete_workspace(&self, id: WorkspaceId) -> Result<()>;
    /// Whether any workspace exists (guards against starting over existing data with a new master key).
    async fn any_workspace(&self) -> Result<bool>;
    /// The workspace, when the instance has exactly one (the console opens it without asking).
    async fn sole_workspace(&self) -> Result<Option<WorkspaceId>>;
    /// Stores a one-time setup token (its SHA-256) for the console's first run.
    async fn insert_setup_token(
        &self,
        token_hash: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()>;
    /// Whether a setup token is known, unspent and unexpired (it is spent by `Change::ClaimSetup`).
    async fn setup_token_usable(&self, token_hash: &[u8], now: Timestamp) -> Result<bool>;
}

/// Applications.
#[async_trait]
pub trait ApplicationStore: Send + Sync {
    /// Inserts an application.
    async fn insert_application(&self, app: &Application) -> Result<()>;
    /// The application with this client id, in any workspace: a session token's audience names it, and
    /// callers then check that it belongs to the token's workspace.
    async fn find_application(&self, id: ApplicationId) -> Result<Option<Application>>;
    /// Applications of any workspace that trust exactly this upstream issuer and audience.
    async fn find_applications_trusting(&self, issuer: &str, audience: &str) -> Result<Vec<Application>>;
    /// A workspace's applications.
    async fn list_applications(&self, workspace: WorkspaceId) -> Result<Vec<Application>>;
    /// Every origin any application allows (answers CORS preflights, which carry no token).
    async fn list_allowed_origins(&self) -> Result<Vec<String>>;
}

/// What a new user is created with.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The user.
    pub user: User,
    /// The identity that signed them in first.
    pub identity: NewIdentity,
}

/// Users and their upstream identities.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// The user an identity (keyed hash of issuer and subject) belongs to.
    async fn find_user_by_identity(
        &self,
        workspace: WorkspaceId,
        identity_index: &[u8],
    ) -> Result<Option<User>>;
    /// The user's upstream identities (keyed hash and sealed issuer and subject), oldest first.
    async fn list_identities(
        &self,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<Vec<(NewIdentity, Timestamp)>>;
    /// Inserts a user with their first identity. `Conflict` if the identity already exists.
    async fn insert_user(&self, new: &NewUser) -> Result<()>;
    /// The user, if in this workspace.
    async fn find_user(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<User>>;
    /// The tiers an end user was put on, one per application (applications not listed: the default).
    async fn user_tiers(
        &self,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<Vec<crate::tier::TierAssignment>>;
    /// Raises the token revision and ends every login session of the user, in one transaction.
    /// Returns the new revision. `NotFound` if the user is not in this workspace.
    async fn raise_revision(&self, workspace: WorkspaceId, user: UserId, now: Timestamp) -> Result<i64>;
    /// The workspace's OWNERs and ADMINs (those who run it), oldest first. There are few of them;
    /// at most `limit`.
    async fn list_admins(&self, workspace: WorkspaceId, limit: u32) -> Result<Vec<User>>;
    /// A page of the workspace's users in id (creation) order, after `after`.
    async fn list_users(
        &self,
        workspace: WorkspaceId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>>;
    /// The user whose e-mail address has this keyed hash (an address belongs to one user of a
    /// workspace: the store refuses a second with `Conflict`).
    async fn find_user_by_email(&self, workspace: WorkspaceId, email_index: &[u8]) -> Result<Option<User>>;
    /// The workspaces that have users whose addresses are not yet indexed under the address rule
    /// (instance-level).
    async fn email_rule_workspaces(&self) -> Result<Vec<WorkspaceId>>;
    /// The workspace's users not yet indexed under the address rule, oldest first.
    async fn email_rule_pending(&self, workspace: WorkspaceId) -> Result<Vec<EmailRulePending>>;
    /// Indexes a user's address under the rule (or leaves it unindexed, with the conflict recorded),
    /// replacing the sealed address with its canonical form when one is given. `false`, with nothing
    /// changed, if another user of the workspace has this index.
    async fn apply_email_rule(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        email_sealed: Option<&[u8]>,
        email_index: Option<&[u8]>,
        conflict: Option<EmailConflict>,
        now: Timestamp,
    ) -> Result<bool>;
    /// The workspace's users whose addresses the rule refused or made collide.
    async fn email_conflicts(&self, workspace: WorkspaceId) -> Result<Vec<(UserId, EmailConflict)>>;
}

/// A user whose address is to be indexed under the address rule.
#[derive(Debug, Clone)]
pub struct EmailRulePending {
    /// The user.
    pub user: UserId,
    /// The sealed address.
    pub email_sealed: Option<Vec<u8>>,
    /// The address was verified.
    pub email_verified: bool,
    /// The user has a password.
    pub has_password: bool,
    /// The user has an upstream identity.
    pub has_identity: bool,
}

/// Why an account's address is not indexed under the address rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailConflict {
    /// An older account of the workspace has the same address under the rule.
    Collision,
    /// The rule refuses the stored address.
    Refused,
}

impl EmailConflict {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            EmailConflict::Collision => "collision",
            EmailConflict::Refused => "refused",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "collision" => Some(EmailConflict::Collision),
            "refused" => Some(EmailConflict::Refused),
            _ => None,
        }
    }
}

/// The concurrent-session limits that apply to a new login session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Active sessions allowed in the workspace.
    pub per_workspace: u32,
    /// Active sessions allowed for the user.
    pub per_user: u32,
}

/// Whether a new login session was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAdmission {
    /// Inserted.
    Admitted,
    /// Refused: a limit is reached; the earliest active session of the full scope expires at this time.
    Full {
        /// When a slot frees up on its own.
        earliest_expiry: Timestamp,
    },
}

/// Login sessions.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Counts active sessions and inserts the new one only if both limits allow it, atomically: two
    /// concurrent sign-ins can never both take the last slot.
    async fn insert_session_within_limits(
        &self,
        session: &LoginSession,
        limits: SessionLimits,
        now: Timestamp,
    ) -> Result<SessionAdmission>;
    /// How many of the workspace's login sessions are active (neither ended nor expired) at `now`.
    async fn count_sessions(&self, workspace: WorkspaceId, now: Timestamp) -> Result<u64>;
    /// The session, if in this workspace.
    async fn find_session(&self, workspace: WorkspaceId, id: SessionId) -> Result<Option<LoginSession>>;
    /// Ends one session (logout). Returns whether it was active.
    async fn end_session(&self, workspace: WorkspaceId, id: SessionId, now: Timestamp) -> Result<bool>;
    /// Deletes sessions that ended or expired before `before` (retention).
    async fn purge_sessions(&self, before: Timestamp) -> Result<u64>;
}

/// Where one vault value lives. `key_index` is the keyed hash of the key name; the name itself is
/// stored only sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultLocator {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Application.
    pub application_id: ApplicationId,
    /// User.
    pub user_id: UserId,
    /// Keyed hash of the key name.
    pub key_index: [u8; 32],
}

/// A vault write.
#[derive(Debug, Clone)]
pub struct VaultWrite {
    /// Where.
    pub locator: VaultLocator,
    /// Sealed key name.
    pub name_sealed: Vec<u8>,
    /// Sealed content type and value.
    pub value_sealed: Vec<u8>,
    /// Plaintext value size in bytes.
    pub size: u64,
    /// Write time.
    pub now: Timestamp,
    /// When the value expires unless written again.
    pub expires_at: Timestamp,
    /// Keys the user may hold in this application; a new key beyond it is refused.
    pub max_keys: u32,
}

/// Result of a vault write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new key; created at the write time.
    Created,
    /// An existing key was overwritten; it was first created at this time.
    Replaced {
        /// Original creation time.
        created_at: Timestamp,
    },
    /// A new key, refused: the user already holds `max_keys` keys.
    QuotaExceeded,
}

/// A stored vault value (sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultEntry {
    /// Keyed hash of the key name.
    pub key_index: Vec<u8>,
    /// Sealed key name.
    pub name_sealed: Vec<u8>,
    /// Sealed content type and value (empty in listings).
    pub value_sealed: Vec<u8>,
    /// Plaintext size.
    pub size: u64,
    /// First written.
    pub created_at: Timestamp,
    /// Last written.
    pub updated_at: Timestamp,
    /// Expires.
    pub expires_at: Timestamp,
}

/// The session vault.
#[async_trait]
pub trait VaultStore: Send + Sync {
    /// Inserts or replaces a value, enforcing the key quota atomically. The write is durable when this
    /// returns.
    async fn put_value(&self, write: &VaultWrite) -> Result<PutOutcome>;
    /// The value, unless missing or expired at `now`.
    async fn get_value(&self, locator: &VaultLocator, now: Timestamp) -> Result<Option<VaultEntry>>;
    /// The user's unexpired values in one application, without their sealed values.
    async fn list_values(
        &self,
        workspace: WorkspaceId,
        application: ApplicationId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<VaultEntry>>;
    /// Deletes a value. Returns whether an unexpired value was there.
    async fn delete_value(&self, locator: &VaultLocator, now: Timestamp) -> Result<bool>;
    /// Deletes up to `limit` values that expired before `now`.
    async fn purge_expired_values(&self, now: Timestamp, limit: u32) -> Result<u64>;
    /// A user's unexpired values in every application, without their sealed values (admin reads).
    async fn list_user_values(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<(ApplicationId, VaultEntry)>>;
}

/// One API-access log record, as stored (the key name sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// Workspace, when the caller was identified.
    pub workspace_id: Option<WorkspaceId>,
    /// Application, when identified.
    pub application_id: Option<ApplicationId>,
    /// User, when identified.
    pub user_id: Option<UserId>,
    /// HTTP method.
    pub method: String,
    /// Route template, e.g. `/api/v1/sessions/get/{key}`.
    pub route: String,
    /// Sealed key name, when the route names one and the workspace is known.
    pub key_sealed: Option<Vec<u8>>,
    /// Response status.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Client address (the peer, or the configured proxy's forwarded address).
    pub client_ip: String,
    /// User agent, neutralised and truncated.
    pub user_agent: String,
    /// Request id.
    pub request_id: String,
    /// Server time spent, microseconds.
    pub duration_us: u64,
    /// When.
    pub at: Timestamp,
}

/// Filters of an API-access log listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFilter {
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
    /// The calling user.
    pub user: Option<UserId>,
    /// Exact route template.
    pub route: Option<String>,
    /// Exact status.
    pub status: Option<u16>,
    /// The application called for.
    pub application: Option<ApplicationId>,
    /// Records with a position below this one (the page cursor).
    pub before: Option<i64>,
}

/// The API-access log.
#[async_trait]
pub trait AccessLogStore: Send + Sync {
    /// Appends records in one transaction.
    async fn append_access(&self, entries: &[AccessEntry]) -> Result<()>;
    /// A page of a workspace's records, newest first, each with its position (the cursor).
    async fn list_access(
        &self,
        workspace: WorkspaceId,
        filter: &AccessFilter,
        limit: u32,
    ) -> Result<Vec<(i64, AccessEntry)>>;
}

/// One change of a management transaction. Every change names its target inside the change set's
/// workspace; a target that is not there fails the whole set with `NotFound`.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new workspace (the change set's workspace).
    InsertWorkspace(Workspace),
    /// Renames the workspace.
    RenameWorkspace(String),
    /// Changes the plan.
    SetPlan(Plan),
    /// A new application.
    InsertApplication(Application),
    /// Replaces an application's settings (name, origins, trust, lifetimes).
    UpdateApplication(Application),
    /// Deletes an application with its login sessions and vault values.
    DeleteApplication(ApplicationId),
    /// Replaces the hash of a confidential application's secret.
    SetApplicationSecret(ApplicationId, Vec<u8>),
    /// A new member. `Conflict("member-exists")` if a user of the workspace has the same e-mail hash.
    InsertUser(User),
    /// Fails the set with `Conflict("role-changed")` unless the user still has this role (guards a
    /// decision taken on the role read before the transaction).
    ExpectRole(UserId, Role),
    /// Ends one login session (logout).
    EndSession(SessionId),
    /// A new SUPPORT operator (instance-level; use with `audit::INSTANCE`).
    InsertSupport(SupportOperator),
    /// Removes a SUPPORT operator; their tokens stop working.
    DeleteSupport(UserId),
    /// Changes a user's role; raises their revision (their tokens carry the old role).
    SetRole(UserId, Role),
    /// Locks or unlocks a user; raises their revision. Unlocking also ends a sign-in lockout.
    SetStatus(UserId, UserStatus),
    /// Ends a sign-in lockout and clears the count of failed sign-ins (an administrator's unlock of an
    /// active user).
    EndSignInLockout(UserId),
    /// Ends the user's unused sign-in links (magic and reset links) and pending sign-in steps.
    EndLinks(UserId),
    /// Raises a user's revision and ends all their login sessions.
    RaiseRevision(UserId),
    /// Deletes a user with everything they own.
    DeleteUser(UserId),
    /// A new login session (console sessions; application sessions go through the session limits).
    InsertSession(LoginSession),
    /// A new invitation.
    InsertInvite(Invite),
    /// Revokes a pending invitation.
    RevokeInvite(InviteId),
    /// Sets or replaces a user's password hash (PHC string; never a password).
    SetPassword(UserId, String),
    /// Changes the workspace's sign-in policy.
    SetLoginPolicy(crate::login::LoginPolicy),
    /// Changes the workspace's hosted-login branding.
    SetBranding(crate::login::Branding),
    /// Turns an anonymous (ANON) user into a USER with this sealed e-mail and its keyed hash, and raises
    /// the revision (the ANON tokens stop). `NotFound` unless the user is ANON;
    /// `Conflict("member-exists")` if the address is taken.
    UpgradeUser {
        /// The ANON user.
        user: UserId,
        /// Sealed e-mail.
        email_sealed: Vec<u8>,
        /// Keyed hash of the e-mail.
        email_index: Vec<u8>,
    },
    /// Marks a pending, unexpired invitation accepted (`NotFound` otherwise: used, revoked, expired).
    AcceptInvite(InviteId),
    /// A new upstream identity provider for the hosted login.
    InsertIdentityProvider(IdentityProvider),
    /// Removes an upstream identity provider (`NotFound` if it is not the workspace's).
    DeleteIdentityProvider(ProviderId),
    /// Links another upstream identity to an existing user. `Conflict` if the identity is linked
    /// already.
    LinkIdentity(UserId, NewIdentity),
    /// Puts an end user on a tier of an application (`updated_at` is the change set's time).
    /// `NotFound` unless the application and the user are the workspace's. With `event_at` (a billing
    /// provider's event time), `Conflict("stale-event")` when the stored tier came from a later event.
    SetUserTier(crate::tier::TierAssignment),
    /// Records a handled webhook event (instance level). `Conflict("duplicate-event")` if it was
    /// recorded before.
    RecordWebhookEvent {
        /// `paddle` or `stripe`.
        provider: &'static str,
        /// The application (Stripe) or the nil id (Paddle).
        scope: uuid::Uuid,
        /// The provider's event id.
        event_id: String,
    },
    /// Links a provider subscription to the change set's workspace (and an end user).
    /// `Conflict("duplicate-event")` if another event linked it first.
    LinkBilling(crate::billing::BillingLink),
    /// Moves a linked subscription's newest event time forward; `Conflict("stale-event")` when the
    /// stored one is later, `NotFound` when the subscription is not the workspace's.
    AdvanceBilling {
        /// `paddle` or `stripe`.
        provider: &'static str,
        /// The application (Stripe) or the nil id (Paddle).
        scope: uuid::Uuid,
        /// The provider's subscription id.
        subscription_id: String,
        /// The event's time.
        event_at: Timestamp,
    },
    /// Sets an application's Stripe webhook secret (sealed). `NotFound` unless the application is the
    /// workspace's.
    SetBillingSecret {
        /// The application.
        application: ApplicationId,
        /// The sealed secret.
        sealed: Vec<u8>,
    },
    /// Spends the setup token with this SHA-256, with every other one, in the transaction that creates
    /// the first workspace (the change set's). `Conflict("setup-token")` if it is unknown, spent or
    /// expired; `Conflict("setup-done")` if another workspace exists. Concurrent first runs are
    /// serialised: exactly one succeeds.
    ClaimSetup(Vec<u8>),
}

/// A management transaction: changes and the audit events that record them, written together or not
/// at all. The store appends the events to the workspace's hash chain (`chain` holds the key).
pub struct ChangeSet {
    /// Workspace (or `audit::INSTANCE` for instance-level events without changes).
    pub workspace: WorkspaceId,
    /// Changes, applied in order.
    pub changes: Vec<Change>,
    /// Events to append.
    pub events: Vec<PendingEvent>,
    /// The workspace's keys (the chain's hash key).
    pub chain: Arc<WorkspaceKeys>,
    /// Time of the changes.
    pub now: Timestamp,
}

impl std::fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSet")
            .field("workspace", &self.workspace)
            .field("changes", &self.changes.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// Management changes and the audit log.
///
/// Rules: the whole set is one transaction that also serialises with every other set of the same
/// workspace; a set that leaves the workspace without an active OWNER after demoting, locking or
/// deleting one fails with `Conflict("last-owner")`.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Applies the changes and appends the events, atomically.
    async fn apply(&self, set: ChangeSet) -> Result<()>;
    /// A page of a workspace's events, newest first.
    async fn list_events(
        &self,
        workspace: WorkspaceId,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>>;
    /// Events with a sequence number above `after_seq`, in order (chain verification and export).
    async fn chain_after(
        &self,
        workspace: WorkspaceId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>>;
    /// The recorded head of a workspace's chain.
    async fn chain_head(&self, workspace: WorkspaceId) -> Result<Option<(i64, Vec<u8>)>>;
    /// Every workspace (and the instance) that has a chain.
    async fn chained_workspaces(&self) -> Result<Vec<WorkspaceId>>;
}

/// Invitations.
#[async_trait]
pub trait InviteStore: Send + Sync {
    /// The invitation, if in this workspace.
    async fn find_invite(&self, workspace: WorkspaceId, id: InviteId) -> Result<Option<Invite>>;
    /// The invitation whose link token hashes to `token_hash`.
    async fn find_invite_by_token(&self, workspace: WorkspaceId, token_hash: &[u8])
    -> Result<Option<Invite>>;
    /// A page of the workspace's invitations, oldest first, after `after`.
    async fn list_invites(
        &self,
        workspace: WorkspaceId,
        after: Option<InviteId>,
        limit: u32,
    ) -> Result<Vec<Invite>>;
}

/// Instance-level SUPPORT operators.
#[async_trait]
pub trait SupportStore: Send + Sync {
    /// The operator.
    async fn find_support(&self, id: UserId) -> Result<Option<SupportOperator>>;
    /// The operator with this e-mail hash.
    async fn find_support_by_email(&self, email_index: &[u8]) -> Result<Option<SupportOperator>>;
    /// Every operator.
    async fn list_support(&self) -> Result<Vec<SupportOperator>>;
    /// Operators not yet indexed under the address rule: id and sealed address.
    async fn support_email_rule_pending(&self) -> Result<Vec<(UserId, Vec<u8>)>>;
    /// Indexes an operator's address under the address rule (and seals its canonical form).
    async fn apply_support_email_rule(
        &self,
        id: UserId,
        email_sealed: &[u8],
        email_index: &[u8],
    ) -> Result<()>;
}

/// The invalidation log that keeps caches of several nodes correct.
#[async_trait]
pub trait CoordStore: Send + Sync {
    /// Records an invalidation on its own (for changes outside this database, e.g. the key ring).
    async fn publish(&self, invalidation: Invalidation) -> Result<()>;
    /// Up to `limit` invalidations with a sequence number above `after`, in sequence order.
    async fn invalidations_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, Invalidation)>>;
    /// Invalidations recorded within `lookback` of the database's clock, whatever their sequence number:
    /// a second look that catches transactions which committed after a higher sequence number was read.
    async fn recent_invalidations(&self, lookback: std::time::Duration) -> Result<Vec<(i64, Invalidation)>>;
    /// Deletes invalidations older than `age` by the database's clock.
    async fn prune_invalidations(&self, age: std::time::Duration) -> Result<u64>;
    /// A notifier that fires when another node published something, if the backend can push.
    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>>;
}

/// Single-use credentials (upstream ID tokens already exchanged).
#[async_trait]
pub trait UsedTokenStore: Send + Sync {
    /// Records the hash; `false` if it was already recorded.
    async fn mark_used(&self, token_hash: &[u8; 32], expires_at: Timestamp) -> Result<bool>;
    /// Forgets hashes that expired before `now`.
    async fn purge_used(&self, now: Timestamp) -> Result<u64>;
}

/// Readiness.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Database reachable and every migration applied.
    async fn check_ready(&self) -> Result<()>;
}

/// One wrapped workspace key in the key ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Workspace id.
    pub owner: String,
    /// Data or index.
    pub purpose: KeyPurpose,
    /// Version.
    pub version: u32,
    /// Wrapped by the master key.
    pub wrapped: Vec<u8>,
    /// Which master key wrapped it.
    pub master_key_id: String,
    /// Whether new writes use it.
    pub active: bool,
    /// Created.
    pub created_at: Timestamp,
}

/// One wrapped JWT signing key in the key ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    /// Key id.
    pub kid: String,
    /// Algorithm (`RS256`, `EdDSA`).
    pub alg: String,
    /// Private key wrapped by the master key.
    pub wrapped: Vec<u8>,
    /// Public JWK as JSON.
    pub public_jwk: String,
    /// Which master key wrapped it.
    pub master_key_id: String,
    /// Created.
    pub created_at: Timestamp,
    /// When it stopped signing (it still verifies until its tokens expire).
    pub retired_at: Option<Timestamp>,
}

/// The key ring: wrapped keys, kept in a store of its own so that backups of the data never contain
/// key material, and deleting a workspace's keys cannot be undone by restoring a data backup.
#[async_trait]
pub trait KeyringStore: Send + Sync {
    /// Whether the key ring holds no key at all (a fresh install).
    async fn is_empty(&self) -> Result<bool>;
    /// The distinct master key ids that wrapped the stored keys.
    async fn master_key_ids(&self) -> Result<Vec<String>>;
    /// Inserts a workspace's first keys. `Conflict` if the workspace's keys were destroyed before.
    async fn insert_keys(&self, keys: &[StoredKey]) -> Result<()>;
    /// Every key of a workspace.
    async fn workspace_keys(&self, workspace: &str) -> Result<Vec<StoredKey>>;
    /// Adds a data-key version and makes it the only active one.
    async fn add_data_key(&self, key: &StoredKey) -> Result<()>;
    /// Deletes every key of the workspace and records its destruction, so that no key can be stored
    /// for that workspace id again. Storage is overwritten, not just unlinked, where the backend allows.
    async fn destroy_workspace_keys(&self, workspace: &str, now: Timestamp) -> Result<()>;
    /// Whether the workspace's keys were destroyed.
    async fn is_destroyed(&self, workspace: &str) -> Result<bool>;
    /// All signing keys.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>>;
    /// Adds a signing key as the active one; the previous active key is retired at `now`.
    async fn insert_signing_key(&self, key: &StoredSigningKey, now: Timestamp) -> Result<()>;
    /// Deletes signing keys retired before `before`.
    async fn delete_signing_keys_retired_before(&self, before: Timestamp) -> Result<u64>;
    /// Every stored key (for master-key rotation).
    async fn all_keys(&self) -> Result<(Vec<StoredKey>, Vec<StoredSigningKey>)>;
    /// Replaces the wrapped bytes and master key id of the given keys in one transaction.
    async fn replace_wrapped(&self, keys: &[StoredKey], signing: &[StoredSigningKey]) -> Result<()>;
    /// Key ring reachable and migrated.
    async fn check_ready(&self) -> Result<()>;
}

/// Whether a sign-in attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptGate {
    /// Counted as a failure until [`PasswordStore::clear_failures`] says otherwise.
    Proceed,
    /// The account is locked until then.
    Locked(Timestamp),
}

/// What presenting an authorization code found.
// Returned once per exchange and matched at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First use: the code, now spent.
    Fresh(AuthorizationCode),
    /// Already used: the login session it was exchanged for, if any (the caller ends it).
    Replayed(Option<SessionId>),
    /// Unknown or expired.
    Invalid,
}

/// What presenting a refresh token found.
/// What an attempt to rotate a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRotation {
    /// It was current: it is now rotated, and its successor stored.
    Rotated,
    /// It was not current any more (rotated by another request a moment ago, revoked or expired):
    /// nothing changed.
    NotCurrent,
}

/// Hosted login state: passwords, e-mail verification and the sign-in lockout. Every method names its workspace (except
/// the purge of every workspace), which PostgreSQL's row-level security enforces.
#[async_trait]
pub trait PasswordStore: Send + Sync {
    /// The user's password hash (PHC string), if they have a password.
    async fn find_password(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<String>>;
    /// Sets or replaces the password hash.
    async fn set_password(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        phc: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Counts an attempt as a failure before it is verified, atomically, unless the account is locked:
    /// parallel guesses can never get past `max_failures`. An expired lock starts a fresh count.
    async fn begin_attempt(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        max_failures: u32,
        now: Timestamp,
    ) -> Result<AttemptGate>;
    /// After a failed attempt: locks the account until `until` if `max_failures` is reached. Returns
    /// whether this call locked it.
    async fn lock_if_exhausted(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        max_failures: u32,
        until: Timestamp,
    ) -> Result<bool>;
    /// After a successful attempt or an administrator's unlock: no failures, no lock.
    async fn clear_failures(&self, workspace: WorkspaceId, user: UserId) -> Result<()>;
    /// The user's failed sign-ins since the last success, and the end of their sign-in lockout (if one
    /// was ever set and not cleared).
    async fn sign_in_failures(
        &self,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<(u32, Option<Timestamp>)>;
    /// Marks the user's e-mail address verified.
    async fn set_email_verified(&self, workspace: WorkspaceId, user: UserId) -> Result<()>;
    /// Whether the user's e-mail address is verified.
    async fn email_verified(&self, workspace: WorkspaceId, user: UserId) -> Result<bool>;
}

/// Hosted login state: pending authorization requests (flows), browser sessions and the browsers a user signed in from. Every method names its workspace (except
/// the purge of every workspace), which PostgreSQL's row-level security enforces.
#[async_trait]
pub trait BrowserStore: Send + Sync {
    /// Stores a pending authorization request.
    async fn insert_flow(&self, flow: &LoginFlow) -> Result<()>;
    /// A pending request that has not expired.
    async fn find_flow(
        &self,
        workspace: WorkspaceId,
        id: FlowId,
        now: Timestamp,
    ) -> Result<Option<LoginFlow>>;
    /// Removes a completed request.
    async fn delete_flow(&self, workspace: WorkspaceId, id: FlowId) -> Result<()>;
    /// Stores a new browser session.
    async fn insert_browser_session(&self, session: &BrowserSession) -> Result<()>;
    /// The active browser session whose cookie hashes to `token_hash`.
    async fn find_browser_session(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<BrowserSession>>;
    /// The user's active browser sessions.
    async fn list_browser_sessions(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<BrowserSession>>;
    /// Records that a browser session was used.
    async fn touch_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<()>;
    /// Replaces a browser session's sign-in methods (a second factor added from that browser).
    async fn set_browser_session_amr(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        amr: &[String],
    ) -> Result<()>;
    /// Ends a browser session, the login sessions opened from it and their refresh tokens. Returns the
    /// login sessions it ended.
    async fn end_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<Vec<SessionId>>;
    /// Records a browser the user signed in from; `true` if it was not known.
    async fn remember_device(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        device_hash: &[u8],
        now: Timestamp,
    ) -> Result<bool>;
    /// Stores a console session, or replaces the one with the same workspace and hash (its tokens
    /// refreshed).
    async fn put_console_session(&self, session: &ConsoleSession) -> Result<()>;
    /// The unexpired console session whose cookie secret hashes to `session_hash`.
    async fn find_console_session(
        &self,
        workspace: WorkspaceId,
        session_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>>;
    /// Forgets a console session; `true` if there was one.
    async fn delete_console_session(&self, workspace: WorkspaceId, session_hash: &[u8]) -> Result<bool>;
    /// Deletes flows, codes, refresh tokens, browser sessions, links, console sessions and setup tokens
    /// that expired before `before`, and forgets the sealed successors of refresh tokens rotated before
    /// it.
    async fn purge_login_state(&self, before: Timestamp) -> Result<u64>;
}

/// Hosted login state: authorization codes and refresh tokens (and the login sessions a refresh extends). Every method names its workspace (except
/// the purge of every workspace), which PostgreSQL's row-level security enforces.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Stores a new authorization code.
    async fn insert_code(&self, code: &AuthorizationCode) -> Result<()>;
    /// Spends a code (atomically: of two concurrent redemptions one is `Fresh`).
    async fn redeem_code(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        now: Timestamp,
    ) -> Result<CodeRedemption>;
    /// Records the login session a code was exchanged for.
    async fn attach_code_session(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        session: SessionId,
    ) -> Result<()>;
    /// Stores a new refresh token.
    async fn insert_refresh(&self, token: &RefreshToken) -> Result<()>;
    /// Rotates a current refresh token, in one transaction: marks it rotated at `now`, keeps
    /// `successor_sealed` (the sealed successor pair, handed again to uses within the grace window) and
    /// stores `successor`. Of two concurrent rotations one is `Rotated`, the other `NotCurrent`.
    async fn rotate_refresh(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        successor: &RefreshToken,
        successor_sealed: &[u8],
        now: Timestamp,
    ) -> Result<RefreshRotation>;
    /// The sealed successor pair kept with a rotated refresh token (until the sweeper forgets it after
    /// the grace window).
    async fn refresh_successor(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<Vec<u8>>>;
    /// A refresh token as stored (introspection, revocation).
    async fn find_refresh(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<RefreshToken>>;
    /// Revokes every token of a family.
    async fn revoke_family(&self, workspace: WorkspaceId, family: FamilyId, now: Timestamp) -> Result<()>;
    /// Moves a login session's expiry (a refresh keeps it signed in).
    async fn extend_session(
        &self,
        workspace: WorkspaceId,
        session: SessionId,
        expires_at: Timestamp,
    ) -> Result<()>;
}

/// Hosted login state: second factors: TOTP, recovery codes and passkeys. Every method names its workspace (except
/// the purge of every workspace), which PostgreSQL's row-level security enforces.
#[async_trait]
pub trait FactorStore: Send + Sync {
    /// The user's TOTP enrolment.
    async fn find_totp(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<TotpEnrolment>>;
    /// Starts an enrolment with this secret, unless the user has one already: a confirmed one, or an
    /// unconfirmed one made at or after `pending_since` (the QR code someone is scanning). `false`: the
    /// existing one was left alone.
    async fn begin_totp(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        secret_sealed: &[u8],
        pending_since: Timestamp,
        now: Timestamp,
    ) -> Result<bool>;
    /// Accepts a step once (atomically, only above the last one accepted) and confirms the enrolment.
    async fn use_totp_step(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        step: i64,
        now: Timestamp,
    ) -> Result<bool>;
    /// Removes TOTP, and the recovery codes unless `keep_recovery_codes` (another factor remains).
    async fn delete_totp(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        keep_recovery_codes: bool,
    ) -> Result<()>;
    /// Replaces the user's recovery codes.
    async fn replace_recovery_codes(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        hashes: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<()>;
    /// Spends a recovery code (atomically).
    async fn use_recovery_code(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        hash: &[u8],
        now: Timestamp,
    ) -> Result<bool>;
    /// Unused recovery codes left.
    async fn recovery_codes_left(&self, workspace: WorkspaceId, user: UserId) -> Result<u32>;
    /// Registers a passkey; `false` if its credential is already registered in the workspace.
    async fn insert_passkey(&self, passkey: &PasskeyRecord) -> Result<bool>;
    /// The user's passkeys, oldest first.
    async fn passkeys(&self, workspace: WorkspaceId, user: UserId) -> Result<Vec<PasskeyRecord>>;
    /// Stores a passkey's updated credential (its signature counter) and when it was used.
    async fn update_passkey(
        &self,
        workspace: WorkspaceId,
        passkey: PasskeyId,
        sealed: &[u8],
        used_at: Timestamp,
    ) -> Result<()>;
    /// Removes one of the user's passkeys; `false` if there is no such passkey of this user.
    async fn delete_passkey(&self, workspace: WorkspaceId, user: UserId, passkey: PasskeyId) -> Result<bool>;
}

/// Hosted login state: the upstream identity providers a workspace offers on its sign-in page. Every method names its workspace (except
/// the purge of every workspace), which PostgreSQL's row-level security enforces.
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// The workspace's upstream identity providers, oldest first.
    async fn identity_providers(&self, workspace: WorkspaceId) -> Result<Vec<IdentityProvider>>;
}

/// Hosted login state: one-time ceremonies: e-mailed links and WebAuthn ceremonies. Every method names its workspace (except
/// the purge of every workspace), which PostgreSQL's row-level security enforces.
#[async_trait]
pub trait CeremonyStore: Send + Sync {
    /// Stores a new e-mailed link.
    async fn insert_link(&self, link: &LoginLink) -> Result<()>;
    /// Stores a link and, in the same transaction, ends the user's unused links of the same purpose
    /// (a newer link replaces older ones).
    async fn replace_links(&self, link: &LoginLink, now: Timestamp) -> Result<()>;
    /// Spends a link of this purpose (atomically: of two concurrent uses one succeeds); `None` if it is
    /// unknown, used, expired or for something else.
    async fn use_link(
        &self,
        workspace: WorkspaceId,
        link_hash: &[u8],
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<LoginLink>>;
    /// A link of this purpose that is still usable, without spending it.
    async fn find_link(
        &self,
        workspace: WorkspaceId,
        link_hash: &[u8],
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<LoginLink>>;
    /// Stores a ceremony in progress.
    async fn insert_ceremony(&self, ceremony: &WebauthnCeremony) -> Result<()>;
    /// Takes a ceremony of this purpose (atomically, once); `None` if unknown, taken, expired or for
    /// something else.
    async fn take_ceremony(
        &self,
        workspace: WorkspaceId,
        ceremony_hash: &[u8],
        purpose: CeremonyPurpose,
        now: Timestamp,
    ) -> Result<Option<WebauthnCeremony>>;
}

/// The chosen backend, behind one trait object per aggregate.
#[derive(Clone)]
pub struct Stores {
    /// Workspaces.
    pub workspaces: Arc<dyn WorkspaceStore>,
    /// Applications.
    pub applications: Arc<dyn ApplicationStore>,
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Login sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Vault.
    pub vault: Arc<dyn VaultStore>,
    /// API-access log.
    pub access: Arc<dyn AccessLogStore>,
    /// Invalidation log.
    pub coord: Arc<dyn CoordStore>,
    /// Single-use credentials.
    pub used_tokens: Arc<dyn UsedTokenStore>,
    /// Management changes and the audit log.
    pub audit: Arc<dyn AuditStore>,
    /// Invitations.
    pub invites: Arc<dyn InviteStore>,
    /// SUPPORT operators.
    pub support: Arc<dyn SupportStore>,
    /// Hosted login: passwords, e-mail verification and the sign-in lockout.
    pub passwords: Arc<dyn PasswordStore>,
    /// Hosted login: pending authorization requests (flows), browser sessions and the browsers a user signed in from.
    pub browsers: Arc<dyn BrowserStore>,
    /// Hosted login: authorization codes and refresh tokens (and the login sessions a refresh extends).
    pub grants: Arc<dyn GrantStore>,
    /// Hosted login: second factors: TOTP, recovery codes and passkeys.
    pub factors: Arc<dyn FactorStore>,
    /// Hosted login: the upstream identity providers a workspace offers on its sign-in page.
    pub providers: Arc<dyn ProviderStore>,
    /// Hosted login: one-time ceremonies: e-mailed links and WebAuthn ceremonies.
    pub ceremonies: Arc<dyn CeremonyStore>,
    /// Readiness of the data store.
    pub health: Arc<dyn HealthStore>,
    /// Key ring.
    pub keyring: Arc<dyn KeyringStore>,
    /// Billing webhooks.
    pub billing: Arc<dyn BillingStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores")
    }
}

/// Billing webhooks' state: handled events, linked subscriptions, applications' signing secrets.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Whether the event was handled before.
    async fn webhook_event_seen(&self, provider: &str, scope: uuid::Uuid, event_id: &str) -> Result<bool>;
    /// The link of a provider subscription, found across workspaces by the provider's ids.
    async fn find_billing_link(
        &self,
        provider: &str,
        scope: uuid::Uuid,
        subscription_id: &str,
    ) -> Result<Option<crate::billing::BillingLink>>;
    /// An application's sealed Stripe webhook secret.
    async fn billing_secret(
        &self,
        workspace: WorkspaceId,
        application: ApplicationId,
    ) -> Result<Option<Vec<u8>>>;
    /// Deletes handled-event records older than `before`; returns how many.
    async fn purge_webhook_events(&self, before: Timestamp) -> Result<u64>;
}

/// Implemented by a backend's data store: everything but the key ring.
pub trait DataStore:
    BillingStore
    + WorkspaceStore
    + ApplicationStore
    + UserStore
    + SessionStore
    + VaultStore
    + AccessLogStore
    + CoordStore
    + UsedTokenStore
    + AuditStore
    + InviteStore
    + SupportStore
    + PasswordStore
    + BrowserStore
    + GrantStore
    + FactorStore
    + ProviderStore
    + CeremonyStore
    + HealthStore
    + 'static
{
}

impl<T> DataStore for T where
    T: BillingStore
        + WorkspaceStore
        + ApplicationStore
        + UserStore
        + SessionStore
        + VaultStore
        + AccessLogStore
        + CoordStore
        + UsedTokenStore
        + AuditStore
        + InviteStore
        + SupportStore
        + PasswordStore
        + BrowserStore
        + GrantStore
        + FactorStore
        + ProviderStore
        + CeremonyStore
        + HealthStore
        + 'static
{
}

impl Stores {
    /// Assembles `Stores` from one data store and one key ring.
    pub fn new<D: DataStore, K: KeyringStore + 'static>(data: Arc<D>, keyring: Arc<K>) -> Stores {
        Stores {
            workspaces: data.clone(),
            applications: data.clone(),
            users: data.clone(),
            sessions: data.clone(),
            vault: data.clone(),
            access: data.clone(),
            coord: data.clone(),
            used_tokens: data.clone(),
            audit: data.clone(),
            invites: data.clone(),
            support: data.clone(),
            passwords: data.clone(),
            browsers: data.clone(),
            grants: data.clone(),
            factors: data.clone(),
            providers: data.clone(),
            ceremonies: data.clone(),
            billing: data.clone(),
            health: data,
            keyring,
        }
    }
}
