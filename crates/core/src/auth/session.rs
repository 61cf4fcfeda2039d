//! Login sessions on the Session API: authenticating a SESSION JWT on every request, logout and
//! revocation.
//!
//! The order of checks is part of the contract (SPEC.md): a bad signature, issuer, audience or
//! algorithm is 401; an expired token is 410; an ended session or a raised revision is 401 with the
//! distinct problem `session-revoked`.

use std::sync::Arc;

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::token::{TokenKind, VerifiedToken};
use crate::keyring::WorkspaceKeys;
use crate::store::Change;
use crate::{
    Application, ApplicationId, AuthFailure, Error, ForbiddenReason, PlanLimits, Result, Services,
    UserStatus, Workspace,
};

/// An authenticated Session API caller. Built from the token only.
#[derive(Debug, Clone)]
pub struct SessionCaller {
    /// What the token says.
    pub token: Arc<VerifiedToken>,
    /// The application (the token's audience).
    pub application: Arc<Application>,
    /// The workspace.
    pub workspace: Arc<Workspace>,
    /// The workspace plan's limits.
    pub limits: Arc<PlanLimits>,
    /// The workspace's keys (unwrapped, from this node's key cache).
    pub keys: Arc<WorkspaceKeys>,
}

impl Services {
    /// Authenticates a SESSION JWT. Cached after the first verification; expiry, application, login
    /// session and revision are checked every time.
    pub async fn authenticate_session(&self, bearer: &str) -> Result<SessionCaller> {
        let token = self.tokens.verify(bearer, TokenKind::Session).await?;
        let now = self.clock.now();
        self.tokens.check_time(&token, now)?;
        let trust = self.state.trusted();
        let app_id = token.application.ok_or_else(Error::invalid_token)?;
        let stores = &self.stores;

        let application = self
            .state
            .applications
            .get_or_load(&app_id, trust, || async {
                Ok(stores.applications.find_application(app_id).await?.map(Arc::new))
            })
            .await?
            .ok_or_else(Error::invalid_token)?;
        if application.workspace_id != token.workspace {
            return Err(Error::invalid_token());
        }
        let workspace = self.token_workspace(&token, trust).await?;
        self.check_login_session(&token, Some(app_id), trust).await?;
        self.check_member_revision(&token, trust).await?;
        let keys = self.token_keys(&token, trust).await?;
        let limits = self.plans.limits(&workspace.plan);
        Ok(SessionCaller {
            token,
            application,
            workspace,
            limits,
            keys,
        })
    }

    /// The token's workspace (401 if it is gone).
    pub(crate) async fn token_workspace(&self, token: &VerifiedToken, trust: bool) -> Result<Arc<Workspace>> {
        let stores = &self.stores;
        self.state
            .workspaces
            .get_or_load(&token.workspace, trust, || async {
                Ok(stores
                    .workspaces
                    .find_workspace(token.workspace)
                    .await?
                    .map(Arc::new))
            })
            .await?
            .ok_or_else(Error::invalid_token)
    }

    /// The token's login session is still open, for this user and this application (`None`: a console
    /// session). Otherwise 401 `session-revoked`.
    pub(crate) async fn check_login_session(
        &self,
        token: &VerifiedToken,
        application: Option<ApplicationId>,
        trust: bool,
    ) -> Result<()> {
        let stores = &self.stores;
        let session = self
            .state
            .sessions
            .get_or_load(&token.session, trust, || async {
                Ok(stores
                    .sessions
                    .find_session(token.workspace, token.session)
                    .await?
                    .map(Arc::new))
            })
            .await?;
        let open = match session {
            Some(s) if s.ended_at.is_none() && s.user_id == token.user => {
                match (s.application_id, application) {
                    (found, expected) if found == expected => true,
                    // A USER JWT from a console client's code exchange: the session is that client's.
                    (Some(client), None) => self.is_console_client(client, token.workspace, trust).await?,
                    _ => false,
                }
            }
            _ => false,
        };
        if open {
            Ok(())
        } else {
            Err(Error::Unauthenticated(AuthFailure::SessionRevoked))
        }
    }

