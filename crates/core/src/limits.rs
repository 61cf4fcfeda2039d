//! The services of hourly budgets and end-user tiers: charging a request to the budgets it counts
//! against, looking up the tier an end user is on (cached; a change invalidates it like a revocation,
//! so it takes effect on the next request), and putting a user on a tier.

use std::num::NonZeroU32;
use std::sync::Arc;

use crate::audit::NewEvent;
use crate::auth::session::SessionCaller;
use crate::console::ConsoleCaller;
use crate::rate::{BudgetKey, Charge};
use crate::store::Change;
use crate::tier::{TierAssignment, TierSource};
use crate::{Application, ApplicationId, Error, Result, Services, Tier, UserId, Workspace, WorkspaceId};

/// The most one `limits/consume` call may charge.
pub const MAX_COST: u32 = 1_000;

/// A user's tier in one application, as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTier {
    /// The application.
    pub application: ApplicationId,
    /// The tier the user is on (`None`: the application has no tiers).
    pub tier: Option<Tier>,
    /// Whether that is the default tier (nothing assigned, or the assigned tier no longer exists).
    pub is_default: bool,
    /// The stored assignment, if any.
    pub assignment: Option<TierAssignment>,
}

impl Services {
    /// The tiers a user was put on (cached per user; invalidated with the user's revision).
    async fn assigned_tiers(&self, workspace: WorkspaceId, user: UserId) -> Result<Arc<Vec<TierAssignment>>> {
        let stores = &self.stores;
        let trust = self.state.trusted();
        Ok(self
            .state
            .tiers
            .get_or_load(&user, trust, || async {
                Ok(Some(Arc::new(stores.users.user_tiers(workspace, user).await?)))
            })
            .await?
            .unwrap_or_default())
    }

    /// The tier `user` is on in `app`: the assigned one while the application defines it, else the
    /// default; `None` when the application has no tiers.
    pub async fn tier_of(&self, app: &Application, user: UserId) -> Result<Option<Tier>> {
        if app.tiers.is_empty() {
            return Ok(None);
        }
        let assigned = self.assigned_tiers(app.workspace_id, user).await?;
        let name = assigned
            .iter()
            .find(|a| a.application == app.id)
            .and_then(|a| a.tier.as_deref());
        Ok(app.effective_tier(name).cloned())
    }

    /// Charges `cost` Session API requests of the caller to their tier's hourly budget and to the
    /// workspace plan's. The outcome says what is left of each; a refusal carries the wait.
    pub async fn charge_session(&self, caller: &SessionCaller, cost: NonZeroU32) -> Result<Charge> {
        let tier = self.tier_of(&caller.application, caller.token.user).await?;
        let mut budgets = Vec::with_capacity(2);
        if let Some(per_hour) = tier.and_then(|t| t.requests_per_hour) {
            budgets.push((
                BudgetKey::User(caller.application.id, caller.token.user),
                per_hour,
            ));
        }
        if let Some(per_hour) = caller.limits.api_requests_per_hour {
            budgets.push((BudgetKey::Workspace(caller.workspace.id), per_hour));
        }
        Ok(self.budgets.charge(&budgets, cost))
    }

    /// Charges one management API request to the workspace plan's hourly budget.
    pub fn charge_workspace(&self, workspace: &Workspace) -> Charge {
        match self.plans.limits(&workspace.plan).api_requests_per_hour {
            Some(per_hour) => self
                .budgets
                .charge(&[(BudgetKey::Workspace(workspace.id), per_hour)], NonZeroU32::MIN),
            None => Charge::default(),
        }
    }

    /// The tier of an end user in one application (OWNER, ADMIN).
    pub async fn user_tier(
        &self,
        caller: &ConsoleCaller,
        app: ApplicationId,
        user: UserId,
    ) -> Result<UserTier> {
        caller.require_admin()?;
        let application = self
            .find_workspace_application(caller.workspace_id(), app)
            .await?;
        self.find_member(caller.workspace_id(), user).await?;
        let assigned = self.stores.users.user_tiers(caller.workspace_id(), user).await?;
        let assignment = assigned.into_iter().find(|a| a.application == app);
        let named = assignment
            .as_ref()
            .and_then(|a| a.tier.as_deref())
            .and_then(|name| application.tier(name));
        Ok(UserTier {
            application: app,
            tier: application
                .effective_tier(assignment.as_ref().and_then(|a| a.tier.as_deref()))
                .cloned(),
            is_default: named.is_none(),
            assignment,
        })
    }

    /// Puts an end user on one of the application's tiers (`None`: back on the default tier), from the
    /// management API or the console (OWNER, ADMIN). Audited with the old and new tier; every node
    /// applies it on the user's next request.
    pub async fn set_user_tier(
        &self,
        caller: &ConsoleCaller,
        app: ApplicationId,
        user: UserId,
        tier: Option<&str>,
        source: TierSource,
    ) -> Result<UserTier> {
        caller.require_admin()?;
        let application = self
            .find_workspace_application(caller.workspace_id(), app)
            .await?;
        if application.tiers.is_empty() {
            return Err(Error::invalid("tier", "the application has no tiers"));
        }
        if let Some(name) = tier
            && application.tier(name).is_none()
        {
            return Err(Error::invalid("tier", "not one of the application's tiers"));
        }
        let before = self.user_tier(caller, app, user).await?;
        let assignment = TierAssignment {
            application: app,
            user,
            tier: tier.map(str::to_owned),
            source,
            event_at: None,
            updated_at: self.clock.now(),
        };
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::SetUserTier(assignment)],
            vec![NewEvent::new("user.tier.change", "user", user).values(
                Some(serde_json::json!({
                    "application": app.to_string(),
                    "tier": before.tier.map(|t| t.name),
                })),
                Some(serde_json::json!({
                    "application": app.to_string(),
                    "tier": application.effective_tier(tier).map(|t| &t.name),
                    "source": source.as_str(),
                })),
            )],
        )
        .await?;
        self.state.tiers.invalidate(&user);
        self.user_tier(caller, app, user).await
    }
}
