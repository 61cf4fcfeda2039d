//! Rows of the hosted login's tables: readers, writers and the helpers the stores share.

use rusqlite::{Connection, OptionalExtension, Row, params};
use secureflows_core::{
    AuthorizationCode, AuthorizationRequest, BrowserSession, Invalidation, LinkPurpose, LoginLink,
    PasskeyRecord, RefreshToken, Result, SessionId, Timestamp, UserId, WorkspaceId,
};

use crate::data::{bad_column, json_list, origins_json, record_invalidation};
use crate::error::SqlResult;

pub(super) fn request_json(request: &AuthorizationRequest) -> Result<String> {
    serde_json::to_string(request).map_err(|_| secureflows_core::Error::internal("encoding a request"))
}

pub(super) fn request_from(text: &str) -> rusqlite::Result<AuthorizationRequest> {
    serde_json::from_str(text).map_err(|_| bad_column("request"))
}

pub(super) fn millis(t: Option<i64>) -> Option<Timestamp> {
    t.map(Timestamp::from_millis)
}

pub(super) fn passkey_row(r: &Row<'_>) -> rusqlite::Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: r.get::<_, uuid::Uuid>(0)?.into(),
        workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
        user_id: r.get::<_, uuid::Uuid>(2)?.into(),
        credential_hash: r.get(3)?,
        sealed: r.get(4)?,
        created_at: Timestamp::from_millis(r.get(5)?),
        last_used_at: millis(r.get(6)?),
    })
}

pub(super) const BROWSER_COLUMNS: &str = "browser_session_id, workspace_id, user_id, token_hash, auth_time, amr, client_sealed, \
                               created_at, last_seen_at, expires_at, ended_at, revision";

pub(super) fn browser_row(r: &Row<'_>) -> rusqlite::Result<BrowserSession> {
    Ok(BrowserSession {
        id: r.get::<_, uuid::Uuid>(0)?.into(),
        workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
        user_id: r.get::<_, uuid::Uuid>(2)?.into(),
        token_hash: r.get(3)?,
        auth_time: Timestamp::from_millis(r.get(4)?),
        amr: json_list(&r.get::<_, String>(5)?, "amr")?,
        client_sealed: r.get(6)?,
        created_at: Timestamp::from_millis(r.get(7)?),
        last_seen_at: Timestamp::from_millis(r.get(8)?),
        expires_at: Timestamp::from_millis(r.get(9)?),
        ended_at: millis(r.get(10)?),
        revision: r.get(11)?,
    })
}

pub(super) const CODE_COLUMNS: &str = "code_hash, workspace_id, application_id, user_id, browser_session_id, request, auth_time, \
                            amr, created_at, expires_at";

pub(super) fn code_row(r: &Row<'_>) -> rusqlite::Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: r.get(0)?,
        workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
        application_id: r.get::<_, uuid::Uuid>(2)?.into(),
        user_id: r.get::<_, uuid::Uuid>(3)?.into(),
        browser_session_id: r.get::<_, uuid::Uuid>(4)?.into(),
        request: request_from(&r.get::<_, String>(5)?)?,
        auth_time: Timestamp::from_millis(r.get(6)?),
        amr: json_list(&r.get::<_, String>(7)?, "amr")?,
        created_at: Timestamp::from_millis(r.get(8)?),
        expires_at: Timestamp::from_millis(r.get(9)?),
    })
}

pub(super) const REFRESH_COLUMNS: &str = "token_hash, workspace_id, family_id, application_id, user_id, login_session_id, scope, \
                               auth_time, amr, created_at, expires_at, rotated_at, revoked_at";

pub(super) fn refresh_row(r: &Row<'_>) -> rusqlite::Result<RefreshToken> {
    Ok(RefreshToken {
        token_hash: r.get(0)?,
        workspace_id: r.get::<_, uuid::Uuid>(1)?.into(),
        family_id: r.get::<_, uuid::Uuid>(2)?.into(),
        application_id: r.get::<_, uuid::Uuid>(3)?.into(),
        user_id: r.get::<_, uuid::Uuid>(4)?.into(),
        login_session_id: r.get::<_, uuid::Uuid>(5)?.into(),
        scope: r.get(6)?,
        auth_time: Timestamp::from_millis(r.get(7)?),
        amr: json_list(&r.get::<_, String>(8)?, "amr")?,
        created_at: Timestamp::from_millis(r.get(9)?),
        expires_at: Timestamp::from_millis(r.get(10)?),
        rotated_at: millis(r.get(11)?),
        revoked_at: millis(r.get(12)?),
    })
}

