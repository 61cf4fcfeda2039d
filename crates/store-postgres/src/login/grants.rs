//! Authorization codes and refresh tokens (and the login sessions a refresh extends).

use async_trait::async_trait;
use secureflows_core::store::{CodeRedemption, GrantStore, RefreshRotation};
use secureflows_core::{
    AuthorizationCode, FamilyId, RefreshToken, Result, SessionId, Timestamp, WorkspaceId,
};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::data::{PgStore, ts};
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl GrantStore for PgStore {
    async fn insert_code(&self, code: &AuthorizationCode) -> Result<()> {
        self.tenant_execute(
            code.workspace_id,
            sqlx::query(&format!(
                "insert into authorization_code ({CODE_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&code.code_hash)
            .bind(code.workspace_id.as_uuid())
            .bind(code.application_id.as_uuid())
            .bind(code.user_id.as_uuid())
            .bind(code.browser_session_id.as_uuid())
            .bind(request_json(&code.request)?)
            .bind(ts(code.auth_time))
            .bind(amr_json(&code.amr))
            .bind(ts(code.created_at))
            .bind(ts(code.expires_at)),
        )
        .await
        .map(|_| ())
    }

    async fn redeem_code(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        now: Timestamp,
    ) -> Result<CodeRedemption> {
        let mut tx = self.tenant(workspace).await?;
        // Row lock: of two concurrent redemptions, the second sees the first's used_at.
        let row = sqlx::query(&format!(
            "select {CODE_COLUMNS}, used_at, login_session_id from authorization_code
             where workspace_id = $1 and code_hash = $2 for update"
        ))
        .bind(workspace.as_uuid())
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let outcome = match row {
            None => CodeRedemption::Invalid,
            Some(r) => {
                let used: Option<OffsetDateTime> = r.try_get("used_at").db()?;
                let session: Option<Uuid> = r.try_get("login_session_id").db()?;
                let code = code_row(&r)?;
                if used.is_some() {
                    CodeRedemption::Replayed(session.map(SessionId::from_uuid))
                } else if code.expires_at <= now {
                    CodeRedemption::Invalid
                } else {
                    sqlx::query("update authorization_code set used_at = $3 where workspace_id = $1 and code_hash = $2")
                        .bind(workspace.as_uuid())
                        .bind(code_hash)
                        .bind(ts(now))
                        .execute(&mut *tx)
                        .await
                        .db()?;
                    CodeRedemption::Fresh(code)
                }
            }
        };
        tx.commit().await.db()?;
        Ok(outcome)
    }

    async fn attach_code_session(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        session: SessionId,
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update authorization_code set login_session_id = $3 where workspace_id = $1 and code_hash = $2",
            )
            .bind(workspace.as_uuid())
            .bind(code_hash)
            .bind(session.as_uuid()),
        )
        .await
        .map(|_| ())
    }

    async fn insert_refresh(&self, t: &RefreshToken) -> Result<()> {
        let mut tx = self.tenant(t.workspace_id).await?;
        insert_refresh_row(&mut tx, t).await?;
        tx.commit().await.db()
    }

    async fn rotate_refresh(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        successor: &RefreshToken,
        successor_sealed: &[u8],
        now: Timestamp,
    ) -> Result<RefreshRotation> {
        let mut tx = self.tenant(workspace).await?;
        // SECURITY: check-then-act in one statement (the row lock orders concurrent rotations).
        let rotated = sqlx::query(
            "update refresh_token set rotated_at = $3, successor_sealed = $4
             where workspace_id = $1 and token_hash = $2
               and rotated_at is null and revoked_at is null and expires_at > $3",
        )
        .bind(workspace.as_uuid())
        .bind(token_hash)
        .bind(ts(now))
        .bind(successor_sealed)
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected();
        if rotated == 0 {
            return Ok(RefreshRotation::NotCurrent);
        }
        insert_refresh_row(&mut tx, successor).await?;
        tx.commit().await.db()?;
        Ok(RefreshRotation::Rotated)
    }

    async fn refresh_successor(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<Vec<u8>>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select successor_sealed from refresh_token where workspace_id = $1 and token_hash = $2",
                )
                .bind(workspace.as_uuid())
                .bind(token_hash),
            )
            .await?;
        match row {
            Some(r) => r.try_get::<Option<Vec<u8>>, _>(0).db(),
            None => Ok(None),
        }
    }

    async fn find_refresh(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<RefreshToken>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {REFRESH_COLUMNS} from refresh_token where workspace_id = $1 and token_hash = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(token_hash),
        )
        .await?
        .as_ref()
        .map(refresh_row)
        .transpose()
    }

    async fn revoke_family(&self, workspace: WorkspaceId, family: FamilyId, now: Timestamp) -> Result<()> {
        let mut tx = self.tenant(workspace).await?;
        let sessions: Vec<Uuid> = sqlx::query_scalar(
            "update refresh_token set revoked_at = coalesce(revoked_at, $3)
             where workspace_id = $1 and family_id = $2 returning login_session_id",
        )
        .bind(workspace.as_uuid())
        .bind(family.as_uuid())
        .bind(ts(now))
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let mut sessions: Vec<SessionId> = sessions.into_iter().map(SessionId::from_uuid).collect();
        sessions.sort();
        sessions.dedup();
        for session in sessions {
            end_login_session(&mut tx, workspace, session, now).await?;
        }
        tx.commit().await.db()
    }

    async fn extend_session(
        &self,
        workspace: WorkspaceId,
        session: SessionId,
        expires_at: Timestamp,
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update login_session set expires_at = greatest(expires_at, $3)
                 where workspace_id = $1 and session_id = $2 and ended_at is null",
            )
            .bind(workspace.as_uuid())
            .bind(session.as_uuid())
            .bind(ts(expires_at)),
        )
        .await
        .map(|_| ())
    }
}
