//! The data store: every trait but the key ring.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secureflows_core::store::{
    AccessEntry, AccessFilter, AccessLogStore, ApplicationStore, Change, CoordStore, EmailConflict,
    EmailRulePending, HealthStore, NewUser, PutOutcome, SessionAdmission, SessionLimits, SessionStore,
    UsedTokenStore, UserStore, VaultEntry, VaultLocator, VaultStore, VaultWrite, WorkspaceStore,
};
use secureflows_core::{
    Application, ApplicationId, ApplicationKind, BrowserSessionId, Error, Invalidation, LoginSession,
    NewIdentity, Plan, Result, Role, SessionId, Timestamp, UpstreamTrust, User, UserId, UserStatus,
    Workspace, WorkspaceId,
};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::login::{Branding, LoginPolicy, MfaRequirement, SignupMode};
use secureflows_core::tier::{Tier, TierAssignment, TierSource};

use crate::error::SqlResult;
use crate::manage::{apply_change, insert_user_row};
use crate::migrate::{self, MigrationMode};
use crate::{PoolSettings, listen};

/// PostgreSQL data store.
#[derive(Debug)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    wakeups: Arc<Notify>,
}

impl PgStore {
    /// Connects, migrates or checks, and starts listening for invalidation notices.
    pub async fn connect(url: &str, mode: MigrationMode, settings: PoolSettings) -> Result<PgStore> {
        // Migrations run as the login role (the tables' owner); the server's queries do not.
        let owner = crate::pool(
            url,
            PoolSettings {
                max_connections: 1,
                ..settings
            },
        )
        .await?;
        let migrated = migrate::run(&owner, &migrate::DATA, mode).await;
        owner.close().await;
        migrated?;
        let pool = crate::app_pool(url, settings).await?;
        crate::check_app_role(&pool).await?;
        let wakeups = Arc::new(Notify::new());
        listen::spawn(pool.clone(), wakeups.clone());
        Ok(PgStore { pool, wakeups })
    }

