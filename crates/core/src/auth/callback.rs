//! `POST /auth/callback` with an upstream ID token: verify it for the application that trusts its
//! issuer, find or create the user, open a login session within the plan's limits, and issue a
//! SESSION JWT.
//!
//! The hosted login's authorization-code mode arrives at the same endpoint later; it shares everything
//! after "who is this user".

use std::time::Duration;

use secureflows_crypto::{Aad, blind_index};

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::token::{IssuedToken, TokenKind};
use crate::auth::upstream::{self, UpstreamIdentity};
use crate::email::EmailAddress;
use crate::keyring::WorkspaceKeys;
use crate::login::oauth::OAuthError;
use crate::login::oidc::{CodeClient, TokenGrant};
use crate::model::NewIdentity;
use crate::store::{NewUser, SessionAdmission, SessionLimits};
use crate::{
    Application, ApplicationId, AuthFailure, Error, ForbiddenReason, LimitKind, LoginSession, Plan, Result,
    Role, Services, SessionId, Timestamp, UpstreamTrust, User, UserId, UserStatus, Workspace, WorkspaceId,
};

/// What `POST /auth/callback` was sent: an upstream ID token, or a hosted-login code with its PKCE
/// verifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallbackRequest<'a> {
    /// An upstream ID token.
    pub id_token: Option<&'a str>,
    /// A hosted-login authorization code.
    pub code: Option<&'a str>,
    /// `client_id`, if sent.
    pub client_id: Option<&'a str>,
    /// The client secret (confidential clients exchanging a code).
    pub client_secret: Option<&'a secureflows_crypto::SecretString>,
    /// The PKCE verifier of a code.
    pub code_verifier: Option<&'a str>,
    /// The redirect URI a code was issued for.
    pub redirect_uri: Option<&'a str>,
    /// The browser's `Origin`, if any.
    pub origin: Option<&'a str>,
}

/// Why the callback signed no one in: a domain error (ID tokens) or an OAuth error (codes).
#[derive(Debug)]
pub enum CallbackFailure {
    /// The ID token, the client or a limit refused.
    Refused(Error),
    /// The code exchange refused.
    Code(OAuthError),
}

impl From<Error> for CallbackFailure {
    fn from(e: Error) -> CallbackFailure {
        CallbackFailure::Refused(e)
    }
}

