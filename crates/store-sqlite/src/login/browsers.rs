//! Pending authorization requests (flows), browser sessions and the browsers a user signed in from.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use secureflows_core::store::BrowserStore;
use secureflows_core::{
    BrowserSession, BrowserSessionId, ConsoleSession, FlowId, LoginFlow, Result, SessionId, Timestamp,
    UserId, WorkspaceId,
};

use crate::data::{SqliteStore, origins_json};
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl BrowserStore for SqliteStore {
    async fn insert_flow(&self, flow: &LoginFlow) -> Result<()> {
        let request = request_json(&flow.request)?;
        let flow = flow.clone();
        self.db
            .write(move |c| {
                c.execute(
                    "insert into login_flow (workspace_id, flow_id, application_id, request, created_at, expires_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        flow.workspace_id.as_uuid(),
                        flow.id.as_uuid(),
                        flow.application_id.as_uuid(),
                        request,
                        flow.created_at.millis(),
                        flow.expires_at.millis()
                    ],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn find_flow(
        &self,
        workspace: WorkspaceId,
        id: FlowId,
        now: Timestamp,
    ) -> Result<Option<LoginFlow>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select flow_id, workspace_id, application_id, request, created_at, expires_at from login_flow
                 where workspace_id = ?1 and flow_id = ?2 and expires_at > ?3",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), id.as_uuid(), now.millis()], |r| {
                Ok(LoginFlow {
                    id: r.get::<_, uuid::Uuid>(0)?.into(),
                    workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
                    application_id: r.get::<_, uuid::Uuid>(2)?.into(),
                    request: request_from(&r.get::<_, String>(3)?)?,
                    created_at: Timestamp::from_millis(r.get(4)?),
                    expires_at: Timestamp::from_millis(r.get(5)?),
                })
            })
            .optional()
            .db()
        })
    }

    async fn delete_flow(&self, workspace: WorkspaceId, id: FlowId) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "delete from login_flow where workspace_id = ?1 and flow_id = ?2",
                    params![workspace.as_uuid(), id.as_uuid()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn insert_browser_session(&self, s: &BrowserSession) -> Result<()> {
        let s = s.clone();
        self.db
            .write(move |c| {
                c.execute(
                    &format!("insert into browser_session ({BROWSER_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                    params![
                        s.id.as_uuid(),
                        s.workspace_id.as_uuid(),
                        s.user_id.as_uuid(),
                        s.token_hash,
                        s.auth_time.millis(),
                        origins_json(&s.amr),
                        s.client_sealed,
                        s.created_at.millis(),
                        s.last_seen_at.millis(),
                        s.expires_at.millis(),
                        s.ended_at.map(|t| t.millis()),
                        s.revision,
                    ],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn find_browser_session(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<BrowserSession>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {BROWSER_COLUMNS} from browser_session
                 where workspace_id = ?1 and token_hash = ?2 and ended_at is null and expires_at > ?3"
            ))
            .db()?
            .query_row(
                params![workspace.as_uuid(), token_hash, now.millis()],
                browser_row,
            )
            .optional()
            .db()
        })
    }

    async fn list_browser_sessions(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<BrowserSession>> {
        self.db.read(|c| {
            c.prepare_cached(&format!(
                "select {BROWSER_COLUMNS} from browser_session
                 where workspace_id = ?1 and user_id = ?2 and ended_at is null and expires_at > ?3
                 order by created_at"
            ))
            .db()?
            .query_map(
                params![workspace.as_uuid(), user.as_uuid(), now.millis()],
                browser_row,
            )
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
    }

    async fn touch_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "update browser_session set last_seen_at = ?3 where workspace_id = ?1 and browser_session_id = ?2",
                    params![workspace.as_uuid(), id.as_uuid(), now.millis()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn set_browser_session_amr(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        amr: &[String],
    ) -> Result<()> {
        let amr = origins_json(amr);
        self.db
            .write(move |c| {
                c.execute(
                    "update browser_session set amr = ?3 where workspace_id = ?1 and browser_session_id = ?2",
                    params![workspace.as_uuid(), id.as_uuid(), amr],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn end_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<Vec<SessionId>> {
        self.db
            .write(move |c| {
                c.execute(
                    "update browser_session set ended_at = ?3
                     where workspace_id = ?1 and browser_session_id = ?2 and ended_at is null",
                    params![workspace.as_uuid(), id.as_uuid(), now.millis()],
                )
                .db()?;
                let sessions: Vec<SessionId> = c
                    .prepare_cached(
                        "select session_id from login_session
                         where workspace_id = ?1 and browser_session_id = ?2 and ended_at is null",
                    )
                    .db()?
                    .query_map(params![workspace.as_uuid(), id.as_uuid()], |r| {
                        r.get::<_, uuid::Uuid>(0).map(SessionId::from)
                    })
                    .db()?
                    .collect::<rusqlite::Result<_>>()
                    .db()?;
                for session in &sessions {
                    end_login_session(c, workspace, *session, now)?;
                }
                Ok(sessions)
            })
            .await
    }

    async fn remember_device(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        device_hash: &[u8],
        now: Timestamp,
    ) -> Result<bool> {
        let device_hash = device_hash.to_vec();
        self.db
            .write(move |c| {
                let known = c
                    .execute(
                        "update known_device set last_seen_at = ?4
                         where workspace_id = ?1 and user_id = ?2 and device_hash = ?3",
                        params![workspace.as_uuid(), user.as_uuid(), device_hash, now.millis()],
                    )
                    .db()?;
                if known > 0 {
                    return Ok(false);
                }
                c.execute(
                    "insert into known_device (workspace_id, user_id, device_hash, first_seen_at, last_seen_at)
                     values (?1, ?2, ?3, ?4, ?4)",
                    params![workspace.as_uuid(), user.as_uuid(), device_hash, now.millis()],
                )
                .db()?;
                Ok(true)
            })
            .await
    }

    async fn put_console_session(&self, session: &ConsoleSession) -> Result<()> {
        let s = session.clone();
        self.db
            .write(move |c| {
                c.execute(
                    "insert into console_session (workspace_id, session_hash, user_id, tokens_sealed, created_at, expires_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6)
                     on conflict (workspace_id, session_hash) do update
                     set user_id = excluded.user_id, tokens_sealed = excluded.tokens_sealed,
                         expires_at = excluded.expires_at",
                    params![
                        s.workspace_id.as_uuid(),
                        s.session_hash,
                        s.user_id.as_uuid(),
                        s.tokens_sealed,
                        s.created_at.millis(),
                        s.expires_at.millis(),
                    ],
                )
                .db()
                .map(|_| ())
            })
            .await
    }

    async fn find_console_session(
        &self,
        workspace: WorkspaceId,
        session_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select workspace_id, session_hash, user_id, tokens_sealed, created_at, expires_at from console_session
                 where workspace_id = ?1 and session_hash = ?2 and expires_at > ?3",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), session_hash, now.millis()], |r| {
                Ok(ConsoleSession {
                    workspace_id: r.get::<_, uuid::Uuid>(0)?.into(),
                    session_hash: r.get(1)?,
                    user_id: r.get::<_, uuid::Uuid>(2)?.into(),
                    tokens_sealed: r.get(3)?,
                    created_at: Timestamp::from_millis(r.get(4)?),
                    expires_at: Timestamp::from_millis(r.get(5)?),
                })
            })
            .optional()
            .db()
        })
    }

    async fn delete_console_session(&self, workspace: WorkspaceId, session_hash: &[u8]) -> Result<bool> {
        let hash = session_hash.to_vec();
        self.db
            .write(move |c| {
                c.execute(
                    "delete from console_session where workspace_id = ?1 and session_hash = ?2",
                    params![workspace.as_uuid(), hash],
                )
                .db()
                .map(|n| n == 1)
            })
            .await
    }

    async fn purge_login_state(&self, before: Timestamp) -> Result<u64> {
        self.db
            .write(move |c| {
                let mut n = 0;
                for table in [
                    "login_flow",
                    "authorization_code",
                    "refresh_token",
                    "browser_session",
                    "login_link",
                    "webauthn_ceremony",
                    "console_session",
                    "setup_token",
                ] {
                    n += c
                        .execute(
                            &format!("delete from {table} where expires_at < ?1"),
                            params![before.millis()],
                        )
                        .db()?;
                }
                // A rotated token's successor is handed again only within the grace window.
                c.execute(
                    "update refresh_token set successor_sealed = null
                     where successor_sealed is not null and rotated_at < ?1",
                    params![before.millis()],
                )
                .db()?;
                Ok(n as u64)
            })
            .await
    }
}
