//! Workspaces and applications: creation, plans, key rotation and deletion by crypto-shredding.

use std::time::Duration;

use secureflows_crypto::SecretString;

use crate::audit::{Actor, NewEvent};
use crate::console::ConsoleCaller;
use crate::keyring::WorkspaceKeys;
use crate::store::Change;
use crate::{
    Application, ApplicationId, ApplicationKind, Error, FieldError, Invalidation, Plan, Result, Services,
    UpstreamTrust, Workspace, WorkspaceId,
};

/// What a new application is registered with.
#[derive(Debug, Clone, Default)]
pub struct NewApplication {
    /// Display name.
    pub name: String,
    /// Trusted upstream issuer and audience.
    pub trust: Option<UpstreamTrust>,
    /// Allowed browser origins (exact `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Vault data lifetime (default 24 h).
    pub data_ttl: Option<Duration>,
    /// Access-token lifetime (default 15 min).
    pub token_ttl: Option<Duration>,
    /// Browser, native or server. Unset: chosen by `public` (see [`infer_kind`]).
    pub kind: Option<ApplicationKind>,
    /// A public client (browser or native app) holds no secret: the alias of a `kind` left unset.
    pub public: bool,
    /// Where the hosted login may send authorization codes (exact URIs).
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to (exact URIs).
    pub post_logout_uris: Vec<String>,
    /// Visitors may get anonymous (ANON) sessions.
    pub allow_anonymous: bool,
    /// A console client (USER JWTs for the management API).
    pub console: bool,
    /// End-user tiers.
    pub tiers: Vec<crate::Tier>,
    /// The tier a new end user starts on (required when there are tiers).
    pub default_tier: Option<String>,
}

/// Changes to an application; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct ApplicationPatch {
    /// Display name.
    pub name: Option<String>,
    /// Allowed browser origins.
    pub allowed_origins: Option<Vec<String>>,
    /// Redirect URIs.
    pub redirect_uris: Option<Vec<String>>,
    /// Post-logout redirect URIs.
    pub post_logout_uris: Option<Vec<String>>,
    /// Anonymous sessions allowed.
    pub allow_anonymous: Option<bool>,
    /// Trusted upstream issuer (`Some(None)` removes it).
    pub trust: Option<Option<UpstreamTrust>>,
    /// Vault data lifetime.
    pub data_ttl: Option<Duration>,
    /// Access-token lifetime.
    pub token_ttl: Option<Duration>,
    /// End-user tiers (replaces them all).
    pub tiers: Option<Vec<crate::Tier>>,
    /// The default tier (`Some(None)`: none, only when there are no tiers).
    pub default_tier: Option<Option<String>>,
}

/// A new client secret and its stored hash. Secrets carry 256 random bits, so a plain SHA-256 is the
/// right hash (no password stretching needed).
fn new_client_secret() -> Result<(SecretString, Vec<u8>)> {
    let secret = secureflows_crypto::random_token("sfcs_")?;
    let hash = secureflows_crypto::sha256(secret.as_bytes()).to_vec();
    Ok((SecretString::new(secret), hash))
}

/// The kind of an application registered without one, as `public` chose before kinds were explicit: a
/// confidential client is a server application; a public one is native when it has redirect URIs and
/// every one of them is native (a loopback address or a private-use scheme, RFC 8252), and a browser
/// application otherwise.
pub fn infer_kind(public: bool, redirect_uris: &[String]) -> ApplicationKind {
    if !public {
        ApplicationKind::Server
    } else if !redirect_uris.is_empty() && redirect_uris.iter().all(|u| is_native_redirect(u)) {
        ApplicationKind::Native
    } else {
        ApplicationKind::Browser
    }
}

/// Whether a redirect URI belongs to a native app (RFC 8252: `http` on a loopback address, or a
/// private-use scheme).
pub fn is_native_redirect(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| match u.scheme() {
        "https" => false,
        "http" => is_loopback(&u),
        _ => true,
    })
}

