//! A workspace's members as its administrators manage them: listing, roles, locking, ending sessions,
//! deletion, and invitations.
//!
//! Rules (on top of the store's last-owner rule): only an OWNER gives, changes or takes away the OWNER
//! role, and only an OWNER locks or deletes an OWNER. Every change raises the member's token revision,
//! so tokens that carry the old role stop working at once on every node.

use std::time::Duration;

use secureflows_crypto::SecretString;

use crate::audit::NewEvent;
use crate::auth::callback::{email_index, open_email};
use crate::console::{ConsoleCaller, parse_email};
use crate::keyring::WorkspaceKeys;
use crate::mail::Mail;
use crate::store::Change;
use crate::{Error, Invite, InviteId, Result, Role, Services, User, UserId, UserStatus, WorkspaceId};

/// A member with the sealed fields opened.
#[derive(Debug, Clone)]
pub struct Member {
    /// The record.
    pub user: User,
    /// E-mail address.
    pub email: Option<String>,
}

/// An invitation with its e-mail opened.
#[derive(Debug, Clone)]
pub struct InviteView {
    /// The record.
    pub invite: Invite,
    /// E-mail address.
    pub email: String,
}

/// Whether the invitation e-mail went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the SMTP server.
    Sent,
    /// No SMTP server is configured; the administrator shares the link.
    Disabled,
    /// The SMTP server refused or was unreachable; the invitation stands and can be revoked.
    Failed,
}

/// A created invitation.
#[derive(Debug)]
pub struct CreatedInvite {
    /// The invitation.
    pub view: InviteView,
    /// The single-use link (returned to the caller only when it was not e-mailed).
    pub link: SecretString,
    /// Delivery.
    pub delivery: Delivery,
}

/// Default lifetime of an invitation.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest lifetime of an invitation.
pub const MAX_INVITE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn role_json(role: Role) -> serde_json::Value {
    serde_json::json!({ "role": role.as_str() })
}

fn status_json(status: UserStatus) -> serde_json::Value {
    serde_json::json!({ "status": status.as_str() })
}

