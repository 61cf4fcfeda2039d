//! Second factors: TOTP, recovery codes and passkeys.

use async_trait::async_trait;
use secureflows_core::store::FactorStore;
use secureflows_core::{PasskeyId, PasskeyRecord, Result, Timestamp, TotpEnrolment, UserId, WorkspaceId};
use sqlx::Row;

use crate::data::{PgStore, from_ts, ts};
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl FactorStore for PgStore {
    async fn find_totp(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<TotpEnrolment>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select secret_sealed, confirmed_at, last_step, created_at from mfa_totp
                     where workspace_id = $1 and user_id = $2",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid()),
            )
            .await?;
        row.map(|r| {
            Ok(TotpEnrolment {
                secret_sealed: r.try_get("secret_sealed").db()?,
                confirmed_at: opt_ts(&r, "confirmed_at")?,
                last_step: r.try_get("last_step").db()?,
                created_at: from_ts(r.try_get("created_at").db()?),
            })
        })
        .transpose()
    }

    async fn begin_totp(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        secret_sealed: &[u8],
        pending_since: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let n = self
            .tenant_execute(
                workspace,
                sqlx::query(
                    "insert into mfa_totp (workspace_id, user_id, secret_sealed, created_at) values ($1, $2, $3, $4)
                     on conflict (workspace_id, user_id) do update
                       set secret_sealed = excluded.secret_sealed, created_at = excluded.created_at, last_step = 0
                       where mfa_totp.confirmed_at is null and mfa_totp.created_at < $5",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(secret_sealed)
                .bind(ts(now))
                .bind(ts(pending_since)),
            )
            .await?;
        Ok(n > 0)
    }

    async fn use_totp_step(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        step: i64,
        now: Timestamp,
    ) -> Result<bool> {
        let n = self
            .tenant_execute(
                workspace,
                sqlx::query(
                    "update mfa_totp set last_step = $3, confirmed_at = coalesce(confirmed_at, $4)
                     where workspace_id = $1 and user_id = $2 and last_step < $3",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(step)
                .bind(ts(now)),
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_totp(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        keep_recovery_codes: bool,
    ) -> Result<()> {
        let tables: &[&str] = if keep_recovery_codes {
            &["mfa_totp"]
        } else {
            &["mfa_totp", "recovery_code"]
        };
        let mut tx = self.tenant(workspace).await?;
        for table in tables {
            sqlx::query(&format!(
                "delete from {table} where workspace_id = $1 and user_id = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await
            .db()?;
        }
        tx.commit().await.db()
    }

    async fn replace_recovery_codes(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        hashes: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.tenant(workspace).await?;
        sqlx::query("delete from recovery_code where workspace_id = $1 and user_id = $2")
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(
            "insert into recovery_code (workspace_id, user_id, code_hash, created_at)
             select $1, $2, unnest($3::bytea[]), $4",
        )
        .bind(workspace.as_uuid())
        .bind(user.as_uuid())
        .bind(hashes)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    async fn use_recovery_code(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        hash: &[u8],
        now: Timestamp,
    ) -> Result<bool> {
        let n = self
            .tenant_execute(
                workspace,
                sqlx::query(
                    "update recovery_code set used_at = $4
                     where workspace_id = $1 and user_id = $2 and code_hash = $3 and used_at is null",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(hash)
                .bind(ts(now)),
            )
            .await?;
        Ok(n > 0)
    }

    async fn recovery_codes_left(&self, workspace: WorkspaceId, user: UserId) -> Result<u32> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select count(*) as n from recovery_code where workspace_id = $1 and user_id = $2 and used_at is null",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid()),
            )
            .await?;
        let n: i64 = row.map(|r| r.try_get("n")).transpose().db()?.unwrap_or(0);
        Ok(u32::try_from(n).unwrap_or(0))
    }

    async fn insert_passkey(&self, passkey: &PasskeyRecord) -> Result<bool> {
        let n = self
            .tenant_execute(
                passkey.workspace_id,
                sqlx::query(
                    "insert into passkey
                       (passkey_id, workspace_id, user_id, credential_hash, sealed, created_at, last_used_at)
                     values ($1, $2, $3, $4, $5, $6, $7)
                     on conflict (workspace_id, credential_hash) do nothing",
                )
                .bind(passkey.id.as_uuid())
                .bind(passkey.workspace_id.as_uuid())
                .bind(passkey.user_id.as_uuid())
                .bind(&passkey.credential_hash)
                .bind(&passkey.sealed)
                .bind(ts(passkey.created_at))
                .bind(passkey.last_used_at.map(ts)),
            )
            .await?;
        Ok(n > 0)
    }

    async fn passkeys(&self, workspace: WorkspaceId, user: UserId) -> Result<Vec<PasskeyRecord>> {
        let rows = self
            .tenant_fetch_all(
                workspace,
                sqlx::query(
                    "select passkey_id, workspace_id, user_id, credential_hash, sealed, created_at, last_used_at
                     from passkey where workspace_id = $1 and user_id = $2 order by created_at, passkey_id",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid()),
            )
            .await?;
        rows.iter().map(passkey_row).collect()
    }

    async fn update_passkey(
        &self,
        workspace: WorkspaceId,
        passkey: PasskeyId,
        sealed: &[u8],
        used_at: Timestamp,
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update passkey set sealed = $3, last_used_at = $4 where workspace_id = $1 and passkey_id = $2",
            )
            .bind(workspace.as_uuid())
            .bind(passkey.as_uuid())
            .bind(sealed)
            .bind(ts(used_at)),
        )
        .await?;
        Ok(())
    }

    async fn delete_passkey(&self, workspace: WorkspaceId, user: UserId, passkey: PasskeyId) -> Result<bool> {
        let n = self
            .tenant_execute(
                workspace,
                sqlx::query(
                    "delete from passkey where workspace_id = $1 and user_id = $2 and passkey_id = $3",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(passkey.as_uuid()),
            )
            .await?;
        Ok(n > 0)
    }
}