/// The outcome of a successful sign-in. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct SignedIn {
    /// The SESSION JWT.
    pub token: IssuedToken,
    /// The new login session.
    pub session: SessionId,
    /// The user.
    pub user: UserId,
    /// The application.
    pub application: ApplicationId,
    /// The workspace.
    pub workspace: WorkspaceId,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("session", &self.session)
            .field("user", &self.user)
            .field("application", &self.application)
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// The Session API's callback: an upstream ID token or a hosted-login code, exchanged for a
    /// SESSION JWT (with a code, also the refresh and ID tokens the client may have).
    pub async fn session_callback(
        &self,
        request: CallbackRequest<'_>,
        actor: Actor,
    ) -> std::result::Result<TokenGrant, CallbackFailure> {
        let client_id = request
            .client_id
            .map(|c| {
                c.parse::<ApplicationId>()
                    .map_err(|_| Error::invalid("client_id", "not a client id"))
            })
            .transpose()?;
        match (request.id_token, request.code) {
            (Some(id_token), None) => {
                let signed_in = self
                    .exchange_id_token(id_token, client_id, request.origin, actor)
                    .await?;
                Ok(TokenGrant {
                    access_token: signed_in.token,
                    id_token: None,
                    refresh_token: None,
                    scope: String::new(),
                    session: signed_in.session,
                    user: signed_in.user,
                    application: signed_in.application,
                    workspace: signed_in.workspace,
                })
            }
            (None, Some(code)) => {
                let client = CodeClient::FromCode {
                    client_id,
                    secret: request.client_secret,
                };
                self.exchange_code(client, code, request.code_verifier, request.redirect_uri, &actor)
                    .await
                    .map_err(CallbackFailure::Code)
            }
            _ => Err(CallbackFailure::Refused(Error::invalid(
                "id_token",
                "send either id_token (upstream sign-in) or code with code_verifier (hosted login)",
            ))),
        }
    }

    /// Exchanges an upstream ID token for a SESSION JWT. `client_id` is needed only when several
    /// applications trust the same issuer and audience. A browser `origin` must be on the application's
    /// allow-list.
    pub async fn exchange_id_token(
        &self,
        id_token: &str,
        client_id: Option<ApplicationId>,
        origin: Option<&str>,
        actor: Actor,
    ) -> Result<SignedIn> {
        let app = self.application_for_id_token(id_token, client_id).await?;
        if let Some(origin) = origin
            && !app.allowed_origins.iter().any(|o| o == origin)
        {
            return Err(Error::Forbidden(ForbiddenReason::OriginNotAllowed));
        }
        let trust = app.trust.as_ref().ok_or_else(Error::invalid_token)?;
        let now = self.clock.now();
        let identity =
            upstream::verify_id_token(self.upstream.as_ref(), id_token, trust, self.settings.leeway, now)
                .await?;

        // SECURITY: an ID token is exchanged once; a replay (stolen token, double submit) gets 401. The
        // record is keyed on the signed part (header and payload), not the whole string: an ECDSA
        // signature can be rewritten into another valid one (s <-> n-s), the signed part cannot.
        let signed_part = id_token.rsplit_once('.').map_or(id_token, |(signed, _)| signed);
        let token_hash = secureflows_crypto::sha256(signed_part.as_bytes());
        if !self
            .stores
            .used_tokens
            .mark_used(&token_hash, identity.expires_at)
            .await?
        {
            return Err(Error::Unauthenticated(AuthFailure::Replayed));
        }
        self.sign_in(&app, trust, &identity, now, actor).await
    }

    async fn application_for_id_token(
        &self,
        id_token: &str,
        client_id: Option<ApplicationId>,
    ) -> Result<Application> {
        let route = upstream::routing_claims(id_token)?;
        let audiences: Vec<&String> = route.audiences.iter().take(8).collect();
        // With a client id, that application alone: other workspaces registering applications that
        // trust the same issuer and audience can never crowd it out.
        if let Some(id) = client_id {
            return self
                .stores
                .applications
                .find_application(id)
                .await?
                .filter(|a| {
                    a.trust
                        .as_ref()
                        .is_some_and(|t| t.issuer == route.issuer && audiences.contains(&&t.audience))
                })
                .ok_or_else(Error::invalid_token);
        }
        let mut candidates = Vec::new();
        for audience in audiences {
            candidates.extend(
                self.stores
                    .applications
                    .find_applications_trusting(&route.issuer, audience)
                    .await?,
            );
        }
        candidates.sort_by_key(|a| a.id);
        candidates.dedup_by_key(|a| a.id);
        match candidates.len() {
            0 => Err(Error::invalid_token()),
            1 => Ok(candidates.remove(0)),
            _ => Err(Error::Malformed(
                "several applications trust this issuer and audience: send client_id".to_owned(),
            )),
        }
    }

    async fn sign_in(
        &self,
        app: &Application,
        trust: &UpstreamTrust,
        identity: &UpstreamIdentity,
        now: Timestamp,
        mut actor: Actor,
    ) -> Result<SignedIn> {
        let workspace = self
            .stores
            .workspaces
            .find_workspace(app.workspace_id)
            .await?
            .ok_or_else(Error::invalid_token)?;
        let keys = match self.keys.workspace_keys(workspace.id, self.state.trusted()).await {
            Ok(keys) => keys,
            // Keys destroyed (workspace deleted, or its rows restored from a backup): nothing to sign into.
            Err(Error::NotFound(_)) => return Err(Error::invalid_token()),
            Err(e) => return Err(e),
        };
        let user = self
            .find_or_create_user(workspace.id, &keys, identity, now)
            .await?;
        if user.status != UserStatus::Active {
            return Err(Error::Forbidden(ForbiddenReason::AccountLocked));
        }
        // SECURITY: an application's exchange is a sign-in like any other: a user with a second factor
        // (or whom the workspace requires to have one) gets a session only when the issuer asserts a
        // second factor in the ways this application trusts it to; otherwise the user goes through the
        // hosted login, which asks for it.
        let factors = self.mfa_status(&user).await?;
        let needs_second = factors.totp || factors.passkeys > 0 || self.mfa_required(&user).await?;
        if needs_second && !trust.asserts_second_factor(&identity.amr, identity.acr.as_deref()) {
            return Err(Error::Forbidden(ForbiddenReason::SecondFactorRequired));
        }

        let (session, token) = self.start_app_session(app, &workspace, &user, now).await?;
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        self.record(
            workspace.id,
            &keys,
            &actor,
            vec![NewEvent::new("token.issue", "user", user.id).values(
                None,
                Some(serde_json::json!({
                    "kind": "session",
                    "application_id": app.id,
                    "session": session.id,
                    "expires_at": session.expires_at.rfc3339(),
                })),
            )],
        )
        .await?;
        Ok(SignedIn {
            token,
            session: session.id,
            user: user.id,
            application: app.id,
            workspace: workspace.id,
        })
    }

    /// A login session of the application for the user (within the plan's limits) and its SESSION JWT,
    /// for sign-ins that need no refresh token (upstream ID tokens, anonymous visitors).
    pub(crate) async fn start_app_session(
        &self,
        app: &Application,
        workspace: &Workspace,
        user: &User,
        now: Timestamp,
    ) -> Result<(LoginSession, IssuedToken)> {
        let session = LoginSession {
            id: SessionId::new(),
            workspace_id: workspace.id,
            application_id: Some(app.id),
            user_id: user.id,
            browser_session_id: None,
            created_at: now,
            expires_at: now.plus(app.token_ttl),
            ended_at: None,
        };
        let tier = self.tier_of(app, user.id).await?;
        self.open_app_session(&workspace.plan, &session, now).await?;
        let token = self.tokens.issue(
            TokenKind::Session,
            app.id.to_string(),
            workspace.id,
            user.id,
            session.id,
            user.role,
            user.revision,
            app.token_ttl,
            now,
            tier.as_ref().map(|t| t.name.as_str()),
        )?;
        Ok((session, token))
    }

    /// Opens an application's login session within the plan's concurrent-session limits: 429
    /// (`Limited`, with the time until the earliest session ends) when they are reached.
    pub(crate) async fn open_app_session(
        &self,
        plan: &Plan,
        session: &LoginSession,
        now: Timestamp,
    ) -> Result<()> {
        let limits = self.plans.limits(plan);
        let admission = self
            .stores
            .sessions
            .insert_session_within_limits(
                session,
                SessionLimits {
                    per_workspace: limits.max_sessions_per_workspace,
                    per_user: limits.max_sessions_per_user,
                },
                now,
            )
            .await?;
        if let SessionAdmission::Full { earliest_expiry } = admission {
            return Err(Error::Limited {
                kind: LimitKind::Sessions,
                retry_after: earliest_expiry.since(now).max(Duration::from_secs(1)),
            });
        }
        Ok(())
    }

    /// The user of an upstream identity, created on its first sign-in.
    ///
    /// SECURITY: identities are keyed by (issuer, subject); this never links or merges by e-mail (the
    /// hosted login links only under the rules of `login::federation`, before it comes here), and it
    /// never changes a member's address: an upstream claim is not a proof of address to us. A new
    /// member keeps the address only if the issuer verified it (`email_verified`), in its canonical
    /// form, indexed and marked verified; an address the issuer did not verify, or that the address
    /// rule refuses, is not kept at all — it would find, and sign in as, whoever owns it.
    /// `Conflict("account-exists")` when the verified address belongs to another member.
    pub(crate) async fn find_or_create_user(
        &self,
        workspace: WorkspaceId,
        keys: &WorkspaceKeys,
        identity: &UpstreamIdentity,
        now: Timestamp,
    ) -> Result<User> {
        let identity_index = identity_index(keys, identity);
        if let Some(user) = self
            .stores
            .users
            .find_user_by_identity(workspace, &identity_index)
            .await?
        {
            return Ok(user);
        }
        let email = identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
            .and_then(|e| EmailAddress::parse(e).ok());
        let email_index = email.as_ref().map(|e| email_index(keys, e));
        if let Some(index) = &email_index
            && self
                .stores
                .users
                .find_user_by_email(workspace, index)
                .await?
                .is_some()
        {
            // The same identity signing in twice at once: the other request made the user a moment ago.
            return self
                .stores
                .users
                .find_user_by_identity(workspace, &identity_index)
                .await?
                .ok_or(Error::Conflict("account-exists"));
        }
        let user_id = UserId::new();
        let (email_sealed, name_sealed) = seal_profile(keys, workspace, user_id, email.as_ref(), identity)?;
        let user = User {
            id: user_id,
            workspace_id: workspace,
            role: Role::User,
            revision: 1,
            status: UserStatus::Active,
            email_sealed,
            email_index: email_index.map(|i| i.to_vec()),
            name_sealed,
            created_at: now,
            updated_at: now,
        };
        let new = NewUser {
            user: user.clone(),
            identity: new_identity(keys, workspace, user_id, identity)?,
        };
        match self.stores.users.insert_user(&new).await {
            Ok(()) => {}
            // The same person signed in twice at once (the other request created the user), or the
            // address was taken a moment ago.
            Err(Error::Conflict(_)) => {
                return self
                    .stores
                    .users
                    .find_user_by_identity(workspace, &identity_index)
                    .await?
                    .ok_or(Error::Conflict("account-exists"));
            }
            Err(e) => return Err(e),
        }
        if email.is_some() {
            self.stores
                .passwords
                .set_email_verified(workspace, user_id)
                .await?;
        }
        Ok(user)
    }
}

