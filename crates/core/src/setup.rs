//! The first run: while no workspace exists, a one-time setup link lets whoever holds it create the
//! first workspace, its console client and its OWNER in the browser.
//!
//! The link's token is 256 random bits, stored as SHA-256 only, valid 24 hours. Creating the first
//! workspace spends it together with every other setup token, in the same transaction as the
//! workspace (`Change::ClaimSetup`); concurrent first runs are serialised, so exactly one succeeds,
//! and no setup link works once a workspace exists.

use std::time::Duration;

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::callback::{email_index, name_aad, seal_email};
use crate::email::EmailAddress;
use crate::login::hosted::BrowserLogin;
use crate::login::mfa::FirstFactor;
use crate::login::password::PasswordPolicy;
use crate::store::Change;
use crate::workspace::NewApplication;
use crate::{ApplicationKind, Error, Plan, Result, Role, Services, User, UserId, UserStatus, Workspace};
use secureflows_crypto::SecretString;

/// How long a setup link works.
pub const SETUP_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The prefix of setup tokens (recognisable when pasted somewhere it should not be).
const SETUP_PREFIX: &str = "sfsetup_";

/// The console's path, relative to the public URL.
pub const CONSOLE_PATH: &str = "/console";

/// Where a setup link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupState {
    /// The link works: the form may be shown.
    Open,
    /// Unknown, spent or expired.
    Unusable,
    /// A workspace exists: setup is over.
    Done,
}

/// What the first-run and sign-up forms hold: a new workspace and its OWNER.
#[derive(Debug)]
pub struct NewOwnedWorkspace {
    /// The workspace's name.
    pub workspace_name: String,
    /// The OWNER's e-mail address.
    pub email: String,
    /// The OWNER's name (optional).
    pub name: Option<String>,
    /// The OWNER's password.
    pub password: SecretString,
}

/// What a first run or a sign-up made: the workspace, its OWNER, and the OWNER's signed-in browser.
#[derive(Debug)]
pub struct OwnedWorkspace {
    /// The new workspace.
    pub workspace: Workspace,
    /// Its OWNER.
    pub owner: User,
    /// The OWNER's hosted-login browser session (the console signs in through it).
    pub login: BrowserLogin,
    /// Recovery codes to show once (an OWNER made with a passkey only: a lost device must not lock
    /// them out).
    pub recovery_codes: Option<Vec<String>>,
}

/// A first run with a passkey, started: the browser's registration options and the pending state,
/// sealed for a short-lived cookie of the browser (never logged).
#[derive(Debug)]
pub struct PasskeySetup {
    /// `navigator.credentials.create` options.
    pub options: serde_json::Value,
    /// The sealed pending state.
    pub pending: SecretString,
}

/// How the new OWNER will sign in.
enum OwnerCredential {
    Password(SecretString),
    Passkey(Box<webauthn_rs::prelude::Passkey>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingPasskeySetup {
    owner: UserId,
    workspace_name: String,
    email: String,
    name: Option<String>,
    state: webauthn_rs::prelude::PasskeyRegistration,
}

impl Services {
    /// A new setup link (`{public_url}/console/setup?token=…`) while no workspace exists;
    /// `Conflict("setup-done")` once one does. Earlier links keep working until they expire.
    pub async fn new_setup_link(&self) -> Result<SecretString> {
        if self.stores.workspaces.any_workspace().await? {
            return Err(Error::Conflict("setup-done"));
        }
        let token = secureflows_crypto::random_token(SETUP_PREFIX)?;
        let now = self.clock.now();
        self.stores
            .workspaces
            .insert_setup_token(&setup_hash(&token), now, now.plus(SETUP_TOKEN_TTL))
            .await?;
        Ok(SecretString::new(format!(
            "{}{CONSOLE_PATH}/setup?token={token}",
            self.tokens.issuer().trim_end_matches('/')
        )))
    }

    /// Whether the setup form may be shown for `token`.
    pub async fn setup_state(&self, token: &str) -> Result<SetupState> {
        if self.stores.workspaces.any_workspace().await? {
            return Ok(SetupState::Done);
        }
        let usable = token.starts_with(SETUP_PREFIX)
            && token.len() < 128
            && self
                .stores
                .workspaces
                .setup_token_usable(&setup_hash(token), self.clock.now())
                .await?;
        Ok(if usable {
            SetupState::Open
        } else {
            SetupState::Unusable
        })
    }

    /// The first run: creates the workspace (the largest built-in plan: it is the operator's own), its
    /// console client and its OWNER with a password, spending the setup token in the same
    /// transaction, and signs the OWNER's browser in to the workspace's hosted login.
    /// `Conflict("setup-token")` for an unusable token, `Conflict("setup-done")` once a workspace
    /// exists; `Invalid` for a form that breaks a rule (the token is not spent then).
    pub async fn first_run(
        &self,
        token: &SecretString,
        mut form: NewOwnedWorkspace,
        client: &Actor,
    ) -> Result<OwnedWorkspace> {
        match self.setup_state(token.expose()).await? {
            SetupState::Open => {}
            SetupState::Unusable => return Err(Error::Conflict("setup-token")),
            SetupState::Done => return Err(Error::Conflict("setup-done")),
        }
        let claim = setup_hash(token.expose());
        let password = std::mem::take(&mut form.password);
        self.create_workspace_and_owner(
            form,
            UserId::new(),
            OwnerCredential::Password(password),
            Some(claim),
            Plan::pro(),
            client,
        )
        .await
    }

    /// Starts a first run with a passkey instead of a password (where the host allows WebAuthn): checks
    /// the link and the form, and begins the registration of the future OWNER's passkey.
    pub async fn start_first_run_passkey(
        &self,
        token: &SecretString,
        form: NewOwnedWorkspace,
    ) -> Result<PasskeySetup> {
        match self.setup_state(token.expose()).await? {
            SetupState::Open => {}
            SetupState::Unusable => return Err(Error::Conflict("setup-token")),
            SetupState::Done => return Err(Error::Conflict("setup-done")),
        }
        let (email, name) = check_owner_form(&form)?;
        let owner = UserId::new();
        let started = self.start_owner_passkey(form.workspace_name.trim(), owner, email.as_str())?;
        let pending = PendingPasskeySetup {
            owner,
            workspace_name: form.workspace_name.trim().to_owned(),
            email: email.as_str().to_owned(),
            name: name.map(str::to_owned),
            state: started.state,
        };
        let json = serde_json::to_vec(&pending).map_err(|_| Error::internal("encoding a passkey setup"))?;
        let keys = self.instance_keys().await?;
        let sealed = keys.seal(&passkey_setup_aad(token.expose()), &json)?;
        use base64::Engine as _;
        Ok(PasskeySetup {
            options: started.options,
            pending: SecretString::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)),
        })
    }

