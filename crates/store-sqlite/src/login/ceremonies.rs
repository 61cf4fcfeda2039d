//! One-time ceremonies: e-mailed links and WebAuthn ceremonies.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use secureflows_core::store::CeremonyStore;
use secureflows_core::{
    CeremonyPurpose, LinkPurpose, LoginLink, Result, Timestamp, UserId, WebauthnCeremony, WorkspaceId,
};

use crate::data::SqliteStore;
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl CeremonyStore for SqliteStore {
    async fn insert_link(&self, link: &LoginLink) -> Result<()> {
        let link = link.clone();
        self.db.write(move |c| insert_link_row(c, &link)).await
    }

    async fn replace_links(&self, link: &LoginLink, now: Timestamp) -> Result<()> {
        let link = link.clone();
        self.db
            .write(move |c| {
                c.execute(
                    "update login_link set used_at = ?4
                     where workspace_id = ?1 and user_id = ?2 and purpose = ?3 and used_at is null",
                    params![
                        link.workspace_id.as_uuid(),
                        link.user_id.as_uuid(),
                        link.purpose.as_str(),
                        now.millis()
                    ],
                )
                .db()?;
                insert_link_row(c, &link)
            })
            .await
    }

    async fn use_link(
        &self,
        workspace: WorkspaceId,
        link_hash: &[u8],
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<LoginLink>> {
        let link_hash = link_hash.to_vec();
        self.db
            .write(move |c| {
                c.query_row(
                    "update login_link set used_at = ?4
                     where workspace_id = ?1 and link_hash = ?2 and purpose = ?3 and used_at is null and expires_at > ?4
                     returning user_id, flow_id, created_at, expires_at, amr, user_revision, browser_hash",
                    params![workspace.as_uuid(), link_hash, purpose.as_str(), now.millis()],
                    |r| link_row(r, workspace, &link_hash, purpose),
                )
                .optional()
                .db()
            })
            .await
    }

    async fn find_link(
        &self,
        workspace: WorkspaceId,
        link_hash: &[u8],
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<LoginLink>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {LINK_COLUMNS} from login_link
                 where workspace_id = ?1 and link_hash = ?2 and purpose = ?3 and used_at is null and expires_at > ?4"
            ))
            .db()?
            .query_row(params![workspace.as_uuid(), link_hash, purpose.as_str(), now.millis()], |r| {
                link_row(r, workspace, link_hash, purpose)
            })
            .optional()
            .db()
        })
    }

    async fn insert_ceremony(&self, ceremony: &WebauthnCeremony) -> Result<()> {
        let w = ceremony.clone();
        self.db
            .write(move |c| {
                c.execute(
                    "insert into webauthn_ceremony
                       (ceremony_hash, workspace_id, user_id, purpose, state_sealed, created_at, expires_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        w.ceremony_hash,
                        w.workspace_id.as_uuid(),
                        w.user_id.map(|u| u.as_uuid()),
                        w.purpose.as_str(),
                        w.state_sealed,
                        w.created_at.millis(),
                        w.expires_at.millis(),
                    ],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn take_ceremony(
        &self,
        workspace: WorkspaceId,
        ceremony_hash: &[u8],
        purpose: CeremonyPurpose,
        now: Timestamp,
    ) -> Result<Option<WebauthnCeremony>> {
        let hash = ceremony_hash.to_vec();
        self.db
            .write(move |c| {
                // Taken whatever it is, so that a wrong purpose or an expired one cannot be retried.
                c.query_row(
                    "delete from webauthn_ceremony where workspace_id = ?1 and ceremony_hash = ?2
                     returning user_id, purpose, state_sealed, created_at, expires_at",
                    params![workspace.as_uuid(), hash],
                    |r| {
                        Ok((
                            r.get::<_, Option<uuid::Uuid>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()
                .db()
                .map(|row| {
                    row.filter(|(_, p, _, _, expires)| p == purpose.as_str() && *expires > now.millis())
                        .map(|(user, _, state_sealed, created, expires)| WebauthnCeremony {
                            ceremony_hash: hash.clone(),
                            workspace_id: workspace,
                            user_id: user.map(UserId::from),
                            purpose,
                            state_sealed,
                            created_at: Timestamp::from_millis(created),
                            expires_at: Timestamp::from_millis(expires),
                        })
                })
            })
            .await
    }
}
