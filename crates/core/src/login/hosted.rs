//! Sign-up and sign-in on the hosted login pages, and the browser (single sign-on) session they open.
//!
//! Sign-in never tells whether an e-mail address has an account: an unknown address, a wrong password,
//! a locked or an upstream-only account all answer `InvalidCredentials` after the same Argon2id work.
//! Failed attempts are counted per account before the password is checked, so parallel guesses cannot
//! exceed the lockout threshold.

use std::sync::Arc;

use secureflows_crypto::password::PasswordCheck;
use secureflows_crypto::{Aad, SecretString};

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::callback::{email_index, name_aad, open_email, seal_email};
use crate::email::EmailAddress;
use crate::keyring::WorkspaceKeys;
use crate::login::mfa::FirstFactor;
use crate::login::password::PasswordPolicy;
use crate::store::{AttemptGate, Change};
use crate::{
    AuthFailure, BrowserSession, BrowserSessionId, Error, FieldError, FlowId, Result, Role, Services, User,
    UserId, UserStatus, Workspace, WorkspaceId,
};

/// The cookie token of a new browser session (shown once, stored as its SHA-256). `Debug` hides it.
#[derive(Clone)]
pub struct BrowserLogin {
    /// The session.
    pub session: BrowserSession,
    /// The cookie's value.
    pub cookie: SecretString,
}

impl std::fmt::Debug for BrowserLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserLogin")
            .field("session", &self.session.id)
            .finish_non_exhaustive()
    }
}

/// What a sign-up form sends.
#[derive(Debug, Clone)]
pub struct SignUp {
    /// E-mail address.
    pub email: String,
    /// Password.
    pub password: SecretString,
    /// Display name (optional).
    pub name: Option<String>,
}

impl Services {
    /// The workspace and its keys for hosted-login work; a deleted workspace is `NotFound`.
    pub(crate) async fn login_workspace(
        &self,
        workspace: WorkspaceId,
    ) -> Result<(Workspace, Arc<WorkspaceKeys>)> {
        let found = self.get_workspace(workspace).await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        Ok((found, keys))
    }

    /// Checks a new password against the policy and the breached-password source.
    pub async fn check_new_password(
        &self,
        policy: PasswordPolicy,
        password: &SecretString,
        email: &str,
    ) -> Result<()> {
        policy.check(password.expose(), email).map_err(Error::Invalid)?;
        if self.breached_count(password).await? > 0 {
            return Err(Error::Invalid(vec![FieldError {
                field: "password".into(),
                message: "appears in a known data breach; choose another".into(),
            }]));
        }
        Ok(())
    }

    /// How often the password was seen in breaches (0 when the check is off or unreachable: a sign-up
    /// is not refused because a third party is down, and the failure is logged).
    async fn breached_count(&self, password: &SecretString) -> Result<u64> {
        let digest = secureflows_crypto::password::breach_digest(password.expose());
        match self.breached.occurrences(&digest).await {
            Ok(n) => Ok(n),
            Err(e) => {
                tracing::warn!(error = %e, "breached-password check failed; continuing without it");
                Ok(0)
            }
        }
    }

    /// Creates a user with a password (role USER) and signs the browser in.
    pub async fn sign_up(
        &self,
        workspace: WorkspaceId,
        form: SignUp,
        flow: Option<FlowId>,
        client: &Actor,
    ) -> Result<(User, FirstFactor)> {
        // An anonymous visitor's flow: the sign-up becomes that visitor's account.
        if let Some(flow_id) = flow
            && let Some((pending, _)) = self.find_flow(workspace, flow_id).await?
            && let Some(anon) = pending.request.upgrade_user
        {
            return self.sign_up_upgrading(workspace, anon, form, flow, client).await;
        }
        let (found, keys) = self.login_workspace(workspace).await?;
        let email = EmailAddress::parse(&form.email)?;
        self.check_new_password(found.login_policy.password, &form.password, email.as_str())
            .await?;
        let index = email_index(&keys, &email);
        if self
            .stores
            .users
            .find_user_by_email(workspace, &index)
            .await?
            .is_some()
        {
            return Err(Error::Conflict("account-exists"));
        }
        let phc = self.passwords.hash(&form.password).await?;
        let (user, actor) = self
            .create_password_user(&keys, workspace, &email, form.name.as_deref(), phc, client)
            .await?;
        if let Err(e) = self.send_verification(&user).await {
            tracing::warn!(error = %e, user = %user.id, "the verification e-mail could not be sent");
        }
        // A workspace that requires a second factor has the new user set one up first.
        let step = self
            .after_first_factor(&keys, &user, vec!["pwd".into()], flow, &actor)
            .await?;
        Ok((user, step))
    }