    /// Finishes a first run with a passkey: the browser's pending state (bound to the same link) and
    /// its answer verified, the workspace, its console client and its OWNER made as with a password,
    /// the passkey stored, recovery codes made to show once, and the browser signed in.
    pub async fn first_run_with_passkey(
        &self,
        token: &SecretString,
        pending: &str,
        answer: &serde_json::Value,
        client: &Actor,
    ) -> Result<OwnedWorkspace> {
        use base64::Engine as _;
        let unusable = || Error::invalid("passkey", "the passkey request expired; please try again");
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(pending)
            .map_err(|_| unusable())?;
        let keys = self.instance_keys().await?;
        let plain = keys
            .open(&passkey_setup_aad(token.expose()), &sealed)
            .map_err(|_| unusable())?;
        let pending: PendingPasskeySetup = serde_json::from_slice(&plain).map_err(|_| unusable())?;
        match self.setup_state(token.expose()).await? {
            SetupState::Open => {}
            SetupState::Unusable => return Err(Error::Conflict("setup-token")),
            SetupState::Done => return Err(Error::Conflict("setup-done")),
        }
        let passkey = self.finish_owner_passkey(&pending.workspace_name, answer, &pending.state)?;
        let form = NewOwnedWorkspace {
            workspace_name: pending.workspace_name,
            email: pending.email,
            name: pending.name,
            password: SecretString::default(),
        };
        let claim = setup_hash(token.expose());
        self.create_workspace_and_owner(
            form,
            pending.owner,
            OwnerCredential::Passkey(Box::new(passkey)),
            Some(claim),
            Plan::pro(),
            client,
        )
        .await
    }

    /// An open sign-up (`console.open_signup`, checked by the caller): a new workspace on the free
    /// plan, its console client and its OWNER, whose browser is signed in.
    pub async fn sign_up_workspace(
        &self,
        mut form: NewOwnedWorkspace,
        client: &Actor,
    ) -> Result<OwnedWorkspace> {
        let password = std::mem::take(&mut form.password);
        self.create_workspace_and_owner(
            form,
            UserId::new(),
            OwnerCredential::Password(password),
            None,
            Plan::free(),
            client,
        )
        .await
    }