/// The keyed hash under which an upstream identity (issuer, subject) is looked up.
pub(crate) fn identity_index(keys: &WorkspaceKeys, identity: &UpstreamIdentity) -> [u8; 32] {
    blind_index(
        keys.index(),
        &Aad::new("sf.identity.v1")
            .field(&identity.issuer)
            .field(&identity.subject),
    )
}

/// An identity row for a user: its keyed hash, and (issuer, subject) sealed for administrators.
pub(crate) fn new_identity(
    keys: &WorkspaceKeys,
    workspace: WorkspaceId,
    user: UserId,
    identity: &UpstreamIdentity,
) -> Result<NewIdentity> {
    let index = identity_index(keys, identity);
    let subject = serde_json::json!({"iss": identity.issuer, "sub": identity.subject}).to_string();
    let sealed = keys.seal(
        &Aad::new("sf.identity.v1")
            .field(workspace.as_uuid().as_bytes())
            .field(user.as_uuid().as_bytes())
            .field(index),
        subject.as_bytes(),
    )?;
    Ok(NewIdentity {
        index: index.to_vec(),
        sealed,
    })
}

/// Opens a user's identity row: (issuer, subject).
pub(crate) fn open_identity(
    keys: &WorkspaceKeys,
    workspace: WorkspaceId,
    user: UserId,
    identity: &NewIdentity,
) -> Result<(String, String)> {
    let plain = keys.open(
        &Aad::new("sf.identity.v1")
            .field(workspace.as_uuid().as_bytes())
            .field(user.as_uuid().as_bytes())
            .field(&identity.index),
        &identity.sealed,
    )?;
    let value: serde_json::Value =
        serde_json::from_slice(&plain).map_err(|_| Error::Integrity("identity"))?;
    match (value["iss"].as_str(), value["sub"].as_str()) {
        (Some(iss), Some(sub)) => Ok((iss.to_owned(), sub.to_owned())),
        _ => Err(Error::Integrity("identity")),
    }
}