    /// The pool (as the row-level-security-bound application role).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs one read in its own tenant transaction (see [`PgStore::tenant`]).
    pub(crate) async fn tenant_fetch_optional(
        &self,
        workspace: WorkspaceId,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>> {
        let mut tx = self.tenant(workspace).await?;
        let row = query.fetch_optional(&mut *tx).await.db()?;
        tx.commit().await.db()?;
        Ok(row)
    }

    /// Runs one statement in the workspace's tenant transaction; returns the rows it changed.
    pub(crate) async fn tenant_execute(
        &self,
        workspace: WorkspaceId,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<u64> {
        let mut tx = self.tenant(workspace).await?;
        let n = query.execute(&mut *tx).await.db()?.rows_affected();
        tx.commit().await.db()?;
        Ok(n)
    }

    /// Runs one read in its own tenant transaction (see [`PgStore::tenant`]).
    pub(crate) async fn tenant_fetch_all(
        &self,
        workspace: WorkspaceId,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<Vec<PgRow>> {
        let mut tx = self.tenant(workspace).await?;
        let rows = query.fetch_all(&mut *tx).await.db()?;
        tx.commit().await.db()?;
        Ok(rows)
    }

    /// A transaction in which row-level security shows and accepts only `workspace`'s rows. BEGIN and
    /// the setting go in one round trip; the setting ends with the transaction, so a pooled connection
    /// never carries a workspace into its next use.
    pub(crate) async fn tenant(&self, workspace: WorkspaceId) -> Result<Transaction<'static, Postgres>> {
        // The id is a UUID formatted by us (hex and dashes only): nothing to quote. The role is set for
        // the transaction too, so even a connection that left the role runs this one under the policies.
        self.pool
            .begin_with(format!(
                "begin; set local role secureflows_app; select set_config('secureflows.workspace', '{}', true)",
                workspace.as_uuid().hyphenated()
            ))
            .await
            .db()
    }
}

pub(crate) fn ts(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn from_ts(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_millis(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

pub(crate) fn corrupt(what: &'static str) -> Error {
    Error::Integrity(what)
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

pub(crate) async fn record_invalidation(conn: &mut PgConnection, invalidation: Invalidation) -> Result<()> {
    sqlx::query(
        "with inserted as (insert into invalidation (kind, subject) values ($1, $2) returning seq)
         select pg_notify($3, '') from inserted",
    )
    .bind(invalidation.kind())
    .bind(invalidation.subject())
    .bind(listen::CHANNEL)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

fn parse_invalidations(rows: Vec<(i64, String, String)>) -> Vec<(i64, Invalidation)> {
    rows.into_iter()
        .filter_map(|(seq, kind, subject)| Invalidation::parse(&kind, &subject).map(|i| (seq, i)))
        .collect()
}

pub(crate) fn workspace_row(r: &PgRow) -> Result<Workspace> {
    Ok(Workspace {
        id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        name: r.try_get("name").db()?,
        plan: Plan::parse(r.try_get::<&str, _>("plan").db()?).ok_or(corrupt("plan"))?,
        created_at: from_ts(r.try_get("created_at").db()?),
        updated_at: from_ts(r.try_get("updated_at").db()?),
        login_policy: LoginPolicy {
            password: PasswordPolicy::parse(r.try_get::<&str, _>("password_policy").db()?)
                .ok_or(corrupt("password_policy"))?,
            mfa: MfaRequirement::parse(r.try_get::<&str, _>("mfa_required").db()?)
                .ok_or(corrupt("mfa_required"))?,
            signup: SignupMode::parse(r.try_get::<&str, _>("signup_mode").db()?)
                .ok_or(corrupt("signup_mode"))?,
        },
        branding: Branding {
            color: r.try_get("brand_color").db()?,
            logo_url: r.try_get("logo_url").db()?,
        },
    })
}

pub(crate) const APP_COLUMNS: &str = "application_id, workspace_id, name, trust_issuer, trust_audience, \
                                      allowed_origins, data_ttl_secs, token_ttl_secs, created_at, updated_at, \
                                      public, secret_hash, redirect_uris, post_logout_uris, allow_anonymous, \
                                      console, kind, trust_second_factor_amr, trust_second_factor_acr, \
                                      tiers, default_tier";

pub(crate) fn application_row(r: &PgRow) -> Result<Application> {
    let issuer: Option<String> = r.try_get("trust_issuer").db()?;
    let audience: Option<String> = r.try_get("trust_audience").db()?;
    Ok(Application {
        id: ApplicationId::from_uuid(r.try_get("application_id").db()?),
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        name: r.try_get("name").db()?,
        trust: match issuer.zip(audience) {
            Some((issuer, audience)) => Some(UpstreamTrust {
                issuer,
                audience,
                second_factor_amr: r.try_get("trust_second_factor_amr").db()?,
                second_factor_acr: r.try_get("trust_second_factor_acr").db()?,
            }),
            None => None,
        },
        allowed_origins: r.try_get("allowed_origins").db()?,
        data_ttl: Duration::from_secs(to_u64(r.try_get("data_ttl_secs").db()?)),
        token_ttl: Duration::from_secs(to_u64(r.try_get("token_ttl_secs").db()?)),
        created_at: from_ts(r.try_get("created_at").db()?),
        updated_at: from_ts(r.try_get("updated_at").db()?),
        kind: ApplicationKind::parse(&r.try_get::<String, _>("kind").db()?)
            .ok_or_else(|| corrupt("application.kind"))?,
        secret_hash: r.try_get("secret_hash").db()?,
        redirect_uris: r.try_get("redirect_uris").db()?,
        post_logout_uris: r.try_get("post_logout_uris").db()?,
        allow_anonymous: r.try_get("allow_anonymous").db()?,
        console: r.try_get("console").db()?,
        tiers: serde_json::from_str(r.try_get::<&str, _>("tiers").db()?)
            .map_err(|_| corrupt("application.tiers"))?,
        default_tier: r.try_get("default_tier").db()?,
    })
}

pub(crate) fn tiers_json(tiers: &[Tier]) -> String {
    serde_json::to_string(tiers).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) const USER_COLUMNS: &str = "u.user_id, u.workspace_id, u.role, u.revision, u.status, u.email_sealed, \
                            u.email_index, u.name_sealed, u.created_at, u.updated_at";

pub(crate) fn user_row(r: &PgRow) -> Result<User> {
    Ok(User {
        id: UserId::from_uuid(r.try_get("user_id").db()?),
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        role: Role::parse(r.try_get::<&str, _>("role").db()?).ok_or(corrupt("role"))?,
        revision: r.try_get("revision").db()?,
        status: UserStatus::parse(r.try_get::<&str, _>("status").db()?).ok_or(corrupt("status"))?,
        email_sealed: r.try_get("email_sealed").db()?,
        email_index: r.try_get("email_index").db()?,
        name_sealed: r.try_get("name_sealed").db()?,
        created_at: from_ts(r.try_get("created_at").db()?),
        updated_at: from_ts(r.try_get("updated_at").db()?),
    })
}

pub(crate) fn session_row(r: &PgRow) -> Result<LoginSession> {
    Ok(LoginSession {
        id: SessionId::from_uuid(r.try_get("session_id").db()?),
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        application_id: r
            .try_get::<Option<Uuid>, _>("application_id")
            .db()?
            .map(ApplicationId::from_uuid),
        user_id: UserId::from_uuid(r.try_get("user_id").db()?),
        browser_session_id: r
            .try_get::<Option<Uuid>, _>("browser_session_id")
            .db()?
            .map(BrowserSessionId::from_uuid),
        created_at: from_ts(r.try_get("created_at").db()?),
        expires_at: from_ts(r.try_get("expires_at").db()?),
        ended_at: r
            .try_get::<Option<OffsetDateTime>, _>("ended_at")
            .db()?
            .map(from_ts),
    })
}

#[async_trait]
impl WorkspaceStore for PgStore {
    async fn insert_workspace(&self, w: &Workspace) -> Result<()> {
        let mut tx = self.tenant(w.id).await?;
        apply_change(&mut tx, w.id, w.created_at, &Change::InsertWorkspace(w.clone())).await?;
        tx.commit().await.db()
    }

    async fn find_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        self.tenant_fetch_optional(
id,
sqlx::query(
            "select workspace_id, name, plan, created_at, updated_at, password_policy, mfa_required, brand_color, logo_url, signup_mode from workspace where workspace_id = $1",
        )
        .bind(id.as_uuid())
        ,
)
.await?
        .as_ref()
        .map(workspace_row)
        .transpose()
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        sqlx::query(
            "select workspace_id, name, plan, created_at, updated_at, password_policy, mfa_required, brand_color, logo_url, signup_mode from secureflows_list_workspaces()",
        )
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(workspace_row)
        .collect()
    }

    async fn update_plan(&self, id: WorkspaceId, plan: Plan, now: Timestamp) -> Result<()> {
        let mut tx = self.tenant(id).await?;
        apply_change(&mut tx, id, now, &Change::SetPlan(plan)).await?;
        tx.commit().await.db()
    }

    async fn delete_workspace(&self, id: WorkspaceId) -> Result<()> {
        let mut tx = self.tenant(id).await?;
        sqlx::query("delete from vault_value where workspace_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query("delete from api_access where workspace_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .db()?;
        let n = sqlx::query("delete from workspace where workspace_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .db()?
            .rows_affected();
        if n == 0 {
            return Err(Error::NotFound("workspace"));
        }
        // The audit chain is not tied to the workspace row by a foreign key (the instance has a chain
        // too); it goes with the workspace, whose keys are already destroyed. The server may delete
        // audit events only this way, after the workspace row is gone.
        sqlx::query("select secureflows_forget_audit($1)")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .db()?;
        record_invalidation(&mut tx, Invalidation::Workspace(id)).await?;
        tx.commit().await.db()
    }

    async fn any_workspace(&self) -> Result<bool> {
        sqlx::query_scalar("select secureflows_any_workspace()")
            .fetch_one(&self.pool)
            .await
            .db()
    }

    async fn sole_workspace(&self) -> Result<Option<WorkspaceId>> {
        let id: Option<uuid::Uuid> = sqlx::query_scalar("select secureflows_sole_workspace()")
            .fetch_one(&self.pool)
            .await
            .db()?;
        Ok(id.map(WorkspaceId::from_uuid))
    }

    async fn insert_setup_token(
        &self,
        token_hash: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        sqlx::query("insert into setup_token (token_hash, created_at, expires_at) values ($1, $2, $3)")
            .bind(token_hash)
            .bind(ts(now))
            .bind(ts(expires_at))
            .execute(&self.pool)
            .await
            .db()
            .map(|_| ())
    }

    async fn setup_token_usable(&self, token_hash: &[u8], now: Timestamp) -> Result<bool> {
        sqlx::query_scalar(
            "select exists (select 1 from setup_token where token_hash = $1 and expires_at > $2)",
        )
        .bind(token_hash)
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await
        .db()
    }
}

#[async_trait]
impl ApplicationStore for PgStore {
    async fn insert_application(&self, app: &Application) -> Result<()> {
        let mut tx = self.tenant(app.workspace_id).await?;
        apply_change(
            &mut tx,
            app.workspace_id,
            app.created_at,
            &Change::InsertApplication(app.clone()),
        )
        .await?;
        tx.commit().await.db()
    }

    async fn find_application(&self, id: ApplicationId) -> Result<Option<Application>> {
        sqlx::query(&format!(
            "select {APP_COLUMNS} from secureflows_find_application($1)"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(application_row)
        .transpose()
    }

    async fn find_applications_trusting(&self, issuer: &str, audience: &str) -> Result<Vec<Application>> {
        sqlx::query(&format!(
            "select {APP_COLUMNS} from secureflows_find_applications_trusting($1, $2)"
        ))
        .bind(issuer)
        .bind(audience)
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(application_row)
        .collect()
    }

    async fn list_applications(&self, workspace: WorkspaceId) -> Result<Vec<Application>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(&format!(
                "select {APP_COLUMNS} from application where workspace_id = $1 order by created_at"
            ))
            .bind(workspace.as_uuid()),
        )
        .await?
        .iter()
        .map(application_row)
        .collect()
    }

    async fn list_allowed_origins(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("select secureflows_allowed_origins()")
            .fetch_all(&self.pool)
            .await
            .db()
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn find_user_by_identity(
        &self,
        workspace: WorkspaceId,
        identity_index: &[u8],
    ) -> Result<Option<User>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {USER_COLUMNS} from user_account u join user_identity i
               on i.workspace_id = u.workspace_id and i.user_id = u.user_id
             where i.workspace_id = $1 and i.identity_index = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(identity_index),
        )
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    async fn list_identities(
        &self,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<Vec<(NewIdentity, Timestamp)>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(
                "select identity_index, identity_sealed, created_at from user_identity
                 where workspace_id = $1 and user_id = $2 order by created_at, identity_index",
            )
            .bind(workspace.as_uuid())
            .bind(user.as_uuid()),
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                NewIdentity {
                    index: r.try_get("identity_index").db()?,
                    sealed: r.try_get("identity_sealed").db()?,
                },
                from_ts(r.try_get("created_at").db()?),
            ))
        })
        .collect()
    }

    async fn insert_user(&self, new: &NewUser) -> Result<()> {
        let u = &new.user;
        let mut tx = self.tenant(new.user.workspace_id).await?;
        insert_user_row(&mut tx, u).await?;
        sqlx::query(
            "insert into user_identity (workspace_id, identity_index, user_id, identity_sealed, created_at)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(u.workspace_id.as_uuid())
        .bind(&new.identity.index)
        .bind(u.id.as_uuid())
        .bind(&new.identity.sealed)
        .bind(ts(u.created_at))
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    async fn user_tiers(&self, workspace: WorkspaceId, user: UserId) -> Result<Vec<TierAssignment>> {
        let rows = self
            .tenant_fetch_all(
                workspace,
                sqlx::query(
                    "select application_id, tier, source, event_at, updated_at from end_user_tier
                     where workspace_id = $1 and user_id = $2 order by application_id",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TierAssignment {
                    application: ApplicationId::from_uuid(r.try_get("application_id").db()?),
                    user,
                    tier: r.try_get("tier").db()?,
                    source: TierSource::parse(r.try_get::<&str, _>("source").db()?)
                        .ok_or(corrupt("end_user_tier.source"))?,
                    event_at: r
                        .try_get::<Option<time::OffsetDateTime>, _>("event_at")
                        .db()?
                        .map(from_ts),
                    updated_at: from_ts(r.try_get("updated_at").db()?),
                })
            })
            .collect()
    }

    async fn find_user(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<User>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {USER_COLUMNS} from user_account u where u.workspace_id = $1 and u.user_id = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(user.as_uuid()),
        )
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    async fn raise_revision(&self, workspace: WorkspaceId, user: UserId, now: Timestamp) -> Result<i64> {
        let mut tx = self.tenant(workspace).await?;
        apply_change(&mut tx, workspace, now, &Change::RaiseRevision(user)).await?;
        let revision: i64 =
            sqlx::query_scalar("select revision from user_account where workspace_id = $1 and user_id = $2")
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .db()?;
        tx.commit().await.db()?;
        Ok(revision)
    }

    async fn list_users(
        &self,
        workspace: WorkspaceId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>> {
        // Only the conditions asked for: `$2 is null or …` would hide the key from a generic plan.
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "select {USER_COLUMNS} from user_account u where u.workspace_id = "
        ));
        q.push_bind(workspace.as_uuid());
        if let Some(after) = after {
            q.push(" and u.user_id > ").push_bind(after.as_uuid());
        }
        q.push(" order by u.user_id limit ").push_bind(i64::from(limit));
        self.tenant_fetch_all(workspace, q.build())
            .await?
            .iter()
            .map(user_row)
            .collect()
    }

    async fn list_admins(&self, workspace: WorkspaceId, limit: u32) -> Result<Vec<User>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(&format!(
                "select {USER_COLUMNS} from user_account u
                 where u.workspace_id = $1 and u.role in ('owner', 'admin') order by u.user_id limit $2"
            ))
            .bind(workspace.as_uuid())
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(user_row)
        .collect()
    }

    async fn find_user_by_email(&self, workspace: WorkspaceId, email_index: &[u8]) -> Result<Option<User>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {USER_COLUMNS} from user_account u where u.workspace_id = $1 and u.email_index = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(email_index),
        )
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    async fn email_rule_workspaces(&self) -> Result<Vec<WorkspaceId>> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("select * from secureflows_email_rule_pending()")
            .fetch_all(&self.pool)
            .await
            .db()?;
        Ok(ids.into_iter().map(WorkspaceId::from_uuid).collect())
    }

