//! Passkeys (WebAuthn, through `webauthn-rs`): registered from the account page, then used either to
//! sign in alone (a discoverable credential with user verification: something the user has, unlocked by
//! something they know or are) or as the second factor after a password or a magic link.
//!
//! The relying party is the host of the public URL; WebAuthn refuses IP addresses, so passkeys are
//! offered only when the server is reached under a domain name (`localhost` included). Every
//! ceremony's server-side state is sealed, stored under the SHA-256 of a random token that the browser
//! holds in a cookie, taken once, and good for five minutes. Credentials are sealed under the workspace
//! data key and bound to their user; a credential id is registered at most once per workspace.

use std::time::Duration;

use secureflows_crypto::{Aad, SecretString};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url,
    Webauthn, WebauthnBuilder,
};

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::keyring::WorkspaceKeys;
use crate::login::hosted::BrowserLogin;
use crate::login::links::LinkSignIn;
use crate::login::mfa::FirstFactor;
use crate::{
    AuthFailure, BrowserSession, CeremonyPurpose, Error, LinkPurpose, PasskeyId, PasskeyRecord, Result,
    Services, Timestamp, User, UserId, UserStatus, WebauthnCeremony, WorkspaceId,
};

/// How long a started ceremony may be answered.
const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);
/// Passkeys per user.
const MAX_PASSKEYS: usize = 10;
/// The longest passkey name kept.
const MAX_NAME: usize = 64;

/// A started ceremony: the options for `navigator.credentials` and the token for the ceremony cookie.
#[derive(Debug)]
pub struct PasskeyChallenge {
    /// The ceremony cookie's value (never logged).
    pub token: SecretString,
    /// `{"publicKey": {...}}` for `navigator.credentials.create` or `.get`.
    pub options: serde_json::Value,
}

/// What a passkey ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyPurpose {
    /// A passkey alone signs in (discoverable credential, user verified).
    SignIn,
    /// A passkey as the second factor of a pending sign-in.
    SecondFactor,
    /// The second factor a workspace requires, set up as a passkey during a pending sign-in.
    Enrol,
    /// A signed-in user registers a passkey.
    Register,
}

impl PasskeyPurpose {
    /// The purpose a page asks for (`sign_in`, `second_factor`, `enrol`, `register`).
    pub fn parse(name: &str) -> Option<PasskeyPurpose> {
        match name {
            "sign_in" => Some(PasskeyPurpose::SignIn),
            "second_factor" => Some(PasskeyPurpose::SecondFactor),
            "enrol" => Some(PasskeyPurpose::Enrol),
            "register" => Some(PasskeyPurpose::Register),
            _ => None,
        }
    }
}

/// The answer to a request for a ceremony's options.
#[derive(Debug)]
pub enum PasskeyOptions {
    /// The ceremony started.
    Started(PasskeyChallenge),
    /// Registering a passkey needs a signed-in browser.
    NotSignedIn,
    /// Registering a passkey needs a recent sign-in (`Services::signed_in_recently`).
    SignInAgain,
}

/// A passkey as the account page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    /// Id (to remove it).
    pub id: PasskeyId,
    /// The name the user gave it.
    pub name: String,
    /// Registered.
    pub created_at: Timestamp,
    /// Last used to sign in.
    pub last_used_at: Option<Timestamp>,
}

/// What is sealed in a passkey row.
#[derive(Serialize, Deserialize)]
struct StoredPasskey {
    name: String,
    passkey: Passkey,
}