/// An application's settings as the audit log records them (never the secret).
pub fn application_audit(app: &Application) -> serde_json::Value {
    serde_json::json!({
        "name": app.name,
        "kind": app.kind.as_str(),
        "allowed_origins": app.allowed_origins,
        "trust_issuer": app.trust.as_ref().map(|t| &t.issuer),
        "trust_audience": app.trust.as_ref().map(|t| &t.audience),
        "trust_second_factor_amr": app.trust.as_ref().map(|t| &t.second_factor_amr),
        "trust_second_factor_acr": app.trust.as_ref().map(|t| &t.second_factor_acr),
        "session_ttl": app.data_ttl.as_secs(),
        "token_ttl": app.token_ttl.as_secs(),
        "redirect_uris": app.redirect_uris,
        "post_logout_uris": app.post_logout_uris,
        "allow_anonymous": app.allow_anonymous,
        "console": app.console,
        "tiers": app.tiers,
        "default_tier": app.default_tier,
    })
}

/// Console clients hand out management tokens with the signed-in member's role, OWNERs included: only
/// an OWNER may register one or change where its codes go (an ADMIN with that power could collect an
/// OWNER's token).
pub fn require_owner_for_console(caller: &ConsoleCaller, app: &Application) -> Result<()> {
    if app.console && caller.role() != crate::Role::Owner {
        return Err(Error::Forbidden(crate::ForbiddenReason::Role));
    }
    Ok(())
}

/// A redirect URI an application may register (RFC 6749 §3.1.2, RFC 8252): absolute, no fragment, no
/// user info, at most 2,000 characters; `https`, `http` only on a loopback host, or a private-use scheme
/// (`com.example.app:/callback`) for native apps. Matching is exact, so no wildcards.
pub fn validate_redirect_uri(uri: &str) -> bool {
    if uri.len() > 2000 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback(&url),
        // Dangerous or meaningless schemes for a redirect.
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => false,
        // Private-use schemes must look like a reversed domain (RFC 8252 §7.1).
        scheme => scheme.contains('.'),
    }
}

/// Whether a URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_DATA_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A display name: 1 to 100 characters, no control characters, no surrounding spaces.
pub fn validate_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    let count = name.chars().count();
    if count == 0 || count > 100 || name.trim() != name || name.chars().any(char::is_control) {
        errors.push(FieldError {
            field: field.to_owned(),
            message: "must be 1 to 100 characters without control characters or surrounding spaces".into(),
        });
    }
}

/// An allowed origin must be written exactly as browsers send it: `scheme://host[:port]`, lowercase,
/// no path, no default port.
pub fn validate_origin(origin: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https") && url.origin().ascii_serialization() == origin
}

/// An issuer must be an absolute `https` (or `http`, for development) URL without query, fragment or
/// credentials.
pub fn validate_issuer(issuer: &str) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && issuer.len() <= 2048
}

impl Services {
    /// Creates a workspace with fresh keys. Audited in the new workspace's own log.
    pub async fn create_workspace(&self, name: &str, plan: Plan, actor: &Actor) -> Result<Workspace> {
        self.create_workspace_with(name, plan, actor, |_, _| Ok((Vec::new(), Vec::new(), ())))
            .await
            .map(|(w, ())| w)
    }

