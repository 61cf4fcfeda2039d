//! Accepting an invitation on the hosted login: the invitee chooses a password and becomes a member
//! with the invited role; the link is spent in the same transaction, and the e-mail address counts as
//! verified (the link reached it).

use secureflows_crypto::SecretString;

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::callback::{email_index, seal_email};
use crate::email::EmailAddress;
use crate::login::mfa::FirstFactor;
use crate::members::InviteView;
use crate::store::Change;
use crate::{Error, Invite, Result, Services, User, UserId, UserStatus, WorkspaceId};

impl Services {
    /// A pending invitation of the workspace by its link token; `NotFound` if used, revoked, expired or
    /// unknown.
    async fn pending_invite(&self, workspace: WorkspaceId, token: &str) -> Result<Invite> {
        let hash = secureflows_crypto::sha256(token.as_bytes());
        self.stores
            .invites
            .find_invite_by_token(workspace, &hash)
            .await?
            .filter(|i| i.state(self.clock.now()) == "pending")
            .ok_or(Error::NotFound("invite"))
    }

    /// The pending invitation behind a link, opened, for the acceptance page.
    pub async fn invite_by_link(&self, workspace: WorkspaceId, token: &str) -> Result<InviteView> {
        let invite = self.pending_invite(workspace, token).await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        self.open_invite(&keys, invite)
    }

    /// Accepts an invitation: a new member with the invited role and this password. `Conflict` if the
    /// address already has an account of the workspace.
    pub async fn accept_invite(
        &self,
        workspace: WorkspaceId,
        token: &str,
        new_password: &SecretString,
        client: &Actor,
    ) -> Result<(User, FirstFactor)> {
        let view = self.invite_by_link(workspace, token).await?;
        let invite = &view.invite;
        // Pending invitations are not counted when they are made: the plan's member limit is checked
        // again when one is accepted.
        if invite.role.is_admin() {
            self.require_member_room(workspace).await?;
        }
        let found = self.get_workspace(workspace).await?;
        // The invited address, canonical (an invitation made before the address rule took effect is
        // indexed again under it here).
        let email = EmailAddress::parse(&view.email)?;
        self.check_new_password(found.login_policy.password, new_password, email.as_str())
            .await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let now = self.clock.now();
        let id = UserId::new();
        let user = User {
            id,
            workspace_id: workspace,
            role: invite.role,
            revision: 1,
            status: UserStatus::Active,
            email_sealed: Some(seal_email(&keys, workspace, id, &email)?),
            email_index: Some(email_index(&keys, &email).to_vec()),
            name_sealed: None,
            created_at: now,
            updated_at: now,
        };
        let phc = self.passwords.hash(new_password).await?;
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(id);
        self.commit(
            workspace,
            &keys,
            &actor,
            vec![
                Change::AcceptInvite(invite.id),
                Change::InsertUser(user.clone()),
                Change::SetPassword(id, phc),
            ],
            vec![
                NewEvent::new("invite.accept", "invite", invite.id).values(
                    None,
                    Some(serde_json::json!({"user_id": id, "role": invite.role.as_str()})),
                ),
                NewEvent::new("user.create", "user", id).values(
                    None,
                    Some(serde_json::json!({"role": invite.role.as_str(), "method": "invite"})),
                ),
            ],
        )
        .await
        .map_err(|e| match e {
            Error::Conflict(_) => Error::Conflict("account-exists"),
            other => other,
        })?;
        self.stores.passwords.set_email_verified(workspace, id).await?;
        let step = self
            .after_first_factor(&keys, &user, vec!["pwd".into()], None, &actor)
            .await?;
        Ok((user, step))
    }
}
