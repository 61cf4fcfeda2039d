//! The signed-in user's account page: where they are signed in (and signing out any of those), recent
//! sign-ins, and changing the password.

use secureflows_crypto::SecretString;
use secureflows_crypto::password::PasswordCheck;

use crate::audit::{self, Actor, ActorKind, EventFilter, NewEvent};
use crate::keyring::WorkspaceKeys;
use crate::login::hosted::browser_client_aad;
use crate::store::Change;
use crate::{AuthFailure, BrowserSession, BrowserSessionId, Error, Result, Services, Timestamp, User};

/// What the account page shows a signed-in user.
#[derive(Debug, Clone)]
pub struct AccountOverview {
    /// Their e-mail address.
    pub email: String,
    /// Whether it is verified.
    pub verified: bool,
    /// Their second factors.
    pub factors: crate::login::mfa::MfaStatus,
    /// Their passkeys.
    pub passkeys: Vec<crate::login::passkey::PasskeyInfo>,
    /// The browsers they are signed in on.
    pub sessions: Vec<DeviceSession>,
    /// Their recent sign-ins, newest first.
    pub history: Vec<SignInRecord>,
}

/// One browser the user is signed in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    /// Id.
    pub id: BrowserSessionId,
    /// The browser asking.
    pub current: bool,
    /// User agent at sign-in.
    pub device: String,
    /// Client address at sign-in.
    pub client_ip: String,
    /// Signed in.
    pub created_at: Timestamp,
    /// Last used.
    pub last_seen_at: Timestamp,
}

/// What the console shows of one user.
#[derive(Debug, Clone)]
pub struct UserOverview {
    /// The user.
    pub member: crate::members::Member,
    /// The browsers they are signed in on, most recent first.
    pub devices: Vec<DeviceSession>,
    /// Their last sign-in attempts, newest first.
    pub history: Vec<SignInRecord>,
    /// Their upstream identities (sign-in providers, trusted issuers), oldest first.
    pub identities: Vec<LinkedIdentity>,
}

/// An upstream identity linked to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// The provider's issuer.
    pub issuer: String,
    /// The user's subject there.
    pub subject: String,
    /// Linked.
    pub linked_at: Timestamp,
}

/// One recent sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInRecord {
    /// When.
    pub at: Timestamp,
    /// `user.sign_in`, `user.sign_in_failed`, `user.sign_in_locked`, `user.sign_up`.
    pub action: String,
    /// Client address.
    pub client_ip: String,
    /// User agent.
    pub user_agent: String,
}

fn end_user(client: &Actor, user: &User) -> Actor {
    let mut actor = client.clone();
    actor.kind = ActorKind::EndUser;
    actor.id = Some(user.id);
    actor
}

impl Services {
    /// Everything the account page shows a signed-in user (the last ten sign-ins).
    pub async fn account_overview(&self, session: &BrowserSession, user: &User) -> Result<AccountOverview> {
        let keys = self.keys.workspace_keys(user.workspace_id, false).await?;
        Ok(AccountOverview {
            email: self.user_email(&keys, user).unwrap_or_default(),
            verified: self
                .stores
                .passwords
                .email_verified(user.workspace_id, user.id)
                .await?,
            factors: self.mfa_status(user).await?,
            passkeys: self.list_passkeys(user).await?,
            sessions: self.account_sessions(session).await?,
            history: self.login_history(user, 10).await?,
        })
    }

    /// The browsers the user is signed in on, the current one first.
    pub async fn account_sessions(&self, current: &BrowserSession) -> Result<Vec<DeviceSession>> {
        let keys = self
            .keys
            .workspace_keys(current.workspace_id, self.state.trusted())
            .await?;
        let sessions = self
            .stores
            .browsers
            .list_browser_sessions(current.workspace_id, current.user_id, self.clock.now())
            .await?;
        let mut out: Vec<DeviceSession> = sessions
            .iter()
            .map(|s| {
                let (device, client_ip) = open_client(&keys, s);
                DeviceSession {
                    id: s.id,
                    current: s.id == current.id,
                    device,
                    client_ip,
                    created_at: s.created_at,
                    last_seen_at: s.last_seen_at,
                }
            })
            .collect();
        out.sort_by_key(|s| (!s.current, std::cmp::Reverse(s.last_seen_at)));
        Ok(out)
    }