    /// Creates a workspace and, in the same transaction, whatever `more` adds (its first OWNER).
    pub async fn create_workspace_with<T>(
        &self,
        name: &str,
        plan: Plan,
        actor: &Actor,
        more: impl FnOnce(&Workspace, &WorkspaceKeys) -> Result<(Vec<Change>, Vec<NewEvent>, T)>,
    ) -> Result<(Workspace, T)> {
        let mut errors = Vec::new();
        validate_name("name", name, &mut errors);
        if !self.plans.contains(&plan) {
            errors.push(FieldError::new("plan", "not a plan of this instance's catalogue"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let now = self.clock.now();
        let workspace = Workspace {
            id: WorkspaceId::new(),
            name: name.to_owned(),
            plan: plan.clone(),
            login_policy: crate::login::LoginPolicy::default(),
            branding: crate::login::Branding::default(),
            created_at: now,
            updated_at: now,
        };
        self.keys.create_workspace_keys(workspace.id, now).await?;
        let keys = self.keys.workspace_keys(workspace.id, false).await?;
        let (more_changes, more_events, extra) = more(&workspace, &keys)?;
        let mut changes = vec![Change::InsertWorkspace(workspace.clone())];
        changes.extend(more_changes);
        let mut events = vec![
            NewEvent::new("workspace.create", "workspace", workspace.id).values(
                None,
                Some(serde_json::json!({"name": name, "plan": plan.as_str()})),
            ),
        ];
        events.extend(more_events);
        self.commit(workspace.id, &keys, actor, changes, events).await?;
        Ok((workspace, extra))
    }

    /// The workspace, or `NotFound`.
    pub async fn get_workspace(&self, id: WorkspaceId) -> Result<Workspace> {
        self.stores
            .workspaces
            .find_workspace(id)
            .await?
            .ok_or(Error::NotFound("workspace"))
    }

    /// Changes a workspace's plan; every node picks up the new limits at once.
    pub async fn set_plan(&self, id: WorkspaceId, plan: Plan, actor: &Actor) -> Result<()> {
        if !self.plans.contains(&plan) {
            return Err(Error::invalid("plan", "not a plan of this instance's catalogue"));
        }
        let old = self.get_workspace(id).await?;
        let keys = self.keys.workspace_keys(id, false).await?;
        self.commit(
            id,
            &keys,
            actor,
            vec![Change::SetPlan(plan.clone())],
            vec![NewEvent::new("workspace.plan.change", "workspace", id).values(
                Some(serde_json::json!({"plan": old.plan.as_str()})),
                Some(serde_json::json!({"plan": plan.as_str()})),
            )],
        )
        .await
    }

    /// Deletes a workspace by crypto-shredding: its keys are destroyed first (so its data can never be
    /// read again, from this database or any backup of it), then its rows are deleted.
    pub async fn delete_workspace(&self, id: WorkspaceId, actor: &Actor) -> Result<()> {
        // The nil id names the instance's own keys and audit chain, never a workspace.
        if id == WorkspaceId::NIL {
            return Err(Error::NotFound("workspace"));
        }
        let exists = self.stores.workspaces.find_workspace(id).await?.is_some();
        // Keys without a workspace row: an earlier deletion stopped half-way; finish it.
        let has_keys = !self
            .stores
            .keyring
            .workspace_keys(&id.to_string())
            .await?
            .is_empty();
        if !exists && !has_keys {
            return Err(Error::NotFound("workspace"));
        }
        self.keys.destroy_workspace_keys(id, self.clock.now()).await?;
        self.stores.coord.publish(Invalidation::Keys(id)).await?;
        if exists {
            self.stores.workspaces.delete_workspace(id).await?;
        }
        self.state.apply(Invalidation::Workspace(id));
        // The workspace's own log went with it; the instance's log keeps the deletion.
        let instance = self.instance_keys().await?;
        self.record(
            crate::audit::INSTANCE,
            &instance,
            actor,
            vec![NewEvent::new("workspace.delete", "workspace", id)],
        )
        .await
    }

    /// Adds a new data-key version for the workspace. Returns the version.
    pub async fn rotate_workspace_key(&self, id: WorkspaceId, actor: &Actor) -> Result<u32> {
        self.get_workspace(id).await?;
        let version = self.keys.rotate_data_key(id, self.clock.now()).await?;
        self.stores.coord.publish(Invalidation::Keys(id)).await?;
        self.keys.evict(id);
        let keys = self.keys.workspace_keys(id, false).await?;
        self.record(
            id,
            &keys,
            actor,
            vec![
                NewEvent::new("keys.rotate", "workspace", id)
                    .values(None, Some(serde_json::json!({"data_key_version": version}))),
            ],
        )
        .await?;
        Ok(version)
    }

    /// Registers an application in a workspace. A confidential application (not `public`) gets a client
    /// secret, returned here once and stored only as its hash.
    pub async fn create_application(
        &self,
        workspace: WorkspaceId,
        new: NewApplication,
        actor: &Actor,
    ) -> Result<(Application, Option<SecretString>)> {
        let ws = self.get_workspace(workspace).await?;
        if let Some(max) = self.plans.limits(&ws.plan).max_applications {
            let apps = self.stores.applications.list_applications(workspace).await?;
            let counted = apps.iter().filter(|a| !self.is_own_console_client(a)).count();
            if counted >= usize::try_from(max).unwrap_or(usize::MAX) && !new.console {
                return Err(Error::Forbidden(crate::ForbiddenReason::QuotaExceeded(
                    crate::Quota::Applications,
                )));
            }
        }
        let (app, secret) = self.new_application_row(workspace, new, self.clock.now())?;
        let keys = self.keys.workspace_keys(workspace, false).await?;
        self.commit(
            workspace,
            &keys,
            actor,
            vec![Change::InsertApplication(app.clone())],
            vec![
                NewEvent::new("application.create", "application", app.id)
                    .values(None, Some(application_audit(&app))),
            ],
        )
        .await?;
        Ok((app, secret))
    }

    /// Registers an application for a management caller (the API and the console): OWNER or ADMIN,
    /// and only an OWNER registers a console client (see [`require_owner_for_console`]).
    pub async fn register_application(
        &self,
        caller: &ConsoleCaller,
        new: NewApplication,
    ) -> Result<(Application, Option<SecretString>)> {
        caller.require_admin()?;
        if new.console && caller.role() != crate::Role::Owner {
            return Err(Error::Forbidden(crate::ForbiddenReason::Role));
        }
        self.create_application(caller.workspace_id(), new, &caller.actor)
            .await
    }

    /// The workspace's applications, oldest first, for a management caller (OWNER, ADMIN, SUPPORT;
    /// a SUPPORT read is audited).
    pub async fn workspace_applications(&self, caller: &ConsoleCaller) -> Result<Vec<Application>> {
        caller.require_metadata_reader()?;
        let apps = self
            .stores
            .applications
            .list_applications(caller.workspace_id())
            .await?;
        self.audit_support_read(caller, "applications", caller.workspace_id().to_string())
            .await?;
        Ok(apps)
    }

    /// One application of the caller's workspace (OWNER, ADMIN, SUPPORT; a SUPPORT read is audited).
    pub async fn workspace_application(
        &self,
        caller: &ConsoleCaller,
        id: ApplicationId,
    ) -> Result<Application> {
        caller.require_metadata_reader()?;
        let app = self.find_workspace_application(caller.workspace_id(), id).await?;
        self.audit_support_read(caller, "application", app.id.to_string())
            .await?;
        Ok(app)
    }

    /// A new application's row, checked, and the secret of a confidential one (shown once).
    pub(crate) fn new_application_row(
        &self,
        workspace: WorkspaceId,
        new: NewApplication,
        now: crate::Timestamp,
    ) -> Result<(Application, Option<SecretString>)> {
        let kind = match new.kind {
            Some(ApplicationKind::Server) if new.public => {
                return Err(Error::invalid("public", "a server application is not public"));
            }
            Some(kind) => kind,
            None => infer_kind(new.public, &new.redirect_uris),
        };
        let mut app = Application {
            id: ApplicationId::new(),
            workspace_id: workspace,
            name: new.name,
            trust: new.trust,
            allowed_origins: new.allowed_origins,
            data_ttl: new.data_ttl.unwrap_or(self.settings.default_data_ttl),
            token_ttl: new.token_ttl.unwrap_or(self.settings.default_token_ttl),
            kind,
            redirect_uris: new.redirect_uris,
            post_logout_uris: new.post_logout_uris,
            allow_anonymous: new.allow_anonymous,
            console: new.console,
            tiers: new.tiers,
            default_tier: new.default_tier,
            secret_hash: None,
            created_at: now,
            updated_at: now,
        };
        self.validate_application(&mut app)?;
        let secret = if app.is_public() {
            None
        } else {
            let (secret, hash) = new_client_secret()?;
            app.secret_hash = Some(hash);
            Some(secret)
        };
        Ok((app, secret))
    }

    /// Checks an application's settings and normalises its origin list.
    fn validate_application(&self, app: &mut Application) -> Result<()> {
        let mut errors = Vec::new();
        validate_name("name", &app.name, &mut errors);
        if let Err(tier_errors) = crate::tier::check_tiers(&app.tiers, app.default_tier.as_deref()) {
            errors.extend(tier_errors);
        }
        if let Some(trust) = &app.trust {
            if !validate_issuer(&trust.issuer) {
                errors.push(FieldError {
                    field: "trust_issuer".into(),
                    message: "must be an absolute http(s) URL without query, fragment or credentials".into(),
                });
            }
            if trust.audience.is_empty()
                || trust.audience.len() > 255
                || trust.audience.chars().any(char::is_control)
            {
                errors.push(FieldError {
                    field: "trust_audience".into(),
                    message: "must be 1 to 255 characters".into(),
                });
            }
        }
        if app.allowed_origins.len() > 100 {
            errors.push(FieldError {
                field: "allowed_origins".into(),
                message: "at most 100 origins".into(),
            });
        }
        for origin in &app.allowed_origins {
            if !validate_origin(origin) {
                errors.push(FieldError {
                    field: "allowed_origins".into(),
                    message: "each origin must be exactly scheme://host[:port] as a browser sends it".into(),
                });
                break;
            }
        }
        // RFC 8252 §7: a native app receives codes on a loopback address or a private-use scheme; a
        // browser or server application on https (or http on a loopback address, for development).
        let fits_kind = |u: &String| match app.kind {
            ApplicationKind::Native => is_native_redirect(u),
            ApplicationKind::Browser | ApplicationKind::Server => url::Url::parse(u)
                .is_ok_and(|url| url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url))),
        };
        if !app.redirect_uris.iter().all(fits_kind) {
            errors.push(FieldError::new(
                "redirect_uris",
                match app.kind {
                    ApplicationKind::Native => {
                        "a native application's redirect URIs are http on a loopback address or a private-use \
                         scheme (com.example.app:/callback)"
                    }
                    _ => "redirect URIs are https (or http on a loopback address, for development)",
                },
            ));
        }
        for (field, uris) in [
            ("redirect_uris", &app.redirect_uris),
            ("post_logout_uris", &app.post_logout_uris),
        ] {
            if uris.len() > 20 {
                errors.push(FieldError {
                    field: field.into(),
                    message: "at most 20 URIs".into(),
                });
            } else if !uris.iter().all(|u| validate_redirect_uri(u)) {
                errors.push(FieldError {
                    field: field.into(),
                    message: "each URI must be absolute, without fragment or credentials; http only for \
                              localhost or loopback addresses"
                        .into(),
                });
            }
        }
        if app.token_ttl < self.settings.min_token_ttl || app.token_ttl > self.settings.max_token_ttl {
            errors.push(FieldError {
                field: "token_ttl".into(),
                message: format!(
                    "must be between {} and {} seconds",
                    self.settings.min_token_ttl.as_secs(),
                    self.settings.max_token_ttl.as_secs()
                ),
            });
        }
        if !(MIN_TTL..=MAX_DATA_TTL).contains(&app.data_ttl) {
            errors.push(FieldError {
                field: "session_ttl".into(),
                message: "must be between 1 minute and 365 days".into(),
            });
        }
        // A console client signs people in to the management API only: no guests, no upstream ID tokens.
        if app.console && app.allow_anonymous {
            errors.push(FieldError::new(
                "allow_anonymous",
                "a console client has no anonymous sessions",
            ));
        }
        if let Some(trust) = &app.trust {
            let claims = trust.second_factor_amr.iter().chain(&trust.second_factor_acr);
            if trust.second_factor_amr.len() + trust.second_factor_acr.len() > 20
                || claims
                    .clone()
                    .any(|c| c.is_empty() || c.len() > 255 || c.chars().any(char::is_control))
            {
                errors.push(FieldError::new(
                    "trust",
                    "at most 20 second-factor amr and acr values, each 1 to 255 printable characters",
                ));
            }
        }
        if app.console && app.trust.is_some() {
            errors.push(FieldError::new(
                "trust_issuer",
                "a console client takes no upstream ID tokens",
            ));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        app.allowed_origins.sort();
        app.allowed_origins.dedup();
        app.redirect_uris.dedup();
        app.post_logout_uris.dedup();
        Ok(())
    }

    /// One application of the workspace (`NotFound` for another workspace's).
    pub async fn find_workspace_application(
        &self,
        workspace: WorkspaceId,
        id: ApplicationId,
    ) -> Result<Application> {
        self.stores
            .applications
            .find_application(id)
            .await?
            .filter(|a| a.workspace_id == workspace)
            .ok_or(Error::NotFound("application"))
    }

    /// Changes an application's settings. Audited with old and new values.
    pub async fn update_application(
        &self,
        caller: &ConsoleCaller,
        id: ApplicationId,
        patch: ApplicationPatch,
    ) -> Result<Application> {
        caller.require_admin()?;
        let old = self.find_workspace_application(caller.workspace_id(), id).await?;
        require_owner_for_console(caller, &old)?;
        let mut app = old.clone();
        if let Some(name) = patch.name {
            app.name = name;
        }
        if let Some(origins) = patch.allowed_origins {
            app.allowed_origins = origins;
        }
        if let Some(trust) = patch.trust {
            app.trust = trust;
        }
        if let Some(uris) = patch.redirect_uris {
            app.redirect_uris = uris;
        }
        if let Some(uris) = patch.post_logout_uris {
            app.post_logout_uris = uris;
        }
        if let Some(allow) = patch.allow_anonymous {
            app.allow_anonymous = allow;
        }
        if let Some(ttl) = patch.data_ttl {
            app.data_ttl = ttl;
        }
        if let Some(ttl) = patch.token_ttl {
            app.token_ttl = ttl;
        }
        if let Some(tiers) = patch.tiers {
            app.tiers = tiers;
        }
        if let Some(default) = patch.default_tier {
            app.default_tier = default;
        }
        self.validate_application(&mut app)?;
        app.updated_at = self.clock.now();
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::UpdateApplication(app.clone())],
            vec![
                NewEvent::new("application.update", "application", id)
                    .values(Some(application_audit(&old)), Some(application_audit(&app))),
            ],
        )
        .await?;
        Ok(app)
    }

