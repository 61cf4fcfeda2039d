//! The management side's callers: authenticating a USER JWT on every request, the permission rules of
//! the role hierarchy, console tokens minted by an operator, SUPPORT operators, and the one path every
//! management change takes (`commit`: changes and their audit events in one transaction).
//!
//! Role hierarchy, highest first: OWNER → ADMIN → USER → ANON. The management API answers OWNER and
//! ADMIN; a USER may read their own profile; SUPPORT (instance level, created on the server only) reads
//! workspace metadata and audit trails, never a vault value, and each of its reads is audited.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{self, Actor, ActorKind, NewEvent};
use crate::auth::callback::{email_index, open_email, seal_email};
use crate::auth::token::{IssuedToken, TokenKind, VerifiedToken, console_audience};
use crate::email::EmailAddress;
use crate::keyring::WorkspaceKeys;
use crate::store::{Change, ChangeSet};
use crate::{
    AuthFailure, Error, ForbiddenReason, Invalidation, LoginSession, Result, Role, Services, SessionId,
    SupportOperator, User, UserId, UserStatus, Workspace, WorkspaceId,
};

/// An authenticated management caller. Built from the token only.
#[derive(Debug, Clone)]
pub struct ConsoleCaller {
    /// What the token says.
    pub token: Arc<VerifiedToken>,
    /// The token's workspace.
    pub workspace: Arc<Workspace>,
    /// The workspace's keys.
    pub keys: Arc<WorkspaceKeys>,
    /// Who acts, with the request's client address and user agent (the HTTP layer fills those in).
    pub actor: Actor,
}

impl ConsoleCaller {
    /// The caller's role (current: any role change raises the revision, which ends older tokens).
    pub fn role(&self) -> Role {
        self.token.role
    }

    /// The workspace id.
    pub fn workspace_id(&self) -> WorkspaceId {
        self.workspace.id
    }

    /// OWNER or ADMIN.
    pub fn require_admin(&self) -> Result<()> {
        match self.role() {
            Role::Owner | Role::Admin => Ok(()),
            _ => Err(Error::Forbidden(ForbiddenReason::Role)),
        }
    }

    /// OWNER, ADMIN or SUPPORT (workspace metadata and audit trails).
    pub fn require_metadata_reader(&self) -> Result<()> {
        match self.role() {
            Role::Owner | Role::Admin | Role::Support => Ok(()),
            _ => Err(Error::Forbidden(ForbiddenReason::Role)),
        }
    }

    /// Whether this caller may give or take away `role` (only an OWNER touches OWNERs).
    pub fn require_may_grant(&self, role: Role) -> Result<()> {
        self.require_admin()?;
        match role {
            Role::Owner if self.role() != Role::Owner => Err(Error::Forbidden(ForbiddenReason::Role)),
            Role::Anon | Role::Support => Err(Error::invalid("role", "must be owner, admin or user")),
            _ => Ok(()),
        }
    }

    /// Whether this is a SUPPORT operator (whose reads are audited).
    pub fn is_support(&self) -> bool {
        self.role() == Role::Support
    }
}

/// A checked e-mail address: trimmed, 3 to 254 characters, one `@` with something on each side, no
/// whitespace or control characters. Not a full RFC 5322 parser: delivery is the real check.
pub fn parse_email(field: &str, email: &str) -> Result<EmailAddress> {
    EmailAddress::parse(email).map_err(|e| match e {
        Error::Invalid(errors) => Error::Invalid(
            errors
                .into_iter()
                .map(|mut e| {
                    e.field = field.to_owned();
                    e
                })
                .collect(),
        ),
        other => other,
    })
}

/// Upper bound of console token lifetimes.
pub const MAX_CONSOLE_TTL: Duration = Duration::from_secs(24 * 3600);

