//! Management changes with their audit events (one transaction on the single writer), invitations and
//! SUPPORT operators.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use secureflows_core::audit::{self, ActorKind, EventFilter, PendingEvent, StoredEvent};
use secureflows_core::store::{AuditStore, Change, ChangeSet, InviteStore, SupportStore};
use secureflows_core::{
    Error, Invalidation, Invite, InviteId, Result, Role, SupportOperator, Timestamp, User, UserId,
    UserStatus, WorkspaceId,
};
use uuid::Uuid;

use secureflows_core::tier::TierAssignment;

use crate::data::{
    SqliteStore, USER_COLUMNS, bad_column, origins_json, record_invalidation, secs, tiers_json, user_row,
};
use crate::error::SqlResult;

fn must_change(n: usize, what: &'static str) -> Result<()> {
    if n == 0 {
        Err(Error::NotFound(what))
    } else {
        Ok(())
    }
}

fn find_user_role(c: &Connection, ws: Uuid, user: UserId) -> Result<(Role, UserStatus)> {
    let user = c
        .prepare_cached(&format!(
            "select {USER_COLUMNS} from user_account where workspace_id = ?1 and user_id = ?2"
        ))
        .db()?
        .query_row(params![ws, user.as_uuid()], user_row)
        .optional()
        .db()?
        .ok_or(Error::NotFound("user"))?;
    Ok((user.role, user.status))
}

/// Raises the revision (with other column changes in `set`) and ends the user's login sessions.
fn bump_user(c: &Connection, ws: Uuid, user: UserId, set: &str, value: &str, now: Timestamp) -> Result<()> {
    let n = c
        .execute(
            &format!(
                "update user_account set {set} revision = revision + 1, updated_at = ?4
                 where workspace_id = ?1 and user_id = ?2 and ?3 is not null"
            ),
            params![ws, user.as_uuid(), value, now.millis()],
        )
        .db()?;
    must_change(n, "user")?;
    c.execute(
        "update login_session set ended_at = ?3
         where workspace_id = ?1 and user_id = ?2 and ended_at is null and expires_at > ?3",
        params![ws, user.as_uuid(), now.millis()],
    )
    .db()?;
    Ok(())
}