    async fn email_rule_pending(&self, workspace: WorkspaceId) -> Result<Vec<EmailRulePending>> {
        let rows = self
            .tenant_fetch_all(
                workspace,
                sqlx::query(
                    "select u.user_id, u.email_sealed, u.email_verified,
                            exists (select 1 from password_credential p
                                    where p.workspace_id = u.workspace_id and p.user_id = u.user_id),
                            exists (select 1 from user_identity i
                                    where i.workspace_id = u.workspace_id and i.user_id = u.user_id)
                     from user_account u where u.workspace_id = $1 and u.email_rule = 1
                     order by u.created_at, u.user_id",
                )
                .bind(workspace.as_uuid()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EmailRulePending {
                    user: UserId::from_uuid(r.try_get(0).db()?),
                    email_sealed: r.try_get(1).db()?,
                    email_verified: r.try_get(2).db()?,
                    has_password: r.try_get(3).db()?,
                    has_identity: r.try_get(4).db()?,
                })
            })
            .collect()
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
        let mut tx = self.tenant(workspace).await?;
        let updated = sqlx::query(
            "update user_account set email_sealed = coalesce($3, email_sealed), email_index = $4, email_rule = 2
             where workspace_id = $1 and user_id = $2",
        )
        .bind(workspace.as_uuid())
        .bind(user.as_uuid())
        .bind(email_sealed)
        .bind(email_index)
        .execute(&mut *tx)
        .await;
        match updated {
            Ok(_) => {}
            // Another user of the workspace has this index.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => return Ok(false),
            Err(e) => return Err(crate::error::map(e)),
        }
        if let Some(conflict) = conflict {
            sqlx::query(
                "insert into email_conflict (workspace_id, user_id, reason, created_at) values ($1, $2, $3, $4)
                 on conflict (workspace_id, user_id) do update set reason = excluded.reason",
            )
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .bind(conflict.as_str())
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .db()?;
        }
        tx.commit().await.db()?;
        Ok(true)
    }

    async fn email_conflicts(&self, workspace: WorkspaceId) -> Result<Vec<(UserId, EmailConflict)>> {
        let rows = self
            .tenant_fetch_all(
                workspace,
                sqlx::query(
                    "select user_id, reason from email_conflict where workspace_id = $1 order by created_at, user_id",
                )
                .bind(workspace.as_uuid()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let reason: String = r.try_get(1).db()?;
                Ok((
                    UserId::from_uuid(r.try_get(0).db()?),
                    EmailConflict::parse(&reason).ok_or_else(|| corrupt("email_conflict.reason"))?,
                ))
            })
            .collect()
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn insert_session_within_limits(
        &self,
        s: &LoginSession,
        limits: SessionLimits,
        now: Timestamp,
    ) -> Result<SessionAdmission> {
        let mut tx = self.tenant(s.workspace_id).await?;
        // SECURITY: one admission at a time per workspace, so two sign-ins cannot both take the last slot.
        let locked: Option<i32> =
            sqlx::query_scalar("select 1 from workspace where workspace_id = $1 for no key update")
                .bind(s.workspace_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .db()?;
        if locked.is_none() {
            return Err(Error::NotFound("workspace"));
        }
        let (count, earliest): (i64, Option<OffsetDateTime>) = sqlx::query_as(
            "select count(*), min(expires_at) from login_session
             where workspace_id = $1 and ended_at is null and expires_at > $2",
        )
        .bind(s.workspace_id.as_uuid())
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await
        .db()?;
        if count >= i64::from(limits.per_workspace) {
            return Ok(SessionAdmission::Full {
                earliest_expiry: earliest.map_or(now, from_ts),
            });
        }
        let (count, earliest): (i64, Option<OffsetDateTime>) = sqlx::query_as(
            "select count(*), min(expires_at) from login_session
             where workspace_id = $1 and user_id = $2 and ended_at is null and expires_at > $3",
        )
        .bind(s.workspace_id.as_uuid())
        .bind(s.user_id.as_uuid())
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await
        .db()?;
        if count >= i64::from(limits.per_user) {
            return Ok(SessionAdmission::Full {
                earliest_expiry: earliest.map_or(now, from_ts),
            });
        }
        sqlx::query(
            "insert into login_session
               (workspace_id, session_id, application_id, user_id, created_at, expires_at, browser_session_id)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.workspace_id.as_uuid())
        .bind(s.id.as_uuid())
        .bind(s.application_id.map(|a| a.as_uuid()))
        .bind(s.user_id.as_uuid())
        .bind(ts(s.created_at))
        .bind(ts(s.expires_at))
        .bind(s.browser_session_id.map(|b| b.as_uuid()))
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(SessionAdmission::Admitted)
    }

    async fn count_sessions(&self, workspace: WorkspaceId, now: Timestamp) -> Result<u64> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select count(*) as n from login_session
                     where workspace_id = $1 and ended_at is null and expires_at > $2",
                )
                .bind(workspace.as_uuid())
                .bind(ts(now)),
            )
            .await?;
        let n: i64 = match row {
            Some(r) => r.try_get("n").db()?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn find_session(&self, workspace: WorkspaceId, id: SessionId) -> Result<Option<LoginSession>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(
                "select session_id, workspace_id, application_id, user_id, created_at, expires_at, ended_at,
                   browser_session_id
             from login_session where workspace_id = $1 and session_id = $2",
            )
            .bind(workspace.as_uuid())
            .bind(id.as_uuid()),
        )
        .await?
        .as_ref()
        .map(session_row)
        .transpose()
    }

    async fn end_session(&self, workspace: WorkspaceId, id: SessionId, now: Timestamp) -> Result<bool> {
        let mut tx = self.tenant(workspace).await?;
        let open = crate::login::end_login_session(&mut tx, workspace, id, now).await?;
        tx.commit().await.db()?;
        Ok(open)
    }

    async fn purge_sessions(&self, before: Timestamp) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("select secureflows_purge_sessions($1)")
            .bind(ts(before))
            .fetch_one(&self.pool)
            .await
            .db()?;
        Ok(to_u64(n))
    }
}

