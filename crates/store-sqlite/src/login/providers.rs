//! The upstream identity providers a workspace offers on its sign-in page.

use async_trait::async_trait;
use rusqlite::params;
use secureflows_core::store::ProviderStore;
use secureflows_core::{IdentityProvider, ProviderKind, Result, Timestamp, WorkspaceId};

use crate::data::{SqliteStore, bad_column};
use crate::error::SqlResult;

#[async_trait]
impl ProviderStore for SqliteStore {
    async fn identity_providers(&self, workspace: WorkspaceId) -> Result<Vec<IdentityProvider>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select provider_id, kind, name, issuer, client_id, client_secret_sealed, created_at
                     from identity_provider where workspace_id = ?1 order by created_at, provider_id",
                )
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid()], |r| {
                    Ok(IdentityProvider {
                        id: r.get::<_, uuid::Uuid>(0)?.into(),
                        workspace_id: workspace,
                        kind: ProviderKind::parse(&r.get::<_, String>(1)?)
                            .ok_or_else(|| bad_column("kind"))?,
                        name: r.get(2)?,
                        issuer: r.get(3)?,
                        client_id: r.get(4)?,
                        client_secret_sealed: r.get(5)?,
                        created_at: Timestamp::from_millis(r.get(6)?),
                    })
                })
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }
}