impl Services {
    /// Authenticates a USER JWT: signature and kind, expiry (410), the workspace, and then either the
    /// member's console session and revision or the SUPPORT operator's revision.
    pub async fn authenticate_console(&self, bearer: &str, mut actor: Actor) -> Result<ConsoleCaller> {
        let token = self.tokens.verify(bearer, TokenKind::User).await?;
        let now = self.clock.now();
        self.tokens.check_time(&token, now)?;
        let trust = self.state.trusted();
        let workspace = self.token_workspace(&token, trust).await?;
        if token.role == Role::Support {
            let stores = &self.stores;
            let revision = self
                .state
                .revisions
                .get_or_load(&token.user, trust, || async {
                    Ok(stores.support.find_support(token.user).await?.map(|s| s.revision))
                })
                .await?;
            if revision != Some(token.revision) {
                return Err(Error::Unauthenticated(AuthFailure::SessionRevoked));
            }
        } else {
            self.check_login_session(&token, None, trust).await?;
            self.check_member_revision(&token, trust).await?;
        }
        let keys = self.token_keys(&token, trust).await?;
        actor.kind = if token.role == Role::Support {
            ActorKind::Support
        } else {
            ActorKind::User
        };
        actor.id = Some(token.user);
        Ok(ConsoleCaller {
            token,
            workspace,
            keys,
            actor,
        })
    }

    /// Applies changes and appends their audit events in one transaction, then drops what they changed
    /// from this node's caches (other nodes learn of it through the invalidation log).
    pub async fn commit(
        &self,
        workspace: WorkspaceId,
        keys: &Arc<WorkspaceKeys>,
        actor: &Actor,
        changes: Vec<Change>,
        events: Vec<NewEvent>,
    ) -> Result<()> {
        let now = self.clock.now();
        let events = events
            .into_iter()
            .map(|e| audit::seal_event(keys, workspace, actor, e, now))
            .collect::<Result<Vec<_>>>()?;
        let local: Vec<Invalidation> = changes
            .iter()
            .filter_map(|c| invalidation_of(workspace, c))
            .collect();
        self.stores
            .audit
            .apply(ChangeSet {
                workspace,
                changes,
                events,
                chain: keys.clone(),
                now,
            })
            .await?;
        for invalidation in local {
            self.state.apply(invalidation);
        }
        Ok(())
    }

    /// Records events without changes (reads that must be audited, tokens issued).
    pub async fn record(
        &self,
        workspace: WorkspaceId,
        keys: &Arc<WorkspaceKeys>,
        actor: &Actor,
        events: Vec<NewEvent>,
    ) -> Result<()> {
        self.commit(workspace, keys, actor, Vec::new(), events).await
    }

    /// Records a SUPPORT operator's read in the workspace's audit log (no-op for other callers).
    pub async fn audit_support_read(
        &self,
        caller: &ConsoleCaller,
        what: &'static str,
        id: String,
    ) -> Result<()> {
        if !caller.is_support() {
            return Ok(());
        }
        self.record(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![NewEvent::new("support.read", what, id)],
        )
        .await
    }

