//! Passwords, e-mail verification and the sign-in lockout.

use async_trait::async_trait;
use secureflows_core::store::{AttemptGate, PasswordStore};
use secureflows_core::{Error, Result, Timestamp, UserId, WorkspaceId};
use sqlx::Row;
use time::OffsetDateTime;

use crate::data::{PgStore, from_ts, ts};
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl PasswordStore for PgStore {
    async fn find_password(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<String>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query("select phc from password_credential where workspace_id = $1 and user_id = $2")
                    .bind(workspace.as_uuid())
                    .bind(user.as_uuid()),
            )
            .await?;
        row.map(|r| r.try_get("phc").db()).transpose()
    }

    async fn set_password(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        phc: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.tenant(workspace).await?;
        write_password(&mut tx, workspace, user, phc, now).await?;
        tx.commit().await.db()
    }

    async fn begin_attempt(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        max_failures: u32,
        now: Timestamp,
    ) -> Result<AttemptGate> {
        let max = i32::try_from(max_failures).unwrap_or(i32::MAX);
        let mut tx = self.tenant(workspace).await?;
        // One UPDATE: row-locked, so parallel attempts are counted one after the other.
        let n = sqlx::query(
            "update user_account set
               failed_sign_ins = case when sign_in_locked_until is not null then 1 else failed_sign_ins + 1 end,
               sign_in_locked_until = null
             where workspace_id = $1 and user_id = $2
               and ((sign_in_locked_until is not null and sign_in_locked_until <= $4)
                    or (sign_in_locked_until is null and failed_sign_ins < $3))",
        )
        .bind(workspace.as_uuid())
        .bind(user.as_uuid())
        .bind(max)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected();
        let gate = if n > 0 {
            AttemptGate::Proceed
        } else {
            let until: Option<Option<OffsetDateTime>> = sqlx::query_scalar(
                "select sign_in_locked_until from user_account where workspace_id = $1 and user_id = $2",
            )
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .db()?;
            AttemptGate::Locked(until.flatten().map_or(now, from_ts))
        };
        tx.commit().await.db()?;
        Ok(gate)
    }

    async fn lock_if_exhausted(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        max_failures: u32,
        until: Timestamp,
    ) -> Result<bool> {
        let n = self
            .tenant_execute(
                workspace,
                sqlx::query(
                    "update user_account set sign_in_locked_until = $4
                     where workspace_id = $1 and user_id = $2 and failed_sign_ins >= $3
                       and sign_in_locked_until is null",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(i32::try_from(max_failures).unwrap_or(i32::MAX))
                .bind(ts(until)),
            )
            .await?;
        Ok(n > 0)
    }

    async fn clear_failures(&self, workspace: WorkspaceId, user: UserId) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update user_account set failed_sign_ins = 0, sign_in_locked_until = null
                 where workspace_id = $1 and user_id = $2
                   and (failed_sign_ins <> 0 or sign_in_locked_until is not null)",
            )
            .bind(workspace.as_uuid())
            .bind(user.as_uuid()),
        )
        .await
        .map(|_| ())
    }

    async fn sign_in_failures(
        &self,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<(u32, Option<Timestamp>)> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select failed_sign_ins, sign_in_locked_until from user_account
                     where workspace_id = $1 and user_id = $2",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid()),
            )
            .await?
            .ok_or(Error::NotFound("user"))?;
        let failures: i32 = row.try_get(0).db()?;
        let until: Option<OffsetDateTime> = row.try_get(1).db()?;
        Ok((u32::try_from(failures).unwrap_or(0), until.map(from_ts)))
    }

    async fn set_email_verified(&self, workspace: WorkspaceId, user: UserId) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update user_account set email_verified = true where workspace_id = $1 and user_id = $2",
            )
            .bind(workspace.as_uuid())
            .bind(user.as_uuid()),
        )
        .await
        .map(|_| ())
    }

    async fn email_verified(&self, workspace: WorkspaceId, user: UserId) -> Result<bool> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select email_verified from user_account where workspace_id = $1 and user_id = $2",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid()),
            )
            .await?;
        Ok(row
            .map(|r| r.try_get::<bool, _>("email_verified"))
            .transpose()
            .db()?
            .unwrap_or(false))
    }
}
