//! The data store: every trait but the key ring.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use secureflows_core::store::{
    AccessEntry, AccessFilter, AccessLogStore, ApplicationStore, Change, CoordStore, EmailConflict,
    EmailRulePending, HealthStore, NewUser, PutOutcome, SessionAdmission, SessionLimits, SessionStore,
    UsedTokenStore, UserStore, VaultEntry, VaultLocator, VaultStore, VaultWrite, WorkspaceStore,
};
use secureflows_core::{
    Application, ApplicationId, ApplicationKind, Error, Invalidation, LoginSession, NewIdentity, Plan,
    Result, Role, SessionId, Timestamp, UpstreamTrust, User, UserId, UserStatus, Workspace, WorkspaceId,
};

use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::login::{Branding, LoginPolicy, MfaRequirement, SignupMode};
use secureflows_core::tier::{Tier, TierAssignment, TierSource};

use crate::conn::{Database, SqliteOptions};
use crate::error::SqlResult;
use crate::manage::{apply_change, insert_user_row};
use crate::migrate::{self, MigrationMode};

/// SQLite data store: the data database and the API-access log beside it.
#[derive(Debug)]
pub struct SqliteStore {
    pub(crate) db: Database,
    pub(crate) access: Database,
}

impl SqliteStore {
    /// Opens the data database and the access-log database.
    pub fn open(
        path: &Path,
        access_path: &Path,
        mode: MigrationMode,
        options: SqliteOptions,
    ) -> Result<SqliteStore> {
        Ok(SqliteStore {
            db: Database::open(path, migrate::DATA, mode, options)?,
            access: Database::open(access_path, migrate::ACCESS, mode, options)?,
        })
    }

    /// The database (tests read it raw).
    pub fn database(&self) -> &Database {
        &self.db
    }
}

const NOW_MS: &str = "cast(unixepoch('subsec') * 1000 as integer)";

pub(crate) fn record_invalidation(conn: &Connection, invalidation: Invalidation) -> Result<()> {
    conn.prepare_cached(&format!(
        "insert into invalidation (kind, subject, created_at) values (?1, ?2, {NOW_MS})"
    ))
    .db()?
    .execute(params![invalidation.kind(), invalidation.subject()])
    .db()?;
    Ok(())
}

/// Runs a read that may take long (a scan) without holding up the async executor: on a multi-threaded
/// runtime the thread is handed over to blocking work for the duration.
pub(crate) fn long_read<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn invalidation_row(r: &Row<'_>) -> rusqlite::Result<(i64, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn collect_invalidations(
    rows: impl Iterator<Item = rusqlite::Result<(i64, String, String)>>,
) -> Result<Vec<(i64, Invalidation)>> {
    let mut out = Vec::new();
    for row in rows {
        let (seq, kind, subject) = row.db()?;
        if let Some(inv) = Invalidation::parse(&kind, &subject) {
            out.push((seq, inv));
        }
    }
    Ok(out)
}

pub(crate) fn bad_column(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.into(), rusqlite::types::Type::Text)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub(crate) fn workspace_row(r: &Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace {
        id: r.get::<_, uuid::Uuid>(0)?.into(),
        name: r.get(1)?,
        plan: Plan::parse(&r.get::<_, String>(2)?).ok_or_else(|| bad_column("plan"))?,
        created_at: Timestamp::from_millis(r.get(3)?),
        updated_at: Timestamp::from_millis(r.get(4)?),
        login_policy: LoginPolicy {
            password: PasswordPolicy::parse(&r.get::<_, String>(5)?)
                .ok_or_else(|| bad_column("password_policy"))?,
            mfa: MfaRequirement::parse(&r.get::<_, String>(6)?).ok_or_else(|| bad_column("mfa_required"))?,
            signup: SignupMode::parse(&r.get::<_, String>(9)?).ok_or_else(|| bad_column("signup_mode"))?,
        },
        branding: Branding {
            color: r.get(7)?,
            logo_url: r.get(8)?,
        },
    })
}

pub(crate) const APP_COLUMNS: &str = "application_id, workspace_id, name, trust_issuer, trust_audience, \
                                      allowed_origins, data_ttl_secs, token_ttl_secs, created_at, updated_at, \
                                      public, secret_hash, redirect_uris, post_logout_uris, allow_anonymous, \
                                      console, kind, trust_second_factor_amr, trust_second_factor_acr, \
                                      tiers, default_tier";