async fn update_live_value(conn: &mut PgConnection, w: &VaultWrite) -> Result<Option<OffsetDateTime>> {
    let l = &w.locator;
    sqlx::query_scalar(
        "update vault_value set name_sealed = $5, value_sealed = $6, size = $7, updated_at = $8, expires_at = $9
         where workspace_id = $1 and application_id = $2 and user_id = $3 and key_index = $4 and expires_at > $8
         returning created_at",
    )
    .bind(l.workspace_id.as_uuid())
    .bind(l.application_id.as_uuid())
    .bind(l.user_id.as_uuid())
    .bind(&l.key_index[..])
    .bind(&w.name_sealed)
    .bind(&w.value_sealed)
    .bind(to_i64(w.size))
    .bind(ts(w.now))
    .bind(ts(w.expires_at))
    .fetch_optional(conn)
    .await
    .db()
}

pub(crate) fn vault_entry(r: &PgRow, key_index: Option<&[u8]>) -> Result<VaultEntry> {
    Ok(VaultEntry {
        key_index: match key_index {
            Some(k) => k.to_vec(),
            None => r.try_get("key_index").db()?,
        },
        name_sealed: r.try_get("name_sealed").db()?,
        value_sealed: r
            .try_get::<Option<Vec<u8>>, _>("value_sealed")
            .unwrap_or_default()
            .unwrap_or_default(),
        size: to_u64(r.try_get("size").db()?),
        created_at: from_ts(r.try_get("created_at").db()?),
        updated_at: from_ts(r.try_get("updated_at").db()?),
        expires_at: from_ts(r.try_get("expires_at").db()?),
    })
}

