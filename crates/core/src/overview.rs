//! What the console's plan and keys pages show: the plan's limits beside the workspace's usage, and
//! the workspace's data-key versions beside the instance's signing keys (read-only: they are the
//! instance's).

use crate::console::ConsoleCaller;
use crate::{ForbiddenReason, Plan, PlanLimits, Result, Role, Services, Timestamp};
use secureflows_crypto::KeyPurpose;

/// A workspace's plan and how much of it is used.
#[derive(Debug, Clone)]
pub struct PlanUsage {
    /// The plan.
    pub plan: Plan,
    /// Its limits.
    pub limits: std::sync::Arc<PlanLimits>,
    /// Active login sessions now.
    pub sessions: u64,
    /// Applications (the console's own client not counted).
    pub applications: usize,
    /// OWNERs and ADMINs.
    pub members: usize,
}

/// One data-key version of a workspace.
#[derive(Debug, Clone)]
pub struct DataKeyVersion {
    /// Version.
    pub version: u32,
    /// New data is sealed under it.
    pub active: bool,
    /// Made.
    pub created_at: Timestamp,
}

/// One signing key of the instance.
#[derive(Debug, Clone)]
pub struct SigningKeyInfo {
    /// Key id (`kid`).
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// Made.
    pub created_at: Timestamp,
    /// Retired (still published until the tokens it signed expire).
    pub retired_at: Option<Timestamp>,
}

impl Services {
    /// The caller's workspace's plan with its usage (OWNER, ADMIN).
    pub async fn plan_usage(&self, caller: &ConsoleCaller) -> Result<PlanUsage> {
        caller.require_admin()?;
        let workspace = caller.workspace_id();
        let plan = self.get_workspace(workspace).await?.plan;
        let apps = self.stores.applications.list_applications(workspace).await?;
        Ok(PlanUsage {
            limits: self.plans.limits(&plan),
            plan,
            sessions: self
                .stores
                .sessions
                .count_sessions(workspace, self.clock.now())
                .await?,
            applications: apps.iter().filter(|a| !self.is_own_console_client(a)).count(),
            members: self.stores.users.list_admins(workspace, 10_000).await?.len(),
        })
    }

    /// The workspace's data-key versions, newest first, and the instance's signing keys (OWNER,
    /// ADMIN).
    pub async fn key_overview(
        &self,
        caller: &ConsoleCaller,
    ) -> Result<(Vec<DataKeyVersion>, Vec<SigningKeyInfo>)> {
        caller.require_admin()?;
        let stored = self
            .stores
            .keyring
            .workspace_keys(&caller.workspace_id().to_string())
            .await?;
        let mut data: Vec<DataKeyVersion> = stored
            .iter()
            .filter(|k| k.purpose == KeyPurpose::Data)
            .map(|k| DataKeyVersion {
                version: k.version,
                active: k.active,
                created_at: k.created_at,
            })
            .collect();
        data.sort_by_key(|k| std::cmp::Reverse(k.version));
        let mut signing: Vec<SigningKeyInfo> = self
            .stores
            .keyring
            .signing_keys()
            .await?
            .into_iter()
            .map(|k| SigningKeyInfo {
                kid: k.kid,
                alg: k.alg,
                created_at: k.created_at,
                retired_at: k.retired_at,
            })
            .collect();
        signing.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        Ok((data, signing))
    }

    /// Adds a data-key version to the caller's workspace (OWNER): new data is sealed under it, older
    /// versions still open what they sealed. Audited as `keys.rotate` with the caller as the actor.
    pub async fn rotate_data_key_as(&self, caller: &ConsoleCaller) -> Result<u32> {
        if caller.role() != Role::Owner {
            return Err(crate::Error::Forbidden(ForbiddenReason::Role));
        }
        self.rotate_workspace_key(caller.workspace_id(), &caller.actor)
            .await
    }
}
