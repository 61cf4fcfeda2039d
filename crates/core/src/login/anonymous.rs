//! Anonymous (ANON) sessions for applications that allow them, upgraded in place when the visitor
//! signs up: the same user id, so the same vault.
//!
//! The application asks for an upgrade ticket with the ANON session token (`POST
//! /auth/upgrade`) and passes it to `authorize` as `upgrade`; a sign-up in that flow turns the ANON
//! user into a USER with the new address and password and raises the revision (the ANON tokens stop).
//! The ticket is single-use, lives 15 minutes and is stored hashed; signing in to an existing account
//! in that flow leaves the anonymous user alone.

use std::time::Duration;

use secureflows_crypto::SecretString;

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::callback::{SignedIn, email_index, seal_email};
use crate::auth::session::SessionCaller;
use crate::email::EmailAddress;
use crate::login::hosted::SignUp;
use crate::login::mfa::FirstFactor;
use crate::login::{credential_workspace, new_credential};
use crate::store::Change;
use crate::{
    ApplicationId, Error, ForbiddenReason, LinkPurpose, LoginLink, Result, Role, Services, User, UserId,
    UserStatus, WorkspaceId,
};

const UPGRADE_PREFIX: &str = "sfu_";
const UPGRADE_TTL: Duration = Duration::from_secs(15 * 60);

impl Services {
    /// A new anonymous user with a login session of the application, and its SESSION JWT. 403 if the
    /// application does not allow anonymous sessions; the plan's session limits apply.
    pub async fn start_anonymous(&self, client_id: ApplicationId, client: &Actor) -> Result<SignedIn> {
        let app = self
            .stores
            .applications
            .find_application(client_id)
            .await?
            .ok_or_else(Error::invalid_token)?;
        if !app.allow_anonymous {
            return Err(Error::Forbidden(ForbiddenReason::GuestsNotAllowed));
        }
        let workspace = self.get_workspace(app.workspace_id).await?;
        let keys = self
            .keys
            .workspace_keys(workspace.id, self.state.trusted())
            .await?;
        let now = self.clock.now();
        let user = User {
            id: UserId::new(),
            workspace_id: workspace.id,
            role: Role::Anon,
            revision: 1,
            status: UserStatus::Active,
            email_sealed: None,
            email_index: None,
            name_sealed: None,
            created_at: now,
            updated_at: now,
        };
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        self.commit(
            workspace.id,
            &keys,
            &actor,
            vec![Change::InsertUser(user.clone())],
            vec![NewEvent::new("user.create", "user", user.id).values(
                None,
                Some(serde_json::json!({"role": "anon", "application_id": app.id})),
            )],
        )
        .await?;
        let (session, token) = self.start_app_session(&app, &workspace, &user, now).await?;
        Ok(SignedIn {
            token,
            session: session.id,
            user: user.id,
            application: app.id,
            workspace: workspace.id,
        })
    }

    /// An upgrade ticket for an ANON caller (403 for anyone else), to pass to `authorize` as `upgrade`.
    pub async fn upgrade_ticket(&self, caller: &SessionCaller) -> Result<(SecretString, Duration)> {
        if caller.token.role != Role::Anon {
            return Err(Error::Forbidden(ForbiddenReason::Role));
        }
        let token = new_credential(UPGRADE_PREFIX, caller.token.workspace)?;
        let now = self.clock.now();
        self.stores
            .ceremonies
            .insert_link(&LoginLink {
                link_hash: secureflows_crypto::sha256(token.as_bytes()).to_vec(),
                workspace_id: caller.token.workspace,
                purpose: LinkPurpose::Upgrade,
                user_id: caller.token.user,
                flow_id: None,
                amr: Vec::new(),
                revision: Some(caller.token.revision),
                browser: None,
                created_at: now,
                expires_at: now.plus(UPGRADE_TTL),
            })
            .await?;
        Ok((SecretString::new(token), UPGRADE_TTL))
    }

    /// Spends an `upgrade` ticket of this workspace: the ANON user it names, kept in the
    /// authorization request until the sign-up; `None` if it is unknown, used or expired.
    pub(crate) async fn upgrade_target(
        &self,
        workspace: WorkspaceId,
        ticket: &str,
    ) -> Result<Option<UserId>> {
        if credential_workspace(UPGRADE_PREFIX, ticket) != Some(workspace) {
            return Ok(None);
        }
        let hash = secureflows_crypto::sha256(ticket.as_bytes());
        let link = self
            .stores
            .ceremonies
            .use_link(workspace, &hash, LinkPurpose::Upgrade, self.clock.now())
            .await?;
        Ok(link.map(|l| l.user_id))
    }

    /// Signs an anonymous visitor up in place: the ANON user becomes a USER with this address and
    /// password (same id, same vault); its ANON tokens stop. `NotFound` if it is no longer ANON.
    pub(crate) async fn upgrade_in_place(
        &self,
        workspace: WorkspaceId,
        anon: UserId,
        form: &SignUp,
        client: &Actor,
    ) -> Result<User> {
        let found = self.get_workspace(workspace).await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let email = EmailAddress::parse(&form.email)?;
        self.check_new_password(found.login_policy.password, &form.password, email.as_str())
            .await?;
        let phc = self.passwords.hash(&form.password).await?;
        self.upgrade_anon(workspace, &keys, anon, &email, phc, client)
            .await
    }

    /// Turns the ANON user into a USER with this address and password hash.
    pub(crate) async fn upgrade_anon(
        &self,
        workspace: WorkspaceId,
        keys: &std::sync::Arc<crate::keyring::WorkspaceKeys>,
        anon: UserId,
        email: &EmailAddress,
        phc: String,
        client: &Actor,
    ) -> Result<User> {
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(anon);
        self.commit(
            workspace,
            keys,
            &actor,
            vec![
                Change::UpgradeUser {
                    user: anon,
                    email_sealed: seal_email(keys, workspace, anon, email)?,
                    email_index: email_index(keys, email).to_vec(),
                },
                Change::SetPassword(anon, phc),
            ],
            vec![NewEvent::new("user.upgrade", "user", anon).values(
                Some(serde_json::json!({"role": "anon"})),
                Some(serde_json::json!({"role": "user", "method": "password"})),
            )],
        )
        .await
        .map_err(|e| match e {
            Error::Conflict(_) => Error::Conflict("account-exists"),
            other => other,
        })?;
        self.stores
            .users
            .find_user(workspace, anon)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// Sign-up that upgrades the ANON user of the flow's ticket instead of creating a user.
    pub(crate) async fn sign_up_upgrading(
        &self,
        workspace: WorkspaceId,
        anon: UserId,
        form: SignUp,
        flow: Option<crate::FlowId>,
        client: &Actor,
    ) -> Result<(User, FirstFactor)> {
        let user = self.upgrade_in_place(workspace, anon, &form, client).await?;
        self.state.apply(crate::Invalidation::User(workspace, anon));
        if let Err(e) = self.send_verification(&user).await {
            tracing::warn!(error = %e, user = %user.id, "the verification e-mail could not be sent");
        }
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        let step = self
            .after_first_factor(&keys, &user, vec!["pwd".into()], flow, &actor)
            .await?;
        Ok((user, step))
    }
}