#[async_trait]
impl VaultStore for PgStore {
    async fn put_value(&self, w: &VaultWrite) -> Result<PutOutcome> {
        let l = &w.locator;
        // Fast path: overwrite a live value in one statement (and one round trip).
        let overwritten: Option<OffsetDateTime> =
            sqlx::query_scalar("select secureflows_vault_overwrite($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(l.workspace_id.as_uuid())
                .bind(l.application_id.as_uuid())
                .bind(l.user_id.as_uuid())
                .bind(&l.key_index[..])
                .bind(&w.name_sealed)
                .bind(&w.value_sealed)
                .bind(to_i64(w.size))
                .bind(ts(w.now))
                .bind(ts(w.expires_at))
                .fetch_one(&self.pool)
                .await
                .db()?;
        if let Some(created) = overwritten {
            return Ok(PutOutcome::Replaced {
                created_at: from_ts(created),
            });
        }
        let mut tx = self.tenant(l.workspace_id).await?;
        // A new key: lock the user so that the quota check and the insert are atomic.
        let locked: Option<i32> = sqlx::query_scalar(
            "select 1 from user_account where workspace_id = $1 and user_id = $2 for no key update",
        )
        .bind(l.workspace_id.as_uuid())
        .bind(l.user_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        if locked.is_none() {
            return Err(Error::NotFound("user"));
        }
        if let Some(created) = update_live_value(&mut tx, w).await? {
            tx.commit().await.db()?;
            return Ok(PutOutcome::Replaced {
                created_at: from_ts(created),
            });
        }
        let count: i64 = sqlx::query_scalar(
            "select count(*) from vault_value
             where workspace_id = $1 and application_id = $2 and user_id = $3 and expires_at > $4",
        )
        .bind(l.workspace_id.as_uuid())
        .bind(l.application_id.as_uuid())
        .bind(l.user_id.as_uuid())
        .bind(ts(w.now))
        .fetch_one(&mut *tx)
        .await
        .db()?;
        if count >= i64::from(w.max_keys) {
            return Ok(PutOutcome::QuotaExceeded);
        }
        sqlx::query(
            "insert into vault_value (workspace_id, application_id, user_id, key_index, name_sealed, value_sealed,
                                      size, created_at, updated_at, expires_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
             on conflict (workspace_id, application_id, user_id, key_index) do update set
               name_sealed = excluded.name_sealed, value_sealed = excluded.value_sealed, size = excluded.size,
               created_at = excluded.created_at, updated_at = excluded.updated_at, expires_at = excluded.expires_at",
        )
        .bind(l.workspace_id.as_uuid())
        .bind(l.application_id.as_uuid())
        .bind(l.user_id.as_uuid())
        .bind(&l.key_index[..])
        .bind(&w.name_sealed)
        .bind(&w.value_sealed)
        .bind(to_i64(w.size))
        .bind(ts(w.now))
        .bind(ts(w.expires_at))
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(PutOutcome::Created)
    }

    async fn get_value(&self, l: &VaultLocator, now: Timestamp) -> Result<Option<VaultEntry>> {
        // One round trip: the function sets the workspace for its own transaction, then reads under the
        // row-level security policies.
        sqlx::query("select * from secureflows_vault_get($1, $2, $3, $4, $5)")
            .bind(l.workspace_id.as_uuid())
            .bind(l.application_id.as_uuid())
            .bind(l.user_id.as_uuid())
            .bind(&l.key_index[..])
            .bind(ts(now))
            .fetch_optional(&self.pool)
            .await
            .db()?
            .as_ref()
            .map(|r| vault_entry(r, Some(&l.key_index)))
            .transpose()
    }

    async fn list_values(
        &self,
        workspace: WorkspaceId,
        application: ApplicationId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<VaultEntry>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(
                "select key_index, name_sealed, size, created_at, updated_at, expires_at from vault_value
             where workspace_id = $1 and application_id = $2 and user_id = $3 and expires_at > $4",
            )
            .bind(workspace.as_uuid())
            .bind(application.as_uuid())
            .bind(user.as_uuid())
            .bind(ts(now)),
        )
        .await?
        .iter()
        .map(|r| vault_entry(r, None))
        .collect()
    }

    async fn delete_value(&self, l: &VaultLocator, now: Timestamp) -> Result<bool> {
        let mut tx = self.tenant(l.workspace_id).await?;
        let live: Option<bool> = sqlx::query_scalar(
            "delete from vault_value
             where workspace_id = $1 and application_id = $2 and user_id = $3 and key_index = $4
             returning expires_at > $5",
        )
        .bind(l.workspace_id.as_uuid())
        .bind(l.application_id.as_uuid())
        .bind(l.user_id.as_uuid())
        .bind(&l.key_index[..])
        .bind(ts(now))
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let out = live.unwrap_or(false);
        tx.commit().await.db()?;
        Ok(out)
    }

    async fn purge_expired_values(&self, now: Timestamp, limit: u32) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("select secureflows_purge_expired_values($1, $2)")
            .bind(ts(now))
            .bind(i64::from(limit))
            .fetch_one(&self.pool)
            .await
            .db()?;
        Ok(to_u64(n))
    }