/// The keyed hash under which an e-mail address is looked up. Only canonical addresses (see
/// [`crate::email`]) are indexed, so every spelling of one address finds the same user.
pub fn email_index(keys: &WorkspaceKeys, email: &EmailAddress) -> [u8; 32] {
    blind_index(keys.index(), &Aad::new("sf.email.v2").field(email.as_str()))
}

/// Seals a user's e-mail address (its canonical form).
pub fn seal_email(
    keys: &WorkspaceKeys,
    workspace: WorkspaceId,
    user: UserId,
    email: &EmailAddress,
) -> Result<Vec<u8>> {
    keys.seal(&email_aad(workspace, user), email.as_str().as_bytes())
}

/// Opens a user's e-mail address.
pub fn open_email(
    keys: &WorkspaceKeys,
    workspace: WorkspaceId,
    user: UserId,
    sealed: &[u8],
) -> Result<String> {
    let plain = keys.open(&email_aad(workspace, user), sealed)?;
    String::from_utf8(plain).map_err(|_| Error::Integrity("sealed e-mail is not UTF-8"))
}

/// The associated data of a user's sealed display name.
pub(crate) fn name_aad(workspace: WorkspaceId, user: UserId) -> Aad {
    Aad::new("sf.user.name.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(user.as_uuid().as_bytes())
}

fn email_aad(workspace: WorkspaceId, user: UserId) -> Aad {
    Aad::new("sf.user.email.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(user.as_uuid().as_bytes())
}

/// Sealed e-mail and name.
type SealedProfile = (Option<Vec<u8>>, Option<Vec<u8>>);

fn seal_profile(
    keys: &WorkspaceKeys,
    workspace: WorkspaceId,
    user: UserId,
    email: Option<&EmailAddress>,
    identity: &UpstreamIdentity,
) -> Result<SealedProfile> {
    let email = email.map(|e| seal_email(keys, workspace, user, e)).transpose()?;
    let name = identity
        .name
        .as_deref()
        .map(|n| keys.seal(&name_aad(workspace, user), n.as_bytes()))
        .transpose()?;
    Ok((email, name))
}
