//! One-time ceremonies: e-mailed links and WebAuthn ceremonies.

use async_trait::async_trait;
use secureflows_core::store::CeremonyStore;
use secureflows_core::{
    CeremonyPurpose, LinkPurpose, LoginLink, Result, Timestamp, UserId, WebauthnCeremony, WorkspaceId,
};
use sqlx::Row;
use uuid::Uuid;

use crate::data::{PgStore, from_ts, ts};
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl CeremonyStore for PgStore {
    async fn insert_link(&self, link: &LoginLink) -> Result<()> {
        let mut tx = self.tenant(link.workspace_id).await?;
        insert_link_row(&mut tx, link).await?;
        tx.commit().await.db()
    }

    async fn replace_links(&self, link: &LoginLink, now: Timestamp) -> Result<()> {
        let mut tx = self.tenant(link.workspace_id).await?;
        sqlx::query(
            "update login_link set used_at = $4
             where workspace_id = $1 and user_id = $2 and purpose = $3 and used_at is null",
        )
        .bind(link.workspace_id.as_uuid())
        .bind(link.user_id.as_uuid())
        .bind(link.purpose.as_str())
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .db()?;
        insert_link_row(&mut tx, link).await?;
        tx.commit().await.db()
    }

    async fn use_link(
        &self,
        workspace: WorkspaceId,
        link_hash: &[u8],
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<LoginLink>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "update login_link set used_at = $4
                     where workspace_id = $1 and link_hash = $2 and purpose = $3 and used_at is null and expires_at > $4
                     returning user_id, flow_id, created_at, expires_at, amr, user_revision, browser_hash",
                )
                .bind(workspace.as_uuid())
                .bind(link_hash)
                .bind(purpose.as_str())
                .bind(ts(now)),
            )
            .await?;
        row.map(|r| link_row(&r, workspace, link_hash, purpose))
            .transpose()
    }

    async fn find_link(
        &self,
        workspace: WorkspaceId,
        link_hash: &[u8],
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<LoginLink>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select user_id, flow_id, created_at, expires_at, amr, user_revision, browser_hash from login_link
                     where workspace_id = $1 and link_hash = $2 and purpose = $3 and used_at is null and expires_at > $4",
                )
                .bind(workspace.as_uuid())
                .bind(link_hash)
                .bind(purpose.as_str())
                .bind(ts(now)),
            )
            .await?;
        row.map(|r| link_row(&r, workspace, link_hash, purpose))
            .transpose()
    }

    async fn insert_ceremony(&self, ceremony: &WebauthnCeremony) -> Result<()> {
        self.tenant_execute(
            ceremony.workspace_id,
            sqlx::query(
                "insert into webauthn_ceremony
                   (ceremony_hash, workspace_id, user_id, purpose, state_sealed, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&ceremony.ceremony_hash)
            .bind(ceremony.workspace_id.as_uuid())
            .bind(ceremony.user_id.map(|u| u.as_uuid()))
            .bind(ceremony.purpose.as_str())
            .bind(&ceremony.state_sealed)
            .bind(ts(ceremony.created_at))
            .bind(ts(ceremony.expires_at)),
        )
        .await?;
        Ok(())
    }

    async fn take_ceremony(
        &self,
        workspace: WorkspaceId,
        ceremony_hash: &[u8],
        purpose: CeremonyPurpose,
        now: Timestamp,
    ) -> Result<Option<WebauthnCeremony>> {
        // Taken whatever it is, so that a wrong purpose or an expired one cannot be retried.
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "delete from webauthn_ceremony where workspace_id = $1 and ceremony_hash = $2
                     returning user_id, purpose, state_sealed, created_at, expires_at",
                )
                .bind(workspace.as_uuid())
                .bind(ceremony_hash),
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let expires_at = from_ts(r.try_get("expires_at").db()?);
        let stored: String = r.try_get("purpose").db()?;
        if stored != purpose.as_str() || expires_at <= now {
            return Ok(None);
        }
        Ok(Some(WebauthnCeremony {
            ceremony_hash: ceremony_hash.to_vec(),
            workspace_id: workspace,
            user_id: r.try_get::<Option<Uuid>, _>("user_id").db()?.map(UserId::from),
            purpose,
            state_sealed: r.try_get("state_sealed").db()?,
            created_at: from_ts(r.try_get("created_at").db()?),
            expires_at,
        }))
    }
}