    /// Creates a member (role USER) with a password hash; `Conflict("account-exists")` if the address
    /// is taken. Returns the user and the actor that acts as them.
    pub(crate) async fn create_password_user(
        &self,
        keys: &Arc<WorkspaceKeys>,
        workspace: WorkspaceId,
        email: &EmailAddress,
        name: Option<&str>,
        phc: String,
        client: &Actor,
    ) -> Result<(User, Actor)> {
        let index = email_index(keys, email);
        let now = self.clock.now();
        let id = UserId::new();
        let name_sealed = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| keys.seal(&name_aad(workspace, id), n.as_bytes()))
            .transpose()?;
        let user = User {
            id,
            workspace_id: workspace,
            role: Role::User,
            revision: 1,
            status: UserStatus::Active,
            email_sealed: Some(seal_email(keys, workspace, id, email)?),
            email_index: Some(index.to_vec()),
            name_sealed,
            created_at: now,
            updated_at: now,
        };
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(id);
        let result = self
            .commit(
                workspace,
                keys,
                &actor,
                vec![Change::InsertUser(user.clone()), Change::SetPassword(id, phc)],
                vec![NewEvent::new("user.sign_up", "user", id).values(
                    None,
                    Some(serde_json::json!({"role": "user", "method": "password"})),
                )],
            )
            .await;
        match result {
            Ok(()) => Ok((user, actor)),
            Err(Error::Conflict(_)) => Err(Error::Conflict("account-exists")),
            Err(e) => Err(e),
        }
    }

    /// Signs a browser in with e-mail and password (or, with TOTP on, opens the second-factor step).
    /// Every failure is `InvalidCredentials`, answered no sooner than `login.failure_floor` after the
    /// attempt began.
    pub async fn password_sign_in(
        &self,
        workspace: WorkspaceId,
        email: &str,
        password: &SecretString,
        flow: Option<FlowId>,
        client: &Actor,
    ) -> Result<(User, FirstFactor)> {
        let started = tokio::time::Instant::now();
        let result = self
            .check_password_sign_in(workspace, email, password, flow, client)
            .await;
        if matches!(
            result,
            Err(Error::Unauthenticated(AuthFailure::InvalidCredentials))
        ) {
            // SECURITY: an unknown address costs a decoy hash, an existing one a hash and the writes
            // that count the failure; the floor hides what is left of the difference (SECURITY.md
            // check 21), and any load both see alike.
            tokio::time::sleep_until(started + self.settings.login.failure_floor).await;
        }
        result
    }

    async fn check_password_sign_in(
        &self,
        workspace: WorkspaceId,
        email: &str,
        password: &SecretString,
        flow: Option<FlowId>,
        client: &Actor,
    ) -> Result<(User, FirstFactor)> {
        let bad = || Error::Unauthenticated(AuthFailure::InvalidCredentials);
        let (_, keys) = self.login_workspace(workspace).await?;
        let settings = &self.settings.login;
        let now = self.clock.now();
        // An address the rule refuses has no account: the same answer and work as an unknown one.
        let user = match EmailAddress::parse(email) {
            Ok(email) => {
                self.stores
                    .users
                    .find_user_by_email(workspace, &email_index(&keys, &email))
                    .await?
            }
            Err(_) => None,
        };
        let Some(user) = user else {
            self.passwords.verify_dummy(password).await?;
            return Err(bad());
        };
        if let AttemptGate::Locked(_) = self
            .stores
            .passwords
            .begin_attempt(workspace, user.id, settings.max_failures, now)
            .await?
        {
            self.passwords.verify_dummy(password).await?;
            return Err(bad());
        }
        let stored = self.stores.passwords.find_password(workspace, user.id).await?;
        let check = match &stored {
            Some(phc) => self.passwords.verify(phc, password).await?,
            None => {
                self.passwords.verify_dummy(password).await?;
                PasswordCheck::Mismatch
            }
        };
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        if check == PasswordCheck::Mismatch || user.status != UserStatus::Active {
            let locked = self
                .stores
                .passwords
                .lock_if_exhausted(
                    workspace,
                    user.id,
                    settings.max_failures,
                    now.plus(settings.lockout),
                )
                .await?;
            let mut events = vec![
                NewEvent::new("user.sign_in_failed", "user", user.id)
                    .values(None, Some(serde_json::json!({"method": "password"}))),
            ];
            if locked {
                events.push(NewEvent::new("user.sign_in_locked", "user", user.id).values(
                    None,
                    Some(serde_json::json!({"until": now.plus(settings.lockout).rfc3339()})),
                ));
            }
            self.record(workspace, &keys, &actor, events).await?;
            return Err(bad());
        }
        // Failures are cleared only once the whole sign-in succeeds (after a second factor, if any):
        // a known password must not reset the count of wrong second-factor codes.
        let mut changes = Vec::new();
        if check == PasswordCheck::MatchOutdated {
            // Imported bcrypt (or older parameters): upgrade to the current Argon2id now that the
            // password is known.
            changes.push(Change::SetPassword(user.id, self.passwords.hash(password).await?));
        }
        let mut events = vec![
            NewEvent::new("user.sign_in", "user", user.id)
                .values(None, Some(serde_json::json!({"method": "password"}))),
        ];
        if !changes.is_empty() {
            events.push(NewEvent::new("user.password_rehash", "user", user.id));
        }
        let breached = self.breached_count(password).await? > 0;
        if breached {
            events.push(NewEvent::new("user.password_breached", "user", user.id));
        }
        self.commit(workspace, &keys, &actor, changes, events).await?;
        if breached {
            self.alert(
                &keys,
                &user,
                "Your password appears in a data breach",
                "You just signed in with a password that appears in a known data breach of another \
                 service. Please choose a new password (\"Forgot password\" on the sign-in page).",
            )
            .await;
        }
        let step = self
            .after_first_factor(&keys, &user, vec!["pwd".into()], flow, &actor)
            .await?;
        Ok((user, step))
    }

    /// Opens a browser (single sign-on) session for the user; the cookie's value is returned once.
    pub(crate) async fn open_browser_session(
        &self,
        keys: &WorkspaceKeys,
        user: &User,
        amr: Vec<String>,
        actor: &Actor,
    ) -> Result<BrowserLogin> {
        let now = self.clock.now();
        let cookie = secureflows_crypto::random_token("")?;
        let id = BrowserSessionId::new();
        let client = serde_json::json!({
            "user_agent": actor.user_agent,
            "client_ip": actor.client_ip,
        })
        .to_string();
        let client_sealed = keys.seal(&browser_client_aad(user.workspace_id, id), client.as_bytes())?;
        let session = BrowserSession {
            id,
            workspace_id: user.workspace_id,
            user_id: user.id,
            token_hash: secureflows_crypto::sha256(cookie.as_bytes()).to_vec(),
            revision: user.revision,
            auth_time: now,
            amr,
            client_sealed: Some(client_sealed),
            created_at: now,
            last_seen_at: now,
            expires_at: now.plus(self.settings.login.browser_session_ttl),
            ended_at: None,
        };
        self.stores.browsers.insert_browser_session(&session).await?;
        Ok(BrowserLogin {
            session,
            cookie: SecretString::new(cookie),
        })
    }

    /// The browser session a cookie names, if it is active and its user may still sign in.
    pub async fn browser_session(
        &self,
        workspace: WorkspaceId,
        cookie: &str,
    ) -> Result<Option<(BrowserSession, User)>> {
        if cookie.len() != 43 {
            return Ok(None);
        }
        let hash = secureflows_crypto::sha256(cookie.as_bytes());
        let now = self.clock.now();
        let Some(session) = self
            .stores
            .browsers
            .find_browser_session(workspace, &hash, now)
            .await?
        else {
            return Ok(None);
        };
        let Some(user) = self.stores.users.find_user(workspace, session.user_id).await? else {
            return Ok(None);
        };
        // "Sign out everywhere", a role change or a lock raised the revision: this browser is out too.
        if user.status != UserStatus::Active || user.revision != session.revision {
            return Ok(None);
        }
        // Last seen, to the nearest five minutes (one write per browser per five minutes at most).
        if now.since(session.last_seen_at) > std::time::Duration::from_secs(300) {
            self.stores
                .browsers
                .touch_browser_session(workspace, session.id, now)
                .await?;
        }
        Ok(Some((session, user)))
    }

    /// Ends a browser session, every application session opened from it and their refresh tokens.
    /// Vault data stays.
    pub async fn end_browser_session(&self, session: &BrowserSession, client: &Actor) -> Result<()> {
        let now = self.clock.now();
        let ended = self
            .stores
            .browsers
            .end_browser_session(session.workspace_id, session.id, now)
            .await?;
        for s in &ended {
            self.state
                .apply(crate::Invalidation::Session(session.workspace_id, *s));
        }
        let (_, keys) = self.login_workspace(session.workspace_id).await?;
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(session.user_id);
        self.record(
            session.workspace_id,
            &keys,
            &actor,
            vec![
                NewEvent::new("user.sign_out", "user", session.user_id)
                    .values(None, Some(serde_json::json!({"sessions_ended": ended.len()}))),
            ],
        )
        .await
    }

    /// The CSRF token that goes with a browser's CSRF cookie and, once it is signed in, its browser
    /// session: a keyed hash of both under the workspace's index key (a "signed double-submit cookie").
    /// A form can only carry it if the page was served to that browser; and a token learnt for a cookie
    /// value before sign-in (a cookie planted in the browser) is worth nothing after it.
    pub async fn csrf_token(
        &self,
        workspace: WorkspaceId,
        cookie: &str,
        session: Option<BrowserSessionId>,
    ) -> Result<String> {
        use base64::Engine as _;
        // The caller has found the workspace (page branding); a deleted one has no keys: NotFound.
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let session = session
            .map(|s| s.as_uuid().as_bytes().to_vec())
            .unwrap_or_default();
        let mac = secureflows_crypto::blind_index(
            keys.index(),
            &Aad::new("sf.csrf.v2").field(cookie).field(&session),
        );
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac))
    }

    /// The user's e-mail address in the clear (for ID tokens and user info).
    pub fn user_email(&self, keys: &WorkspaceKeys, user: &User) -> Option<String> {
        user.email_sealed
            .as_deref()
            .and_then(|sealed| open_email(keys, user.workspace_id, user.id, sealed).ok())
    }

    /// The user's display name in the clear.
    pub fn user_name(&self, keys: &WorkspaceKeys, user: &User) -> Option<String> {
        user.name_sealed.as_deref().and_then(|sealed| {
            keys.open(&name_aad(user.workspace_id, user.id), sealed)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        })
    }
}

/// The associated data of a browser session's sealed device and client address.
pub(crate) fn browser_client_aad(workspace: WorkspaceId, session: BrowserSessionId) -> Aad {
    Aad::new("sf.browser.client.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(session.as_uuid().as_bytes())
}
