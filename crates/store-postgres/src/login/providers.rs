//! The upstream identity providers a workspace offers on its sign-in page.

use async_trait::async_trait;
use secureflows_core::store::ProviderStore;
use secureflows_core::{Error, IdentityProvider, ProviderKind, Result, WorkspaceId};
use sqlx::Row;
use uuid::Uuid;

use crate::data::{PgStore, from_ts};
use crate::error::SqlResult;

#[async_trait]
impl ProviderStore for PgStore {
    async fn identity_providers(&self, workspace: WorkspaceId) -> Result<Vec<IdentityProvider>> {
        let rows = self
            .tenant_fetch_all(
                workspace,
                sqlx::query(
                    "select provider_id, kind, name, issuer, client_id, client_secret_sealed, created_at
                     from identity_provider where workspace_id = $1 order by created_at, provider_id",
                )
                .bind(workspace.as_uuid()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind").db()?;
                Ok(IdentityProvider {
                    id: r.try_get::<Uuid, _>("provider_id").db()?.into(),
                    workspace_id: workspace,
                    kind: ProviderKind::parse(&kind).ok_or(Error::Integrity("identity provider kind"))?,
                    name: r.try_get("name").db()?,
                    issuer: r.try_get("issuer").db()?,
                    client_id: r.try_get("client_id").db()?,
                    client_secret_sealed: r.try_get("client_secret_sealed").db()?,
                    created_at: from_ts(r.try_get("created_at").db()?),
                })
            })
            .collect()
    }
}
