//! Workspaces and applications: creation, plans, key rotation and deletion by crypto-shredding.

use std::time::Duration;

use crate::{
    Application, ApplicationId, Error, FieldError, Invalidation, Plan, Result, Services, UpstreamTrust,
    Workspace, WorkspaceId,
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
    /// Creates a workspace with fresh keys.
    pub async fn create_workspace(&self, name: &str, plan: Plan) -> Result<Workspace> {
        let mut errors = Vec::new();
        validate_name("name", name, &mut errors);
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let now = self.clock.now();
        let workspace = Workspace {
            id: WorkspaceId::new(),
            name: name.to_owned(),
            plan,
            created_at: now,
            updated_at: now,
        };
        self.keys.create_workspace_keys(workspace.id, now).await?;
        self.stores.workspaces.insert_workspace(&workspace).await?;
        Ok(workspace)
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
    pub async fn set_plan(&self, id: WorkspaceId, plan: Plan) -> Result<()> {
        self.stores
            .workspaces
            .update_plan(id, plan, self.clock.now())
            .await?;
        self.state.apply(Invalidation::Workspace(id));
        Ok(())
    }

    /// Deletes a workspace by crypto-shredding: its keys are destroyed first (so its data can never be
    /// read again, from this database or any backup of it), then its rows are deleted.
    pub async fn delete_workspace(&self, id: WorkspaceId) -> Result<()> {
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
        Ok(())
    }

    /// Adds a new data-key version for the workspace. Returns the version.
    pub async fn rotate_workspace_key(&self, id: WorkspaceId) -> Result<u32> {
        self.get_workspace(id).await?;
        let version = self.keys.rotate_data_key(id, self.clock.now()).await?;
        self.stores.coord.publish(Invalidation::Keys(id)).await?;
        Ok(version)
    }

    /// Registers an application in a workspace.
    pub async fn create_application(
        &self,
        workspace: WorkspaceId,
        new: NewApplication,
    ) -> Result<Application> {
        self.get_workspace(workspace).await?;
        let mut errors = Vec::new();
        validate_name("name", &new.name, &mut errors);
        if let Some(trust) = &new.trust {
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
        for origin in &new.allowed_origins {
            if !validate_origin(origin) {
                errors.push(FieldError {
                    field: "allowed_origins".into(),
                    message: "each origin must be exactly scheme://host[:port] as a browser sends it".into(),
                });
            }
        }
        let token_ttl = new.token_ttl.unwrap_or(self.settings.default_token_ttl);
        if token_ttl < MIN_TTL || token_ttl > self.settings.max_token_ttl {
            errors.push(FieldError {
                field: "token_ttl".into(),
                message: format!(
                    "must be between 1 minute and {} seconds",
                    self.settings.max_token_ttl.as_secs()
                ),
            });
        }
        let data_ttl = new.data_ttl.unwrap_or(self.settings.default_data_ttl);
        if !(MIN_TTL..=MAX_DATA_TTL).contains(&data_ttl) {
            errors.push(FieldError {
                field: "session_ttl".into(),
                message: "must be between 1 minute and 365 days".into(),
            });
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let mut origins = new.allowed_origins;
        origins.sort();
        origins.dedup();
        let now = self.clock.now();
        let app = Application {
            id: ApplicationId::new(),
            workspace_id: workspace,
            name: new.name,
            trust: new.trust,
            allowed_origins: origins,
            data_ttl,
            token_ttl,
            created_at: now,
            updated_at: now,
        };
        self.stores.applications.insert_application(&app).await?;
        self.state.apply(Invalidation::Application(app.id));
        Ok(app)
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