pub(crate) fn application_row(r: &Row<'_>) -> rusqlite::Result<Application> {
    let issuer: Option<String> = r.get(3)?;
    let audience: Option<String> = r.get(4)?;
    let origins: String = r.get(5)?;
    let second_factor_amr = json_list(&r.get::<_, String>(17)?, "trust_second_factor_amr")?;
    let second_factor_acr = json_list(&r.get::<_, String>(18)?, "trust_second_factor_acr")?;
    Ok(Application {
        id: r.get::<_, uuid::Uuid>(0)?.into(),
        workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
        name: r.get(2)?,
        trust: issuer.zip(audience).map(|(issuer, audience)| UpstreamTrust {
            issuer,
            audience,
            second_factor_amr,
            second_factor_acr,
        }),
        allowed_origins: serde_json_origins(&origins)?,
        data_ttl: Duration::from_secs(to_u64(r.get(6)?)),
        token_ttl: Duration::from_secs(to_u64(r.get(7)?)),
        created_at: Timestamp::from_millis(r.get(8)?),
        updated_at: Timestamp::from_millis(r.get(9)?),
        kind: ApplicationKind::parse(&r.get::<_, String>(16)?).ok_or_else(|| bad_column("kind"))?,
        secret_hash: r.get(11)?,
        redirect_uris: json_list(&r.get::<_, String>(12)?, "redirect_uris")?,
        post_logout_uris: json_list(&r.get::<_, String>(13)?, "post_logout_uris")?,
        allow_anonymous: r.get(14)?,
        console: r.get(15)?,
        tiers: serde_json::from_str(&r.get::<_, String>(19)?).map_err(|_| bad_column("tiers"))?,
        default_tier: r.get(20)?,
    })
}

fn serde_json_origins(text: &str) -> rusqlite::Result<Vec<String>> {
    json_list(text, "allowed_origins")
}

pub(crate) fn json_list(text: &str, column: &'static str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| bad_column(column))
}

pub(crate) fn tiers_json(tiers: &[Tier]) -> String {
    serde_json::to_string(tiers).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn origins_json(origins: &[String]) -> String {
    serde_json::Value::from(origins.to_vec()).to_string()
}

pub(crate) const USER_COLUMNS: &str = "user_id, workspace_id, role, revision, status, email_sealed, email_index, name_sealed, created_at, updated_at";

pub(crate) fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get::<_, uuid::Uuid>(0)?.into(),
        workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
        role: Role::parse(&r.get::<_, String>(2)?).ok_or_else(|| bad_column("role"))?,
        revision: r.get(3)?,
        status: UserStatus::parse(&r.get::<_, String>(4)?).ok_or_else(|| bad_column("status"))?,
        email_sealed: r.get(5)?,
        email_index: r.get(6)?,
        name_sealed: r.get(7)?,
        created_at: Timestamp::from_millis(r.get(8)?),
        updated_at: Timestamp::from_millis(r.get(9)?),
    })
}