    /// Deletes an application with its login sessions and vault values.
    pub async fn delete_application(&self, caller: &ConsoleCaller, id: ApplicationId) -> Result<()> {
        caller.require_admin()?;
        let old = self.find_workspace_application(caller.workspace_id(), id).await?;
        require_owner_for_console(caller, &old)?;
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::DeleteApplication(id)],
            vec![
                NewEvent::new("application.delete", "application", id)
                    .values(Some(application_audit(&old)), None),
            ],
        )
        .await
    }

    /// Replaces a confidential application's secret; the old one stops working at once.
    pub async fn rotate_application_secret(
        &self,
        caller: &ConsoleCaller,
        id: ApplicationId,
    ) -> Result<SecretString> {
        caller.require_admin()?;
        let app = self.find_workspace_application(caller.workspace_id(), id).await?;
        require_owner_for_console(caller, &app)?;
        if app.is_public() {
            return Err(Error::Conflict("public-client"));
        }
        let (secret, hash) = new_client_secret()?;
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::SetApplicationSecret(id, hash)],
            vec![
                NewEvent::new("application.secret.rotate", "application", id).values(
                    Some(serde_json::json!({"client_secret": "[redacted]"})),
                    Some(serde_json::json!({"client_secret": "[redacted]"})),
                ),
            ],
        )
        .await?;
        Ok(secret)
    }

    /// Renames the caller's workspace.
    pub async fn rename_workspace(&self, caller: &ConsoleCaller, name: &str) -> Result<Workspace> {
        caller.require_admin()?;
        let mut errors = Vec::new();
        validate_name("name", name, &mut errors);
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let old = self.get_workspace(caller.workspace_id()).await?;
        self.commit(
            old.id,
            &caller.keys,
            &caller.actor,
            vec![Change::RenameWorkspace(name.to_owned())],
            vec![NewEvent::new("workspace.update", "workspace", old.id).values(
                Some(serde_json::json!({"name": old.name})),
                Some(serde_json::json!({"name": name})),
            )],
        )
        .await?;
        self.get_workspace(old.id).await
    }

    /// Changes the workspace's sign-in policy (OWNER only: it decides how every member signs in).
    pub async fn set_login_policy(
        &self,
        caller: &ConsoleCaller,
        policy: crate::login::LoginPolicy,
    ) -> Result<Workspace> {
        if caller.role() != crate::Role::Owner {
            return Err(Error::Forbidden(crate::ForbiddenReason::Role));
        }
        if policy.signup == crate::login::SignupMode::VerifyFirst && !self.mailer.enabled() {
            return Err(Error::invalid(
                "login_policy.signup",
                "verify_first needs a mail server ([smtp] in the configuration)",
            ));
        }
        let old = self.get_workspace(caller.workspace_id()).await?;
        let describe = |p: &crate::login::LoginPolicy| {
            serde_json::json!({
                "password_policy": p.password.as_str(),
                "mfa_required": p.mfa.as_str(),
                "signup": p.signup.as_str(),
            })
        };
        self.commit(
            old.id,
            &caller.keys,
            &caller.actor,
            vec![Change::SetLoginPolicy(policy)],
            vec![
                NewEvent::new("workspace.login_policy", "workspace", old.id)
                    .values(Some(describe(&old.login_policy)), Some(describe(&policy))),
            ],
        )
        .await?;
        self.get_workspace(old.id).await
    }

    /// Changes the workspace's hosted-login branding (OWNER, ADMIN).
    pub async fn set_branding(
        &self,
        caller: &ConsoleCaller,
        branding: crate::login::Branding,
    ) -> Result<Workspace> {
        caller.require_admin()?;
        let errors = branding.validate();
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let old = self.get_workspace(caller.workspace_id()).await?;
        let describe =
            |b: &crate::login::Branding| serde_json::json!({"color": b.color, "logo_url": b.logo_url});
        self.commit(
            old.id,
            &caller.keys,
            &caller.actor,
            vec![Change::SetBranding(branding.clone())],
            vec![
                NewEvent::new("workspace.branding", "workspace", old.id)
                    .values(Some(describe(&old.branding)), Some(describe(&branding))),
            ],
        )
        .await?;
        self.get_workspace(old.id).await
    }

    /// Whether an application of the workspace allows `origin` (its issuer's token, user-info,
    /// revocation and introspection endpoints answer those origins).
    pub async fn origin_allowed_in(&self, workspace: WorkspaceId, origin: &str) -> Result<bool> {
        // The instance-wide set is cached: most origins are refused without touching the workspace.
        if !self.origin_allowed_anywhere(origin).await? {
            return Ok(false);
        }
        Ok(self
            .stores
            .applications
            .list_applications(workspace)
            .await?
            .iter()
            .any(|a| a.allowed_origins.iter().any(|o| o == origin)))
    }

    /// Whether any application allows `origin` (CORS preflights carry no token).
    pub async fn origin_allowed_anywhere(&self, origin: &str) -> Result<bool> {
        let stores = &self.stores;
        let set = self
            .state
            .origins
            .get_or_load(&(), self.state.trusted(), || async {
                let all = stores.applications.list_allowed_origins().await?;
                Ok(Some(std::sync::Arc::new(all.into_iter().collect())))
            })
            .await?
            .unwrap_or_default();
        Ok(set.contains(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_canonical() {
        assert!(validate_origin("https://app.example.com"));
        assert!(validate_origin("http://localhost:3000"));
        for bad in [
            "https://app.example.com/",
            "https://App.example.com",
            "https://app.example.com:443",
            "https://app.example.com/path",
            "null",
            "*",
            "javascript:alert(1)",
            "https://user@app.example.com",
        ] {
            assert!(!validate_origin(bad), "{bad}");
        }
    }

    #[test]
    fn issuers() {
        assert!(validate_issuer("https://accounts.google.com"));
        assert!(validate_issuer("http://127.0.0.1:8080/realms/x"));
        assert!(!validate_issuer("accounts.google.com"));
        assert!(!validate_issuer("https://a.example?x=1"));
        assert!(!validate_issuer("ftp://a.example"));
    }
}