/// Inserts a user's row (members from a change set, and end users at their first sign-in).
pub(crate) fn insert_user_row(c: &Connection, u: &User) -> Result<()> {
    c.prepare_cached(&format!(
        "insert into user_account ({USER_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))
    .db()?
    .execute(params![
        u.id.as_uuid(),
        u.workspace_id.as_uuid(),
        u.role.as_str(),
        u.revision,
        u.status.as_str(),
        u.email_sealed,
        u.email_index,
        u.name_sealed,
        u.created_at.millis(),
        u.updated_at.millis()
    ])
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
pub(crate) fn apply_change(
    c: &Connection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<bool> {
    let applied = match change {
        Change::InsertWorkspace(..)
        | Change::RenameWorkspace(..)
        | Change::SetPlan(..)
        | Change::SetLoginPolicy(..)
        | Change::SetBranding(..) => apply_workspace_change(c, workspace, now, change)?,
        Change::InsertApplication(..)
        | Change::UpdateApplication(..)
        | Change::DeleteApplication(..)
        | Change::SetApplicationSecret(..) => apply_application_change(c, workspace, now, change)?,
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
        | Change::LinkIdentity(..) => apply_user_change(c, workspace, now, change)?,
        Change::EndSession(..) | Change::InsertSession(..) => {
            apply_session_change(c, workspace, now, change)?
        }
        Change::InsertSupport(..) | Change::DeleteSupport(..) => {
            apply_support_change(c, workspace, now, change)?
        }
        Change::InsertInvite(..) | Change::AcceptInvite(..) | Change::RevokeInvite(..) => {
            apply_invite_change(c, workspace, now, change)?
        }
        Change::InsertIdentityProvider(..) | Change::DeleteIdentityProvider(..) => {
            apply_provider_change(c, workspace, now, change)?
        }
        Change::SetUserTier(assignment) => set_user_tier(c, workspace, now, assignment)?,
        Change::RecordWebhookEvent {
            provider,
            scope,
            event_id,
        } => {
            crate::billing::record_webhook_event(c, now, provider, *scope, event_id)?;
            Applied::default()
        }
        Change::LinkBilling(link) => {
            crate::billing::link_billing(c, workspace, link)?;
            Applied::default()
        }
        Change::AdvanceBilling {
            provider,
            scope,
            subscription_id,
            event_at,
        } => {
            crate::billing::advance_billing(c, workspace, provider, *scope, subscription_id, *event_at)?;
            Applied::default()
        }
        Change::SetBillingSecret { application, sealed } => {
            crate::billing::set_billing_secret(c, workspace, now, *application, sealed)?;
            Applied::default()
        }
        Change::ClaimSetup(hash) => claim_setup(c, now, hash)?,
    };
    if let Some(invalidation) = applied.invalidation {
        record_invalidation(c, invalidation)?;
    }
    Ok(applied.owner_lost)
}

/// Spends a setup token, and every other one, in the transaction that creates the first workspace
/// (SQLite serialises writers, so no other first run interleaves).
fn claim_setup(c: &Connection, now: Timestamp, hash: &[u8]) -> Result<Applied> {
    let spent = c
        .execute(
            "delete from setup_token where token_hash = ?1 and expires_at > ?2",
            params![hash, now.millis()],
        )
        .db()?;
    if spent == 0 {
        return Err(Error::Conflict("setup-token"));
    }
    let workspaces: i64 = c
        .query_row("select count(*) from workspace", [], |r| r.get(0))
        .db()?;
    if workspaces > 1 {
        return Err(Error::Conflict("setup-done"));
    }
    c.execute("delete from setup_token", []).db()?;
    Ok(Applied {
        invalidation: None,
        owner_lost: false,
    })
}

/// Applies a change of the workspace row.
fn apply_workspace_change(
    c: &Connection,
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
            c.execute(
                "insert into workspace (workspace_id, name, plan, created_at, updated_at, password_policy, mfa_required,
                   signup_mode, brand_color, logo_url)
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    ws,
                    w.name,
                    w.plan.as_str(),
                    w.created_at.millis(),
                    w.updated_at.millis(),
                    w.login_policy.password.as_str(),
                    w.login_policy.mfa.as_str(),
                    w.login_policy.signup.as_str(),
                    w.branding.color,
                    w.branding.logo_url,
                ],
            )
            .db()?;
            Invalidation::Workspace(workspace)
        }
        Change::RenameWorkspace(name) => {
            let n = c
                .execute(
                    "update workspace set name = ?2, updated_at = ?3 where workspace_id = ?1",
                    params![ws, name, now.millis()],
                )
                .db()?;
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        Change::SetPlan(plan) => {
            let n = c
                .execute(
                    "update workspace set plan = ?2, updated_at = ?3 where workspace_id = ?1",
                    params![ws, plan.as_str(), now.millis()],
                )
                .db()?;
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        Change::SetLoginPolicy(policy) => {
            let n = c
                .execute(
                    "update workspace set password_policy = ?2, mfa_required = ?3, updated_at = ?4, signup_mode = ?5
                     where workspace_id = ?1",
                    params![ws, policy.password.as_str(), policy.mfa.as_str(), now.millis(), policy.signup.as_str()],
                )
                .db()?;
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        Change::SetBranding(branding) => {
            let n = c
                .execute(
                    "update workspace set brand_color = ?2, logo_url = ?3, updated_at = ?4 where workspace_id = ?1",
                    params![ws, branding.color, branding.logo_url, now.millis()],
                )
                .db()?;
            must_change(n, "workspace")?;
            Invalidation::Workspace(workspace)
        }
        _ => return Err(Error::internal("not a workspace change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Applies a change of applications.
fn apply_application_change(
    c: &Connection,
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
            c.execute(
                &format!(
                    "insert into application ({}) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                    crate::data::APP_COLUMNS
                ),
                params![
                    app.id.as_uuid(),
                    ws,
                    app.name,
                    app.trust.as_ref().map(|t| t.issuer.clone()),
                    app.trust.as_ref().map(|t| t.audience.clone()),
                    origins_json(&app.allowed_origins),
                    secs(app.data_ttl),
                    secs(app.token_ttl),
                    app.created_at.millis(),
                    app.updated_at.millis(),
                    app.is_public(),
                    app.secret_hash,
                    origins_json(&app.redirect_uris),
                    origins_json(&app.post_logout_uris),
                    app.allow_anonymous,
                    app.console,
                    app.kind.as_str(),
                    origins_json(app.trust.as_ref().map_or(&[][..], |t| &t.second_factor_amr)),
                    origins_json(app.trust.as_ref().map_or(&[][..], |t| &t.second_factor_acr)),
                    tiers_json(&app.tiers),
                    app.default_tier,
                ],
            )
            .db()?;
            Invalidation::Application(app.id)
        }
        Change::UpdateApplication(app) => {
            let n = c
                .execute(
                    "update application set name = ?3, trust_issuer = ?4, trust_audience = ?5, allowed_origins = ?6,
                       data_ttl_secs = ?7, token_ttl_secs = ?8, updated_at = ?9, redirect_uris = ?10,
                       post_logout_uris = ?11, allow_anonymous = ?12, trust_second_factor_amr = ?13,
                       trust_second_factor_acr = ?14, tiers = ?15, default_tier = ?16
                     where workspace_id = ?1 and application_id = ?2",
                    params![
                        ws,
                        app.id.as_uuid(),
                        app.name,
                        app.trust.as_ref().map(|t| t.issuer.clone()),
                        app.trust.as_ref().map(|t| t.audience.clone()),
                        origins_json(&app.allowed_origins),
                        secs(app.data_ttl),
                        secs(app.token_ttl),
                        now.millis(),
                        origins_json(&app.redirect_uris),
                        origins_json(&app.post_logout_uris),
                        app.allow_anonymous,
                        origins_json(app.trust.as_ref().map_or(&[][..], |t| &t.second_factor_amr)),
                        origins_json(app.trust.as_ref().map_or(&[][..], |t| &t.second_factor_acr)),
                        tiers_json(&app.tiers),
                        app.default_tier,
                    ],
                )
                .db()?;
            must_change(n, "application")?;
            Invalidation::Application(app.id)
        }
        Change::DeleteApplication(id) => {
            c.execute(
                "delete from vault_value where workspace_id = ?1 and application_id = ?2",
                params![ws, id.as_uuid()],
            )
            .db()?;
            // Its users' Stripe subscriptions can never be matched again.
            c.execute(
                "delete from billing_link where workspace_id = ?1 and scope_id = ?2",
                params![ws, id.as_uuid()],
            )
            .db()?;
            let n = c
                .execute(
                    "delete from application where workspace_id = ?1 and application_id = ?2",
                    params![ws, id.as_uuid()],
                )
                .db()?;
            must_change(n, "application")?;
            Invalidation::Application(*id)
        }
        Change::SetApplicationSecret(id, hash) => {
            let n = c
                .execute(
                    "update application set secret_hash = ?3, updated_at = ?4
                     where workspace_id = ?1 and application_id = ?2 and public = 0",
                    params![ws, id.as_uuid(), hash, now.millis()],
                )
                .db()?;
            must_change(n, "application")?;
            Invalidation::Application(*id)
        }
        _ => return Err(Error::internal("not an application change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Applies a change of members and end users: accounts, roles, status, passwords, identities.
fn apply_user_change(
    c: &Connection,
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
                let taken: bool = c
                    .query_row(
                        "select exists (select 1 from user_account where workspace_id = ?1 and email_index = ?2)",
                        params![ws, index],
                        |r| r.get(0),
                    )
                    .db()?;
                if taken {
                    return Err(Error::Conflict("member-exists"));
                }
            }
            insert_user_row(c, u)?;
            Invalidation::User(workspace, u.id)
        }
        Change::UpgradeUser {
            user,
            email_sealed,
            email_index,
        } => {
            let taken: bool = c
                .query_row(
                    "select exists (select 1 from user_account where workspace_id = ?1 and email_index = ?2)",
                    params![ws, email_index],
                    |r| r.get(0),
                )
                .db()?;
            if taken {
                return Err(Error::Conflict("member-exists"));
            }
            let n = c
                .execute(
                    "update user_account set role = 'user', email_sealed = ?3, email_index = ?4,
                       revision = revision + 1, updated_at = ?5
                     where workspace_id = ?1 and user_id = ?2 and role = 'anon'",
                    params![ws, user.as_uuid(), email_sealed, email_index, now.millis()],
                )
                .db()?;
            must_change(n, "user")?;
            Invalidation::User(workspace, *user)
        }
        Change::ExpectRole(user, role) => {
            let (current, _) = find_user_role(c, ws, *user)?;
            if current != *role {
                return Err(Error::Conflict("role-changed"));
            }
            return Ok(Applied::default());
        }
        Change::SetRole(user, role) => {
            let (old, _) = find_user_role(c, ws, *user)?;
            owner_lost = old == Role::Owner && *role != Role::Owner;
            bump_user(c, ws, *user, "role = ?3,", role.as_str(), now)?;
            Invalidation::User(workspace, *user)
        }
        Change::SetStatus(user, status) => {
            let (role, _) = find_user_role(c, ws, *user)?;
            owner_lost = role == Role::Owner && *status != UserStatus::Active;
            bump_user(c, ws, *user, "status = ?3,", status.as_str(), now)?;
            if *status == UserStatus::Active {
                // Unlocking also ends a sign-in lockout.
                c.execute(
                    "update user_account set failed_sign_ins = 0, sign_in_locked_until = null
                     where workspace_id = ?1 and user_id = ?2",
                    params![ws, user.as_uuid()],
                )
                .db()?;
            }
            Invalidation::User(workspace, *user)
        }
        Change::EndLinks(user) => {
            c.execute(
                "update login_link set used_at = ?3
                 where workspace_id = ?1 and user_id = ?2 and used_at is null and purpose in ('magic', 'reset', 'mfa')",
                params![ws, user.as_uuid(), now.millis()],
            )
            .db()?;
            return Ok(Applied::default());
        }
        Change::EndSignInLockout(user) => {
            let n = c
                .execute(
                    "update user_account set failed_sign_ins = 0, sign_in_locked_until = null
                     where workspace_id = ?1 and user_id = ?2",
                    params![ws, user.as_uuid()],
                )
                .db()?;
            if n == 0 {
                return Err(Error::NotFound("user"));
            }
            return Ok(Applied::default());
        }
        Change::RaiseRevision(user) => {
            bump_user(c, ws, *user, "", "", now)?;
            Invalidation::User(workspace, *user)
        }
        Change::DeleteUser(user) => {
            let (role, _) = find_user_role(c, ws, *user)?;
            owner_lost = role == Role::Owner;
            c.execute(
                "delete from vault_value where workspace_id = ?1 and user_id = ?2",
                params![ws, user.as_uuid()],
            )
            .db()?;
            let n = c
                .execute(
                    "delete from user_account where workspace_id = ?1 and user_id = ?2",
                    params![ws, user.as_uuid()],
                )
                .db()?;
            must_change(n, "user")?;
            Invalidation::User(workspace, *user)
        }
        Change::SetPassword(user, phc) => {
            let n = crate::login::write_password(c, workspace, *user, phc, now)?;
            must_change(n, "user")?;
            return Ok(Applied::default());
        }
        Change::LinkIdentity(user, identity) => {
            c.execute(
                "insert into user_identity (workspace_id, identity_index, user_id, identity_sealed, created_at)
                 select workspace_id, ?3, user_id, ?4, ?5 from user_account where workspace_id = ?1 and user_id = ?2",
                params![ws, user.as_uuid(), identity.index, identity.sealed, now.millis()],
            )
            .db()
            .and_then(|n| must_change(n, "user"))?;
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
fn apply_session_change(
    c: &Connection,
    workspace: WorkspaceId,
    now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let ws = workspace.as_uuid();

    let invalidation = match change {
        Change::EndSession(id) => {
            // Records its own invalidation.
            crate::login::end_login_session(c, workspace, *id, now)?;
            return Ok(Applied::default());
        }
        Change::InsertSession(s) => {
            if s.workspace_id != workspace {
                return Err(Error::NotFound("workspace"));
            }
            c.execute(
                "insert into login_session
                   (workspace_id, session_id, application_id, user_id, created_at, expires_at, ended_at)
                 values (?1, ?2, ?3, ?4, ?5, ?6, null)",
                params![
                    ws,
                    s.id.as_uuid(),
                    s.application_id.map(|a| a.as_uuid()),
                    s.user_id.as_uuid(),
                    s.created_at.millis(),
                    s.expires_at.millis()
                ],
            )
            .db()?;
            Invalidation::Session(workspace, s.id)
        }
        _ => return Err(Error::internal("not a session change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Applies a change of SUPPORT operators.
fn apply_support_change(
    c: &Connection,
    _workspace: WorkspaceId,
    _now: Timestamp,
    change: &Change,
) -> Result<Applied> {
    let invalidation = match change {
        Change::InsertSupport(op) => {
            c.execute(
                &format!("insert into support_operator ({SUPPORT_COLUMNS}) values (?1, ?2, ?3, ?4, ?5)"),
                params![
                    op.id.as_uuid(),
                    op.email_sealed,
                    op.email_index,
                    op.revision,
                    op.created_at.millis()
                ],
            )
            .db()?;
            return Ok(Applied::default());
        }
        Change::DeleteSupport(id) => {
            let n = c
                .execute(
                    "delete from support_operator where support_id = ?1",
                    params![id.as_uuid()],
                )
                .db()?;
            must_change(n, "support operator")?;
            Invalidation::Support(*id)
        }
        _ => return Err(Error::internal("not a support change")),
    };
    Ok(Applied::publishing(invalidation))
}

/// Puts an end user on a tier; an event older than the stored one changes nothing (`stale-event`).
fn set_user_tier(
    c: &Connection,
    workspace: WorkspaceId,
    now: Timestamp,
    t: &TierAssignment,
) -> Result<Applied> {
    let ws = workspace.as_uuid();
    let known: bool = c
        .query_row(
            "select exists (select 1 from application where workspace_id = ?1 and application_id = ?2)
                and exists (select 1 from user_account where workspace_id = ?1 and user_id = ?3)",
            params![ws, t.application.as_uuid(), t.user.as_uuid()],
            |r| r.get(0),
        )
        .db()?;
    if !known {
        return Err(Error::NotFound("user"));
    }
    let n = c
        .execute(
            "insert into end_user_tier (workspace_id, application_id, user_id, tier, source, event_at, updated_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             on conflict (application_id, user_id) do update set
                 tier = excluded.tier, source = excluded.source, updated_at = excluded.updated_at,
                 event_at = coalesce(excluded.event_at, end_user_tier.event_at)
             where excluded.event_at is null or end_user_tier.event_at is null
                 or end_user_tier.event_at <= excluded.event_at",
            params![
                ws,
                t.application.as_uuid(),
                t.user.as_uuid(),
                t.tier,
                t.source.as_str(),
                t.event_at.map(Timestamp::millis),
                now.millis()
            ],
        )
        .db()?;
    if n == 0 {
        return Err(Error::Conflict("stale-event"));
    }
    Ok(Applied::publishing(Invalidation::User(workspace, t.user)))
}

/// Applies a change of invitations.
fn apply_invite_change(
    c: &Connection,
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
            c.execute(
                "insert into invite (workspace_id, invite_id, email_sealed, email_index, role, token_hash, invited_by,
                   created_at, expires_at, revoked_at, accepted_at)
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, null, null)",
                params![
                    ws,
                    i.id.as_uuid(),
                    i.email_sealed,
                    i.email_index,
                    i.role.as_str(),
                    i.token_hash,
                    i.invited_by.as_uuid(),
                    i.created_at.millis(),
                    i.expires_at.millis()
                ],
            )
            .db()?;
            Ok(Applied::default())
        }
        Change::AcceptInvite(id) => {
            let n = c
                .execute(
                    "update invite set accepted_at = ?3
                     where workspace_id = ?1 and invite_id = ?2 and revoked_at is null and accepted_at is null
                       and expires_at > ?3",
                    params![ws, id.as_uuid(), now.millis()],
                )
                .db()?;
            must_change(n, "invite")?;
            Ok(Applied::default())
        }
        Change::RevokeInvite(id) => {
            let n = c
                .execute(
                    "update invite set revoked_at = ?3
                     where workspace_id = ?1 and invite_id = ?2 and revoked_at is null and accepted_at is null",
                    params![ws, id.as_uuid(), now.millis()],
                )
                .db()?;
            must_change(n, "invite")?;
            Ok(Applied::default())
        }
        _ => Err(Error::internal("not an invite change")),
    }
}

/// Applies a change of upstream identity providers.
fn apply_provider_change(
    c: &Connection,
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
            c.execute(
                "insert into identity_provider
                   (provider_id, workspace_id, kind, name, issuer, client_id, client_secret_sealed, created_at)
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    p.id.as_uuid(),
                    ws,
                    p.kind.as_str(),
                    p.name,
                    p.issuer,
                    p.client_id,
                    p.client_secret_sealed,
                    p.created_at.millis(),
                ],
            )
            .db()?;
            Ok(Applied::default())
        }
        Change::DeleteIdentityProvider(id) => {
            let n = c
                .execute(
                    "delete from identity_provider where workspace_id = ?1 and provider_id = ?2",
                    params![ws, id.as_uuid()],
                )
                .db()?;
            must_change(n, "identity provider")?;
            Ok(Applied::default())
        }
        _ => Err(Error::internal("not a provider change")),
    }
}

fn append_events(c: &Connection, set: &ChangeSet) -> Result<()> {
    if set.events.is_empty() {
        return Ok(());
    }
    let ws = set.workspace.as_uuid();
    let head: Option<(i64, Vec<u8>)> = c
        .prepare_cached("select seq, hash from audit_head where workspace_id = ?1")
        .db()?
        .query_row(params![ws], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .db()?;
    let (mut seq, mut prev) = head.unwrap_or((0, audit::GENESIS.to_vec()));
    let mut insert = c
        .prepare_cached(
            "insert into audit_event (workspace_id, seq, event_id, created_at, actor_kind, actor_id, action,
               resource_type, resource_id, details_sealed, prev_hash, hash)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .db()?;
    for e in &set.events {
        seq += 1;
        let hash = audit::link(&set.chain, set.workspace, seq, &prev, e);
        insert
            .execute(params![
                ws,
                seq,
                e.id,
                e.at.millis(),
                e.actor_kind.as_str(),
                e.actor_id.map(|u| u.as_uuid()),
                e.action,
                e.resource_type,
                e.resource_id,
                e.details_sealed,
                prev,
                hash.as_slice()
            ])
            .db()?;
        prev = hash.to_vec();
    }
    c.prepare_cached(
        "insert into audit_head (workspace_id, seq, hash) values (?1, ?2, ?3)
         on conflict (workspace_id) do update set seq = excluded.seq, hash = excluded.hash",
    )
    .db()?
    .execute(params![ws, seq, prev])
    .db()?;
    Ok(())
}

const EVENT_COLUMNS: &str = "workspace_id, seq, event_id, created_at, actor_kind, actor_id, action, resource_type, \
                             resource_id, details_sealed, prev_hash, hash";

fn event_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        workspace_id: r.get::<_, Uuid>(0)?.into(),
        seq: r.get(1)?,
        event: PendingEvent {
            id: r.get(2)?,
            at: Timestamp::from_millis(r.get(3)?),
            actor_kind: ActorKind::parse(&r.get::<_, String>(4)?).ok_or_else(|| bad_column("actor_kind"))?,
            actor_id: r.get::<_, Option<Uuid>>(5)?.map(Into::into),
            action: r.get(6)?,
            resource_type: r.get(7)?,
            resource_id: r.get(8)?,
            details_sealed: r.get(9)?,
        },
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn apply(&self, set: ChangeSet) -> Result<()> {
        // The single writer runs one job at a time: the changes, the last-owner check and the chain append
        // see no concurrent change of the same workspace.
        self.db
            .write(move |c| {
                let mut owner_lost = false;
                for change in &set.changes {
                    owner_lost |= apply_change(c, set.workspace, set.now, change)?;
                }
                if owner_lost {
                    let owners: bool = c
                        .query_row(
                            "select exists (select 1 from user_account
                               where workspace_id = ?1 and role = 'owner' and status = 'active')",
                            params![set.workspace.as_uuid()],
                            |r| r.get(0),
                        )
                        .db()?;
                    if !owners {
                        return Err(Error::Conflict("last-owner"));
                    }
                }
                append_events(c, &set)
            })
            .await
    }

    async fn list_events(
        &self,
        workspace: WorkspaceId,
        f: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        // Only the conditions asked for, so that SQLite walks the index that fits (an `? is null
        // or …` condition hides its column from the planner): the primary key newest first, or the
        // resource, actor or action index.
        let mut sql = format!("select {EVENT_COLUMNS} from audit_event where workspace_id = ?");
        let mut args: Vec<Box<dyn rusqlite::ToSql + Send>> = vec![Box::new(workspace.as_uuid())];
        let mut and = |condition: &str, value: Box<dyn rusqlite::ToSql + Send>| {
            sql.push_str(" and ");
            sql.push_str(condition);
            args.push(value);
        };
        if let Some(since) = f.since {
            and("created_at >= ?", Box::new(since.millis()));
        }
        if let Some(until) = f.until {
            and("created_at < ?", Box::new(until.millis()));
        }
        if let Some(actor) = f.actor {
            and("actor_id = ?", Box::new(actor.as_uuid()));
        }
        match f.action.as_deref() {
            Some(prefix) if prefix.ends_with('.') => and(
                &format!("substr(action, 1, {}) = ?", prefix.chars().count()),
                Box::new(prefix.to_owned()),
            ),
            Some(exact) => and("action = ?", Box::new(exact.to_owned())),
            None => {}
        }
        if let Some(resource) = &f.resource {
            and("resource_id = ?", Box::new(resource.clone()));
        }
        if let Some(before) = f.before_seq {
            and("seq < ?", Box::new(before));
        }
        sql.push_str(" order by seq desc limit ?");
        args.push(Box::new(i64::from(limit)));
        self.db.read(|c| {
            let mut stmt = c.prepare_cached(&sql).db()?;
            let rows = stmt
                .query_map(
                    rusqlite::params_from_iter(args.iter().map(|a| a.as_ref() as &dyn rusqlite::ToSql)),
                    event_row,
                )
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn chain_after(
        &self,
        workspace: WorkspaceId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select {EVENT_COLUMNS} from audit_event where workspace_id = ?1 and seq > ?2
                     order by seq limit ?3"
                ))
                .db()?;
            let rows = stmt
                .query_map(
                    params![workspace.as_uuid(), after_seq, i64::from(limit)],
                    event_row,
                )
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn chain_head(&self, workspace: WorkspaceId) -> Result<Option<(i64, Vec<u8>)>> {
        self.db.read(|c| {
            c.prepare_cached("select seq, hash from audit_head where workspace_id = ?1")
                .db()?
                .query_row(params![workspace.as_uuid()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .db()
        })
    }

    async fn chained_workspaces(&self) -> Result<Vec<WorkspaceId>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select workspace_id from audit_head
                     union select distinct workspace_id from audit_event order by 1",
                )
                .db()?;
            let rows = stmt
                .query_map([], |r| Ok(WorkspaceId::from(r.get::<_, Uuid>(0)?)))
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }
}

const INVITE_COLUMNS: &str = "invite_id, workspace_id, email_sealed, email_index, role, token_hash, invited_by, \
                              created_at, expires_at, revoked_at, accepted_at";

fn invite_row(r: &Row<'_>) -> rusqlite::Result<Invite> {
    Ok(Invite {
        id: r.get::<_, Uuid>(0)?.into(),
        workspace_id: r.get::<_, Uuid>(1)?.into(),
        email_sealed: r.get(2)?,
        email_index: r.get(3)?,
        role: Role::parse(&r.get::<_, String>(4)?).ok_or_else(|| bad_column("role"))?,
        token_hash: r.get(5)?,
        invited_by: r.get::<_, Uuid>(6)?.into(),
        created_at: Timestamp::from_millis(r.get(7)?),
        expires_at: Timestamp::from_millis(r.get(8)?),
        revoked_at: r.get::<_, Option<i64>>(9)?.map(Timestamp::from_millis),
        accepted_at: r.get::<_, Option<i64>>(10)?.map(Timestamp::from_millis),
    })
}

#[async_trait]
impl InviteStore for SqliteStore {
    async fn find_invite(&self, workspace: WorkspaceId, id: InviteId) -> Result<Option<Invite>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {INVITE_COLUMNS} from invite where workspace_id = ?1 and invite_id = ?2"
            ))
            .db()?
            .query_row(params![workspace.as_uuid(), id.as_uuid()], invite_row)
            .optional()
            .db()
        })
    }

    async fn find_invite_by_token(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
    ) -> Result<Option<Invite>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {INVITE_COLUMNS} from invite where workspace_id = ?1 and token_hash = ?2"
            ))
            .db()?
            .query_row(params![workspace.as_uuid(), token_hash], invite_row)
            .optional()
            .db()
        })
    }

    async fn list_invites(
        &self,
        workspace: WorkspaceId,
        after: Option<InviteId>,
        limit: u32,
    ) -> Result<Vec<Invite>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select {INVITE_COLUMNS} from invite
                     where workspace_id = ?1 and (?2 is null or invite_id > ?2) order by invite_id limit ?3"
                ))
                .db()?;
            let rows = stmt
                .query_map(
                    params![workspace.as_uuid(), after.map(|i| i.as_uuid()), i64::from(limit)],
                    invite_row,
                )
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }
}

