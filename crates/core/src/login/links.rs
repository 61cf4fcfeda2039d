//! E-mailed links (magic sign-in, e-mail verification, password reset) and security alerts.
//!
//! A link is a 256-bit single-use token naming its workspace, stored as its SHA-256, valid for
//! 15 minutes (verification: 24 hours), spent atomically on use, bound to its purpose and, for magic
//! links, to the authorization request that asked for it and the browser that asked (only that browser
//! continues the request; another one is just signed in). A newer link of the same kind replaces the
//! older ones, and a link that signs in stops working when the user's token revision moves (password
//! change or reset, sign-out everywhere, lock). Asking for a link never tells whether the address has
//! an account: the answer is the same and only existing accounts get mail.

use std::time::Duration;

use secureflows_crypto::SecretString;

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::callback::email_index;
use crate::email::EmailAddress;
use crate::keyring::WorkspaceKeys;
use crate::login::mfa::FirstFactor;
use crate::login::{credential_workspace, new_credential};
use crate::mail::Mail;
use crate::store::Change;
use crate::{Error, FlowId, LinkPurpose, LoginLink, Result, Services, User, UserStatus, WorkspaceId};

const LINK_PREFIX: &str = "sfl_";
const SHORT_LINK_TTL: Duration = Duration::from_secs(15 * 60);
const VERIFY_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// A browser past a first factor (or both), with the authorization request it continues.
#[derive(Debug)]
pub struct LinkSignIn {
    /// The user.
    pub user: User,
    /// Signed in, or a second factor still to give.
    pub step: FirstFactor,
    /// The pending authorization request, if the link was asked for during one.
    pub flow: Option<FlowId>,
}

fn actor_for(client: &Actor, user: &User) -> Actor {
    let mut actor = client.clone();
    actor.kind = ActorKind::EndUser;
    actor.id = Some(user.id);
    actor
}

impl Services {
    /// The active user with this e-mail address, if any.
    async fn user_by_email(
        &self,
        workspace: WorkspaceId,
        keys: &WorkspaceKeys,
        email: &str,
    ) -> Result<Option<User>> {
        // An address the rule refuses has no account.
        let Ok(email) = EmailAddress::parse(email) else {
            return Ok(None);
        };
        let index = email_index(keys, &email);
        Ok(self
            .stores
            .users
            .find_user_by_email(workspace, &index)
            .await?
            .filter(|u| u.status == UserStatus::Active))
    }

    /// Creates a link (replacing the user's unused links of that purpose) and mails it. The token is
    /// never returned or logged.
    #[allow(clippy::too_many_arguments)]
    async fn mail_link(
        &self,
        keys: &WorkspaceKeys,
        user: &User,
        purpose: LinkPurpose,
        flow: Option<FlowId>,
        browser: Option<Vec<u8>>,
        subject: &str,
        intro: &str,
    ) -> Result<()> {
        let Some(to) = self.user_email(keys, user) else {
            return Ok(());
        };
        let (url, ttl) = self.new_link(user, purpose, flow, browser).await?;
        let minutes = ttl.as_secs() / 60;
        self.mailer
            .send(Mail {
                to,
                subject: subject.to_owned(),
                text: format!(
                    "{intro}\n\n{}\n\nThe link works once, for {minutes} minutes. If you did not ask for it, ignore this message.\n",
                    url.expose()
                ),
            })
            .await
    }

    /// A one-time link with which a member sets a password and signs in on the hosted login (a reset
    /// link: 15 minutes, stored hashed, replacing the member's unused ones), for an operator to hand
    /// over — the first OWNER, made by `token issue`, has no password yet. Audited as `member.link`.
    pub async fn member_password_link(
        &self,
        workspace: WorkspaceId,
        email: &str,
        actor: &Actor,
    ) -> Result<(User, SecretString, Duration)> {
        self.get_workspace(workspace).await?;
        let keys = self.keys.workspace_keys(workspace, false).await?;
        let user = self
            .user_by_email(workspace, &keys, email)
            .await?
            .ok_or(Error::NotFound("member"))?;
        let (url, ttl) = self.new_link(&user, LinkPurpose::Reset, None, None).await?;
        self.record(
            workspace,
            &keys,
            actor,
            vec![NewEvent::new("member.link", "user", user.id)],
        )
        .await?;
        Ok((user, url, ttl))
    }