fn passkey_aad(workspace: WorkspaceId, user: UserId, id: PasskeyId) -> Aad {
    Aad::new("sf.passkey.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(user.as_uuid().as_bytes())
        .field(id.as_uuid().as_bytes())
}

fn ceremony_aad(workspace: WorkspaceId, hash: &[u8], purpose: CeremonyPurpose) -> Aad {
    Aad::new("sf.webauthn.ceremony.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(hash)
        .field(purpose.as_str().as_bytes())
}

/// A refused answer: the same for every reason (a wrong key, another account's key, a clone, a replay).
fn refused() -> Error {
    Error::Unauthenticated(AuthFailure::InvalidCredentials)
}

/// The relying party of an issuer URL: its host, if it is a domain name.
fn relying_party(issuer: &str) -> Option<(String, Url)> {
    let url = Url::parse(issuer).ok()?;
    match url.host()? {
        url::Host::Domain(domain) => {
            let origin = Url::parse(&url.origin().ascii_serialization()).ok()?;
            Some((domain.to_ascii_lowercase(), origin))
        }
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => None,
    }
}

impl Services {
    /// Whether passkeys can be offered: the public URL names a host, not an IP address.
    pub fn passkeys_available(&self) -> bool {
        relying_party(self.tokens.issuer()).is_some()
    }

    fn webauthn(&self, rp_name: &str) -> Result<Webauthn> {
        let (rp_id, origin) = relying_party(self.tokens.issuer()).ok_or(Error::NotFound("passkeys"))?;
        WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name(rp_name).timeout(CEREMONY_TTL).build())
            .map_err(|_| Error::internal("the WebAuthn relying party"))
    }

    /// Stores sealed single-use state under a new random token, for `ttl`; returns the token.
    pub(crate) async fn store_ceremony<T: Serialize>(
        &self,
        keys: &WorkspaceKeys,
        workspace: WorkspaceId,
        user: Option<UserId>,
        purpose: CeremonyPurpose,
        state: &T,
        ttl: Duration,
    ) -> Result<SecretString> {
        let token = secureflows_crypto::random_token("")?;
        let hash = secureflows_crypto::sha256(token.as_bytes()).to_vec();
        let json = serde_json::to_vec(state).map_err(|_| Error::internal("encoding a ceremony"))?;
        let state_sealed = keys.seal(&ceremony_aad(workspace, &hash, purpose), &json)?;
        let now = self.clock.now();
        self.stores
            .ceremonies
            .insert_ceremony(&WebauthnCeremony {
                ceremony_hash: hash,
                workspace_id: workspace,
                user_id: user,
                purpose,
                state_sealed,
                created_at: now,
                expires_at: now.plus(ttl),
            })
            .await?;
        Ok(SecretString::new(token))
    }

    /// Takes a ceremony once; `None` if it is unknown, used, expired or for something else.
    pub(crate) async fn take_ceremony<T: for<'de> Deserialize<'de>>(
        &self,
        keys: &WorkspaceKeys,
        workspace: WorkspaceId,
        token: &str,
        purpose: CeremonyPurpose,
    ) -> Result<Option<(Option<UserId>, T)>> {
        if token.len() != 43 {
            return Ok(None);
        }
        let hash = secureflows_crypto::sha256(token.as_bytes());
        let Some(ceremony) = self
            .stores
            .ceremonies
            .take_ceremony(workspace, &hash, purpose, self.clock.now())
            .await?
        else {
            return Ok(None);
        };
        let json = keys.open(&ceremony_aad(workspace, &hash, purpose), &ceremony.state_sealed)?;
        let state = serde_json::from_slice(&json).map_err(|_| Error::Integrity("webauthn ceremony"))?;
        Ok(Some((ceremony.user_id, state)))
    }

    /// The user's passkeys, opened.
    async fn open_passkeys(
        &self,
        keys: &WorkspaceKeys,
        user: &User,
    ) -> Result<Vec<(PasskeyRecord, StoredPasskey)>> {
        let records = self.stores.factors.passkeys(user.workspace_id, user.id).await?;
        records
            .into_iter()
            .map(|r| {
                let json = keys.open(&passkey_aad(r.workspace_id, r.user_id, r.id), &r.sealed)?;
                let stored: StoredPasskey =
                    serde_json::from_slice(&json).map_err(|_| Error::Integrity("passkey"))?;
                Ok((r, stored))
            })
            .collect()
    }

    /// Starts a ceremony for `purpose`: `pending` is the sign-in step cookie (second factor,
    /// enrolment), `browser` the signed-in browser (registration).
    pub async fn passkey_options(
        &self,
        workspace: WorkspaceId,
        purpose: PasskeyPurpose,
        pending: &str,
        browser: Option<(&BrowserSession, &User)>,
    ) -> Result<PasskeyOptions> {
        let challenge = match (purpose, browser) {
            (PasskeyPurpose::SignIn, _) => self.start_passkey_sign_in(workspace).await?,
            (PasskeyPurpose::SecondFactor, _) => self.start_passkey_second_factor(workspace, pending).await?,
            (PasskeyPurpose::Enrol, _) => self.start_passkey_enrolment(workspace, pending).await?,
            (PasskeyPurpose::Register, None) => return Ok(PasskeyOptions::NotSignedIn),
            (PasskeyPurpose::Register, Some((session, _))) if !self.signed_in_recently(session) => {
                return Ok(PasskeyOptions::SignInAgain);
            }
            (PasskeyPurpose::Register, Some((_, user))) => self.start_passkey_registration(user).await?,
        };
        Ok(PasskeyOptions::Started(challenge))
    }

    /// The user's passkeys for the account page.
    pub async fn list_passkeys(&self, user: &User) -> Result<Vec<PasskeyInfo>> {
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        Ok(self
            .open_passkeys(&keys, user)
            .await?
            .into_iter()
            .map(|(r, s)| PasskeyInfo {
                id: r.id,
                name: s.name,
                created_at: r.created_at,
                last_used_at: r.last_used_at,
            })
            .collect())
    }

    /// Whether the user has a passkey (then it may serve as their second factor).
    pub async fn has_passkey(&self, workspace: WorkspaceId, user: UserId) -> Result<bool> {
        Ok(!self.stores.factors.passkeys(workspace, user).await?.is_empty())
    }

    /// Starts registering a passkey for a signed-in user. The credential must be discoverable (so that
    /// it can sign in without an e-mail address) and verify the user.
    pub async fn start_passkey_registration(&self, user: &User) -> Result<PasskeyChallenge> {
        let (workspace, keys) = self.login_workspace(user.workspace_id).await?;
        let existing = self.open_passkeys(&keys, user).await?;
        if existing.len() >= MAX_PASSKEYS {
            return Err(Error::invalid(
                "passkey",
                "remove a passkey before adding another",
            ));
        }
        let exclude = existing
            .iter()
            .map(|(_, s)| s.passkey.cred_id().clone())
            .collect();
        let account = self
            .user_email(&keys, user)
            .unwrap_or_else(|| user.id.to_string());
        // Every workspace on this host shares the relying party: the display name says which one the
        // passkey is for, in the browser's passkey picker.
        let display = format!("{account} ({})", workspace.name);
        let (ccr, state): (CreationChallengeResponse, PasskeyRegistration) = self
            .webauthn(&workspace.name)?
            .start_passkey_registration(user.id.as_uuid(), &account, &display, Some(exclude))
            .map_err(|_| Error::internal("starting a passkey registration"))?;
        let token = self
            .store_ceremony(
                &keys,
                user.workspace_id,
                Some(user.id),
                CeremonyPurpose::Register,
                &state,
                CEREMONY_TTL,
            )
            .await?;
        let mut options =
            serde_json::to_value(&ccr).map_err(|_| Error::internal("encoding passkey options"))?;
        // A discoverable credential, so that it can sign in without an e-mail address first.
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(serde_json::Value::as_object_mut)
        {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        Ok(PasskeyChallenge { token, options })
    }

    /// Completes a registration with the browser's answer. `Invalid` if the answer does not verify
    /// or the ceremony expired; `Conflict` if the credential is registered already. A user without
    /// recovery codes gets them now (to show once): a lost device must not lock them out.
    pub async fn finish_passkey_registration(
        &self,
        user: &User,
        token: &str,
        name: &str,
        answer: &serde_json::Value,
        client: &Actor,
    ) -> Result<(PasskeyInfo, Option<Vec<String>>)> {
        let (workspace, keys) = self.login_workspace(user.workspace_id).await?;
        let failed = || Error::invalid("passkey", "the passkey could not be registered; please try again");
        let Some((owner, state)) = self
            .take_ceremony::<PasskeyRegistration>(&keys, user.workspace_id, token, CeremonyPurpose::Register)
            .await?
        else {
            return Err(failed());
        };
        if owner != Some(user.id) {
            return Err(failed());
        }
        let answer: RegisterPublicKeyCredential =
            serde_json::from_value(answer.clone()).map_err(|_| failed())?;
        let passkey = self
            .webauthn(&workspace.name)?
            .finish_passkey_registration(&answer, &state)
            .map_err(|_| failed())?;
        let mut name: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect();
        if name.is_empty() {
            name = "Passkey".into();
        }
        let now = self.clock.now();
        let id = PasskeyId::new();
        let credential_hash = secureflows_crypto::sha256(AsRef::<[u8]>::as_ref(passkey.cred_id())).to_vec();
        let stored = StoredPasskey {
            name: name.clone(),
            passkey,
        };
        let json = serde_json::to_vec(&stored).map_err(|_| Error::internal("encoding a passkey"))?;
        let sealed = keys.seal(&passkey_aad(user.workspace_id, user.id, id), &json)?;
        let inserted = self
            .stores
            .factors
            .insert_passkey(&PasskeyRecord {
                id,
                workspace_id: user.workspace_id,
                user_id: user.id,
                credential_hash,
                sealed,
                created_at: now,
                last_used_at: None,
            })
            .await?;
        if !inserted {
            return Err(Error::Conflict("passkey"));
        }
        let actor = end_user(client, user);
        self.record(
            user.workspace_id,
            &keys,
            &actor,
            vec![NewEvent::new("user.mfa_enable", "user", user.id).values(
                None,
                Some(serde_json::json!({"factor": "passkey", "passkey": id})),
            )],
        )
        .await?;
        self.alert(
            &keys,
            user,
            "A passkey was added",
            "A passkey was added to your account. It can sign you in, and serves as your second step.",
        )
        .await;
        let codes = if self
            .stores
            .factors
            .recovery_codes_left(user.workspace_id, user.id)
            .await?
            == 0
        {
            Some(self.replace_recovery_codes(user).await?)
        } else {
            None
        };
        Ok((
            PasskeyInfo {
                id,
                name,
                created_at: now,
                last_used_at: None,
            },
            codes,
        ))
    }

    /// Starts registering a passkey as the second factor a workspace requires (a pending step of a user
    /// who has none).
    pub async fn start_passkey_enrolment(
        &self,
        workspace: WorkspaceId,
        pending: &str,
    ) -> Result<PasskeyChallenge> {
        let (_, user) = self.enrolment_step(workspace, pending).await?;
        self.start_passkey_registration(&user).await
    }

    /// Completes the required enrolment with a passkey: the browser is signed in; returns the recovery
    /// codes to show once. `NotFound`: the step expired or was completed; `Invalid`/`Conflict` as for a
    /// registration.
    pub async fn complete_passkey_enrolment(
        &self,
        workspace: WorkspaceId,
        pending: &str,
        token: &str,
        name: &str,
        answer: &serde_json::Value,
        client: &Actor,
    ) -> Result<(LinkSignIn, Vec<String>)> {
        let (link, user) = self.enrolment_step(workspace, pending).await?;
        let (_, codes) = self
            .finish_passkey_registration(&user, token, name, answer, client)
            .await?;
        let codes = match codes {
            Some(codes) => codes,
            None => self.replace_recovery_codes(&user).await?,
        };
        let hash = secureflows_crypto::sha256(pending.as_bytes());
        self.stores
            .ceremonies
            .use_link(workspace, &hash, LinkPurpose::Mfa, self.clock.now())
            .await?
            .ok_or(Error::NotFound("pending sign-in"))?;
        self.stores.passwords.clear_failures(workspace, user.id).await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let actor = end_user(client, &user);
        let mut amr = link.amr.clone();
        amr.extend(["hwk".to_owned(), "mfa".to_owned()]);
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

    /// Removes one of the user's passkeys.
    pub async fn remove_passkey(&self, user: &User, passkey: PasskeyId, client: &Actor) -> Result<()> {
        let keys = self
            .keys
            .workspace_keys(user.workspace_id, self.state.trusted())
            .await?;
        if !self
            .stores
            .factors
            .delete_passkey(user.workspace_id, user.id, passkey)
            .await?
        {
            return Err(Error::NotFound("passkey"));
        }
        // The last factor gone: its recovery codes go too (they would outlive every factor).
        let status = self.mfa_status(user).await?;
        if !status.totp && status.passkeys == 0 {
            self.stores
                .factors
                .delete_totp(user.workspace_id, user.id, false)
                .await?;
        }
        let actor = end_user(client, user);
        self.record(
            user.workspace_id,
            &keys,
            &actor,
            vec![NewEvent::new("user.mfa_disable", "user", user.id).values(
                Some(serde_json::json!({"factor": "passkey", "passkey": passkey})),
                None,
            )],
        )
        .await?;
        self.alert(
            &keys,
            user,
            "A passkey was removed",
            "A passkey was removed from your account.",
        )
        .await;
        Ok(())
    }

    /// Starts a sign-in with a passkey alone: the browser offers the user's discoverable credentials.
    pub async fn start_passkey_sign_in(&self, workspace: WorkspaceId) -> Result<PasskeyChallenge> {
        let (found, keys) = self.login_workspace(workspace).await?;
        let (mut rcr, state): (RequestChallengeResponse, DiscoverableAuthentication) = self
            .webauthn(&found.name)?
            .start_discoverable_authentication()
            .map_err(|_| Error::internal("starting a passkey sign-in"))?;
        // A button starts this ceremony, not an autofill field.
        rcr.mediation = None;
        let token = self
            .store_ceremony(
                &keys,
                workspace,
                None,
                CeremonyPurpose::SignIn,
                &state,
                CEREMONY_TTL,
            )
            .await?;
        Ok(PasskeyChallenge {
            token,
            options: serde_json::to_value(&rcr).map_err(|_| Error::internal("encoding passkey options"))?,
        })
    }

    /// Completes a passkey sign-in. The passkey verified the user, so it is both factors: the browser
    /// is signed in (a workspace that requires a second factor is satisfied). Every failure is
    /// `InvalidCredentials`.
    pub async fn finish_passkey_sign_in(
        &self,
        workspace: WorkspaceId,
        token: &str,
        answer: &serde_json::Value,
        client: &Actor,
    ) -> Result<(User, BrowserLogin)> {
        let (found, keys) = self.login_workspace(workspace).await?;
        let Some((_, state)) = self
            .take_ceremony::<DiscoverableAuthentication>(&keys, workspace, token, CeremonyPurpose::SignIn)
            .await?
        else {
            return Err(refused());
        };
        let answer: PublicKeyCredential = serde_json::from_value(answer.clone()).map_err(|_| refused())?;
        let webauthn = self.webauthn(&found.name)?;
        let (user_handle, credential_id) = webauthn
            .identify_discoverable_authentication(&answer)
            .map_err(|_| refused())?;
        let user = self
            .stores
            .users
            .find_user(workspace, UserId::from(user_handle))
            .await?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(refused)?;
        let passkeys = self.open_passkeys(&keys, &user).await?;
        let Some((record, stored)) = passkeys
            .into_iter()
            .find(|(_, s)| AsRef::<[u8]>::as_ref(s.passkey.cred_id()) == credential_id)
        else {
            return Err(refused());
        };
        let result = webauthn
            .finish_discoverable_authentication_v2(&answer, state, &stored.passkey)
            .map_err(|_| refused())?;
        self.passkey_used(&keys, &user, record, stored, &result).await?;
        let actor = end_user(client, &user);
        self.record(
            workspace,
            &keys,
            &actor,
            vec![
                NewEvent::new("user.sign_in", "user", user.id)
                    .values(None, Some(serde_json::json!({"method": "passkey"}))),
            ],
        )
        .await?;
        self.stores.passwords.clear_failures(workspace, user.id).await?;
        let amr = vec!["hwk".to_owned(), "user".to_owned(), "mfa".to_owned()];
        let login = self.open_browser_session(&keys, &user, amr, &actor).await?;
        Ok((user, login))
    }

    /// Starts a passkey as the second factor of a pending sign-in (the user's own credentials only).
    pub async fn start_passkey_second_factor(
        &self,
        workspace: WorkspaceId,
        pending: &str,
    ) -> Result<PasskeyChallenge> {
        let (_, user) = self
            .link_user(
                workspace,
                crate::login::mfa::PENDING_PREFIX,
                pending,
                LinkPurpose::Mfa,
                false,
            )
            .await?;
        let (found, keys) = self.login_workspace(workspace).await?;
        let passkeys: Vec<Passkey> = self
            .open_passkeys(&keys, &user)
            .await?
            .into_iter()
            .map(|(_, s)| s.passkey)
            .collect();
        if passkeys.is_empty() {
            return Err(Error::NotFound("passkey"));
        }
        let (rcr, state): (RequestChallengeResponse, PasskeyAuthentication) = self
            .webauthn(&found.name)?
            .start_passkey_authentication(&passkeys)
            .map_err(|_| Error::internal("starting a passkey check"))?;
        let token = self
            .store_ceremony(
                &keys,
                workspace,
                Some(user.id),
                CeremonyPurpose::SecondFactor,
                &state,
                CEREMONY_TTL,
            )
            .await?;
        Ok(PasskeyChallenge {
            token,
            options: serde_json::to_value(&rcr).map_err(|_| Error::internal("encoding passkey options"))?,
        })
    }

    /// Completes a pending sign-in with a passkey. `NotFound`: the step expired or was completed;
    /// `InvalidCredentials`: the answer did not verify.
    pub async fn finish_passkey_second_factor(
        &self,
        workspace: WorkspaceId,
        pending: &str,
        token: &str,
        answer: &serde_json::Value,
        client: &Actor,
    ) -> Result<LinkSignIn> {
        let (link, user) = self
            .link_user(
                workspace,
                crate::login::mfa::PENDING_PREFIX,
                pending,
                LinkPurpose::Mfa,
                false,
            )
            .await?;
        let (found, keys) = self.login_workspace(workspace).await?;
        let Some((owner, state)) = self
            .take_ceremony::<PasskeyAuthentication>(&keys, workspace, token, CeremonyPurpose::SecondFactor)
            .await?
        else {
            return Err(refused());
        };
        if owner != Some(user.id) {
            return Err(refused());
        }
        let answer: PublicKeyCredential = serde_json::from_value(answer.clone()).map_err(|_| refused())?;
        let result = self
            .webauthn(&found.name)?
            .finish_passkey_authentication(&answer, &state)
            .map_err(|_| refused())?;
        let Some((record, stored)) = self
            .open_passkeys(&keys, &user)
            .await?
            .into_iter()
            .find(|(_, s)| s.passkey.cred_id() == result.cred_id())
        else {
            return Err(refused());
        };
        self.passkey_used(&keys, &user, record, stored, &result).await?;
        let hash = secureflows_crypto::sha256(pending.as_bytes());
        self.stores
            .ceremonies
            .use_link(workspace, &hash, LinkPurpose::Mfa, self.clock.now())
            .await?
            .ok_or(Error::NotFound("pending sign-in"))?;
        self.stores.passwords.clear_failures(workspace, user.id).await?;
        let actor = end_user(client, &user);
        self.record(
            workspace,
            &keys,
            &actor,
            vec![NewEvent::new("user.sign_in", "user", user.id).values(
                None,
                Some(serde_json::json!({"method": "second_factor", "factor": "passkey"})),
            )],
        )
        .await?;
        let mut amr = link.amr.clone();
        amr.extend(["hwk".to_owned(), "mfa".to_owned()]);
        let login = self.open_browser_session(&keys, &user, amr, &actor).await?;
        Ok(LinkSignIn {
            user,
            step: FirstFactor::SignedIn(login),
            flow: link.flow_id,
        })
    }

    /// Stores the passkey's new signature counter and when it was used.
    async fn passkey_used(
        &self,
        keys: &WorkspaceKeys,
        user: &User,
        record: PasskeyRecord,
        mut stored: StoredPasskey,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<()> {
        stored.passkey.update_credential(result);
        let json = serde_json::to_vec(&stored).map_err(|_| Error::internal("encoding a passkey"))?;
        let sealed = keys.seal(&passkey_aad(user.workspace_id, user.id, record.id), &json)?;
        self.stores
            .factors
            .update_passkey(user.workspace_id, record.id, &sealed, self.clock.now())
            .await
    }
}

fn end_user(client: &Actor, user: &User) -> Actor {
    let mut actor = client.clone();
    actor.kind = ActorKind::EndUser;
    actor.id = Some(user.id);
    actor
}

/// A passkey registration for an OWNER who does not exist yet (the first run): its options for the
/// browser and its state, kept sealed by the caller until the answer comes.
pub(crate) struct OwnerPasskeyStart {
    pub options: serde_json::Value,
    pub state: PasskeyRegistration,
}

impl Services {
    /// Starts registering the passkey of a future OWNER (`owner`, `account`): discoverable, verifying
    /// the user. The state is not stored here: the first run seals it for its cookie.
    pub(crate) fn start_owner_passkey(
        &self,
        workspace_name: &str,
        owner: UserId,
        account: &str,
    ) -> Result<OwnerPasskeyStart> {
        let display = format!("{account} ({workspace_name})");
        let (ccr, state): (CreationChallengeResponse, PasskeyRegistration) = self
            .webauthn(workspace_name)?
            .start_passkey_registration(owner.as_uuid(), account, &display, None)
            .map_err(|_| Error::internal("starting a passkey registration"))?;
        let mut options =
            serde_json::to_value(&ccr).map_err(|_| Error::internal("encoding passkey options"))?;
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(serde_json::Value::as_object_mut)
        {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        Ok(OwnerPasskeyStart { options, state })
    }

    /// Verifies the browser's answer to [`Services::start_owner_passkey`]. `Invalid` if it does not.
    pub(crate) fn finish_owner_passkey(
        &self,
        workspace_name: &str,
        answer: &serde_json::Value,
        state: &PasskeyRegistration,
    ) -> Result<Passkey> {
        let failed = || Error::invalid("passkey", "the passkey could not be registered; please try again");
        let answer: RegisterPublicKeyCredential =
            serde_json::from_value(answer.clone()).map_err(|_| failed())?;
        self.webauthn(workspace_name)?
            .finish_passkey_registration(&answer, state)
            .map_err(|_| failed())
    }

    /// Stores a verified passkey of `user` (sealed under the workspace data key) with its audit event.
    pub(crate) async fn store_owner_passkey(
        &self,
        keys: &std::sync::Arc<WorkspaceKeys>,
        user: &User,
        passkey: Passkey,
        actor: &Actor,
    ) -> Result<()> {
        let now = self.clock.now();
        let id = PasskeyId::new();
        let credential_hash = secureflows_crypto::sha256(AsRef::<[u8]>::as_ref(passkey.cred_id())).to_vec();
        let stored = StoredPasskey {
            name: "Passkey".into(),
            passkey,
        };
        let json = serde_json::to_vec(&stored).map_err(|_| Error::internal("encoding a passkey"))?;
        let sealed = keys.seal(&passkey_aad(user.workspace_id, user.id, id), &json)?;
        let inserted = self
            .stores
            .factors
            .insert_passkey(&PasskeyRecord {
                id,
                workspace_id: user.workspace_id,
                user_id: user.id,
                credential_hash,
                sealed,
                created_at: now,
                last_used_at: None,
            })
            .await?;
        if !inserted {
            return Err(Error::Conflict("passkey"));
        }
        self.record(
            user.workspace_id,
            keys,
            actor,
            vec![NewEvent::new("user.mfa_enable", "user", user.id).values(
                None,
                Some(serde_json::json!({"factor": "passkey", "passkey": id})),
            )],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_the_public_host_and_never_an_address() {
        let (id, origin) = relying_party("https://Login.Example.com:8443/base").unwrap();
        assert_eq!(id, "login.example.com");
        assert_eq!(origin.as_str(), "https://login.example.com:8443/");
        assert!(relying_party("http://localhost:3000").is_some());
        assert!(relying_party("http://127.0.0.1:3000").is_none());
        assert!(relying_party("http://[::1]:3000").is_none());
    }
}