fn support_row(r: &Row<'_>) -> rusqlite::Result<SupportOperator> {
    Ok(SupportOperator {
        id: r.get::<_, Uuid>(0)?.into(),
        email_sealed: r.get(1)?,
        email_index: r.get(2)?,
        revision: r.get(3)?,
        created_at: Timestamp::from_millis(r.get(4)?),
    })
}

const SUPPORT_COLUMNS: &str = "support_id, email_sealed, email_index, revision, created_at";

#[async_trait]
impl SupportStore for SqliteStore {
    async fn find_support(&self, id: UserId) -> Result<Option<SupportOperator>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {SUPPORT_COLUMNS} from support_operator where support_id = ?1"
            ))
            .db()?
            .query_row(params![id.as_uuid()], support_row)
            .optional()
            .db()
        })
    }

    async fn find_support_by_email(&self, email_index: &[u8]) -> Result<Option<SupportOperator>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {SUPPORT_COLUMNS} from support_operator where email_index = ?1"
            ))
            .db()?
            .query_row(params![email_index], support_row)
            .optional()
            .db()
        })
    }

    async fn list_support(&self) -> Result<Vec<SupportOperator>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select {SUPPORT_COLUMNS} from support_operator order by support_id"
                ))
                .db()?;
            let rows = stmt.query_map([], support_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn support_email_rule_pending(&self) -> Result<Vec<(UserId, Vec<u8>)>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached("select support_id, email_sealed from support_operator where email_rule = 1")
                .db()?;
            let rows = stmt
                .query_map([], |r| Ok((UserId::from_uuid(r.get(0)?), r.get(1)?)))
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn apply_support_email_rule(
        &self,
        id: UserId,
        email_sealed: &[u8],
        email_index: &[u8],
    ) -> Result<()> {
        let (sealed, index) = (email_sealed.to_vec(), email_index.to_vec());
        self.db
            .write(move |c| {
                c.execute(
                    "update support_operator set email_sealed = ?2, email_index = ?3, email_rule = 2
                     where support_id = ?1",
                    params![id.as_uuid(), sealed, index],
                )
                .db()?;
                Ok(())
            })
            .await
    }
}