    /// Whether an application of the workspace is a console client (deleting it ends its sessions).
    async fn is_console_client(
        &self,
        id: ApplicationId,
        workspace: crate::WorkspaceId,
        trust: bool,
    ) -> Result<bool> {
        let stores = &self.stores;
        let app = self
            .state
            .applications
            .get_or_load(&id, trust, || async {
                Ok(stores.applications.find_application(id).await?.map(Arc::new))
            })
            .await?;
        Ok(app.is_some_and(|a| a.console && a.workspace_id == workspace))
    }

    /// The member is active and still at the token's revision. Otherwise 401 `session-revoked`.
    pub(crate) async fn check_member_revision(&self, token: &VerifiedToken, trust: bool) -> Result<()> {
        let stores = &self.stores;
        let revision = self
            .state
            .revisions
            .get_or_load(&token.user, trust, || async {
                Ok(stores
                    .users
                    .find_user(token.workspace, token.user)
                    .await?
                    .filter(|u| u.status == UserStatus::Active)
                    .map(|u| u.revision))
            })
            .await?;
        if revision == Some(token.revision) {
            Ok(())
        } else {
            Err(Error::Unauthenticated(AuthFailure::SessionRevoked))
        }
    }

    /// The token's workspace keys. A workspace whose keys were destroyed (deleted, or restored from a
    /// backup after its deletion) has nothing a token could open: 401.
    pub(crate) async fn token_keys(&self, token: &VerifiedToken, trust: bool) -> Result<Arc<WorkspaceKeys>> {
        match self.keys.workspace_keys(token.workspace, trust).await {
            Ok(keys) => Ok(keys),
            Err(Error::NotFound(_)) => Err(Error::invalid_token()),
            Err(e) => Err(e),
        }
    }

    /// Ends the caller's login session (`POST /auth/logout`). Its tokens stop working at once.
    pub async fn logout(&self, caller: &SessionCaller, mut actor: Actor) -> Result<()> {
        actor.kind = ActorKind::EndUser;
        actor.id = Some(caller.token.user);
        self.commit(
            caller.token.workspace,
            &caller.keys,
            &actor,
            vec![Change::EndSession(caller.token.session)],
            vec![NewEvent::new("session.end", "user", caller.token.user).values(
                None,
                Some(serde_json::json!({"application_id": caller.application.id, "session": caller.token.session})),
            )],
        )
        .await
    }

    /// Signs the user out everywhere (`POST /sessions/revoke`): raises the token revision, which ends
    /// every login session of the user on every node. Audited as `user.sessions.revoke`.
    pub async fn revoke_sessions(&self, caller: &SessionCaller, mut actor: Actor) -> Result<()> {
        actor.kind = ActorKind::EndUser;
        actor.id = Some(caller.token.user);
        self.commit(
            caller.token.workspace,
            &caller.keys,
            &actor,
            vec![Change::RaiseRevision(caller.token.user)],
            vec![NewEvent::new("user.sessions.revoke", "user", caller.token.user).values(
                Some(serde_json::json!({"revision": caller.token.revision})),
                Some(serde_json::json!({"revision": caller.token.revision + 1, "application_id": caller.application.id})),
            )],
        )
        .await
    }

    /// Checks that a browser `Origin` may use this caller's application (exact string match).
    pub fn check_origin(&self, caller: &SessionCaller, origin: Option<&str>) -> Result<()> {
        match origin {
            None => Ok(()),
            Some(o) if caller.application.allowed_origins.iter().any(|a| a == o) => Ok(()),
            Some(_) => Err(Error::Forbidden(ForbiddenReason::OriginNotAllowed)),
        }
    }
}