pub(crate) fn session_row(r: &Row<'_>) -> rusqlite::Result<LoginSession> {
    Ok(LoginSession {
        id: r.get::<_, uuid::Uuid>(0)?.into(),
        workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
        application_id: r.get::<_, Option<uuid::Uuid>>(2)?.map(Into::into),
        user_id: r.get::<_, uuid::Uuid>(3)?.into(),
        created_at: Timestamp::from_millis(r.get(4)?),
        expires_at: Timestamp::from_millis(r.get(5)?),
        ended_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
        browser_session_id: r.get::<_, Option<uuid::Uuid>>(7)?.map(Into::into),
    })
}

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn insert_workspace(&self, w: &Workspace) -> Result<()> {
        let w = w.clone();
        self.db
            .write(move |c| {
                let at = w.created_at;
                apply_change(c, w.id, at, &Change::InsertWorkspace(w)).map(|_| ())
            })
            .await
    }

    async fn find_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select workspace_id, name, plan, created_at, updated_at, password_policy, mfa_required, brand_color, logo_url, signup_mode from workspace where workspace_id = ?1",
            )
            .db()?
            .query_row(params![id.as_uuid()], workspace_row)
            .optional()
            .db()
        })
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached("select workspace_id, name, plan, created_at, updated_at, password_policy, mfa_required, brand_color, logo_url, signup_mode from workspace order by created_at")
                .db()?;
            let rows = stmt.query_map([], workspace_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn update_plan(&self, id: WorkspaceId, plan: Plan, now: Timestamp) -> Result<()> {
        self.db
            .write(move |c| apply_change(c, id, now, &Change::SetPlan(plan)).map(|_| ()))
            .await
    }

    async fn delete_workspace(&self, id: WorkspaceId) -> Result<()> {
        self.db
            .write(move |c| {
                let ws = id.as_uuid();
                // Children first: the vault is the largest and has no cascade path that is cheaper.
                c.execute("delete from vault_value where workspace_id = ?1", params![ws])
                    .db()?;
                // The audit chain is not tied to the workspace row by a foreign key (the instance has a
                // chain too); it goes with the workspace, whose keys are already destroyed.
                c.execute("delete from audit_event where workspace_id = ?1", params![ws])
                    .db()?;
                c.execute("delete from audit_head where workspace_id = ?1", params![ws])
                    .db()?;
                let n = c
                    .execute("delete from workspace where workspace_id = ?1", params![ws])
                    .db()?;
                if n == 0 {
                    return Err(Error::NotFound("workspace"));
                }
                record_invalidation(c, Invalidation::Workspace(id))
            })
            .await?;
        // The access log lives in its own file; its rows of the workspace go after the workspace.
        self.access
            .write(move |c| {
                c.execute(
                    "delete from api_access where workspace_id = ?1",
                    params![id.as_uuid()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn any_workspace(&self) -> Result<bool> {
        self.db.read(|c| {
            c.query_row("select exists (select 1 from workspace)", [], |r| r.get(0))
                .db()
        })
    }

    async fn sole_workspace(&self) -> Result<Option<WorkspaceId>> {
        self.db.read(|c| {
            let ids = c
                .prepare_cached("select workspace_id from workspace limit 2")
                .db()?
                .query_map([], |r| r.get::<_, uuid::Uuid>(0))
                .db()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()?;
            Ok(match ids.as_slice() {
                [only] => Some(WorkspaceId::from_uuid(*only)),
                _ => None,
            })
        })
    }

    async fn insert_setup_token(
        &self,
        token_hash: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        let hash = token_hash.to_vec();
        self.db
            .write(move |c| {
                c.execute(
                    "insert into setup_token (token_hash, created_at, expires_at) values (?1, ?2, ?3)",
                    params![hash, now.millis(), expires_at.millis()],
                )
                .db()
                .map(|_| ())
            })
            .await
    }

    async fn setup_token_usable(&self, token_hash: &[u8], now: Timestamp) -> Result<bool> {
        let hash = token_hash.to_vec();
        self.db.read(move |c| {
            c.query_row(
                "select exists (select 1 from setup_token where token_hash = ?1 and expires_at > ?2)",
                params![hash, now.millis()],
                |r| r.get(0),
            )
            .db()
        })
    }
}

#[async_trait]
impl ApplicationStore for SqliteStore {
    async fn insert_application(&self, app: &Application) -> Result<()> {
        let app = app.clone();
        self.db
            .write(move |c| {
                let (ws, at) = (app.workspace_id, app.created_at);
                apply_change(c, ws, at, &Change::InsertApplication(app)).map(|_| ())
            })
            .await
    }

    async fn find_application(&self, id: ApplicationId) -> Result<Option<Application>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {APP_COLUMNS} from application where application_id = ?1"
            ))
            .db()?
            .query_row(params![id.as_uuid()], application_row)
            .optional()
            .db()
        })
    }

    async fn find_applications_trusting(&self, issuer: &str, audience: &str) -> Result<Vec<Application>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select {APP_COLUMNS} from application where trust_issuer = ?1 and trust_audience = ?2
                     order by application_id limit 16"
                ))
                .db()?;
            let rows = stmt.query_map(params![issuer, audience], application_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn list_applications(&self, workspace: WorkspaceId) -> Result<Vec<Application>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select {APP_COLUMNS} from application where workspace_id = ?1 order by created_at"
                ))
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid()], application_row)
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn list_allowed_origins(&self) -> Result<Vec<String>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached("select allowed_origins from application where allowed_origins <> '[]'")
                .db()?;
            let rows = stmt
                .query_map([], |r| serde_json_origins(&r.get::<_, String>(0)?))
                .db()?;
            let lists = rows.collect::<rusqlite::Result<Vec<_>>>().db()?;
            Ok(lists.into_iter().flatten().collect())
        })
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn find_user_by_identity(
        &self,
        workspace: WorkspaceId,
        identity_index: &[u8],
    ) -> Result<Option<User>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {} from user_account u join user_identity i
                   on i.workspace_id = u.workspace_id and i.user_id = u.user_id
                 where i.workspace_id = ?1 and i.identity_index = ?2",
                USER_COLUMNS
                    .split(", ")
                    .map(|col| format!("u.{col}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .db()?
            .query_row(params![workspace.as_uuid(), identity_index], user_row)
            .optional()
            .db()
        })
    }

    async fn list_identities(
        &self,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<Vec<(NewIdentity, Timestamp)>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select identity_index, identity_sealed, created_at from user_identity
                     where workspace_id = ?1 and user_id = ?2 order by created_at, identity_index",
                )
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid(), user.as_uuid()], |r| {
                    Ok((
                        NewIdentity {
                            index: r.get(0)?,
                            sealed: r.get(1)?,
                        },
                        Timestamp::from_millis(r.get(2)?),
                    ))
                })
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn insert_user(&self, new: &NewUser) -> Result<()> {
        let new = new.clone();
        self.db
            .write(move |c| {
                let u = &new.user;
                let ws = u.workspace_id.as_uuid();
                let id = u.id.as_uuid();
                insert_user_row(c, u)?;
                c.execute(
                    "insert into user_identity (workspace_id, identity_index, user_id, identity_sealed, created_at)
                     values (?1, ?2, ?3, ?4, ?5)",
                    params![ws, new.identity.index, id, new.identity.sealed, u.created_at.millis()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn find_user(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<User>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {USER_COLUMNS} from user_account where workspace_id = ?1 and user_id = ?2"
            ))
            .db()?
            .query_row(params![workspace.as_uuid(), user.as_uuid()], user_row)
            .optional()
            .db()
        })
    }

    async fn user_tiers(&self, workspace: WorkspaceId, user: UserId) -> Result<Vec<TierAssignment>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select application_id, tier, source, event_at, updated_at from end_user_tier
                 where workspace_id = ?1 and user_id = ?2 order by application_id",
            )
            .db()?
            .query_map(params![workspace.as_uuid(), user.as_uuid()], |r| {
                Ok(TierAssignment {
                    application: r.get::<_, uuid::Uuid>(0)?.into(),
                    user,
                    tier: r.get(1)?,
                    source: TierSource::parse(&r.get::<_, String>(2)?).ok_or_else(|| bad_column("source"))?,
                    event_at: r.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
                    updated_at: Timestamp::from_millis(r.get(4)?),
                })
            })
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
    }

    async fn raise_revision(&self, workspace: WorkspaceId, user: UserId, now: Timestamp) -> Result<i64> {
        self.db
            .write(move |c| {
                apply_change(c, workspace, now, &Change::RaiseRevision(user))?;
                c.query_row(
                    "select revision from user_account where workspace_id = ?1 and user_id = ?2",
                    params![workspace.as_uuid(), user.as_uuid()],
                    |r| r.get(0),
                )
                .db()
            })
            .await
    }

    async fn list_users(
        &self,
        workspace: WorkspaceId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>> {
        self.db.read(|c| {
            // Two statements rather than `? is null or user_id > ?`, which would hide the key from
            // the planner: a page far in costs what the first one does.
            let rows = match after {
                None => c
                    .prepare_cached(&format!(
                        "select {USER_COLUMNS} from user_account where workspace_id = ?1 order by user_id limit ?2"
                    ))
                    .db()?
                    .query_map(params![workspace.as_uuid(), i64::from(limit)], user_row)
                    .db()?
                    .collect::<rusqlite::Result<Vec<_>>>(),
                Some(after) => c
                    .prepare_cached(&format!(
                        "select {USER_COLUMNS} from user_account
                         where workspace_id = ?1 and user_id > ?2 order by user_id limit ?3"
                    ))
                    .db()?
                    .query_map(
                        params![workspace.as_uuid(), after.as_uuid(), i64::from(limit)],
                        user_row,
                    )
                    .db()?
                    .collect::<rusqlite::Result<Vec<_>>>(),
            };
            rows.db()
        })
    }

    async fn list_admins(&self, workspace: WorkspaceId, limit: u32) -> Result<Vec<User>> {
        self.db.read(|c| {
            // Two ranges of the (workspace, role, user) index, then the few rows in id order.
            let mut stmt = c
                .prepare_cached(&format!(
                    "select * from (
                       select {USER_COLUMNS} from user_account where workspace_id = ?1 and role = 'owner'
                       union all
                       select {USER_COLUMNS} from user_account where workspace_id = ?1 and role = 'admin'
                     ) order by user_id limit ?2"
                ))
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid(), i64::from(limit)], user_row)
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn find_user_by_email(&self, workspace: WorkspaceId, email_index: &[u8]) -> Result<Option<User>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {USER_COLUMNS} from user_account where workspace_id = ?1 and email_index = ?2"
            ))
            .db()?
            .query_row(params![workspace.as_uuid(), email_index], user_row)
            .optional()
            .db()
        })
    }

    async fn email_rule_workspaces(&self) -> Result<Vec<WorkspaceId>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached("select distinct workspace_id from user_account where email_rule = 1")
                .db()?;
            let rows = stmt
                .query_map([], |r| Ok(WorkspaceId::from_uuid(r.get(0)?)))
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn email_rule_pending(&self, workspace: WorkspaceId) -> Result<Vec<EmailRulePending>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select u.user_id, u.email_sealed, u.email_verified,
                            exists (select 1 from password_credential p
                                    where p.workspace_id = u.workspace_id and p.user_id = u.user_id),
                            exists (select 1 from user_identity i
                                    where i.workspace_id = u.workspace_id and i.user_id = u.user_id)
                     from user_account u where u.workspace_id = ?1 and u.email_rule = 1
                     order by u.created_at, u.user_id",
                )
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid()], |r| {
                    Ok(EmailRulePending {
                        user: UserId::from_uuid(r.get(0)?),
                        email_sealed: r.get(1)?,
                        email_verified: r.get(2)?,
                        has_password: r.get(3)?,
                        has_identity: r.get(4)?,
                    })
                })
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn apply_email_rule(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        email_sealed: Option<&[u8]>,
        email_index: Option<&[u8]>,
        conflict: Option<EmailConflict>,
        now: Timestamp,
    ) -> Result<bool> {
        let (sealed, index) = (email_sealed.map(<[u8]>::to_vec), email_index.map(<[u8]>::to_vec));
        self.db
            .write(move |c| {
                let (ws, id) = (workspace.as_uuid(), user.as_uuid());
                let taken = match &index {
                    Some(index) => c
                        .query_row(
                            "select exists (select 1 from user_account
                                            where workspace_id = ?1 and email_index = ?2 and user_id <> ?3)",
                            params![ws, index, id],
                            |r| r.get::<_, bool>(0),
                        )
                        .db()?,
                    None => false,
                };
                if taken {
                    return Ok(false);
                }
                c.execute(
                    "update user_account set email_sealed = coalesce(?3, email_sealed), email_index = ?4,
                            email_rule = 2
                     where workspace_id = ?1 and user_id = ?2",
                    params![ws, id, sealed, index],
                )
                .db()?;
                if let Some(conflict) = conflict {
                    c.execute(
                        "insert into email_conflict (workspace_id, user_id, reason, created_at)
                         values (?1, ?2, ?3, ?4)
                         on conflict (workspace_id, user_id) do update set reason = excluded.reason",
                        params![ws, id, conflict.as_str(), now.millis()],
                    )
                    .db()?;
                }
                Ok(true)
            })
            .await
    }

    async fn email_conflicts(&self, workspace: WorkspaceId) -> Result<Vec<(UserId, EmailConflict)>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select user_id, reason from email_conflict where workspace_id = ?1 order by created_at, user_id",
                )
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid()], |r| {
                    Ok((
                        UserId::from_uuid(r.get(0)?),
                        EmailConflict::parse(&r.get::<_, String>(1)?).ok_or_else(|| bad_column("reason"))?,
                    ))
                })
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session_within_limits(
        &self,
        s: &LoginSession,
        limits: SessionLimits,
        now: Timestamp,
    ) -> Result<SessionAdmission> {
        let s = s.clone();
        // The writer runs one job at a time inside one transaction: count and insert are atomic.
        self.db
            .write(move |c| {
                let ws = s.workspace_id.as_uuid();
                let user = s.user_id.as_uuid();
                let (ws_count, ws_earliest): (i64, Option<i64>) = c
                    .prepare_cached(
                        "select count(*), min(expires_at) from login_session
                         where workspace_id = ?1 and ended_at is null and expires_at > ?2",
                    )
                    .db()?
                    .query_row(params![ws, now.millis()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .db()?;
                if ws_count >= i64::from(limits.per_workspace) {
                    let earliest = Timestamp::from_millis(ws_earliest.unwrap_or(now.millis()));
                    return Ok(SessionAdmission::Full {
                        earliest_expiry: earliest,
                    });
                }
                let (user_count, user_earliest): (i64, Option<i64>) = c
                    .prepare_cached(
                        "select count(*), min(expires_at) from login_session
                         where workspace_id = ?1 and user_id = ?2 and ended_at is null and expires_at > ?3",
                    )
                    .db()?
                    .query_row(params![ws, user, now.millis()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .db()?;
                if user_count >= i64::from(limits.per_user) {
                    let earliest = Timestamp::from_millis(user_earliest.unwrap_or(now.millis()));
                    return Ok(SessionAdmission::Full {
                        earliest_expiry: earliest,
                    });
                }
                c.prepare_cached(
                    "insert into login_session
                       (workspace_id, session_id, application_id, user_id, created_at, expires_at, ended_at,
                        browser_session_id)
                     values (?1, ?2, ?3, ?4, ?5, ?6, null, ?7)",
                )
                .db()?
                .execute(params![
                    ws,
                    s.id.as_uuid(),
                    s.application_id.map(|a| a.as_uuid()),
                    user,
                    s.created_at.millis(),
                    s.expires_at.millis(),
                    s.browser_session_id.map(|b| b.as_uuid()),
                ])
                .db()?;
                Ok(SessionAdmission::Admitted)
            })
            .await
    }

    async fn count_sessions(&self, workspace: WorkspaceId, now: Timestamp) -> Result<u64> {
        self.db.read(|c| {
            let n: i64 = c
                .prepare_cached(
                    "select count(*) from login_session
                     where workspace_id = ?1 and ended_at is null and expires_at > ?2",
                )
                .db()?
                .query_row(params![workspace.as_uuid(), now.millis()], |r| r.get(0))
                .db()?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    async fn find_session(&self, workspace: WorkspaceId, id: SessionId) -> Result<Option<LoginSession>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select session_id, workspace_id, application_id, user_id, created_at, expires_at, ended_at,
                   browser_session_id
                 from login_session where workspace_id = ?1 and session_id = ?2",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), id.as_uuid()], session_row)
            .optional()
            .db()
        })
    }

    async fn end_session(&self, workspace: WorkspaceId, id: SessionId, now: Timestamp) -> Result<bool> {
        self.db
            .write(move |c| crate::login::end_login_session(c, workspace, id, now))
            .await
    }

    async fn purge_sessions(&self, before: Timestamp) -> Result<u64> {
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "delete from login_session where rowid in (
                           select rowid from login_session
                           where coalesce(ended_at, expires_at) < ?1 limit 10000)",
                        params![before.millis()],
                    )
                    .db()?;
                Ok(n as u64)
            })
            .await
    }
}