pub(super) fn link_row(
    r: &Row<'_>,
    workspace: WorkspaceId,
    link_hash: &[u8],
    purpose: LinkPurpose,
) -> rusqlite::Result<LoginLink> {
    Ok(LoginLink {
        link_hash: link_hash.to_vec(),
        workspace_id: workspace,
        purpose,
        user_id: r.get::<_, uuid::Uuid>(0)?.into(),
        flow_id: r.get::<_, Option<uuid::Uuid>>(1)?.map(Into::into),
        created_at: Timestamp::from_millis(r.get(2)?),
        expires_at: Timestamp::from_millis(r.get(3)?),
        amr: json_list(&r.get::<_, String>(4)?, "amr")?,
        revision: r.get(5)?,
        browser: r.get(6)?,
    })
}

pub(super) const LINK_COLUMNS: &str =
    "user_id, flow_id, created_at, expires_at, amr, user_revision, browser_hash";

pub(super) fn insert_link_row(c: &Connection, link: &LoginLink) -> Result<()> {
    c.execute(
        "insert into login_link
           (workspace_id, link_hash, purpose, user_id, flow_id, created_at, expires_at, amr, user_revision,
            browser_hash)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            link.workspace_id.as_uuid(),
            link.link_hash,
            link.purpose.as_str(),
            link.user_id.as_uuid(),
            link.flow_id.map(|f| f.as_uuid()),
            link.created_at.millis(),
            link.expires_at.millis(),
            origins_json(&link.amr),
            link.revision,
            link.browser,
        ],
    )
    .db()?;
    Ok(())
}

pub(super) fn find_refresh_in(
    c: &Connection,
    workspace: WorkspaceId,
    hash: &[u8],
) -> Result<Option<RefreshToken>> {
    c.prepare_cached(&format!(
        "select {REFRESH_COLUMNS} from refresh_token where workspace_id = ?1 and token_hash = ?2"
    ))
    .db()?
    .query_row(params![workspace.as_uuid(), hash], refresh_row)
    .optional()
    .db()
}

/// Ends a login session with its refresh tokens (every way a session ends goes through here) and
/// records the invalidation. Returns whether the session was still open.
pub(crate) fn end_login_session(
    c: &Connection,
    workspace: WorkspaceId,
    session: SessionId,
    now: Timestamp,
) -> Result<bool> {
    c.execute(
        "update refresh_token set revoked_at = ?3
         where workspace_id = ?1 and login_session_id = ?2 and revoked_at is null",
        params![workspace.as_uuid(), session.as_uuid(), now.millis()],
    )
    .db()?;
    let n = c
        .execute(
            "update login_session set ended_at = ?3 where workspace_id = ?1 and session_id = ?2 and ended_at is null",
            params![workspace.as_uuid(), session.as_uuid(), now.millis()],
        )
        .db()?;
    record_invalidation(c, Invalidation::Session(workspace, session))?;
    Ok(n > 0)
}

/// Sets or replaces a member's password hash; returns 0 if the user does not exist.
pub(crate) fn write_password(
    c: &Connection,
    workspace: WorkspaceId,
    user: UserId,
    phc: &str,
    now: Timestamp,
) -> Result<usize> {
    c.execute(
        "insert into password_credential (workspace_id, user_id, phc, created_at, updated_at)
         select workspace_id, user_id, ?3, ?4, ?4 from user_account where workspace_id = ?1 and user_id = ?2
         on conflict (workspace_id, user_id) do update set phc = excluded.phc, updated_at = excluded.updated_at",
        params![workspace.as_uuid(), user.as_uuid(), phc, now.millis()],
    )
    .db()
}

pub(super) fn insert_refresh_row(c: &Connection, t: &RefreshToken) -> Result<()> {
    c.execute(
        &format!(
            "insert into refresh_token ({REFRESH_COLUMNS})
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            t.token_hash,
            t.workspace_id.as_uuid(),
            t.family_id.as_uuid(),
            t.application_id.as_uuid(),
            t.user_id.as_uuid(),
            t.login_session_id.as_uuid(),
            t.scope,
            t.auth_time.millis(),
            origins_json(&t.amr),
            t.created_at.millis(),
            t.expires_at.millis(),
            t.rotated_at.map(|x| x.millis()),
            t.revoked_at.map(|x| x.millis()),
        ],
    )
    .db()?;
    Ok(())
}
