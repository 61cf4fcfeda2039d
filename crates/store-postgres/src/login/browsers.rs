//! Pending authorization requests (flows), browser sessions and the browsers a user signed in from.

use async_trait::async_trait;
use secureflows_core::store::BrowserStore;
use secureflows_core::{
    BrowserSession, BrowserSessionId, ConsoleSession, FlowId, LoginFlow, Result, SessionId, Timestamp,
    UserId, WorkspaceId,
};
use sqlx::Row;
use uuid::Uuid;

use crate::data::{PgStore, from_ts, ts};
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl BrowserStore for PgStore {
    async fn insert_flow(&self, flow: &LoginFlow) -> Result<()> {
        self.tenant_execute(
            flow.workspace_id,
            sqlx::query(
                "insert into login_flow (workspace_id, flow_id, application_id, request, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(flow.workspace_id.as_uuid())
            .bind(flow.id.as_uuid())
            .bind(flow.application_id.as_uuid())
            .bind(request_json(&flow.request)?)
            .bind(ts(flow.created_at))
            .bind(ts(flow.expires_at)),
        )
        .await
        .map(|_| ())
    }

    async fn find_flow(
        &self,
        workspace: WorkspaceId,
        id: FlowId,
        now: Timestamp,
    ) -> Result<Option<LoginFlow>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select flow_id, workspace_id, application_id, request, created_at, expires_at from login_flow
                     where workspace_id = $1 and flow_id = $2 and expires_at > $3",
                )
                .bind(workspace.as_uuid())
                .bind(id.as_uuid())
                .bind(ts(now)),
            )
            .await?;
        row.map(|r| {
            Ok(LoginFlow {
                id: FlowId::from_uuid(r.try_get("flow_id").db()?),
                workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
                application_id: r.try_get::<Uuid, _>("application_id").db()?.into(),
                request: request_from(r.try_get("request").db()?)?,
                created_at: from_ts(r.try_get("created_at").db()?),
                expires_at: from_ts(r.try_get("expires_at").db()?),
            })
        })
        .transpose()
    }

    async fn delete_flow(&self, workspace: WorkspaceId, id: FlowId) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query("delete from login_flow where workspace_id = $1 and flow_id = $2")
                .bind(workspace.as_uuid())
                .bind(id.as_uuid()),
        )
        .await
        .map(|_| ())
    }

    async fn insert_browser_session(&self, s: &BrowserSession) -> Result<()> {
        self.tenant_execute(
            s.workspace_id,
            sqlx::query(&format!(
                "insert into browser_session ({BROWSER_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(s.id.as_uuid())
            .bind(s.workspace_id.as_uuid())
            .bind(s.user_id.as_uuid())
            .bind(&s.token_hash)
            .bind(ts(s.auth_time))
            .bind(amr_json(&s.amr))
            .bind(&s.client_sealed)
            .bind(ts(s.created_at))
            .bind(ts(s.last_seen_at))
            .bind(ts(s.expires_at))
            .bind(s.ended_at.map(ts))
            .bind(s.revision),
        )
        .await
        .map(|_| ())
    }

    async fn find_browser_session(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<BrowserSession>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {BROWSER_COLUMNS} from browser_session
                 where workspace_id = $1 and token_hash = $2 and ended_at is null and expires_at > $3"
            ))
            .bind(workspace.as_uuid())
            .bind(token_hash)
            .bind(ts(now)),
        )
        .await?
        .as_ref()
        .map(browser_row)
        .transpose()
    }

    async fn list_browser_sessions(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<BrowserSession>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(&format!(
                "select {BROWSER_COLUMNS} from browser_session
                 where workspace_id = $1 and user_id = $2 and ended_at is null and expires_at > $3
                 order by created_at"
            ))
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .bind(ts(now)),
        )
        .await?
        .iter()
        .map(browser_row)
        .collect()
    }

    async fn touch_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query("update browser_session set last_seen_at = $3 where workspace_id = $1 and browser_session_id = $2")
                .bind(workspace.as_uuid())
                .bind(id.as_uuid())
                .bind(ts(now)),
        )
        .await
        .map(|_| ())
    }

    async fn set_browser_session_amr(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        amr: &[String],
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update browser_session set amr = $3 where workspace_id = $1 and browser_session_id = $2",
            )
            .bind(workspace.as_uuid())
            .bind(id.as_uuid())
            .bind(amr_json(amr)),
        )
        .await
        .map(|_| ())
    }

    async fn end_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.tenant(workspace).await?;
        sqlx::query(
            "update browser_session set ended_at = $3
             where workspace_id = $1 and browser_session_id = $2 and ended_at is null",
        )
        .bind(workspace.as_uuid())
        .bind(id.as_uuid())
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .db()?;
        let sessions: Vec<Uuid> = sqlx::query_scalar(
            "select session_id from login_session
             where workspace_id = $1 and browser_session_id = $2 and ended_at is null",
        )
        .bind(workspace.as_uuid())
        .bind(id.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let sessions: Vec<SessionId> = sessions.into_iter().map(SessionId::from_uuid).collect();
        for session in &sessions {
            end_login_session(&mut tx, workspace, *session, now).await?;
        }
        tx.commit().await.db()?;
        Ok(sessions)
    }

    async fn remember_device(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        device_hash: &[u8],
        now: Timestamp,
    ) -> Result<bool> {
        // `xmax = 0` only for a freshly inserted row.
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "insert into known_device (workspace_id, user_id, device_hash, first_seen_at, last_seen_at)
                     values ($1, $2, $3, $4, $4)
                     on conflict (workspace_id, user_id, device_hash) do update set last_seen_at = excluded.last_seen_at
                     returning (xmax = 0) as inserted",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(device_hash)
                .bind(ts(now)),
            )
            .await?;
        Ok(row
            .map(|r| r.try_get::<bool, _>("inserted"))
            .transpose()
            .db()?
            .unwrap_or(false))
    }

    async fn put_console_session(&self, s: &ConsoleSession) -> Result<()> {
        self.tenant_execute(
            s.workspace_id,
            sqlx::query(
                "insert into console_session (workspace_id, session_hash, user_id, tokens_sealed, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6)
                 on conflict (workspace_id, session_hash) do update
                 set user_id = excluded.user_id, tokens_sealed = excluded.tokens_sealed,
                     expires_at = excluded.expires_at",
            )
            .bind(s.workspace_id.as_uuid())
            .bind(&s.session_hash)
            .bind(s.user_id.as_uuid())
            .bind(&s.tokens_sealed)
            .bind(ts(s.created_at))
            .bind(ts(s.expires_at)),
        )
        .await
        .map(|_| ())
    }

    async fn find_console_session(
        &self,
        workspace: WorkspaceId,
        session_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select workspace_id, session_hash, user_id, tokens_sealed, created_at, expires_at
                     from console_session where workspace_id = $1 and session_hash = $2 and expires_at > $3",
                )
                .bind(workspace.as_uuid())
                .bind(session_hash)
                .bind(ts(now)),
            )
            .await?;
        row.map(|r| {
            Ok(ConsoleSession {
                workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
                session_hash: r.try_get("session_hash").db()?,
                user_id: r.try_get::<Uuid, _>("user_id").db()?.into(),
                tokens_sealed: r.try_get("tokens_sealed").db()?,
                created_at: from_ts(r.try_get("created_at").db()?),
                expires_at: from_ts(r.try_get("expires_at").db()?),
            })
        })
        .transpose()
    }

    async fn delete_console_session(&self, workspace: WorkspaceId, session_hash: &[u8]) -> Result<bool> {
        self.tenant_execute(
            workspace,
            sqlx::query("delete from console_session where workspace_id = $1 and session_hash = $2")
                .bind(workspace.as_uuid())
                .bind(session_hash),
        )
        .await
        .map(|n| n == 1)
    }

    async fn purge_login_state(&self, before: Timestamp) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("select secureflows_purge_login_state($1)")
            .bind(ts(before))
            .fetch_one(&self.pool)
            .await
            .db()?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
