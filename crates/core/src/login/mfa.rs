//! Second factors: TOTP (RFC 6238) with single use of each step, and recovery codes.
//!
//! After the first factor (password, magic link, reset link) a user with TOTP on gets no browser
//! session yet but a pending step: a single-use token held in a cookie for five minutes. Wrong codes
//! count towards the same lockout as wrong passwords. The TOTP secret is sealed under the workspace
//! data key; recovery codes are stored as SHA-256 and shown once.

use std::time::Duration;

use secureflows_crypto::totp::{new_totp_secret, totp_base32, totp_check};
use secureflows_crypto::{Aad, SecretString};

use crate::Role;
use crate::audit::{Actor, ActorKind, NewEvent};
use crate::keyring::WorkspaceKeys;
use crate::login::hosted::BrowserLogin;
use crate::login::links::LinkSignIn;
use crate::login::{MfaRequirement, new_credential};
use crate::store::AttemptGate;
use crate::{
    AuthFailure, BrowserSession, Error, FlowId, LinkPurpose, LoginLink, Result, Services, User, UserId,
    WorkspaceId,
};

/// How old a sign-in may be to change how its user signs in (`Services::signed_in_recently`).
const RECENT_SIGN_IN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub(crate) const PENDING_PREFIX: &str = "sfp_";
const PENDING_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a TOTP secret being set up is shown again (reloads, Back, a second tab) before a new one.
const TOTP_PENDING_TTL: Duration = Duration::from_secs(15 * 60);
const RECOVERY_CODES: usize = 10;
/// Recovery-code alphabet: no 0/o, 1/l/i.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// What a first factor leads to.
#[derive(Debug)]
pub enum FirstFactor {
    /// Signed in.
    SignedIn(BrowserLogin),
    /// TOTP is on: the pending second-factor step's token (for a cookie; never logged).
    SecondFactor(SecretString),
    /// The workspace requires a second factor the user has not set up: the pending step's token,
    /// completed by enrolling one.
    EnrolSecondFactor(SecretString),
}

/// A new TOTP enrolment, to show once.
#[derive(Debug)]
pub struct TotpSetup {
    /// The secret in base32 (typed into an app).
    pub secret_base32: SecretString,
    /// The `otpauth://` URI (the QR code's content).
    pub otpauth_uri: SecretString,
}

/// A user's second factors, for the account page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaStatus {
    /// TOTP is on.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Registered passkeys.
    pub passkeys: u32,
}