    /// Stores a new link for `user` and returns its URL (holding the token) and lifetime.
    async fn new_link(
        &self,
        user: &User,
        purpose: LinkPurpose,
        flow: Option<FlowId>,
        browser: Option<Vec<u8>>,
    ) -> Result<(SecretString, Duration)> {
        let workspace = user.workspace_id;
        let token = new_credential(LINK_PREFIX, workspace)?;
        let now = self.clock.now();
        let ttl = if purpose == LinkPurpose::Verify {
            VERIFY_LINK_TTL
        } else {
            SHORT_LINK_TTL
        };
        let link = LoginLink {
            link_hash: secureflows_crypto::sha256(token.as_bytes()).to_vec(),
            workspace_id: workspace,
            purpose,
            user_id: user.id,
            flow_id: flow,
            amr: Vec::new(),
            revision: Some(user.revision),
            browser,
            created_at: now,
            expires_at: now.plus(ttl),
        };
        self.stores.ceremonies.replace_links(&link, now).await?;
        let url = format!("{}/{}?token={token}", self.issuer_of(workspace), purpose.as_str());
        Ok((SecretString::new(url), ttl))
    }

    /// Mails a magic sign-in link to the address if it has an account; does nothing otherwise. `browser`
    /// is the asking browser's id (`sf_device`): only that browser continues `flow`.
    pub async fn send_magic_link(
        &self,
        workspace: WorkspaceId,
        email: &str,
        flow: Option<FlowId>,
        browser: &str,
    ) -> Result<()> {
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let Some(user) = self.user_by_email(workspace, &keys, email).await? else {
            return Ok(());
        };
        self.mail_link(
            &keys,
            &user,
            LinkPurpose::Magic,
            flow,
            Some(secureflows_crypto::sha256(browser.as_bytes()).to_vec()),
            "Your sign-in link",
            "Open this link to sign in:",
        )
        .await
    }

    /// Mails a password-reset link to the address if it has an account; does nothing otherwise.
    pub async fn send_password_reset(&self, workspace: WorkspaceId, email: &str) -> Result<()> {
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let Some(user) = self.user_by_email(workspace, &keys, email).await? else {
            return Ok(());
        };
        self.mail_link(
            &keys,
            &user,
            LinkPurpose::Reset,
            None,
            None,
            "Reset your password",
            "Open this link to choose a new password:",
        )
        .await
    }

    /// Mails the e-mail verification link of a new account (when mail is configured).
    pub async fn send_verification(&self, user: &User) -> Result<()> {
        if !self.mailer.enabled() {
            return Ok(());
        }
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        self.mail_link(
            &keys,
            user,
            LinkPurpose::Verify,
            None,
            None,
            "Confirm your e-mail address",
            "Open this link to confirm your e-mail address:",
        )
        .await
    }

    /// Spends a link of `purpose`: its user, active. `NotFound` for anything else.
    async fn spend_link(
        &self,
        workspace: WorkspaceId,
        token: &str,
        purpose: LinkPurpose,
    ) -> Result<(LoginLink, User)> {
        self.link_user(workspace, LINK_PREFIX, token, purpose, true).await
    }

    /// The link (spent when `spend`) that `token` names in this workspace, and its user, active.
    /// `NotFound` for a token of another shape or workspace, an unknown, used or expired link, or a
    /// user who is gone or locked.
    pub(crate) async fn link_user(
        &self,
        workspace: WorkspaceId,
        prefix: &str,
        token: &str,
        purpose: LinkPurpose,
        spend: bool,
    ) -> Result<(LoginLink, User)> {
        let missing = || Error::NotFound("link");
        if credential_workspace(prefix, token) != Some(workspace) {
            return Err(missing());
        }
        let hash = secureflows_crypto::sha256(token.as_bytes());
        let now = self.clock.now();
        let ceremonies = &self.stores.ceremonies;
        let link = if spend {
            ceremonies.use_link(workspace, &hash, purpose, now).await?
        } else {
            ceremonies.find_link(workspace, &hash, purpose, now).await?
        }
        .ok_or_else(missing)?;
        let user = self
            .stores
            .users
            .find_user(workspace, link.user_id)
            .await?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(missing)?;
        // SECURITY: a link that signs in (or a pending step) ends when the user's token revision moves:
        // a password change or reset, sign-out everywhere, a lock.
        if purpose != LinkPurpose::Verify && link.revision != Some(user.revision) {
            return Err(missing());
        }
        Ok((link, user))
    }

