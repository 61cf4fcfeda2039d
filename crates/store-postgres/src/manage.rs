//! Management changes with their audit events (one transaction, serialised per workspace by an
//! advisory lock), invitations and SUPPORT operators.

use async_trait::async_trait;
use secureflows_core::audit::{self, ActorKind, EventFilter, PendingEvent, StoredEvent};
use secureflows_core::store::{AuditStore, Change, ChangeSet, InviteStore, SupportStore};
use secureflows_core::{
    Error, Invalidation, Invite, InviteId, Result, Role, SupportOperator, Timestamp, User, UserId,
    UserStatus, WorkspaceId,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use secureflows_core::tier::TierAssignment;

use crate::data::{
    APP_COLUMNS, PgStore, USER_COLUMNS, corrupt, from_ts, record_invalidation, secs, tiers_json, ts, user_row,
};
use crate::error::SqlResult;

fn must_change(n: u64, what: &'static str) -> Result<()> {
    if n == 0 {
        Err(Error::NotFound(what))
    } else {
        Ok(())
    }
}

async fn find_user_role(c: &mut PgConnection, ws: Uuid, user: UserId) -> Result<(Role, UserStatus)> {
    let row = sqlx::query(&format!(
        "select {USER_COLUMNS} from user_account u where u.workspace_id = $1 and u.user_id = $2"
    ))
    .bind(ws)
    .bind(user.as_uuid())
    .fetch_optional(&mut *c)
    .await
    .db()?
    .ok_or(Error::NotFound("user"))?;
    let user = user_row(&row)?;
    Ok((user.role, user.status))
}

/// Raises the revision (with the column change in `set`, bound to `$3`) and ends the user's login
/// sessions.
async fn bump_user(
    c: &mut PgConnection,
    ws: Uuid,
    user: UserId,
    set: &str,
    value: &str,
    now: Timestamp,
) -> Result<()> {
    let n = sqlx::query(&format!(
        "update user_account set {set} revision = revision + 1, updated_at = $4
         where workspace_id = $1 and user_id = $2 and $3::text is not null"
    ))
    .bind(ws)
    .bind(user.as_uuid())
    .bind(value)
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?
    .rows_affected();
    must_change(n, "user")?;
    sqlx::query(
        "update login_session set ended_at = $3
         where workspace_id = $1 and user_id = $2 and ended_at is null and expires_at > $3",
    )
    .bind(ws)
    .bind(user.as_uuid())
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?;
    Ok(())
}

/// Inserts a user's row (members from a change set, and end users at their first sign-in).
pub(crate) async fn insert_user_row(c: &mut PgConnection, u: &User) -> Result<()> {
    sqlx::query(
        "insert into user_account (user_id, workspace_id, role, revision, status, email_sealed, email_index,
                                   name_sealed, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(u.id.as_uuid())
    .bind(u.workspace_id.as_uuid())
    .bind(u.role.as_str())
    .bind(u.revision)
    .bind(u.status.as_str())
    .bind(&u.email_sealed)
    .bind(&u.email_index)
    .bind(&u.name_sealed)
    .bind(ts(u.created_at))
    .bind(ts(u.updated_at))
    .execute(&mut *c)
    .await
    .db()?;
    Ok(())
}

/// What applying one change did: the invalidation to publish (none for a change no cache holds), and
/// whether it took an OWNER's rights away.
#[derive(Debug, Default)]
struct Applied {
    invalidation: Option<Invalidation>,
    owner_lost: bool,
}

impl Applied {
    /// A change that publishes `invalidation` and takes no OWNER's rights away.
    fn publishing(invalidation: Invalidation) -> Applied {
        Applied {
            invalidation: Some(invalidation),
            owner_lost: false,
        }
    }
}

/// Applies one change; returns whether it took an OWNER's rights away (the last-owner rule applies).
/// Each aggregate has its own function.
pub(crate) async fn apply_change(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<bool> {
    let applied = match change {
        Change::InsertWorkspace(..)
        | Change::RenameWorkspace(..)
        | Change::SetPlan(..)
        | Change::SetLoginPolicy(..)
        | Change::SetBranding(..) => apply_workspace_change(c, workspace, now, change).await?,
        Change::InsertApplication(..)
        | Change::UpdateApplication(..)
        | Change::DeleteApplication(..)
        | Change::SetApplicationSecret(..) => apply_application_change(c, workspace, now, change).await?,
        Change::InsertUser(..)
        | Change::UpgradeUser { .. }
        | Change::ExpectRole(..)
        | Change::SetRole(..)
        | Change::SetStatus(..)
        | Change::EndLinks(..)
        | Change::EndSignInLockout(..)
        | Change::RaiseRevision(..)
        | Change::DeleteUser(..)
        | Change::SetPassword(..)
        | Change::LinkIdentity(..) => apply_user_change(c, workspace, now, change).await?,
        Change::EndSession(..) | Change::InsertSession(..) => {
            apply_session_change(c, workspace, now, change).await?
        }
        Change::InsertSupport(..) | Change::DeleteSupport(..) => {
            apply_support_change(c, workspace, now, change).await?
        }
        Change::InsertInvite(..) | Change::AcceptInvite(..) | Change::RevokeInvite(..) => {
            apply_invite_change(c, workspace, now, change).await?
        }
        Change::InsertIdentityProvider(..) | Change::DeleteIdentityProvider(..) => {
            apply_provider_change(c, workspace, now, change).await?
        }
        Change::SetUserTier(assignment) => set_user_tier(c, workspace, now, assignment).await?,
        Change::RecordWebhookEvent {
            provider,
            scope,
            event_id,
        } => {
            crate::billing::record_webhook_event(c, now, provider, *scope, event_id).await?;
            Applied::default()
        }
        Change::LinkBilling(link) => {
            crate::billing::link_billing(c, workspace, link).await?;
            Applied::default()
        }
        Change::AdvanceBilling {
            provider,
            scope,
            subscription_id,
            event_at,
        } => {
            crate::billing::advance_billing(c, workspace, provider, *scope, subscription_id, *event_at)
                .await?;
            Applied::default()
        }
        Change::SetBillingSecret { application, sealed } => {
            crate::billing::set_billing_secret(c, workspace, now, *application, sealed).await?;
            Applied::default()
        }
        Change::ClaimSetup(hash) => claim_setup(c, now, hash).await?,
    };
    if let Some(invalidation) = applied.invalidation {
        record_invalidation(c, invalidation).await?;
    }
    Ok(applied.owner_lost)
}

/// Spends a setup token, and every other one, in the transaction that creates the first workspace
/// (`secureflows_claim_setup` serialises concurrent first runs with an advisory lock).
async fn claim_setup(c: &mut PgConnection, now: Timestamp, hash: &[u8]) -> Result<Applied> {
    let outcome: String = sqlx::query_scalar("select secureflows_claim_setup($1, $2)")
        .bind(hash)
        .bind(ts(now))
        .fetch_one(&mut *c)
        .await
        .db()?;
    match outcome.as_str() {
        "ok" => Ok(Applied {
            invalidation: None,
            owner_lost: false,
        }),
        "done" => Err(Error::Conflict("setup-done")),
        _ => Err(Error::Conflict("setup-token")),
    }
}

/// Applies a change of the workspace row.
async fn apply_workspace_change(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let ws = workspace.as_uuid();

    let invalidation = match change {
        Change::InsertWorkspace(w) => {
            if w.id != workspace {
                return Err(Error::NotFound("workspace"));
            }
            sqlx::query(
                "insert into workspace (workspace_id, name, plan, created_at, updated_at, password_policy, mfa_required,
                   signup_mode, brand_color, logo_url)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(ws)
            .bind(&w.name)
            .bind(w.plan.as_str())
            .bind(ts(w.created_at))
            .bind(ts(w.updated_at))
            .bind(w.login_policy.password.as_str())
            .bind(w.login_policy.mfa.as_str())
            .bind(w.login_policy.signup.as_str())
            .bind(&w.branding.color)
            .bind(&w.branding.logo_url)
            .execute(&mut *c)
            .await
            .db()?;
            Invalidation::Workspace(workspace)
        }
        Change::RenameWorkspace(name) => {
            let n = sqlx::query("update workspace set name = $2, updated_at = $3 where workspace_id = $1")
                .bind(ws)
                .bind(name)
                .bind(ts(now))
                .execute(&mut *c)
                .await
                .db()?
                .rows_affected();
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        Change::SetPlan(plan) => {
            let n = sqlx::query("update workspace set plan = $2, updated_at = $3 where workspace_id = $1")
                .bind(ws)
                .bind(plan.as_str())
                .bind(ts(now))
                .execute(&mut *c)
                .await
                .db()?
                .rows_affected();
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        Change::SetLoginPolicy(policy) => {
            let n = sqlx::query(
                "update workspace set password_policy = $2, mfa_required = $3, updated_at = $4, signup_mode = $5
                 where workspace_id = $1",
            )
            .bind(ws)
            .bind(policy.password.as_str())
            .bind(policy.mfa.as_str())
            .bind(ts(now))
            .bind(policy.signup.as_str())
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        Change::SetBranding(branding) => {
            let n = sqlx::query(
                "update workspace set brand_color = $2, logo_url = $3, updated_at = $4 where workspace_id = $1",
            )
            .bind(ws)
            .bind(&branding.color)
            .bind(&branding.logo_url)
            .bind(ts(now))
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        _ => return Err(Error::internal("not a workspace change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Applies a change of applications.
async fn apply_application_change(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let ws = workspace.as_uuid();

    let invalidation = match change {
        Change::InsertApplication(app) => {
            if app.workspace_id != workspace {
                return Err(Error::NotFound("workspace"));
            }
            sqlx::query(&format!(
                "insert into application ({APP_COLUMNS})
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
            ))
            .bind(app.id.as_uuid())
            .bind(ws)
            .bind(&app.name)
            .bind(app.trust.as_ref().map(|t| t.issuer.clone()))
            .bind(app.trust.as_ref().map(|t| t.audience.clone()))
            .bind(&app.allowed_origins)
            .bind(secs(app.data_ttl))
            .bind(secs(app.token_ttl))
            .bind(ts(app.created_at))
            .bind(ts(app.updated_at))
            .bind(app.is_public())
            .bind(&app.secret_hash)
            .bind(&app.redirect_uris)
            .bind(&app.post_logout_uris)
            .bind(app.allow_anonymous)
            .bind(app.console)
            .bind(app.kind.as_str())
            .bind(app.trust.as_ref().map(|t| t.second_factor_amr.clone()).unwrap_or_default())
            .bind(app.trust.as_ref().map(|t| t.second_factor_acr.clone()).unwrap_or_default())
            .bind(tiers_json(&app.tiers))
            .bind(&app.default_tier)
            .execute(&mut *c)
            .await
            .db()?;
            Invalidation::Application(app.id)
        }
        Change::UpdateApplication(app) => {
            let n = sqlx::query(
                "update application set name = $3, trust_issuer = $4, trust_audience = $5, allowed_origins = $6,
                   data_ttl_secs = $7, token_ttl_secs = $8, updated_at = $9, redirect_uris = $10,
                   post_logout_uris = $11, allow_anonymous = $12, trust_second_factor_amr = $13,
                   trust_second_factor_acr = $14, tiers = $15, default_tier = $16
                 where workspace_id = $1 and application_id = $2",
            )
            .bind(ws)
            .bind(app.id.as_uuid())
            .bind(&app.name)
            .bind(app.trust.as_ref().map(|t| t.issuer.clone()))
            .bind(app.trust.as_ref().map(|t| t.audience.clone()))
            .bind(&app.allowed_origins)
            .bind(secs(app.data_ttl))
            .bind(secs(app.token_ttl))
            .bind(ts(now))
            .bind(&app.redirect_uris)
            .bind(&app.post_logout_uris)
            .bind(app.allow_anonymous)
            .bind(app.trust.as_ref().map(|t| t.second_factor_amr.clone()).unwrap_or_default())
            .bind(app.trust.as_ref().map(|t| t.second_factor_acr.clone()).unwrap_or_default())
            .bind(tiers_json(&app.tiers))
            .bind(&app.default_tier)
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "application")?;
            Invalidation::Application(app.id)
        }
        Change::DeleteApplication(id) => {
            sqlx::query("delete from vault_value where workspace_id = $1 and application_id = $2")
                .bind(ws)
                .bind(id.as_uuid())
                .execute(&mut *c)
                .await
                .db()?;
            // Its users' Stripe subscriptions can never be matched again.
            sqlx::query("delete from billing_link where workspace_id = $1 and scope_id = $2")
                .bind(ws)
                .bind(id.as_uuid())
                .execute(&mut *c)
                .await
                .db()?;
            let n = sqlx::query("delete from application where workspace_id = $1 and application_id = $2")
                .bind(ws)
                .bind(id.as_uuid())
                .execute(&mut *c)
                .await
                .db()?
                .rows_affected();
            must_change(n, "application")?;
            Invalidation::Application(*id)
        }
        Change::SetApplicationSecret(id, hash) => {
            let n = sqlx::query(
                "update application set secret_hash = $3, updated_at = $4
                 where workspace_id = $1 and application_id = $2 and not public",
            )
            .bind(ws)
            .bind(id.as_uuid())
            .bind(hash)
            .bind(ts(now))
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "application")?;
            Invalidation::Application(*id)
        }
        _ => return Err(Error::internal("not an application change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Applies a change of members and end users: accounts, roles, status, passwords, identities.
async fn apply_user_change(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let ws = workspace.as_uuid();
    let mut owner_lost = false;
    let invalidation = match change {
        Change::InsertUser(u) => {
            if u.workspace_id != workspace {
                return Err(Error::NotFound("workspace"));
            }
            if let Some(index) = &u.email_index {
                let taken: bool = sqlx::query_scalar(
                    "select exists (select 1 from user_account where workspace_id = $1 and email_index = $2)",
                )
                .bind(ws)
                .bind(index)
                .fetch_one(&mut *c)
                .await
                .db()?;
                if taken {
                    return Err(Error::Conflict("member-exists"));
                }
            }
            insert_user_row(c, u).await?;
            Invalidation::User(workspace, u.id)
        }
        Change::UpgradeUser {
            user,
            email_sealed,
            email_index,
        } => {
            let taken: bool = sqlx::query_scalar(
                "select exists (select 1 from user_account where workspace_id = $1 and email_index = $2)",
            )
            .bind(ws)
            .bind(email_index)
            .fetch_one(&mut *c)
            .await
            .db()?;
            if taken {
                return Err(Error::Conflict("member-exists"));
            }
            let n = sqlx::query(
                "update user_account set role = 'user', email_sealed = $3, email_index = $4,
                   revision = revision + 1, updated_at = $5
                 where workspace_id = $1 and user_id = $2 and role = 'anon'",
            )
            .bind(ws)
            .bind(user.as_uuid())
            .bind(email_sealed)
            .bind(email_index)
            .bind(ts(now))
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "user")?;
            Invalidation::User(workspace, *user)
        }
        Change::ExpectRole(user, role) => {
            let (current, _) = find_user_role(c, ws, *user).await?;
            if current != *role {
                return Err(Error::Conflict("role-changed"));
            }
            return Ok(Applied::default());
        }
        Change::SetRole(user, role) => {
            let (old, _) = find_user_role(c, ws, *user).await?;
            owner_lost = old == Role::Owner && *role != Role::Owner;
            bump_user(c, ws, *user, "role = $3,", role.as_str(), now).await?;
            Invalidation::User(workspace, *user)
        }
        Change::SetStatus(user, status) => {
            let (role, _) = find_user_role(c, ws, *user).await?;
            owner_lost = role == Role::Owner && *status != UserStatus::Active;
            bump_user(c, ws, *user, "status = $3,", status.as_str(), now).await?;
            if *status == UserStatus::Active {
                // Unlocking also ends a sign-in lockout.
                sqlx::query(
                    "update user_account set failed_sign_ins = 0, sign_in_locked_until = null
                     where workspace_id = $1 and user_id = $2",
                )
                .bind(ws)
                .bind(user.as_uuid())
                .execute(&mut *c)
                .await
                .db()?;
            }
            Invalidation::User(workspace, *user)
        }
        Change::EndLinks(user) => {
            sqlx::query(
                "update login_link set used_at = $3
                 where workspace_id = $1 and user_id = $2 and used_at is null and purpose in ('magic', 'reset', 'mfa')",
            )
            .bind(ws)
            .bind(user.as_uuid())
            .bind(ts(now))
            .execute(&mut *c)
            .await
            .db()?;
            return Ok(Applied::default());
        }
        Change::EndSignInLockout(user) => {
            let n = sqlx::query(
                "update user_account set failed_sign_ins = 0, sign_in_locked_until = null
                 where workspace_id = $1 and user_id = $2",
            )
            .bind(ws)
            .bind(user.as_uuid())
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            if n == 0 {
                return Err(Error::NotFound("user"));
            }
            return Ok(Applied::default());
        }
        Change::RaiseRevision(user) => {
            bump_user(c, ws, *user, "", "", now).await?;
            Invalidation::User(workspace, *user)
        }
        Change::DeleteUser(user) => {
            let (role, _) = find_user_role(c, ws, *user).await?;
            owner_lost = role == Role::Owner;
            sqlx::query("delete from vault_value where workspace_id = $1 and user_id = $2")
                .bind(ws)
                .bind(user.as_uuid())
                .execute(&mut *c)
                .await
                .db()?;
            let n = sqlx::query("delete from user_account where workspace_id = $1 and user_id = $2")
                .bind(ws)
                .bind(user.as_uuid())
                .execute(&mut *c)
                .await
                .db()?
                .rows_affected();
            must_change(n, "user")?;
            Invalidation::User(workspace, *user)
        }
        Change::SetPassword(user, phc) => {
            let n = crate::login::write_password(c, workspace, *user, phc, now).await?;
            must_change(n, "user")?;
            return Ok(Applied::default());
        }
        Change::LinkIdentity(user, identity) => {
            let n = sqlx::query(
                "insert into user_identity (workspace_id, identity_index, user_id, identity_sealed, created_at)
                 select workspace_id, $3, user_id, $4, $5 from user_account where workspace_id = $1 and user_id = $2",
            )
            .bind(ws)
            .bind(user.as_uuid())
            .bind(&identity.index)
            .bind(&identity.sealed)
            .bind(ts(now))
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "user")?;
            return Ok(Applied::default());
        }
        _ => return Err(Error::internal("not a user change")),
    };
    Ok(Applied {
        invalidation: Some(invalidation),
        owner_lost,
    })
}

/// Applies a change of login sessions.
async fn apply_session_change(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let ws = workspace.as_uuid();

    let invalidation = match change {
        Change::EndSession(id) => {
            // Records its own invalidation.
            crate::login::end_login_session(c, workspace, *id, now).await?;
            return Ok(Applied::default());
        }
        Change::InsertSession(s) => {
            if s.workspace_id != workspace {
                return Err(Error::NotFound("workspace"));
            }
            sqlx::query(
                "insert into login_session (workspace_id, session_id, application_id, user_id, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(ws)
            .bind(s.id.as_uuid())
            .bind(s.application_id.map(|a| a.as_uuid()))
            .bind(s.user_id.as_uuid())
            .bind(ts(s.created_at))
            .bind(ts(s.expires_at))
            .execute(&mut *c)
            .await
            .db()?;
            Invalidation::Session(workspace, s.id)
        }
        _ => return Err(Error::internal("not a session change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Applies a change of SUPPORT operators.
async fn apply_support_change(
    c: &mut PgConnection,
    _workspace: WorkspaceId,
    _now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let invalidation = match change {
        Change::InsertSupport(op) => {
            sqlx::query(&format!(
                "insert into support_operator ({SUPPORT_COLUMNS}) values ($1, $2, $3, $4, $5)"
            ))
            .bind(op.id.as_uuid())
            .bind(&op.email_sealed)
            .bind(&op.email_index)
            .bind(op.revision)
            .bind(ts(op.created_at))
            .execute(&mut *c)
            .await
            .db()?;
            return Ok(Applied::default());
        }
        Change::DeleteSupport(id) => {
            let n = sqlx::query("delete from support_operator where support_id = $1")
                .bind(id.as_uuid())
                .execute(&mut *c)
                .await
                .db()?
                .rows_affected();
            must_change(n, "support operator")?;
            Invalidation::Support(*id)
        }
        _ => return Err(Error::internal("not a support change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Applies a change of invitations.
async fn apply_invite_change(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let ws = workspace.as_uuid();

    match change {
        Change::InsertInvite(i) => {
            if i.workspace_id != workspace {
                return Err(Error::NotFound("workspace"));
            }
            sqlx::query(
                "insert into invite (workspace_id, invite_id, email_sealed, email_index, role, token_hash, invited_by,
                   created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(ws)
            .bind(i.id.as_uuid())
            .bind(&i.email_sealed)
            .bind(&i.email_index)
            .bind(i.role.as_str())
            .bind(&i.token_hash)
            .bind(i.invited_by.as_uuid())
            .bind(ts(i.created_at))
            .bind(ts(i.expires_at))
            .execute(&mut *c)
            .await
            .db()?;
            Ok(Applied::default())
        }
        Change::AcceptInvite(id) => {
            let n = sqlx::query(
                "update invite set accepted_at = $3
                 where workspace_id = $1 and invite_id = $2 and revoked_at is null and accepted_at is null
                   and expires_at > $3",
            )
            .bind(ws)
            .bind(id.as_uuid())
            .bind(ts(now))
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "invite")?;
            Ok(Applied::default())
        }
        Change::RevokeInvite(id) => {
            let n = sqlx::query(
                "update invite set revoked_at = $3
                 where workspace_id = $1 and invite_id = $2 and revoked_at is null and accepted_at is null",
            )
            .bind(ws)
            .bind(id.as_uuid())
            .bind(ts(now))
            .execute(&mut *c)
            .await
            .db()?
            .rows_affected();
            must_change(n, "invite")?;
            Ok(Applied::default())
        }
        _ => Err(Error::internal("not an invite change")),
    }
}

/// Applies a change of upstream identity providers.
async fn apply_provider_change(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    _now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let ws = workspace.as_uuid();

    match change {
        Change::InsertIdentityProvider(p) => {
            if p.workspace_id != workspace {
                return Err(Error::NotFound("workspace"));
            }
            sqlx::query(
                "insert into identity_provider
                   (provider_id, workspace_id, kind, name, issuer, client_id, client_secret_sealed, created_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(p.id.as_uuid())
            .bind(ws)
            .bind(p.kind.as_str())
            .bind(&p.name)
            .bind(&p.issuer)
            .bind(&p.client_id)
            .bind(&p.client_secret_sealed)
            .bind(ts(p.created_at))
            .execute(&mut *c)
            .await
            .db()?;
            Ok(Applied::default())
        }
        Change::DeleteIdentityProvider(id) => {
            let n = sqlx::query("delete from identity_provider where workspace_id = $1 and provider_id = $2")
                .bind(ws)
                .bind(id.as_uuid())
                .execute(&mut *c)
                .await
                .db()?
                .rows_affected();
            must_change(n, "identity provider")?;
            Ok(Applied::default())
        }
        _ => Err(Error::internal("not a provider change")),
    }
}

async fn append_events(c: &mut PgConnection, set: &ChangeSet) -> Result<()> {
    if set.events.is_empty() {
        return Ok(());
    }
    let ws = set.workspace.as_uuid();
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("select seq, hash from audit_head where workspace_id = $1")
            .bind(ws)
            .fetch_optional(&mut *c)
            .await
            .db()?;
    let (mut seq, mut prev) = head.unwrap_or((0, audit::GENESIS.to_vec()));
    for e in &set.events {
        seq += 1;
        let hash = audit::link(&set.chain, set.workspace, seq, &prev, e);
        sqlx::query(
            "insert into audit_event (workspace_id, seq, event_id, created_at, actor_kind, actor_id, action,
               resource_type, resource_id, details_sealed, prev_hash, hash)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(ws)
        .bind(seq)
        .bind(e.id)
        .bind(ts(e.at))
        .bind(e.actor_kind.as_str())
        .bind(e.actor_id.map(|u| u.as_uuid()))
        .bind(&e.action)
        .bind(&e.resource_type)
        .bind(&e.resource_id)
        .bind(&e.details_sealed)
        .bind(&prev)
        .bind(hash.as_slice())
        .execute(&mut *c)
        .await
        .db()?;
        prev = hash.to_vec();
    }
    sqlx::query(
        "insert into audit_head (workspace_id, seq, hash) values ($1, $2, $3)
         on conflict (workspace_id) do update set seq = excluded.seq, hash = excluded.hash",
    )
    .bind(ws)
    .bind(seq)
    .bind(&prev)
    .execute(&mut *c)
    .await
    .db()?;
    Ok(())
}

const EVENT_COLUMNS: &str = "workspace_id, seq, event_id, created_at, actor_kind, actor_id, action, resource_type, \
                             resource_id, details_sealed, prev_hash, hash";

fn event_row(r: &PgRow) -> Result<StoredEvent> {
    Ok(StoredEvent {
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        seq: r.try_get("seq").db()?,
        event: PendingEvent {
            id: r.try_get("event_id").db()?,
            at: from_ts(r.try_get("created_at").db()?),
            actor_kind: ActorKind::parse(r.try_get::<&str, _>("actor_kind").db()?)
                .ok_or(corrupt("actor_kind"))?,
            actor_id: r
                .try_get::<Option<Uuid>, _>("actor_id")
                .db()?
                .map(UserId::from_uuid),
            action: r.try_get("action").db()?,
            resource_type: r.try_get("resource_type").db()?,
            resource_id: r.try_get("resource_id").db()?,
            details_sealed: r.try_get("details_sealed").db()?,
        },
        prev_hash: r.try_get("prev_hash").db()?,
        hash: r.try_get("hash").db()?,
    })
}

#[async_trait]
impl AuditStore for PgStore {
    async fn apply(&self, set: ChangeSet) -> Result<()> {
        let mut tx = self.tenant(set.workspace).await?;
        // SECURITY: one change set per workspace at a time, so the last-owner check and the chain's next
        // sequence number see every committed change of the workspace.
        sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 7))")
            .bind(set.workspace.as_uuid())
            .execute(&mut *tx)
            .await
            .db()?;
        let mut owner_lost = false;
        for change in &set.changes {
            owner_lost |= apply_change(&mut tx, set.workspace, set.now, change).await?;
        }
        if owner_lost {
            let owners: bool = sqlx::query_scalar(
                "select exists (select 1 from user_account
                   where workspace_id = $1 and role = 'owner' and status = 'active')",
            )
            .bind(set.workspace.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .db()?;
            if !owners {
                return Err(Error::Conflict("last-owner"));
            }
        }
        append_events(&mut tx, &set).await?;
        tx.commit().await.db()
    }

    async fn list_events(
        &self,
        workspace: WorkspaceId,
        f: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        // Only the conditions asked for: `$n is null or …` would hide the column from a generic plan.
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "select {EVENT_COLUMNS} from audit_event where workspace_id = "
        ));
        q.push_bind(workspace.as_uuid());
        if let Some(since) = f.since {
            q.push(" and created_at >= ").push_bind(ts(since));
        }
        if let Some(until) = f.until {
            q.push(" and created_at < ").push_bind(ts(until));
        }
        if let Some(actor) = f.actor {
            q.push(" and actor_id = ").push_bind(actor.as_uuid());
        }
        match f.action.as_deref() {
            Some(prefix) if prefix.ends_with('.') => {
                q.push(" and starts_with(action, ")
                    .push_bind(prefix.to_owned())
                    .push(")");
            }
            Some(exact) => {
                q.push(" and action = ").push_bind(exact.to_owned());
            }
            None => {}
        }
        if let Some(resource) = &f.resource {
            q.push(" and resource_id = ").push_bind(resource.clone());
        }
        if let Some(before) = f.before_seq {
            q.push(" and seq < ").push_bind(before);
        }
        q.push(" order by seq desc limit ").push_bind(i64::from(limit));
        self.tenant_fetch_all(workspace, q.build())
            .await?
            .iter()
            .map(event_row)
            .collect()
    }

    async fn chain_after(
        &self,
        workspace: WorkspaceId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        self.tenant_fetch_all(
workspace,
sqlx::query(&format!(
            "select {EVENT_COLUMNS} from audit_event where workspace_id = $1 and seq > $2 order by seq limit $3"
        ))
        .bind(workspace.as_uuid())
        .bind(after_seq)
        .bind(i64::from(limit))
        ,
)
.await?
        .iter()
        .map(event_row)
        .collect()
    }

    async fn chain_head(&self, workspace: WorkspaceId) -> Result<Option<(i64, Vec<u8>)>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query("select seq, hash from audit_head where workspace_id = $1").bind(workspace.as_uuid()),
        )
        .await?
        .map(|r| Ok((r.try_get("seq").db()?, r.try_get("hash").db()?)))
        .transpose()
    }

    async fn chained_workspaces(&self) -> Result<Vec<WorkspaceId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar("select secureflows_chained_workspaces()")
            .fetch_all(&self.pool)
            .await
            .db()?;
        Ok(ids.into_iter().map(WorkspaceId::from_uuid).collect())
    }
}

const INVITE_COLUMNS: &str = "invite_id, workspace_id, email_sealed, email_index, role, token_hash, invited_by, \
                              created_at, expires_at, revoked_at, accepted_at";

fn invite_row(r: &PgRow) -> Result<Invite> {
    Ok(Invite {
        id: InviteId::from_uuid(r.try_get("invite_id").db()?),
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        email_sealed: r.try_get("email_sealed").db()?,
        email_index: r.try_get("email_index").db()?,
        role: Role::parse(r.try_get::<&str, _>("role").db()?).ok_or(corrupt("role"))?,
        token_hash: r.try_get("token_hash").db()?,
        invited_by: UserId::from_uuid(r.try_get("invited_by").db()?),
        created_at: from_ts(r.try_get("created_at").db()?),
        expires_at: from_ts(r.try_get("expires_at").db()?),
        revoked_at: r
            .try_get::<Option<OffsetDateTime>, _>("revoked_at")
            .db()?
            .map(from_ts),
        accepted_at: r
            .try_get::<Option<OffsetDateTime>, _>("accepted_at")
            .db()?
            .map(from_ts),
    })
}

#[async_trait]
impl InviteStore for PgStore {
    async fn find_invite(&self, workspace: WorkspaceId, id: InviteId) -> Result<Option<Invite>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {INVITE_COLUMNS} from invite where workspace_id = $1 and invite_id = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(id.as_uuid()),
        )
        .await?
        .as_ref()
        .map(invite_row)
        .transpose()
    }

    async fn find_invite_by_token(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
    ) -> Result<Option<Invite>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {INVITE_COLUMNS} from invite where workspace_id = $1 and token_hash = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(token_hash),
        )
        .await?
        .as_ref()
        .map(invite_row)
        .transpose()
    }

    async fn list_invites(
        &self,
        workspace: WorkspaceId,
        after: Option<InviteId>,
        limit: u32,
    ) -> Result<Vec<Invite>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(&format!(
                "select {INVITE_COLUMNS} from invite
             where workspace_id = $1 and ($2::uuid is null or invite_id > $2) order by invite_id limit $3"
            ))
            .bind(workspace.as_uuid())
            .bind(after.map(|i| i.as_uuid()))
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(invite_row)
        .collect()
    }
}

const SUPPORT_COLUMNS: &str = "support_id, email_sealed, email_index, revision, created_at";

fn support_row(r: &PgRow) -> Result<SupportOperator> {
    Ok(SupportOperator {
        id: UserId::from_uuid(r.try_get("support_id").db()?),
        email_sealed: r.try_get("email_sealed").db()?,
        email_index: r.try_get("email_index").db()?,
        revision: r.try_get("revision").db()?,
        created_at: from_ts(r.try_get("created_at").db()?),
    })
}

#[async_trait]
impl SupportStore for PgStore {
    async fn find_support(&self, id: UserId) -> Result<Option<SupportOperator>> {
        sqlx::query(&format!(
            "select {SUPPORT_COLUMNS} from support_operator where support_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(support_row)
        .transpose()
    }

    async fn find_support_by_email(&self, email_index: &[u8]) -> Result<Option<SupportOperator>> {
        sqlx::query(&format!(
            "select {SUPPORT_COLUMNS} from support_operator where email_index = $1"
        ))
        .bind(email_index)
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(support_row)
        .transpose()
    }

    async fn list_support(&self) -> Result<Vec<SupportOperator>> {
        sqlx::query(&format!(
            "select {SUPPORT_COLUMNS} from support_operator order by support_id"
        ))
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(support_row)
        .collect()
    }

    async fn support_email_rule_pending(&self) -> Result<Vec<(UserId, Vec<u8>)>> {
        let rows: Vec<(uuid::Uuid, Vec<u8>)> =
            sqlx::query_as("select support_id, email_sealed from support_operator where email_rule = 1")
                .fetch_all(&self.pool)
                .await
                .db()?;
        Ok(rows
            .into_iter()
            .map(|(id, sealed)| (UserId::from_uuid(id), sealed))
            .collect())
    }

    async fn apply_support_email_rule(
        &self,
        id: UserId,
        email_sealed: &[u8],
        email_index: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "update support_operator set email_sealed = $2, email_index = $3, email_rule = 2 where support_id = $1",
        )
        .bind(id.as_uuid())
        .bind(email_sealed)
        .bind(email_index)
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }
}

/// Puts an end user on a tier; an event older than the stored one changes nothing (`stale-event`).
async fn set_user_tier(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    t: &TierAssignment,
) -> Result<Applied> {
    let ws = workspace.as_uuid();
    let known: bool = sqlx::query_scalar(
        "select exists (select 1 from application where workspace_id = $1 and application_id = $2)
            and exists (select 1 from user_account where workspace_id = $1 and user_id = $3)",
    )
    .bind(ws)
    .bind(t.application.as_uuid())
    .bind(t.user.as_uuid())
    .fetch_one(&mut *c)
    .await
    .db()?;
    if !known {
        return Err(Error::NotFound("user"));
    }
    let n = sqlx::query(
        "insert into end_user_tier (workspace_id, application_id, user_id, tier, source, event_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (application_id, user_id) do update set
             tier = excluded.tier, source = excluded.source, updated_at = excluded.updated_at,
             event_at = coalesce(excluded.event_at, end_user_tier.event_at)
         where excluded.event_at is null or end_user_tier.event_at is null
             or end_user_tier.event_at <= excluded.event_at",
    )
    .bind(ws)
    .bind(t.application.as_uuid())
    .bind(t.user.as_uuid())
    .bind(&t.tier)
    .bind(t.source.as_str())
    .bind(t.event_at.map(ts))
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?
    .rows_affected();
    if n == 0 {
        return Err(Error::Conflict("stale-event"));
    }
    Ok(Applied::publishing(Invalidation::User(workspace, t.user)))
}