impl Services {
    /// A user of the workspace, or `NotFound`.
    pub async fn find_member(&self, workspace: WorkspaceId, id: UserId) -> Result<User> {
        self.stores
            .users
            .find_user(workspace, id)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    fn open_member(&self, keys: &WorkspaceKeys, user: User) -> Result<Member> {
        let email = user
            .email_sealed
            .as_deref()
            .map(|sealed| open_email(keys, user.workspace_id, user.id, sealed))
            .transpose()?;
        Ok(Member { user, email })
    }

    /// A page of the workspace's users (OWNER and ADMIN).
    pub async fn list_members(
        &self,
        caller: &ConsoleCaller,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<Member>> {
        caller.require_admin()?;
        let users = self
            .stores
            .users
            .list_users(caller.workspace_id(), after, limit)
            .await?;
        users
            .into_iter()
            .map(|u| self.open_member(&caller.keys, u))
            .collect()
    }

    /// Those who run the workspace: its OWNERs and ADMINs, oldest first (at most 500).
    pub async fn workspace_admins(&self, caller: &ConsoleCaller) -> Result<Vec<Member>> {
        caller.require_admin()?;
        let users = self.stores.users.list_admins(caller.workspace_id(), 500).await?;
        users
            .into_iter()
            .map(|u| self.open_member(&caller.keys, u))
            .collect()
    }

    /// The user with exactly this e-mail address (found through its keyed hash, the blind index), if
    /// any. OWNER and ADMIN.
    pub async fn member_by_email(&self, caller: &ConsoleCaller, email: &str) -> Result<Option<Member>> {
        caller.require_admin()?;
        let Ok(email) = crate::email::EmailAddress::parse(email) else {
            return Ok(None);
        };
        let index = email_index(&caller.keys, &email);
        let found = self
            .stores
            .users
            .find_user_by_email(caller.workspace_id(), &index)
            .await?;
        found.map(|u| self.open_member(&caller.keys, u)).transpose()
    }

    /// One user: OWNER and ADMIN read anyone of the workspace, anyone reads themselves.
    pub async fn get_member(&self, caller: &ConsoleCaller, id: UserId) -> Result<Member> {
        if id != caller.token.user || caller.is_support() {
            caller.require_admin()?;
        }
        let user = self.find_member(caller.workspace_id(), id).await?;
        self.open_member(&caller.keys, user)
    }

    /// Only an OWNER acts on an OWNER.
    fn require_may_manage(caller: &ConsoleCaller, target: &User) -> Result<()> {
        caller.require_admin()?;
        if target.role == Role::Owner && caller.role() != Role::Owner {
            return Err(Error::Forbidden(crate::ForbiddenReason::Role));
        }
        Ok(())
    }

    /// 403 `quota-exceeded` when the workspace's OWNERs and ADMINs fill its plan's member limit.
    pub(crate) async fn require_member_room(&self, workspace: WorkspaceId) -> Result<()> {
        let plan = self.get_workspace(workspace).await?.plan;
        if let Some(max) = self.plans.limits(&plan).max_members {
            let admins = self
                .stores
                .users
                .list_admins(workspace, max.saturating_add(1))
                .await?;
            if admins.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
                return Err(Error::Forbidden(crate::ForbiddenReason::QuotaExceeded(
                    crate::Quota::Members,
                )));
            }
        }
        Ok(())
    }

    /// Changes a member's role. `Conflict("last-owner")` if it would leave no OWNER.
    pub async fn set_member_role(&self, caller: &ConsoleCaller, id: UserId, role: Role) -> Result<Member> {
        caller.require_may_grant(role)?;
        let target = self.find_member(caller.workspace_id(), id).await?;
        Self::require_may_manage(caller, &target)?;
        if target.role == role {
            return self.open_member(&caller.keys, target);
        }
        if !target.role.is_admin() && role.is_admin() {
            self.require_member_room(caller.workspace_id()).await?;
        }
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::ExpectRole(id, target.role), Change::SetRole(id, role)],
            vec![
                NewEvent::new("user.role.change", "user", id)
                    .values(Some(role_json(target.role)), Some(role_json(role))),
            ],
        )
        .await?;
        let user = self.find_member(caller.workspace_id(), id).await?;
        self.open_member(&caller.keys, user)
    }

    /// Locks or unlocks a member. Locking ends every session of theirs at once. Unlocking ends both a
    /// lock and a sign-in lockout (after too many failed attempts), and is audited either way.
    pub async fn set_member_locked(
        &self,
        caller: &ConsoleCaller,
        id: UserId,
        locked: bool,
    ) -> Result<Member> {
        let workspace = caller.workspace_id();
        let target = self.find_member(workspace, id).await?;
        Self::require_may_manage(caller, &target)?;
        if locked {
            if target.status != UserStatus::Locked {
                self.commit(
                    workspace,
                    &caller.keys,
                    &caller.actor,
                    vec![
                        Change::ExpectRole(id, target.role),
                        Change::SetStatus(id, UserStatus::Locked),
                    ],
                    vec![NewEvent::new("user.lock", "user", id).values(
                        Some(status_json(target.status)),
                        Some(status_json(UserStatus::Locked)),
                    )],
                )
                .await?;
            }
        } else {
            let (failures, until) = self.stores.passwords.sign_in_failures(workspace, id).await?;
            let lockout = until.filter(|u| *u > self.clock.now());
            // Setting the status active ends a sign-in lockout too.
            let change = if target.status == UserStatus::Active {
                Change::EndSignInLockout(id)
            } else {
                Change::SetStatus(id, UserStatus::Active)
            };
            self.commit(
                workspace,
                &caller.keys,
                &caller.actor,
                vec![Change::ExpectRole(id, target.role), change],
                vec![NewEvent::new("user.unlock", "user", id).values(
                    Some(serde_json::json!({
                        "status": target.status.as_str(),
                        "failed_sign_ins": failures,
                        "sign_in_locked_until": lockout.map(|u| u.rfc3339()),
                    })),
                    Some(serde_json::json!({
                        "status": UserStatus::Active.as_str(),
                        "failed_sign_ins": 0,
                        "sign_in_locked_until": null,
                    })),
                )],
            )
            .await?;
        }
        let user = self.find_member(workspace, id).await?;
        self.open_member(&caller.keys, user)
    }

    /// Ends every login session of a member (raises the token revision).
    pub async fn end_member_sessions(&self, caller: &ConsoleCaller, id: UserId) -> Result<()> {
        let target = self.find_member(caller.workspace_id(), id).await?;
        Self::require_may_manage(caller, &target)?;
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::ExpectRole(id, target.role), Change::RaiseRevision(id)],
            vec![NewEvent::new("user.sessions.revoke", "user", id).values(
                Some(serde_json::json!({"revision": target.revision})),
                Some(serde_json::json!({"revision": target.revision + 1})),
            )],
        )
        .await
    }

    /// Deletes a member with their identities, sessions and vault values.
    pub async fn delete_member(&self, caller: &ConsoleCaller, id: UserId) -> Result<()> {
        let target = self.find_member(caller.workspace_id(), id).await?;
        Self::require_may_manage(caller, &target)?;
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::ExpectRole(id, target.role), Change::DeleteUser(id)],
            vec![NewEvent::new("user.delete", "user", id).values(Some(role_json(target.role)), None)],
        )
        .await
    }

    /// Invites someone by e-mail. The link's token is single-use, stored only as its SHA-256, and sent
    /// over SMTP when a server is configured.
    pub async fn create_invite(
        &self,
        caller: &ConsoleCaller,
        email: &str,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<CreatedInvite> {
        self.issue_invite(caller, email, role, ttl, None).await
    }

    /// An invitation, replacing (revoking, in the same transaction) `replaces` if given.
    async fn issue_invite(
        &self,
        caller: &ConsoleCaller,
        email: &str,
        role: Role,
        ttl: Option<Duration>,
        replaces: Option<&Invite>,
    ) -> Result<CreatedInvite> {
        caller.require_may_grant(role)?;
        if role.is_admin() && replaces.is_none() {
            self.require_member_room(caller.workspace_id()).await?;
        }
        let email = parse_email("email", email)?;
        let ttl = ttl.unwrap_or(DEFAULT_INVITE_TTL);
        if ttl < Duration::from_secs(300) || ttl > MAX_INVITE_TTL {
            return Err(Error::invalid(
                "expires_in",
                "must be between 5 minutes and 30 days",
            ));
        }
        let workspace = caller.workspace_id();
        let now = self.clock.now();
        let token = secureflows_crypto::random_token("sfinv_")?;
        let id = InviteId::new();
        let invite = Invite {
            id,
            workspace_id: workspace,
            email_sealed: caller
                .keys
                .seal(&invite_email_aad(workspace, id), email.as_str().as_bytes())?,
            email_index: email_index(&caller.keys, &email).to_vec(),
            role,
            token_hash: secureflows_crypto::sha256(token.as_bytes()).to_vec(),
            invited_by: caller.token.user,
            created_at: now,
            expires_at: now.plus(ttl),
            revoked_at: None,
            accepted_at: None,
        };
        let mut changes = Vec::new();
        let mut events = Vec::new();
        if let Some(old) = replaces {
            changes.push(Change::RevokeInvite(old.id));
            events.push(NewEvent::new("invite.revoke", "invite", old.id).values(
                Some(serde_json::json!({"state": old.state(now)})),
                Some(serde_json::json!({"state": "revoked", "replaced_by": id.to_string()})),
            ));
        }
        changes.push(Change::InsertInvite(invite.clone()));
        events.push(NewEvent::new("invite.create", "invite", id).values(
            None,
            // The e-mail is PII: the event names the invitation, whose record holds it sealed.
            Some(serde_json::json!({"role": role.as_str(), "expires_at": invite.expires_at.rfc3339()})),
        ));
        self.commit(workspace, &caller.keys, &caller.actor, changes, events)
            .await?;
        // The workspace's hosted login accepts it.
        let link = SecretString::new(format!(
            "{}/invite/accept?token={token}",
            self.issuer_of(workspace)
        ));
        let delivery = if !self.mailer.enabled() {
            Delivery::Disabled
        } else {
            let mail = Mail {
                to: email.as_str().to_owned(),
                subject: format!("You are invited to {} on secureFlows", caller.workspace.name),
                text: format!(
                    "You have been invited to join the workspace \"{}\" as {}.\n\n\
                     Accept the invitation: {}\n\n\
                     The link works once and expires at {}. If you did not expect this e-mail, ignore it.\n",
                    caller.workspace.name,
                    role.as_str(),
                    link.expose(),
                    invite.expires_at.rfc3339()
                ),
            };
            match self.mailer.send(mail).await {
                Ok(()) => Delivery::Sent,
                Err(e) => {
                    tracing::warn!(error = %e, invite = %id, "sending the invitation e-mail failed");
                    Delivery::Failed
                }
            }
        };
        Ok(CreatedInvite {
            view: InviteView {
                invite,
                email: email.into_string(),
            },
            link,
            delivery,
        })
    }

    pub(crate) fn open_invite(&self, keys: &WorkspaceKeys, invite: Invite) -> Result<InviteView> {
        let plain = keys.open(
            &invite_email_aad(invite.workspace_id, invite.id),
            &invite.email_sealed,
        )?;
        let email = String::from_utf8(plain).map_err(|_| Error::Integrity("sealed e-mail is not UTF-8"))?;
        Ok(InviteView { invite, email })
    }

    /// A page of the workspace's invitations.
    pub async fn list_invites(
        &self,
        caller: &ConsoleCaller,
        after: Option<InviteId>,
        limit: u32,
    ) -> Result<Vec<InviteView>> {
        caller.require_admin()?;
        let invites = self
            .stores
            .invites
            .list_invites(caller.workspace_id(), after, limit)
            .await?;
        invites
            .into_iter()
            .map(|i| self.open_invite(&caller.keys, i))
            .collect()
    }

    /// Sends an invitation again: a new link to the same address with the same role; the old link
    /// stops working (its token was never kept, so it cannot be sent twice).
    pub async fn resend_invite(&self, caller: &ConsoleCaller, id: InviteId) -> Result<CreatedInvite> {
        let old = self.revoke_invite(caller, id).await?;
        self.create_invite(caller, &old.email, old.invite.role, None)
            .await
    }

    /// Revokes a pending invitation; its link stops working.
    pub async fn revoke_invite(&self, caller: &ConsoleCaller, id: InviteId) -> Result<InviteView> {
        caller.require_admin()?;
        let invite = self
            .stores
            .invites
            .find_invite(caller.workspace_id(), id)
            .await?
            .ok_or(Error::NotFound("invite"))?;
        caller.require_may_grant(invite.role)?;
        if invite.accepted_at.is_some() || invite.revoked_at.is_some() {
            return Err(Error::Conflict("invite-not-pending"));
        }
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::RevokeInvite(id)],
            vec![NewEvent::new("invite.revoke", "invite", id).values(
                Some(serde_json::json!({"state": invite.state(self.clock.now())})),
                Some(serde_json::json!({"state": "revoked"})),
            )],
        )
        .await?;
        let invite = self
            .stores
            .invites
            .find_invite(caller.workspace_id(), id)
            .await?
            .ok_or(Error::NotFound("invite"))?;
        self.open_invite(&caller.keys, invite)
    }
}

fn invite_email_aad(workspace: WorkspaceId, id: InviteId) -> secureflows_crypto::Aad {
    secureflows_crypto::Aad::new("sf.invite.email.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(id.as_uuid().as_bytes())
}