    async fn create_workspace_and_owner(
        &self,
        form: NewOwnedWorkspace,
        owner_id: UserId,
        credential: OwnerCredential,
        claim: Option<[u8; 32]>,
        plan: Plan,
        client: &Actor,
    ) -> Result<OwnedWorkspace> {
        let (email, name) = check_owner_form(&form)?;
        let (phc, passkey) = match credential {
            OwnerCredential::Password(password) => {
                self.check_new_password(PasswordPolicy::default(), &password, email.as_str())
                    .await?;
                (Some(self.passwords.hash(&password).await?), None)
            }
            OwnerCredential::Passkey(passkey) => (None, Some(*passkey)),
        };
        let passkey_owner = passkey.is_some();
        let now = self.clock.now();
        let mut actor = client.clone();
        actor.kind = ActorKind::User;
        actor.id = Some(owner_id);
        let console = self.console_client_settings();
        let (workspace, owner) = self
            .create_workspace_with(form.workspace_name.trim(), plan, &actor, |w, keys| {
                let owner = User {
                    id: owner_id,
                    workspace_id: w.id,
                    role: Role::Owner,
                    revision: 1,
                    status: UserStatus::Active,
                    email_sealed: Some(seal_email(keys, w.id, owner_id, &email)?),
                    email_index: Some(email_index(keys, &email).to_vec()),
                    name_sealed: name
                        .map(|n| keys.seal(&name_aad(w.id, owner_id), n.as_bytes()))
                        .transpose()?,
                    created_at: now,
                    updated_at: now,
                };
                // The console exchanges its codes in process: the secret is not needed, and not kept.
                let (app, _secret) = self.new_application_row(w.id, console, now)?;
                let mut changes = Vec::new();
                if let Some(hash) = claim {
                    changes.push(Change::ClaimSetup(hash.to_vec()));
                }
                changes.push(Change::InsertUser(owner.clone()));
                if let Some(phc) = phc {
                    changes.push(Change::SetPassword(owner_id, phc));
                }
                changes.push(Change::InsertApplication(app.clone()));
                let how = if claim.is_some() { "first_run" } else { "sign_up" };
                let method = if passkey_owner { "passkey" } else { "password" };
                let events = vec![
                    NewEvent::new("user.create", "user", owner_id).values(
                        None,
                        Some(serde_json::json!({"role": "owner", "method": method, "via": how})),
                    ),
                    NewEvent::new("application.create", "application", app.id)
                        .values(None, Some(crate::workspace::application_audit(&app))),
                ];
                Ok((changes, events, owner))
            })
            .await?;
        let keys = self.keys.workspace_keys(workspace.id, false).await?;
        let (login, recovery_codes) = match passkey {
            Some(passkey) => {
                // The passkey is both factors (the user was verified); recovery codes keep a lost
                // device from locking the OWNER out.
                self.store_owner_passkey(&keys, &owner, passkey, &actor).await?;
                let codes = self.replace_recovery_codes(&owner).await?;
                let amr = vec!["hwk".to_owned(), "user".to_owned(), "mfa".to_owned()];
                (
                    self.open_browser_session(&keys, &owner, amr, &actor).await?,
                    Some(codes),
                )
            }
            None => match self
                .after_first_factor(&keys, &owner, vec!["pwd".into()], None, &actor)
                .await?
            {
                FirstFactor::SignedIn(login) => (login, None),
                // A new workspace requires no second factor and its OWNER has none yet.
                _ => {
                    return Err(Error::internal(
                        "a new workspace's owner was asked for a second factor",
                    ));
                }
            },
        };
        Ok(OwnedWorkspace {
            workspace,
            owner,
            login,
            recovery_codes,
        })
    }

    /// What the console's own client of a workspace looks like: a confidential server client whose
    /// codes come back to `{public_url}/console/callback` (the console exchanges them in process, so
    /// its secret is never needed and never kept).
    pub fn console_client_settings(&self) -> NewApplication {
        let base = self.tokens.issuer().trim_end_matches('/');
        NewApplication {
            name: CONSOLE_CLIENT_NAME.into(),
            kind: Some(ApplicationKind::Server),
            public: false,
            redirect_uris: vec![format!("{base}{CONSOLE_PATH}/callback")],
            post_logout_uris: vec![format!("{base}{CONSOLE_PATH}")],
            console: true,
            ..NewApplication::default()
        }
    }
}

/// The name of the console's own client in each workspace.
pub const CONSOLE_CLIENT_NAME: &str = "secureFlows console";

/// The new workspace's name, the OWNER's address and name, checked.
fn check_owner_form(form: &NewOwnedWorkspace) -> Result<(EmailAddress, Option<&str>)> {
    let mut errors = Vec::new();
    crate::workspace::validate_name("workspace_name", form.workspace_name.trim(), &mut errors);
    let email = match EmailAddress::parse(&form.email) {
        Ok(email) => Some(email),
        Err(_) => {
            errors.push(crate::FieldError::new("email", "must be an e-mail address"));
            None
        }
    };
    let name = form.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control)) {
        errors.push(crate::FieldError::new("name", "must be at most 200 characters"));
    }
    match (email, errors.is_empty()) {
        (Some(email), true) => Ok((email, name)),
        _ => Err(Error::Invalid(errors)),
    }
}

/// The pending passkey setup is bound to the link it was started with.
fn passkey_setup_aad(token: &str) -> secureflows_crypto::Aad {
    secureflows_crypto::Aad::new("sf.setup.passkey.v1").field(setup_hash(token))
}

/// A setup token's stored form.
fn setup_hash(token: &str) -> [u8; 32] {
    secureflows_crypto::sha256(token.as_bytes())
}
