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
        form: NewOwnedWorkspace,
        client: &Actor,
    ) -> Result<OwnedWorkspace> {
        match self.setup_state(token.expose()).await? {
            SetupState::Open => {}
            SetupState::Unusable => return Err(Error::Conflict("setup-token")),
            SetupState::Done => return Err(Error::Conflict("setup-done")),
        }
        let claim = setup_hash(token.expose());
        self.create_owned_workspace_with_password(form, Some(claim), Plan::Pro, client)
            .await
    }

    /// An open sign-up (`console.open_signup`, checked by the caller): a new workspace on the free
    /// plan, its console client and its OWNER, whose browser is signed in.
    pub async fn sign_up_workspace(&self, form: NewOwnedWorkspace, client: &Actor) -> Result<OwnedWorkspace> {
        self.create_owned_workspace_with_password(form, None, Plan::Free, client)
            .await
    }

    async fn create_owned_workspace_with_password(
        &self,
        form: NewOwnedWorkspace,
        claim: Option<[u8; 32]>,
        plan: Plan,
        client: &Actor,
    ) -> Result<OwnedWorkspace> {
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
        let (Some(email), true) = (email, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        self.check_new_password(PasswordPolicy::default(), &form.password, email.as_str())
            .await?;
        let phc = self.passwords.hash(&form.password).await?;
        let now = self.clock.now();
        let owner_id = UserId::new();
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
                changes.extend([
                    Change::InsertUser(owner.clone()),
                    Change::SetPassword(owner_id, phc),
                    Change::InsertApplication(app.clone()),
                ]);
                let how = if claim.is_some() { "first_run" } else { "sign_up" };
                let events = vec![
                    NewEvent::new("user.create", "user", owner_id).values(
                        None,
                        Some(serde_json::json!({"role": "owner", "method": "password", "via": how})),
                    ),
                    NewEvent::new("application.create", "application", app.id)
                        .values(None, Some(crate::workspace::application_audit(&app))),
                ];
                Ok((changes, events, owner))
            })
            .await?;
        let keys = self.keys.workspace_keys(workspace.id, false).await?;
        let login = match self
            .after_first_factor(&keys, &owner, vec!["pwd".into()], None, &actor)
            .await?
        {
            FirstFactor::SignedIn(login) => login,
            // A new workspace requires no second factor and its OWNER has none yet.
            _ => {
                return Err(Error::internal(
                    "a new workspace's owner was asked for a second factor",
                ));
            }
        };
        Ok(OwnedWorkspace {
            workspace,
            owner,
            login,
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

/// A setup token's stored form.
fn setup_hash(token: &str) -> [u8; 32] {
    secureflows_crypto::sha256(token.as_bytes())
}