#[async_trait]
impl VaultStore for SqliteStore {
    async fn put_value(&self, w: &VaultWrite) -> Result<PutOutcome> {
        let w = w.clone();
        self.db
            .write(move |c| {
                let l = &w.locator;
                let (ws, app, user) = (l.workspace_id.as_uuid(), l.application_id.as_uuid(), l.user_id.as_uuid());
                let existing: Option<(i64, i64)> = c
                    .prepare_cached(
                        "select created_at, expires_at from vault_value
                         where workspace_id = ?1 and application_id = ?2 and user_id = ?3 and key_index = ?4",
                    )
                    .db()?
                    .query_row(params![ws, app, user, &l.key_index[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .db()?;
                let live = existing.filter(|(_, expires)| *expires > w.now.millis());
                if live.is_none() {
                    let count: i64 = c
                        .prepare_cached(
                            "select count(*) from vault_value
                             where workspace_id = ?1 and application_id = ?2 and user_id = ?3 and expires_at > ?4",
                        )
                        .db()?
                        .query_row(params![ws, app, user, w.now.millis()], |r| r.get(0))
                        .db()?;
                    if count >= i64::from(w.max_keys) {
                        return Ok(PutOutcome::QuotaExceeded);
                    }
                }
                let created_at = live.map_or(w.now.millis(), |(created, _)| created);
                c.prepare_cached(
                    "insert into vault_value (workspace_id, application_id, user_id, key_index, name_sealed,
                                              value_sealed, size, created_at, updated_at, expires_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     on conflict (workspace_id, application_id, user_id, key_index) do update set
                       name_sealed = excluded.name_sealed, value_sealed = excluded.value_sealed,
                       size = excluded.size, created_at = excluded.created_at,
                       updated_at = excluded.updated_at, expires_at = excluded.expires_at",
                )
                .db()?
                .execute(params![
                    ws,
                    app,
                    user,
                    &l.key_index[..],
                    w.name_sealed,
                    w.value_sealed,
                    to_i64(w.size),
                    created_at,
                    w.now.millis(),
                    w.expires_at.millis()
                ])
                .db()?;
                Ok(match live {
                    Some((created, _)) => PutOutcome::Replaced { created_at: Timestamp::from_millis(created) },
                    None => PutOutcome::Created,
                })
            })
            .await
    }

    async fn get_value(&self, l: &VaultLocator, now: Timestamp) -> Result<Option<VaultEntry>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select name_sealed, value_sealed, size, created_at, updated_at, expires_at from vault_value
                 where workspace_id = ?1 and application_id = ?2 and user_id = ?3 and key_index = ?4
                   and expires_at > ?5",
            )
            .db()?
            .query_row(
                params![
                    l.workspace_id.as_uuid(),
                    l.application_id.as_uuid(),
                    l.user_id.as_uuid(),
                    &l.key_index[..],
                    now.millis()
                ],
                |r| {
                    Ok(VaultEntry {
                        key_index: l.key_index.to_vec(),
                        name_sealed: r.get(0)?,
                        value_sealed: r.get(1)?,
                        size: to_u64(r.get(2)?),
                        created_at: Timestamp::from_millis(r.get(3)?),
                        updated_at: Timestamp::from_millis(r.get(4)?),
                        expires_at: Timestamp::from_millis(r.get(5)?),
                    })
                },
            )
            .optional()
            .db()
        })
    }

    async fn list_values(
        &self,
        workspace: WorkspaceId,
        application: ApplicationId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<VaultEntry>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select key_index, name_sealed, size, created_at, updated_at, expires_at from vault_value
                     where workspace_id = ?1 and application_id = ?2 and user_id = ?3 and expires_at > ?4",
                )
                .db()?;
            let rows = stmt
                .query_map(
                    params![
                        workspace.as_uuid(),
                        application.as_uuid(),
                        user.as_uuid(),
                        now.millis()
                    ],
                    |r| {
                        Ok(VaultEntry {
                            key_index: r.get(0)?,
                            name_sealed: r.get(1)?,
                            value_sealed: Vec::new(),
                            size: to_u64(r.get(2)?),
                            created_at: Timestamp::from_millis(r.get(3)?),
                            updated_at: Timestamp::from_millis(r.get(4)?),
                            expires_at: Timestamp::from_millis(r.get(5)?),
                        })
                    },
                )
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn delete_value(&self, l: &VaultLocator, now: Timestamp) -> Result<bool> {
        let l = l.clone();
        self.db
            .write(move |c| {
                let live: bool = c
                    .prepare_cached(
                        "delete from vault_value
                         where workspace_id = ?1 and application_id = ?2 and user_id = ?3 and key_index = ?4
                         returning expires_at > ?5",
                    )
                    .db()?
                    .query_row(
                        params![
                            l.workspace_id.as_uuid(),
                            l.application_id.as_uuid(),
                            l.user_id.as_uuid(),
                            &l.key_index[..],
                            now.millis()
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                    .db()?
                    .unwrap_or(false);
                Ok(live)
            })
            .await
    }

    async fn purge_expired_values(&self, now: Timestamp, limit: u32) -> Result<u64> {
        // Find candidates on a reader (a scan, off the writer), then delete them on the writer, checking
        // the expiry again so that a value written meanwhile survives.
        let rowids: Vec<i64> = long_read(|| {
            self.db.read(|c| {
                let mut stmt = c
                    .prepare_cached("select rowid from vault_value where expires_at <= ?1 limit ?2")
                    .db()?;
                let rows = stmt
                    .query_map(params![now.millis(), i64::from(limit)], |r| r.get(0))
                    .db()?;
                rows.collect::<rusqlite::Result<Vec<_>>>().db()
            })
        })?;
        if rowids.is_empty() {
            return Ok(0);
        }
        self.db
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached("delete from vault_value where rowid = ?1 and expires_at <= ?2")
                    .db()?;
                let mut n = 0;
                for rowid in rowids {
                    n += stmt.execute(params![rowid, now.millis()]).db()? as u64;
                }
                Ok(n)
            })
            .await
    }

    async fn list_user_values(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<(ApplicationId, VaultEntry)>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select application_id, key_index, name_sealed, size, created_at, updated_at, expires_at
                     from vault_value where workspace_id = ?1 and user_id = ?2 and expires_at > ?3
                     order by application_id",
                )
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid(), user.as_uuid(), now.millis()], |r| {
                    Ok((
                        ApplicationId::from(r.get::<_, uuid::Uuid>(0)?),
                        VaultEntry {
                            key_index: r.get(1)?,
                            name_sealed: r.get(2)?,
                            value_sealed: Vec::new(),
                            size: to_u64(r.get(3)?),
                            created_at: Timestamp::from_millis(r.get(4)?),
                            updated_at: Timestamp::from_millis(r.get(5)?),
                            expires_at: Timestamp::from_millis(r.get(6)?),
                        },
                    ))
                })
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }
}

