//! Authorization codes and refresh tokens (and the login sessions a refresh extends).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use secureflows_core::store::{CodeRedemption, GrantStore, RefreshRotation};
use secureflows_core::{
    AuthorizationCode, FamilyId, RefreshToken, Result, SessionId, Timestamp, WorkspaceId,
};

use crate::data::{SqliteStore, origins_json};
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl GrantStore for SqliteStore {
    async fn insert_code(&self, code: &AuthorizationCode) -> Result<()> {
        let request = request_json(&code.request)?;
        let code = code.clone();
        self.db
            .write(move |c| {
                c.execute(
                    &format!("insert into authorization_code ({CODE_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                    params![
                        code.code_hash,
                        code.workspace_id.as_uuid(),
                        code.application_id.as_uuid(),
                        code.user_id.as_uuid(),
                        code.browser_session_id.as_uuid(),
                        request,
                        code.auth_time.millis(),
                        origins_json(&code.amr),
                        code.created_at.millis(),
                        code.expires_at.millis(),
                    ],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn redeem_code(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        now: Timestamp,
    ) -> Result<CodeRedemption> {
        let code_hash = code_hash.to_vec();
        self.db
            .write(move |c| {
                let row: Option<(Option<i64>, Option<uuid::Uuid>, i64)> = c
                    .query_row(
                        "select used_at, login_session_id, expires_at from authorization_code
                         where workspace_id = ?1 and code_hash = ?2",
                        params![workspace.as_uuid(), code_hash],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .db()?;
                match row {
                    None => Ok(CodeRedemption::Invalid),
                    Some((Some(_), session, _)) => Ok(CodeRedemption::Replayed(session.map(SessionId::from))),
                    Some((None, _, expires)) if expires <= now.millis() => Ok(CodeRedemption::Invalid),
                    Some((None, _, _)) => {
                        c.execute(
                            "update authorization_code set used_at = ?3 where workspace_id = ?1 and code_hash = ?2",
                            params![workspace.as_uuid(), code_hash, now.millis()],
                        )
                        .db()?;
                        let code = c
                            .query_row(
                                &format!(
                                    "select {CODE_COLUMNS} from authorization_code
                                     where workspace_id = ?1 and code_hash = ?2"
                                ),
                                params![workspace.as_uuid(), code_hash],
                                code_row,
                            )
                            .db()?;
                        Ok(CodeRedemption::Fresh(code))
                    }
                }
            })
            .await
    }

    async fn attach_code_session(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        session: SessionId,
    ) -> Result<()> {
        let code_hash = code_hash.to_vec();
        self.db
            .write(move |c| {
                c.execute(
                    "update authorization_code set login_session_id = ?3 where workspace_id = ?1 and code_hash = ?2",
                    params![workspace.as_uuid(), code_hash, session.as_uuid()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn insert_refresh(&self, t: &RefreshToken) -> Result<()> {
        let t = t.clone();
        self.db.write(move |c| insert_refresh_row(c, &t)).await
    }

    async fn rotate_refresh(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        successor: &RefreshToken,
        successor_sealed: &[u8],
        now: Timestamp,
    ) -> Result<RefreshRotation> {
        let (token_hash, successor, sealed) =
            (token_hash.to_vec(), successor.clone(), successor_sealed.to_vec());
        self.db
            .write(move |c| {
                // SECURITY: check-then-act in one statement: of concurrent rotations, one wins.
                let rotated = c
                    .execute(
                        "update refresh_token set rotated_at = ?3, successor_sealed = ?4
                         where workspace_id = ?1 and token_hash = ?2
                           and rotated_at is null and revoked_at is null and expires_at > ?3",
                        params![workspace.as_uuid(), token_hash, now.millis(), sealed],
                    )
                    .db()?;
                if rotated == 0 {
                    return Ok(RefreshRotation::NotCurrent);
                }
                insert_refresh_row(c, &successor)?;
                Ok(RefreshRotation::Rotated)
            })
            .await
    }

    async fn refresh_successor(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select successor_sealed from refresh_token where workspace_id = ?1 and token_hash = ?2",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), token_hash], |r| {
                r.get::<_, Option<Vec<u8>>>(0)
            })
            .optional()
            .db()
            .map(Option::flatten)
        })
    }

    async fn find_refresh(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<RefreshToken>> {
        self.db.read(|c| find_refresh_in(c, workspace, token_hash))
    }

    async fn revoke_family(&self, workspace: WorkspaceId, family: FamilyId, now: Timestamp) -> Result<()> {
        self.db
            .write(move |c| {
                let sessions: Vec<SessionId> = c
                    .prepare_cached(
                        "select distinct login_session_id from refresh_token where workspace_id = ?1 and family_id = ?2",
                    )
                    .db()?
                    .query_map(params![workspace.as_uuid(), family.as_uuid()], |r| {
                        r.get::<_, uuid::Uuid>(0).map(SessionId::from)
                    })
                    .db()?
                    .collect::<rusqlite::Result<_>>()
                    .db()?;
                c.execute(
                    "update refresh_token set revoked_at = ?3
                     where workspace_id = ?1 and family_id = ?2 and revoked_at is null",
                    params![workspace.as_uuid(), family.as_uuid(), now.millis()],
                )
                .db()?;
                for session in sessions {
                    end_login_session(c, workspace, session, now)?;
                }
                Ok(())
            })
            .await
    }

    async fn extend_session(
        &self,
        workspace: WorkspaceId,
        session: SessionId,
        expires_at: Timestamp,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "update login_session set expires_at = max(expires_at, ?3)
                     where workspace_id = ?1 and session_id = ?2 and ended_at is null",
                    params![workspace.as_uuid(), session.as_uuid(), expires_at.millis()],
                )
                .db()?;
                Ok(())
            })
            .await
    }
}