    async fn list_user_values(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<(ApplicationId, VaultEntry)>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(
                "select application_id, key_index, name_sealed, size, created_at, updated_at, expires_at
             from vault_value where workspace_id = $1 and user_id = $2 and expires_at > $3
             order by application_id",
            )
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .bind(ts(now)),
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                ApplicationId::from_uuid(r.try_get("application_id").db()?),
                vault_entry(r, None)?,
            ))
        })
        .collect()
    }
}

#[async_trait]
impl AccessLogStore for PgStore {
    async fn append_access(&self, entries: &[AccessEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // One statement text whatever the batch size (arrays, unnested), so it is prepared once per
        // connection instead of once per distinct batch size.
        let col = |f: &dyn Fn(&AccessEntry) -> Option<Uuid>| entries.iter().map(f).collect::<Vec<_>>();
        // Records of many workspaces in one batch: through the narrow SECURITY DEFINER function.
        sqlx::query(
            "select secureflows_append_access($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
               $6::bytea[], $7::int4[], $8::int8[], $9::int8[], $10::text[], $11::text[], $12::text[],
               $13::int8[], $14::timestamptz[])",
        )
        .bind(col(&|e| e.workspace_id.map(|w| w.as_uuid())))
        .bind(col(&|e| e.application_id.map(|a| a.as_uuid())))
        .bind(col(&|e| e.user_id.map(|u| u.as_uuid())))
        .bind(entries.iter().map(|e| e.method.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.route.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.key_sealed.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| i32::from(e.status)).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| to_i64(e.bytes_in)).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| to_i64(e.bytes_out)).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.client_ip.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.user_agent.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.request_id.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| to_i64(e.duration_us)).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| ts(e.at)).collect::<Vec<_>>())
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    async fn list_access(
        &self,
        workspace: WorkspaceId,
        f: &AccessFilter,
        limit: u32,
    ) -> Result<Vec<(i64, AccessEntry)>> {
        // Only the conditions asked for (see `list_events`).
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "select api_access_id, workspace_id, application_id, user_id, method, route, key_sealed, status,
                    bytes_in, bytes_out, client_ip, user_agent, request_id, duration_us, created_at
             from api_access where workspace_id = ",
        );
        q.push_bind(workspace.as_uuid());
        if let Some(since) = f.since {
            q.push(" and created_at >= ").push_bind(ts(since));
        }
        if let Some(until) = f.until {
            q.push(" and created_at < ").push_bind(ts(until));
        }
        if let Some(user) = f.user {
            q.push(" and user_id = ").push_bind(user.as_uuid());
        }
        if let Some(route) = &f.route {
            q.push(" and route = ").push_bind(route.clone());
        }
        if let Some(status) = f.status {
            q.push(" and status = ").push_bind(i32::from(status));
        }
        if let Some(application) = f.application {
            q.push(" and application_id = ").push_bind(application.as_uuid());
        }
        if let Some(before) = f.before {
            q.push(" and api_access_id < ").push_bind(before);
        }
        q.push(" order by api_access_id desc limit ")
            .push_bind(i64::from(limit));
        let rows = self.tenant_fetch_all(workspace, q.build()).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("api_access_id").db()?,
                    AccessEntry {
                        workspace_id: r
                            .try_get::<Option<Uuid>, _>("workspace_id")
                            .db()?
                            .map(WorkspaceId::from_uuid),
                        application_id: r
                            .try_get::<Option<Uuid>, _>("application_id")
                            .db()?
                            .map(ApplicationId::from_uuid),
                        user_id: r
                            .try_get::<Option<Uuid>, _>("user_id")
                            .db()?
                            .map(UserId::from_uuid),
                        method: r.try_get("method").db()?,
                        route: r.try_get("route").db()?,
                        key_sealed: r.try_get("key_sealed").db()?,
                        status: u16::try_from(r.try_get::<i32, _>("status").db()?).unwrap_or(0),
                        bytes_in: to_u64(r.try_get("bytes_in").db()?),
                        bytes_out: to_u64(r.try_get("bytes_out").db()?),
                        client_ip: r.try_get("client_ip").db()?,
                        user_agent: r.try_get("user_agent").db()?,
                        request_id: r.try_get("request_id").db()?,
                        duration_us: to_u64(r.try_get("duration_us").db()?),
                        at: from_ts(r.try_get("created_at").db()?),
                    },
                ))
            })
            .collect()
    }
}