#[async_trait]
impl AccessLogStore for SqliteStore {
    async fn append_access(&self, entries: &[AccessEntry]) -> Result<()> {
        let entries = entries.to_vec();
        self.access
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "insert into api_access (workspace_id, application_id, user_id, method, route, key_sealed,
                           status, bytes_in, bytes_out, client_ip, user_agent, request_id, duration_us, created_at)
                         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    )
                    .db()?;
                for e in &entries {
                    stmt.execute(params![
                        e.workspace_id.map(|w| w.as_uuid()),
                        e.application_id.map(|a| a.as_uuid()),
                        e.user_id.map(|u| u.as_uuid()),
                        e.method,
                        e.route,
                        e.key_sealed,
                        i64::from(e.status),
                        to_i64(e.bytes_in),
                        to_i64(e.bytes_out),
                        e.client_ip,
                        e.user_agent,
                        e.request_id,
                        to_i64(e.duration_us),
                        e.at.millis()
                    ])
                    .db()?;
                }
                Ok(())
            })
            .await
    }

    async fn list_access(
        &self,
        workspace: WorkspaceId,
        f: &AccessFilter,
        limit: u32,
    ) -> Result<Vec<(i64, AccessEntry)>> {
        // Only the conditions asked for (see `list_events`): newest first along the workspace's
        // position index, or another index when a filter fits one.
        let mut sql = String::from(
            "select api_access_id, workspace_id, application_id, user_id, method, route, key_sealed, status,
                    bytes_in, bytes_out, client_ip, user_agent, request_id, duration_us, created_at
             from api_access where workspace_id = ?",
        );
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
        if let Some(user) = f.user {
            and("user_id = ?", Box::new(user.as_uuid()));
        }
        if let Some(route) = &f.route {
            and("route = ?", Box::new(route.clone()));
        }
        if let Some(status) = f.status {
            and("status = ?", Box::new(i64::from(status)));
        }
        if let Some(application) = f.application {
            and("application_id = ?", Box::new(application.as_uuid()));
        }
        if let Some(before) = f.before {
            and("api_access_id < ?", Box::new(before));
        }
        sql.push_str(" order by api_access_id desc limit ?");
        args.push(Box::new(i64::from(limit)));
        self.access.read(|c| {
            let mut stmt = c.prepare_cached(&sql).db()?;
            let rows = stmt
                .query_map(
                    rusqlite::params_from_iter(args.iter().map(|a| a.as_ref() as &dyn rusqlite::ToSql)),
                    |r| {
                        Ok((
                            r.get(0)?,
                            AccessEntry {
                                workspace_id: r.get::<_, Option<uuid::Uuid>>(1)?.map(Into::into),
                                application_id: r.get::<_, Option<uuid::Uuid>>(2)?.map(Into::into),
                                user_id: r.get::<_, Option<uuid::Uuid>>(3)?.map(Into::into),
                                method: r.get(4)?,
                                route: r.get(5)?,
                                key_sealed: r.get(6)?,
                                status: u16::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                                bytes_in: to_u64(r.get(8)?),
                                bytes_out: to_u64(r.get(9)?),
                                client_ip: r.get(10)?,
                                user_agent: r.get(11)?,
                                request_id: r.get(12)?,
                                duration_us: to_u64(r.get(13)?),
                                at: Timestamp::from_millis(r.get(14)?),
                            },
                        ))
                    },
                )
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }
}

#[async_trait]
impl CoordStore for SqliteStore {
    async fn publish(&self, invalidation: Invalidation) -> Result<()> {
        self.db.write(move |c| record_invalidation(c, invalidation)).await
    }

    async fn invalidations_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, Invalidation)>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select seq, kind, subject from invalidation where seq > ?1 order by seq limit ?2",
                )
                .db()?;
            let rows = stmt
                .query_map(params![after, i64::from(limit)], invalidation_row)
                .db()?;
            collect_invalidations(rows)
        })
    }

    async fn recent_invalidations(&self, lookback: Duration) -> Result<Vec<(i64, Invalidation)>> {
        let lookback_ms = i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select seq, kind, subject from invalidation where created_at >= {NOW_MS} - ?1 order by seq"
                ))
                .db()?;
            let rows = stmt.query_map(params![lookback_ms], invalidation_row).db()?;
            collect_invalidations(rows)
        })
    }

    async fn prune_invalidations(&self, age: Duration) -> Result<u64> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        &format!("delete from invalidation where created_at < {NOW_MS} - ?1"),
                        params![age_ms],
                    )
                    .db()?;
                Ok(n as u64)
            })
            .await
    }

    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