    /// Signs a browser in with a magic link. The e-mail address is proven by it. The authorization
    /// request the link was asked for continues only in the browser that asked (`browser`, its
    /// `sf_device` id); any other browser is signed in without it.
    pub async fn redeem_magic_link(
        &self,
        workspace: WorkspaceId,
        token: &str,
        browser: Option<&str>,
        client: &Actor,
    ) -> Result<LinkSignIn> {
        let (mut link, user) = self.spend_link(workspace, token, LinkPurpose::Magic).await?;
        let same_browser = match (&link.browser, browser) {
            (Some(asked), Some(here)) => {
                secureflows_crypto::constant_time_eq(asked, &secureflows_crypto::sha256(here.as_bytes()))
            }
            _ => false,
        };
        if !same_browser {
            link.flow_id = None;
        }
        self.stores
            .passwords
            .set_email_verified(workspace, user.id)
            .await?;
        let actor = actor_for(client, &user);
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        self.record(
            workspace,
            &keys,
            &actor,
            vec![
                NewEvent::new("user.sign_in", "user", user.id)
                    .values(None, Some(serde_json::json!({"method": "magic_link"}))),
            ],
        )
        .await?;
        let step = self
            .after_first_factor(&keys, &user, vec!["email".into()], link.flow_id, &actor)
            .await?;
        Ok(LinkSignIn {
            user,
            step,
            flow: link.flow_id,
        })
    }

    /// Confirms an e-mail address.
    pub async fn verify_email(&self, workspace: WorkspaceId, token: &str, client: &Actor) -> Result<()> {
        let (_, user) = self.spend_link(workspace, token, LinkPurpose::Verify).await?;
        self.stores
            .passwords
            .set_email_verified(workspace, user.id)
            .await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        self.record(
            workspace,
            &keys,
            &actor_for(client, &user),
            vec![NewEvent::new("user.email_verified", "user", user.id)],
        )
        .await
    }

    /// Sets a new password from a reset link: checked against the policy, every other session of the
    /// user ends (the revision is raised), the user is told by e-mail, and this browser is signed in.
    pub async fn reset_password(
        &self,
        workspace: WorkspaceId,
        token: &str,
        new_password: &SecretString,
        client: &Actor,
    ) -> Result<LinkSignIn> {
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        // Check the password (against the user's address too) before spending the link, so that a
        // refused password can be retried with the same link.
        let (_, user) = self
            .link_user(workspace, LINK_PREFIX, token, LinkPurpose::Reset, false)
            .await?;
        let policy = self.get_workspace(workspace).await?.login_policy.password;
        let email = self.user_email(&keys, &user).unwrap_or_default();
        self.check_new_password(policy, new_password, &email).await?;
        let (_, user) = self.spend_link(workspace, token, LinkPurpose::Reset).await?;
        let phc = self.passwords.hash(new_password).await?;
        let actor = actor_for(client, &user);
        self.commit(
            workspace,
            &keys,
            &actor,
            vec![Change::SetPassword(user.id, phc), Change::RaiseRevision(user.id)],
            vec![NewEvent::new("user.password_reset", "user", user.id)],
        )
        .await?;
        self.stores
            .passwords
            .set_email_verified(workspace, user.id)
            .await?;
        self.alert(
            &keys,
            &user,
            "Your password was changed",
            "The password of your account was just changed.",
        )
        .await;
        // The revision moved: read the user again so the new browser session carries it.
        let user = self
            .stores
            .users
            .find_user(workspace, user.id)
            .await?
            .ok_or(Error::NotFound("link"))?;
        let step = self
            .after_first_factor(&keys, &user, vec!["pwd".into(), "email".into()], None, &actor)
            .await?;
        Ok(LinkSignIn {
            user,
            step,
            flow: None,
        })
    }

    /// Records the browser a user signed in from; a browser not seen before for this user gets a
    /// "new sign-in" e-mail (`alert`), unless this is the account's first sign-in.
    pub async fn note_device(&self, user: &User, device: &str, alert: bool) -> Result<()> {
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        let hash = secureflows_crypto::blind_index(
            keys.index(),
            &secureflows_crypto::Aad::new("sf.device.v1").field(device),
        );
        let new = self
            .stores
            .browsers
            .remember_device(user.workspace_id, user.id, &hash, self.clock.now())
            .await?;
        if new && alert {
            self.alert(
                &keys,
                user,
                "New sign-in to your account",
                "Your account was just signed in to from a browser it has not used before. If this was not \
                 you, reset your password and sign out everywhere from your account page.",
            )
            .await;
        }
        Ok(())
    }

    /// Sends a security e-mail to the user. Best effort: a failure is logged (without the address),
    /// never returned: the action it reports has already happened.
    pub async fn alert(&self, keys: &WorkspaceKeys, user: &User, subject: &str, text: &str) {
        if !self.mailer.enabled() {
            return;
        }
        let Some(to) = self.user_email(keys, user) else {
            return;
        };
        let mail = Mail {
            to,
            subject: subject.to_owned(),
            text: format!("{text}\n"),
        };
        if let Err(e) = self.mailer.send(mail).await {
            tracing::warn!(error = %e, user = %user.id, "a security e-mail could not be sent");
        }
    }
}