    /// The instance's own keys (they seal SUPPORT operators' e-mails and chain instance-level events),
    /// created on first use.
    pub async fn instance_keys(&self) -> Result<Arc<WorkspaceKeys>> {
        match self.keys.workspace_keys(audit::INSTANCE, true).await {
            Err(Error::NotFound(_)) => {
                match self
                    .keys
                    .create_workspace_keys(audit::INSTANCE, self.clock.now())
                    .await
                {
                    Ok(()) | Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
                self.keys.evict(audit::INSTANCE);
                self.keys.workspace_keys(audit::INSTANCE, false).await
            }
            other => other,
        }
    }

    /// Mints a console token for a member of `workspace` (operators, until the hosted login exists).
    /// Creates the member if no user has this e-mail; otherwise gives the existing user `role`. Audited
    /// as `token.issue` (and `user.create` or `user.role.change`).
    pub async fn issue_console_token(
        &self,
        workspace: WorkspaceId,
        email: &str,
        role: Role,
        ttl: Duration,
        actor: &Actor,
    ) -> Result<(User, IssuedToken)> {
        let ttl = check_console_ttl(ttl)?;
        let email = parse_email("email", email)?;
        self.get_workspace(workspace).await?;
        let keys = self.keys.workspace_keys(workspace, false).await?;
        let index = email_index(&keys, &email);
        let mut attempt = 0;
        let (user, session) = loop {
            attempt += 1;
            let existing = self.stores.users.find_user_by_email(workspace, &index).await?;
            let plan = plan_console_member(workspace, &keys, &email, role, ttl, existing, self.clock.now())?;
            match self
                .commit(workspace, &keys, actor, plan.changes, plan.events)
                .await
            {
                Ok(()) => break (plan.user, plan.session),
                // Someone created the member a moment ago: use theirs.
                Err(Error::Conflict("member-exists")) if attempt == 1 => continue,
                Err(e) => return Err(e),
            }
        };
        let token = self.console_token_for(&user, &session)?;
        Ok((user, token))
    }

    fn console_token_for(&self, user: &User, session: &LoginSession) -> Result<IssuedToken> {
        self.tokens.issue(
            TokenKind::User,
            console_audience(user.workspace_id),
            user.workspace_id,
            user.id,
            session.id,
            user.role,
            user.revision,
            session.expires_at.since(session.created_at),
            session.created_at,
            None,
        )
    }

    /// Creates a workspace (free plan) whose first OWNER is the caller's e-mail address, in one
    /// transaction, and returns a console token for it. OWNERs only.
    pub async fn create_owned_workspace(
        &self,
        caller: &ConsoleCaller,
        name: &str,
    ) -> Result<(Workspace, IssuedToken)> {
        if caller.role() != Role::Owner {
            return Err(Error::Forbidden(ForbiddenReason::Role));
        }
        let me = self.find_member(caller.workspace_id(), caller.token.user).await?;
        let email = me
            .email_sealed
            .as_deref()
            .map(|sealed| open_email(&caller.keys, me.workspace_id, me.id, sealed))
            .transpose()?
            .and_then(|stored| EmailAddress::parse(&stored).ok())
            .ok_or_else(|| {
                Error::invalid(
                    "email",
                    "the caller has no e-mail address to own a workspace with",
                )
            })?;
        let now = self.clock.now();
        let ttl = caller
            .token
            .expires_at
            .since(now)
            .clamp(Duration::from_secs(60), MAX_CONSOLE_TTL);
        let (workspace, (user, session)) = self
            .create_workspace_with(name, crate::Plan::free(), &caller.actor, |w, keys| {
                let plan = plan_console_member(w.id, keys, &email, Role::Owner, ttl, None, now)?;
                Ok((plan.changes, plan.events, (plan.user, plan.session)))
            })
            .await?;
        let token = self.console_token_for(&user, &session)?;
        Ok((workspace, token))
    }

    /// Creates a SUPPORT operator (command line only). Audited in the instance's chain.
    pub async fn create_support(&self, email: &str, actor: &Actor) -> Result<SupportOperator> {
        let email = parse_email("email", email)?;
        let keys = self.instance_keys().await?;
        let index = email_index(&keys, &email);
        if self.stores.support.find_support_by_email(&index).await?.is_some() {
            return Err(Error::Conflict("support operator exists"));
        }
        let id = UserId::new();
        let op = SupportOperator {
            id,
            email_sealed: seal_email(&keys, audit::INSTANCE, id, &email)?,
            email_index: index.to_vec(),
            revision: 1,
            created_at: self.clock.now(),
        };
        self.commit(
            audit::INSTANCE,
            &keys,
            actor,
            vec![Change::InsertSupport(op.clone())],
            vec![NewEvent::new("support.create", "support_operator", id)],
        )
        .await?;
        Ok(op)
    }

    /// The SUPPORT operator with this e-mail.
    pub async fn find_support(&self, email: &str) -> Result<SupportOperator> {
        let email = parse_email("email", email)?;
        let keys = self.instance_keys().await?;
        self.stores
            .support
            .find_support_by_email(&email_index(&keys, &email))
            .await?
            .ok_or(Error::NotFound("support operator"))
    }

    /// SUPPORT operators with their e-mail addresses.
    pub async fn list_support(&self) -> Result<Vec<(SupportOperator, String)>> {
        let keys = self.instance_keys().await?;
        let mut out = Vec::new();
        for op in self.stores.support.list_support().await? {
            let email = crate::auth::callback::open_email(&keys, audit::INSTANCE, op.id, &op.email_sealed)?;
            out.push((op, email));
        }
        Ok(out)
    }

    /// Removes a SUPPORT operator; its tokens stop working on every node.
    pub async fn delete_support(&self, email: &str, actor: &Actor) -> Result<()> {
        let op = self.find_support(email).await?;
        let keys = self.instance_keys().await?;
        self.commit(
            audit::INSTANCE,
            &keys,
            actor,
            vec![Change::DeleteSupport(op.id)],
            vec![NewEvent::new("support.delete", "support_operator", op.id)],
        )
        .await
    }

    /// Mints a SUPPORT token for reading one workspace. Audited in that workspace's log.
    pub async fn issue_support_token(
        &self,
        workspace: WorkspaceId,
        email: &str,
        ttl: Duration,
        actor: &Actor,
    ) -> Result<(SupportOperator, IssuedToken)> {
        let ttl = check_console_ttl(ttl)?;
        let op = self.find_support(email).await?;
        self.get_workspace(workspace).await?;
        let keys = self.keys.workspace_keys(workspace, false).await?;
        let now = self.clock.now();
        self.record(
            workspace,
            &keys,
            actor,
            vec![NewEvent::new("token.issue", "support_operator", op.id).values(
                None,
                Some(serde_json::json!({"kind": "support", "role": "support", "expires_at": now.plus(ttl).rfc3339()})),
            )],
        )
        .await?;
        let token = self.tokens.issue(
            TokenKind::User,
            console_audience(workspace),
            workspace,
            op.id,
            SessionId::new(),
            Role::Support,
            op.revision,
            ttl,
            now,
            None,
        )?;
        Ok((op, token))
    }
}

impl Services {
    /// Creates a new token-signing key (the old one keeps verifying until its tokens expire), tells the
    /// other nodes, and records it in the instance's audit log. Returns the new key id.
    pub async fn rotate_signing_key(&self, actor: &Actor) -> Result<String> {
        let kid = self.tokens.rotate_signing_key(self.clock.now()).await?;
        self.stores.coord.publish(Invalidation::SigningKeys).await?;
        let keys = self.instance_keys().await?;
        self.record(
            audit::INSTANCE,
            &keys,
            actor,
            vec![NewEvent::new("keys.rotate_signing", "signing_key", &kid)],
        )
        .await?;
        Ok(kid)
    }
}

/// What minting a console token changes: the member (created, or given `role`) and a console session,
/// with their audit events.
struct ConsoleMemberPlan {
    user: User,
    session: LoginSession,
    changes: Vec<Change>,
    events: Vec<NewEvent>,
}

fn plan_console_member(
    workspace: WorkspaceId,
    keys: &WorkspaceKeys,
    email: &EmailAddress,
    role: Role,
    ttl: Duration,
    existing: Option<User>,
    now: crate::Timestamp,
) -> Result<ConsoleMemberPlan> {
    if !matches!(role, Role::Owner | Role::Admin | Role::User) {
        return Err(Error::invalid("role", "must be owner, admin or user"));
    }
    let mut changes = Vec::new();
    let mut events = Vec::new();
    let user = match existing {
        Some(mut user) => {
            if user.status != UserStatus::Active {
                return Err(Error::Forbidden(ForbiddenReason::AccountLocked));
            }
            if user.role != role {
                changes.push(Change::ExpectRole(user.id, user.role));
                changes.push(Change::SetRole(user.id, role));
                events.push(NewEvent::new("user.role.change", "user", user.id).values(
                    Some(serde_json::json!({"role": user.role.as_str()})),
                    Some(serde_json::json!({"role": role.as_str()})),
                ));
                user.role = role;
                user.revision += 1;
            }
            user
        }
        None => {
            let id = UserId::new();
            let user = User {
                id,
                workspace_id: workspace,
                role,
                revision: 1,
                status: UserStatus::Active,
                email_sealed: Some(seal_email(keys, workspace, id, email)?),
                email_index: Some(email_index(keys, email).to_vec()),
                name_sealed: None,
                created_at: now,
                updated_at: now,
            };
            changes.push(Change::InsertUser(user.clone()));
            // The e-mail is PII: the event names the user, whose record holds it sealed.
            events.push(
                NewEvent::new("user.create", "user", id)
                    .values(None, Some(serde_json::json!({"role": role.as_str()}))),
            );
            user
        }
    };
    let session = LoginSession {
        id: SessionId::new(),
        workspace_id: workspace,
        application_id: None,
        user_id: user.id,
        browser_session_id: None,
        created_at: now,
        expires_at: now.plus(ttl),
        ended_at: None,
    };
    changes.push(Change::InsertSession(session.clone()));
    events.push(NewEvent::new("token.issue", "user", user.id).values(
        None,
        Some(serde_json::json!({
            "kind": "console",
            "role": role.as_str(),
            "session": session.id,
            "expires_at": session.expires_at.rfc3339(),
        })),
    ));
    Ok(ConsoleMemberPlan {
        user,
        session,
        changes,
        events,
    })
}

fn check_console_ttl(ttl: Duration) -> Result<Duration> {
    if ttl < Duration::from_secs(60) || ttl > MAX_CONSOLE_TTL {
        return Err(Error::invalid("ttl", "must be between 1 minute and 24 hours"));
    }
    Ok(ttl)
}

/// What a change invalidates in caches.
pub fn invalidation_of(workspace: WorkspaceId, change: &Change) -> Option<Invalidation> {
    Some(match change {
        Change::InsertWorkspace(_)
        | Change::RenameWorkspace(_)
        | Change::SetPlan(_)
        | Change::SetLoginPolicy(_)
        | Change::SetBranding(_) => Invalidation::Workspace(workspace),
        Change::InsertApplication(a) | Change::UpdateApplication(a) => Invalidation::Application(a.id),
        Change::DeleteApplication(id) | Change::SetApplicationSecret(id, _) => Invalidation::Application(*id),
        Change::InsertUser(u) => Invalidation::User(workspace, u.id),
        Change::SetRole(u, _)
        | Change::UpgradeUser { user: u, .. }
        | Change::SetStatus(u, _)
        | Change::RaiseRevision(u)
        | Change::DeleteUser(u) => Invalidation::User(workspace, *u),
        Change::SetUserTier(t) => Invalidation::User(workspace, t.user),
        Change::InsertSession(s) => Invalidation::Session(workspace, s.id),
        Change::EndSession(s) => Invalidation::Session(workspace, *s),
        Change::DeleteSupport(u) => Invalidation::Support(*u),
        Change::InsertInvite(_)
        | Change::RevokeInvite(_)
        | Change::SetPassword(..)
        | Change::AcceptInvite(_)
        | Change::InsertIdentityProvider(_)
        | Change::DeleteIdentityProvider(_)
        | Change::LinkIdentity(..)
        | Change::ClaimSetup(_)
        | Change::RecordWebhookEvent { .. }
        | Change::LinkBilling(_)
        | Change::AdvanceBilling { .. }
        | Change::SetBillingSecret { .. }
        | Change::ExpectRole(..)
        | Change::EndSignInLockout(_)
        | Change::EndLinks(_)
        | Change::InsertSupport(_) => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(parse_email("e", " a@b.example ").unwrap().as_str(), "a@b.example");
        for bad in ["", "a", "@b", "a@", "a@@b", "a b@c", "a@b\u{7}c"] {
            assert!(parse_email("e", bad).is_err(), "{bad:?}");
        }
    }
}