#[async_trait]
impl UsedTokenStore for SqliteStore {
    async fn mark_used(&self, token_hash: &[u8; 32], expires_at: Timestamp) -> Result<bool> {
        let hash = token_hash.to_vec();
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "insert into used_token (token_hash, expires_at) values (?1, ?2) on conflict do nothing",
                        params![hash, expires_at.millis()],
                    )
                    .db()?;
                Ok(n == 1)
            })
            .await
    }

    async fn purge_used(&self, now: Timestamp) -> Result<u64> {
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "delete from used_token where expires_at < ?1",
                        params![now.millis()],
                    )
                    .db()?;
                Ok(n as u64)
            })
            .await
    }
}

#[async_trait]
impl HealthStore for SqliteStore {
    async fn check_ready(&self) -> Result<()> {
        let current = self.db.read(|c| migrate::is_current(c, migrate::DATA))?
            && self.access.read(|c| migrate::is_current(c, migrate::ACCESS))?;
        if !current {
            return Err(Error::Unavailable("migrations are not current"));
        }
        // A write round trip proves the writer thread and the disk.
        self.db
            .write(|c| c.query_row("select 1", [], |r| r.get::<_, i64>(0)).db())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip() {
        let list = vec!["https://a.example".to_owned(), "http://localhost:3000".to_owned()];
        assert_eq!(serde_json_origins(&origins_json(&list)).unwrap(), list);
        assert_eq!(serde_json_origins("[]").unwrap(), Vec::<String>::new());
        assert!(serde_json_origins("nonsense").is_err());
    }
}