#[async_trait]
impl CoordStore for PgStore {
    async fn publish(&self, invalidation: Invalidation) -> Result<()> {
        let mut conn = self.pool.acquire().await.db()?;
        record_invalidation(&mut conn, invalidation).await
    }

    async fn invalidations_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, Invalidation)>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "select seq, kind, subject from invalidation where seq > $1 order by seq limit $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(parse_invalidations(rows))
    }

    async fn recent_invalidations(&self, lookback: Duration) -> Result<Vec<(i64, Invalidation)>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "select seq, kind, subject from invalidation
             where created_at >= clock_timestamp() - make_interval(secs => $1) order by seq",
        )
        .bind(lookback.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(parse_invalidations(rows))
    }

    async fn prune_invalidations(&self, age: Duration) -> Result<u64> {
        Ok(sqlx::query(
            "delete from invalidation where created_at < clock_timestamp() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await
        .db()?
        .rows_affected())
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        Some(self.wakeups.clone())
    }
}

#[async_trait]
impl UsedTokenStore for PgStore {
    async fn mark_used(&self, token_hash: &[u8; 32], expires_at: Timestamp) -> Result<bool> {
        let n = sqlx::query(
            "insert into used_token (token_hash, expires_at) values ($1, $2) on conflict do nothing",
        )
        .bind(&token_hash[..])
        .bind(ts(expires_at))
        .execute(&self.pool)
        .await
        .db()?
        .rows_affected();
        Ok(n == 1)
    }

    async fn purge_used(&self, now: Timestamp) -> Result<u64> {
        Ok(sqlx::query("delete from used_token where expires_at < $1")
            .bind(ts(now))
            .execute(&self.pool)
            .await
            .db()?
            .rows_affected())
    }
}

#[async_trait]
impl HealthStore for PgStore {
    async fn check_ready(&self) -> Result<()> {
        if migrate::is_current(&self.pool, &migrate::DATA).await? {
            Ok(())
        } else {
            Err(Error::Unavailable("migrations are not current"))
        }
    }
}