    /// What the console shows of one user (OWNER, ADMIN): the user, the browsers they are signed in
    /// on (most recent first), their last twenty sign-in attempts and their linked identities.
    pub async fn user_overview(
        &self,
        caller: &crate::console::ConsoleCaller,
        id: crate::UserId,
    ) -> Result<UserOverview> {
        let member = self.get_member(caller, id).await?;
        caller.require_admin()?;
        let sessions = self
            .stores
            .browsers
            .list_browser_sessions(caller.workspace_id(), id, self.clock.now())
            .await?;
        let mut devices: Vec<DeviceSession> = sessions
            .iter()
            .map(|s| {
                let (device, client_ip) = open_client(&caller.keys, s);
                DeviceSession {
                    id: s.id,
                    current: false,
                    device,
                    client_ip,
                    created_at: s.created_at,
                    last_seen_at: s.last_seen_at,
                }
            })
            .collect();
        devices.sort_by_key(|s| std::cmp::Reverse(s.last_seen_at));
        let history = self.login_history(&member.user, 20).await?;
        let identities = self
            .stores
            .users
            .list_identities(caller.workspace_id(), id)
            .await?
            .into_iter()
            .filter_map(|(identity, at)| {
                let opened =
                    crate::auth::callback::open_identity(&caller.keys, caller.workspace_id(), id, &identity);
                match opened {
                    Ok((issuer, subject)) => Some(LinkedIdentity {
                        issuer,
                        subject,
                        linked_at: at,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "a linked identity could not be opened");
                        None
                    }
                }
            })
            .collect();
        Ok(UserOverview {
            member,
            devices,
            history,
            identities,
        })
    }

    /// Signs one of the user's browsers out (`NotFound` for anything else), with its application
    /// sessions and refresh tokens.
    pub async fn end_account_session(
        &self,
        current: &BrowserSession,
        target: BrowserSessionId,
        client: &Actor,
    ) -> Result<()> {
        let sessions = self
            .stores
            .browsers
            .list_browser_sessions(current.workspace_id, current.user_id, self.clock.now())
            .await?;
        let session = sessions
            .into_iter()
            .find(|s| s.id == target)
            .ok_or(Error::NotFound("session"))?;
        self.end_browser_session(&session, client).await
    }

    /// Signs every other browser of the user out. Returns how many.
    pub async fn end_other_sessions(&self, current: &BrowserSession, client: &Actor) -> Result<usize> {
        let others: Vec<BrowserSession> = self
            .stores
            .browsers
            .list_browser_sessions(current.workspace_id, current.user_id, self.clock.now())
            .await?
            .into_iter()
            .filter(|s| s.id != current.id)
            .collect();
        for session in &others {
            self.end_browser_session(session, client).await?;
        }
        Ok(others.len())
    }

    /// The user's recent sign-in attempts, newest first (from the audit log).
    pub async fn login_history(&self, user: &User, limit: usize) -> Result<Vec<SignInRecord>> {
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        let filter = EventFilter {
            resource: Some(user.id.to_string()),
            ..EventFilter::default()
        };
        let events = self
            .stores
            .audit
            .list_events(user.workspace_id, &filter, 200)
            .await?;
        let mut out = Vec::new();
        for e in events
            .iter()
            .filter(|e| e.event.action.starts_with("user.sign_in") || e.event.action == "user.sign_up")
        {
            let keys = self
                .keys_opening(user.workspace_id, &keys, &e.event.details_sealed)
                .await?;
            let details = audit::open_details(&keys, e)?;
            out.push(SignInRecord {
                at: e.event.at,
                action: e.event.action.clone(),
                client_ip: details.client_ip.unwrap_or_default(),
                user_agent: details.user_agent.unwrap_or_default(),
            });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Changes the password: the current one is required, the new one meets the policy; every other
    /// browser is signed out and the user is told by e-mail.
    pub async fn change_password(
        &self,
        current: &BrowserSession,
        user: &User,
        old: &SecretString,
        new: &SecretString,
        client: &Actor,
    ) -> Result<()> {
        let workspace = self.get_workspace(user.workspace_id).await?;
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        let stored = self
            .stores
            .passwords
            .find_password(user.workspace_id, user.id)
            .await?;
        let right = match &stored {
            Some(phc) => self.passwords.verify(phc, old).await? != PasswordCheck::Mismatch,
            None => false,
        };
        if !right {
            return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
        }
        let email = self.user_email(&keys, user).unwrap_or_default();
        self.check_new_password(workspace.login_policy.password, new, &email)
            .await?;
        let phc = self.passwords.hash(new).await?;
        self.commit(
            user.workspace_id,
            &keys,
            &end_user(client, user),
            // A changed password ends the outstanding e-mailed links too.
            vec![Change::SetPassword(user.id, phc), Change::EndLinks(user.id)],
            vec![NewEvent::new("user.password_change", "user", user.id)],
        )
        .await?;
        self.end_other_sessions(current, client).await?;
        self.alert(
            &keys,
            user,
            "Your password was changed",
            "The password of your account was just changed.",
        )
        .await;
        Ok(())
    }
}

/// The device description and client address sealed in a browser session.
fn open_client(keys: &WorkspaceKeys, s: &BrowserSession) -> (String, String) {
    let opened = s
        .client_sealed
        .as_deref()
        .and_then(|sealed| keys.open(&browser_client_aad(s.workspace_id, s.id), sealed).ok());
    let value: serde_json::Value = opened
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let text = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned()
    };
    (text("user_agent"), text("client_ip"))
}