fn totp_aad(workspace: WorkspaceId, user: UserId) -> Aad {
    Aad::new("sf.mfa.totp.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(user.as_uuid().as_bytes())
}

/// Recovery codes compare without case, spaces or dashes.
fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn new_recovery_code() -> Result<String> {
    let bytes: [u8; 10] = secureflows_crypto::random_bytes()?;
    let chars: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    Ok(format!("{}-{}", &chars[..5], &chars[5..]))
}

impl Services {
    /// Finishes a first factor: a browser session, or a pending second-factor step when the user has a
    /// second factor (or the workspace requires one).
    pub(crate) async fn after_first_factor(
        &self,
        keys: &WorkspaceKeys,
        user: &User,
        amr: Vec<String>,
        flow: Option<FlowId>,
        actor: &Actor,
    ) -> Result<FirstFactor> {
        if let Some(step) = self.second_factor_step(user, amr.clone(), flow).await? {
            return Ok(step);
        }
        self.stores
            .passwords
            .clear_failures(user.workspace_id, user.id)
            .await?;
        Ok(FirstFactor::SignedIn(
            self.open_browser_session(keys, user, amr, actor).await?,
        ))
    }

    /// The pending step a sign-in with `amr` so far still needs, if any: the user's second factor, or
    /// the enrolment the workspace requires.
    async fn second_factor_step(
        &self,
        user: &User,
        amr: Vec<String>,
        flow: Option<FlowId>,
    ) -> Result<Option<FirstFactor>> {
        let status = self.mfa_status(user).await?;
        let has_factor = status.totp || status.passkeys > 0;
        if !has_factor && !self.mfa_required(user).await? {
            return Ok(None);
        }
        let token = new_credential(PENDING_PREFIX, user.workspace_id)?;
        let now = self.clock.now();
        self.stores
            .ceremonies
            .insert_link(&LoginLink {
                link_hash: secureflows_crypto::sha256(token.as_bytes()).to_vec(),
                workspace_id: user.workspace_id,
                purpose: LinkPurpose::Mfa,
                user_id: user.id,
                flow_id: flow,
                amr,
                revision: Some(user.revision),
                browser: None,
                created_at: now,
                expires_at: now.plus(PENDING_TTL),
            })
            .await?;
        let token = SecretString::new(token);
        Ok(Some(if has_factor {
            FirstFactor::SecondFactor(token)
        } else {
            FirstFactor::EnrolSecondFactor(token)
        }))
    }

    /// Whether a browser session signed in recently enough to change how its user signs in (passkeys,
    /// second factors, linked providers): a stolen session cookie alone must not plant an attacker's
    /// way in or remove the owner's.
    pub fn signed_in_recently(&self, session: &BrowserSession) -> bool {
        self.clock.now().since(session.auth_time) <= RECENT_SIGN_IN
    }

    /// Whether a browser session's sign-in still meets the user's factors and the workspace's policy.
    /// A session that gave a second factor (`mfa` in its `amr`) does; one that did not meets them only
    /// while the user has no second factor and none is required. A session from before a factor was
    /// added (or the policy changed) must step up.
    pub async fn session_meets_factors(&self, session: &BrowserSession, user: &User) -> Result<bool> {
        if session.amr.iter().any(|m| m == "mfa") {
            return Ok(true);
        }
        let status = self.mfa_status(user).await?;
        Ok(!(status.totp || status.passkeys > 0 || self.mfa_required(user).await?))
    }

    /// Records in a browser session that it just proved a second factor (`method`: `otp` for an
    /// authenticator app confirmed with a code, `hwk` for a passkey created with user verification), so
    /// that the browser that added the factor keeps meeting the user's factors.
    pub async fn add_session_factor(&self, session: &BrowserSession, method: &str) -> Result<()> {
        let mut amr = session.amr.clone();
        for m in [method, "mfa"] {
            if !amr.iter().any(|a| a == m) {
                amr.push(m.to_owned());
            }
        }
        self.stores
            .browsers
            .set_browser_session_amr(session.workspace_id, session.id, &amr)
            .await
    }

    /// Steps up a signed-in browser whose session no longer meets the user's factors: the pending step
    /// that asks for the second factor (or the enrolment the workspace requires), continuing `flow`. Its
    /// completion opens a new browser session.
    pub async fn step_up(
        &self,
        session: &BrowserSession,
        user: &User,
        flow: Option<FlowId>,
    ) -> Result<FirstFactor> {
        self.second_factor_step(user, session.amr.clone(), flow)
            .await?
            .ok_or(Error::Conflict("no second factor needed"))
    }

    /// Whether the workspace's policy or plan requires a second factor of this user.
    pub async fn mfa_required(&self, user: &User) -> Result<bool> {
        let workspace = self.get_workspace(user.workspace_id).await?;
        let by_policy = match workspace.login_policy.mfa {
            MfaRequirement::Off => false,
            MfaRequirement::Admins => matches!(user.role, Role::Owner | Role::Admin),
            MfaRequirement::All => true,
        };
        Ok(by_policy || self.plans.limits(&workspace.plan).require_mfa)
    }

    /// The user of a pending step, and the step.
    async fn pending_step(&self, workspace: WorkspaceId, pending: &str) -> Result<(LoginLink, User)> {
        self.link_user(workspace, PENDING_PREFIX, pending, LinkPurpose::Mfa, false)
            .await
    }

    /// A pending step that enrols a second factor: only for a user who has none. (A user with TOTP
    /// or a passkey must give it; enrolling another one instead would skip it.)
    pub(crate) async fn enrolment_step(
        &self,
        workspace: WorkspaceId,
        pending: &str,
    ) -> Result<(LoginLink, User)> {
        let (link, user) = self.pending_step(workspace, pending).await?;
        let status = self.mfa_status(&user).await?;
        if status.totp || status.passkeys > 0 {
            return Err(Error::NotFound("pending sign-in"));
        }
        Ok((link, user))
    }

    /// Starts the enrolment a pending step requires (the workspace requires a second factor).
    pub async fn start_required_totp(&self, workspace: WorkspaceId, pending: &str) -> Result<TotpSetup> {
        let (_, user) = self.enrolment_step(workspace, pending).await?;
        self.start_totp(&user).await
    }

    /// Completes a pending step by confirming the enrolment: TOTP is on, the browser is signed in;
    /// returns the recovery codes to show once.
    pub async fn complete_required_totp(
        &self,
        workspace: WorkspaceId,
        pending: &str,
        code: &str,
        client: &Actor,
    ) -> Result<(LinkSignIn, Vec<String>)> {
        let (link, user) = self.enrolment_step(workspace, pending).await?;
        let codes = self.confirm_totp(&user, code, client).await?;
        let hash = secureflows_crypto::sha256(pending.as_bytes());
        self.stores
            .ceremonies
            .use_link(workspace, &hash, LinkPurpose::Mfa, self.clock.now())
            .await?
            .ok_or(Error::NotFound("pending sign-in"))?;
        self.stores.passwords.clear_failures(workspace, user.id).await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        let mut amr = link.amr.clone();
        amr.extend(["otp".to_owned(), "mfa".to_owned()]);
        let login = self.open_browser_session(&keys, &user, amr, &actor).await?;
        Ok((
            LinkSignIn {
                user,
                step: FirstFactor::SignedIn(login),
                flow: link.flow_id,
            },
            codes,
        ))
    }

    /// The second factors a pending step can be completed with, if it is still open (the page that
    /// asks for them).
    pub async fn pending_second_factor(
        &self,
        workspace: WorkspaceId,
        pending: &str,
    ) -> Result<Option<MfaStatus>> {
        match self.pending_step(workspace, pending).await {
            Ok((_, user)) => Ok(Some(self.mfa_status(&user).await?)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Completes a pending step with a TOTP code or a recovery code. `NotFound`: the step expired or
    /// was completed; `InvalidCredentials`: wrong code (counted towards the lockout).
    pub async fn complete_second_factor(
        &self,
        workspace: WorkspaceId,
        pending: &str,
        code: &str,
        client: &Actor,
    ) -> Result<LinkSignIn> {
        let (link, user) = self.pending_step(workspace, pending).await?;
        let hash = secureflows_crypto::sha256(pending.as_bytes());
        let now = self.clock.now();
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        let max = self.settings.login.max_failures;
        if let AttemptGate::Locked(_) = self
            .stores
            .passwords
            .begin_attempt(workspace, user.id, max, now)
            .await?
        {
            return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
        }
        let method = self.check_second_factor(&keys, &user, code).await?;
        let Some(method) = method else {
            let locked = self
                .stores
                .passwords
                .lock_if_exhausted(workspace, user.id, max, now.plus(self.settings.login.lockout))
                .await?;
            let mut events = vec![
                NewEvent::new("user.sign_in_failed", "user", user.id)
                    .values(None, Some(serde_json::json!({"method": "second_factor"}))),
            ];
            if locked {
                events.push(NewEvent::new("user.sign_in_locked", "user", user.id));
            }
            self.record(workspace, &keys, &actor, events).await?;
            return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
        };
        // Spend the step (a concurrent completion gets NotFound).
        self.stores
            .ceremonies
            .use_link(workspace, &hash, LinkPurpose::Mfa, now)
            .await?
            .ok_or(Error::NotFound("pending sign-in"))?;
        self.stores.passwords.clear_failures(workspace, user.id).await?;
        let mut amr = link.amr.clone();
        amr.push(method.into());
        amr.push("mfa".into());
        self.record(
            workspace,
            &keys,
            &actor,
            vec![NewEvent::new("user.sign_in", "user", user.id).values(
                None,
                Some(serde_json::json!({"method": "second_factor", "factor": method})),
            )],
        )
        .await?;
        let login = self.open_browser_session(&keys, &user, amr, &actor).await?;
        Ok(LinkSignIn {
            user,
            step: FirstFactor::SignedIn(login),
            flow: link.flow_id,
        })
    }

    /// `Some("otp")` for a fresh TOTP code, `Some("recovery")` for an unused recovery code.
    async fn check_second_factor(
        &self,
        keys: &WorkspaceKeys,
        user: &User,
        code: &str,
    ) -> Result<Option<&'static str>> {
        let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.len() == 6 && compact.bytes().all(|b| b.is_ascii_digit()) {
            let Some(enrolment) = self.stores.factors.find_totp(user.workspace_id, user.id).await? else {
                return Ok(None);
            };
            let secret = keys.open(&totp_aad(user.workspace_id, user.id), &enrolment.secret_sealed)?;
            let now = u64::try_from(self.clock.now().secs()).unwrap_or(0);
            let Some(step) = totp_check(&secret, &compact, now) else {
                return Ok(None);
            };
            // Each step once: a code seen (or replayed) before is refused.
            let step = i64::try_from(step).unwrap_or(i64::MAX);
            let fresh = self
                .stores
                .factors
                .use_totp_step(user.workspace_id, user.id, step, self.clock.now())
                .await?;
            return Ok(fresh.then_some("otp"));
        }
        let hash = secureflows_crypto::sha256(normalise_recovery_code(code).as_bytes());
        let used = self
            .stores
            .factors
            .use_recovery_code(user.workspace_id, user.id, &hash, self.clock.now())
            .await?;
        Ok(used.then_some("recovery"))
    }

    /// The account page's view of a user's second factors.
    pub async fn mfa_status(&self, user: &User) -> Result<MfaStatus> {
        let totp = self
            .stores
            .factors
            .find_totp(user.workspace_id, user.id)
            .await?
            .is_some_and(|t| t.confirmed_at.is_some());
        let recovery_codes_left = self
            .stores
            .factors
            .recovery_codes_left(user.workspace_id, user.id)
            .await?;
        let passkeys = self
            .stores
            .factors
            .passkeys(user.workspace_id, user.id)
            .await?
            .len();
        Ok(MfaStatus {
            totp,
            recovery_codes_left,
            passkeys: u32::try_from(passkeys).unwrap_or(u32::MAX),
        })
    }

    /// Starts a TOTP enrolment, or shows again the one in progress: a secret made in the last
    /// `TOTP_PENDING_TTL` survives reloads (a QR code already scanned keeps working) until it is
    /// confirmed; an older one is replaced. TOTP is not on until a code confirms it. `Conflict` if TOTP
    /// is already on.
    pub async fn start_totp(&self, user: &User) -> Result<TotpSetup> {
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        let now = self.clock.now();
        let fresh = zeroize::Zeroizing::new(new_totp_secret()?);
        let sealed = keys.seal(&totp_aad(user.workspace_id, user.id), &fresh[..])?;
        let secret = if self
            .stores
            .factors
            .begin_totp(
                user.workspace_id,
                user.id,
                &sealed,
                now.minus(TOTP_PENDING_TTL),
                now,
            )
            .await?
        {
            fresh.to_vec()
        } else {
            let pending = self
                .stores
                .factors
                .find_totp(user.workspace_id, user.id)
                .await?
                .ok_or(Error::Conflict("enrolment"))?;
            if pending.confirmed_at.is_some() {
                return Err(Error::Conflict("mfa-on"));
            }
            keys.open(&totp_aad(user.workspace_id, user.id), &pending.secret_sealed)?
        };
        let secret = zeroize::Zeroizing::new(secret);
        let base32 = totp_base32(&secret);
        let account = self
            .user_email(&keys, user)
            .unwrap_or_else(|| user.id.to_string());
        let issuer = self.get_workspace(user.workspace_id).await?.name;
        let mut uri = url::Url::parse("otpauth://totp/").map_err(Error::internal)?;
        uri.set_path(&format!("{issuer}:{account}"));
        uri.query_pairs_mut()
            .append_pair("secret", &base32)
            .append_pair("issuer", &issuer)
            .append_pair("algorithm", "SHA1")
            .append_pair("digits", "6")
            .append_pair("period", "30");
        Ok(TotpSetup {
            secret_base32: SecretString::new(base32),
            otpauth_uri: SecretString::new(uri.to_string()),
        })
    }

    /// Confirms the enrolment with a code from the app: TOTP is on; returns the recovery codes (shown
    /// once). `Invalid` for a wrong code.
    pub async fn confirm_totp(&self, user: &User, code: &str, client: &Actor) -> Result<Vec<String>> {
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        let enrolment = self
            .stores
            .factors
            .find_totp(user.workspace_id, user.id)
            .await?
            .ok_or(Error::NotFound("enrolment"))?;
        if enrolment.confirmed_at.is_some() {
            return Err(Error::Conflict("mfa-on"));
        }
        if self.check_second_factor(&keys, user, code).await? != Some("otp") {
            return Err(Error::invalid(
                "code",
                "the code is not right; check the app's clock and try the next one",
            ));
        }
        let codes = self.replace_recovery_codes(user).await?;
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        self.record(
            user.workspace_id,
            &keys,
            &actor,
            vec![
                NewEvent::new("user.mfa_enable", "user", user.id)
                    .values(None, Some(serde_json::json!({"factor": "totp"}))),
            ],
        )
        .await?;
        self.alert(
            &keys,
            user,
            "Two-step sign-in was turned on",
            "An authenticator app was added to your account.",
        )
        .await;
        Ok(codes)
    }

    /// Turns TOTP off (a current code or a recovery code is required) and removes the recovery codes,
    /// unless the user has a passkey.
    pub async fn disable_totp(&self, user: &User, code: &str, client: &Actor) -> Result<()> {
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        if self.check_second_factor(&keys, user, code).await?.is_none() {
            return Err(Error::invalid("code", "the code is not right"));
        }
        // A passkey is still a second factor: its recovery codes stay.
        let passkeys = self.has_passkey(user.workspace_id, user.id).await?;
        self.stores
            .factors
            .delete_totp(user.workspace_id, user.id, passkeys)
            .await?;
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        self.record(
            user.workspace_id,
            &keys,
            &actor,
            vec![
                NewEvent::new("user.mfa_disable", "user", user.id)
                    .values(Some(serde_json::json!({"factor": "totp"})), None),
            ],
        )
        .await?;
        self.alert(
            &keys,
            user,
            "Two-step sign-in was turned off",
            "The authenticator app was removed from your account.",
        )
        .await;
        Ok(())
    }

    pub(crate) async fn replace_recovery_codes(&self, user: &User) -> Result<Vec<String>> {
        let codes = (0..RECOVERY_CODES)
            .map(|_| new_recovery_code())
            .collect::<Result<Vec<_>>>()?;
        let hashes: Vec<Vec<u8>> = codes
            .iter()
            .map(|c| secureflows_crypto::sha256(normalise_recovery_code(c).as_bytes()).to_vec())
            .collect();
        self.stores
            .factors
            .replace_recovery_codes(user.workspace_id, user.id, &hashes, self.clock.now())
            .await?;
        Ok(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_readable_and_normalised() {
        let code = new_recovery_code().unwrap();
        assert_eq!(code.len(), 11);
        assert_eq!(&code[5..6], "-");
        assert!(code.chars().all(|c| c == '-' || ALPHABET.contains(&(c as u8))));
        assert_eq!(normalise_recovery_code(" ABCDE-fghjk "), "abcdefghjk");
    }
}
