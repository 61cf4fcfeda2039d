//! Verification-first sign-up (the workspace policy `signup: verify_first`, with SMTP configured).
//!
//! Every well-formed sign-up answers the same "check your e-mail", after the same work (the policy and
//! breach checks, an Argon2id hash, one e-mail), so the page never tells whether an address has an
//! account:
//!
//! * a new address gets a single-use link (30 minutes) to finish: the account is made only then,
//!   with its address verified, and the browser is signed in. What the form held (address, name, the
//!   password's hash, the pending application request, the anonymous visitor being upgraded) waits
//!   sealed under the workspace data key, found by the SHA-256 of the link's token;
//! * an address with an account gets a notice instead ("you already have an account").
//!
//! The link finishes only in the browser that filled in the form (the `sf_signup` cookie's secret,
//! stored as SHA-256 with the pending sign-up): whoever chose the password must also read the mailbox.
//! Otherwise someone could sign up with another person's address and a password of their own, and
//! wait for that person to click the link. Without SMTP sign-up stays immediate.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::Actor;
use crate::auth::callback::email_index;
use crate::email::EmailAddress;
use crate::login::SignupMode;
use crate::login::hosted::SignUp;
use crate::login::mfa::FirstFactor;
use crate::mail::Mail;
use crate::{CeremonyPurpose, Error, FlowId, Result, Services, User, UserId, WorkspaceId};
use secureflows_crypto::SecretString;

/// How long a sign-up link works.
const SIGNUP_LINK_TTL: Duration = Duration::from_secs(30 * 60);

/// What a sign-up form led to.
#[derive(Debug)]
pub enum SignUpStart {
    /// The account exists and the browser signs in (or gives a second factor).
    SignedUp(Box<(User, FirstFactor)>),
    /// "Check your e-mail" (whether or not the address already had an account), with the secret for
    /// the `sf_signup` cookie (never logged).
    CheckEmail(SecretString),
}

#[derive(Serialize, Deserialize)]
struct PendingSignUp {
    email: String,
    name: Option<String>,
    password_hash: String,
    flow: Option<FlowId>,
    /// The anonymous visitor this sign-up upgrades in place.
    upgrade: Option<UserId>,
    /// SHA-256 of the `sf_signup` cookie's secret.
    browser: Vec<u8>,
}

impl Services {
    /// Handles a sign-up form by the workspace's sign-up mode.
    pub async fn start_sign_up(
        &self,
        workspace: WorkspaceId,
        form: SignUp,
        flow: Option<FlowId>,
        client: &Actor,
    ) -> Result<SignUpStart> {
        let (found, keys) = self.login_workspace(workspace).await?;
        if found.login_policy.signup != SignupMode::VerifyFirst || !self.mailer.enabled() {
            let (user, step) = self.sign_up(workspace, form, flow, client).await?;
            return Ok(SignUpStart::SignedUp(Box::new((user, step))));
        }
        let upgrade = match flow {
            Some(id) => self
                .find_flow(workspace, id)
                .await?
                .and_then(|(pending, _)| pending.request.upgrade_user),
            None => None,
        };
        let secret = secureflows_crypto::random_token("")?;
        let browser = secureflows_crypto::sha256(secret.as_bytes()).to_vec();
        let email = EmailAddress::parse(&form.email)?;
        self.check_new_password(found.login_policy.password, &form.password, email.as_str())
            .await?;
        let password_hash = self.passwords.hash(&form.password).await?;
        let existing = self
            .stores
            .users
            .find_user_by_email(workspace, &email_index(&keys, &email))
            .await?;
        let issuer = self.issuer_of(workspace);
        let pending = PendingSignUp {
            email: email.as_str().to_owned(),
            name: form.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
            password_hash,
            flow,
            upgrade,
            browser,
        };
        // Stored either way, so that a taken address costs the same work; only a new one's token is
        // mailed (the other expires unused).
        let token = self
            .store_ceremony(
                &keys,
                workspace,
                None,
                CeremonyPurpose::SignUp,
                &pending,
                SIGNUP_LINK_TTL,
            )
            .await?;
        let mail = if existing.is_none() {
            Mail {
                to: email.as_str().to_owned(),
                subject: format!("Finish creating your {} account", found.name),
                text: format!(
                    "Open this link to finish creating your account:\n\n{issuer}/signup/confirm?token={}\n\n\
                     The link works once, for 30 minutes. If you did not ask for it, ignore this message.\n",
                    token.expose()
                ),
            }
        } else {
            Mail {
                to: email.into_string(),
                subject: format!("You already have a {} account", found.name),
                text: format!(
                    "Someone, perhaps you, asked to create an account with this address. You already have \
                     one: sign in at {issuer}/login, or choose a new password at {issuer}/forgot.\n\n\
                     If it was not you, you can ignore this message.\n"
                ),
            }
        };
        if let Err(e) = self.mailer.send(mail).await {
            tracing::warn!(error = %e, "a sign-up e-mail could not be sent");
        }
        Ok(SignUpStart::CheckEmail(SecretString::new(secret)))
    }

    /// Finishes a verification-first sign-up from its link, in the browser that started it (`browser`:
    /// the `sf_signup` cookie): the account (address verified), the next step and the application
    /// request it continues. `NotFound` for an unknown, used or expired link, or another browser (the
    /// link is spent either way); `Conflict("account-exists")` if the address got an account meanwhile.
    pub async fn confirm_sign_up(
        &self,
        workspace: WorkspaceId,
        token: &str,
        browser: &str,
        client: &Actor,
    ) -> Result<(User, FirstFactor, Option<FlowId>)> {
        let (_, keys) = self.login_workspace(workspace).await?;
        let Some((_, pending)) = self
            .take_ceremony::<PendingSignUp>(&keys, workspace, token, CeremonyPurpose::SignUp)
            .await?
        else {
            return Err(Error::NotFound("link"));
        };
        let presented = secureflows_crypto::sha256(browser.as_bytes());
        if !secureflows_crypto::constant_time_eq(&presented, &pending.browser) {
            return Err(Error::NotFound("link"));
        }
        // Stored in its canonical form when the sign-up was asked for.
        let email = EmailAddress::parse(&pending.email)?;
        let (user, actor) = match pending.upgrade {
            Some(anon) => {
                let user = self
                    .upgrade_anon(workspace, &keys, anon, &email, pending.password_hash, client)
                    .await?;
                self.state.apply(crate::Invalidation::User(workspace, anon));
                let mut actor = client.clone();
                actor.kind = crate::audit::ActorKind::EndUser;
                actor.id = Some(user.id);
                (user, actor)
            }
            None => {
                self.create_password_user(
                    &keys,
                    workspace,
                    &email,
                    pending.name.as_deref(),
                    pending.password_hash,
                    client,
                )
                .await?
            }
        };
        self.stores
            .passwords
            .set_email_verified(workspace, user.id)
            .await?;
        let step = self
            .after_first_factor(&keys, &user, vec!["pwd".into()], pending.flow, &actor)
            .await?;
        Ok((user, step, pending.flow))
    }
}
