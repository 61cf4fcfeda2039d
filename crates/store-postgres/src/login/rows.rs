//! Rows of the hosted login's tables: readers, writers and the helpers the stores share.

use secureflows_core::{
    AuthorizationCode, AuthorizationRequest, BrowserSession, BrowserSessionId, Error, FamilyId, FlowId,
    Invalidation, LinkPurpose, LoginLink, PasskeyRecord, RefreshToken, Result, SessionId, Timestamp, UserId,
    WorkspaceId,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::data::{from_ts, record_invalidation, ts};
use crate::error::SqlResult;

pub(super) fn request_json(request: &AuthorizationRequest) -> Result<String> {
    serde_json::to_string(request).map_err(|_| Error::internal("encoding a request"))
}

pub(super) fn request_from(text: &str) -> Result<AuthorizationRequest> {
    serde_json::from_str(text).map_err(|_| Error::Integrity("request"))
}

pub(super) fn amr_json(amr: &[String]) -> String {
    serde_json::Value::from(amr.to_vec()).to_string()
}

pub(super) fn amr_from(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| Error::Integrity("amr"))
}

pub(super) fn opt_ts(r: &PgRow, column: &str) -> Result<Option<Timestamp>> {
    Ok(r.try_get::<Option<OffsetDateTime>, _>(column).db()?.map(from_ts))
}

pub(super) fn passkey_row(r: &PgRow) -> Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: r.try_get::<Uuid, _>("passkey_id").db()?.into(),
        workspace_id: r.try_get::<Uuid, _>("workspace_id").db()?.into(),
        user_id: r.try_get::<Uuid, _>("user_id").db()?.into(),
        credential_hash: r.try_get("credential_hash").db()?,
        sealed: r.try_get("sealed").db()?,
        created_at: from_ts(r.try_get("created_at").db()?),
        last_used_at: opt_ts(r, "last_used_at")?,
    })
}

pub(super) const BROWSER_COLUMNS: &str = "browser_session_id, workspace_id, user_id, token_hash, auth_time, amr, client_sealed, \
                               created_at, last_seen_at, expires_at, ended_at, revision";

pub(super) fn browser_row(r: &PgRow) -> Result<BrowserSession> {
    Ok(BrowserSession {
        id: BrowserSessionId::from_uuid(r.try_get("browser_session_id").db()?),
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        user_id: UserId::from_uuid(r.try_get("user_id").db()?),
        token_hash: r.try_get("token_hash").db()?,
        auth_time: from_ts(r.try_get("auth_time").db()?),
        amr: amr_from(r.try_get("amr").db()?)?,
        client_sealed: r.try_get("client_sealed").db()?,
        created_at: from_ts(r.try_get("created_at").db()?),
        last_seen_at: from_ts(r.try_get("last_seen_at").db()?),
        expires_at: from_ts(r.try_get("expires_at").db()?),
        ended_at: opt_ts(r, "ended_at")?,
        revision: r.try_get("revision").db()?,
    })
}

pub(super) const CODE_COLUMNS: &str = "code_hash, workspace_id, application_id, user_id, browser_session_id, request, auth_time, \
                            amr, created_at, expires_at";

pub(super) fn code_row(r: &PgRow) -> Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: r.try_get("code_hash").db()?,
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        application_id: r.try_get::<Uuid, _>("application_id").db()?.into(),
        user_id: UserId::from_uuid(r.try_get("user_id").db()?),
        browser_session_id: BrowserSessionId::from_uuid(r.try_get("browser_session_id").db()?),
        request: request_from(r.try_get("request").db()?)?,
        auth_time: from_ts(r.try_get("auth_time").db()?),
        amr: amr_from(r.try_get("amr").db()?)?,
        created_at: from_ts(r.try_get("created_at").db()?),
        expires_at: from_ts(r.try_get("expires_at").db()?),
    })
}

pub(super) const REFRESH_COLUMNS: &str = "token_hash, workspace_id, family_id, application_id, user_id, login_session_id, scope, \
                               auth_time, amr, created_at, expires_at, rotated_at, revoked_at";

pub(super) fn refresh_row(r: &PgRow) -> Result<RefreshToken> {
    Ok(RefreshToken {
        token_hash: r.try_get("token_hash").db()?,
        workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        family_id: FamilyId::from_uuid(r.try_get("family_id").db()?),
        application_id: r.try_get::<Uuid, _>("application_id").db()?.into(),
        user_id: UserId::from_uuid(r.try_get("user_id").db()?),
        login_session_id: SessionId::from_uuid(r.try_get("login_session_id").db()?),
        scope: r.try_get("scope").db()?,
        auth_time: from_ts(r.try_get("auth_time").db()?),
        amr: amr_from(r.try_get("amr").db()?)?,
        created_at: from_ts(r.try_get("created_at").db()?),
        expires_at: from_ts(r.try_get("expires_at").db()?),
        rotated_at: opt_ts(r, "rotated_at")?,
        revoked_at: opt_ts(r, "revoked_at")?,
    })
}

pub(super) fn link_row(
    r: &PgRow,
    workspace: WorkspaceId,
    link_hash: &[u8],
    purpose: LinkPurpose,
) -> Result<LoginLink> {
    Ok(LoginLink {
        link_hash: link_hash.to_vec(),
        workspace_id: workspace,
        purpose,
        user_id: UserId::from_uuid(r.try_get("user_id").db()?),
        flow_id: r
            .try_get::<Option<Uuid>, _>("flow_id")
            .db()?
            .map(FlowId::from_uuid),
        created_at: from_ts(r.try_get("created_at").db()?),
        expires_at: from_ts(r.try_get("expires_at").db()?),
        amr: amr_from(r.try_get("amr").db()?)?,
        revision: r.try_get("user_revision").db()?,
        browser: r.try_get("browser_hash").db()?,
    })
}

pub(super) async fn insert_link_row(c: &mut PgConnection, link: &LoginLink) -> Result<()> {
    sqlx::query(
        "insert into login_link (workspace_id, link_hash, purpose, user_id, flow_id, created_at, expires_at, amr,
                                 user_revision, browser_hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(link.workspace_id.as_uuid())
    .bind(&link.link_hash)
    .bind(link.purpose.as_str())
    .bind(link.user_id.as_uuid())
    .bind(link.flow_id.map(|f| f.as_uuid()))
    .bind(ts(link.created_at))
    .bind(ts(link.expires_at))
    .bind(amr_json(&link.amr))
    .bind(link.revision)
    .bind(&link.browser)
    .execute(&mut *c)
    .await
    .db()?;
    Ok(())
}

/// Ends a login session with its refresh tokens (every way a session ends goes through here) and
/// records the invalidation. Returns whether the session was still open.
pub(crate) async fn end_login_session(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    session: SessionId,
    now: Timestamp,
) -> Result<bool> {
    sqlx::query(
        "update refresh_token set revoked_at = $3
         where workspace_id = $1 and login_session_id = $2 and revoked_at is null",
    )
    .bind(workspace.as_uuid())
    .bind(session.as_uuid())
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?;
    let n = sqlx::query(
        "update login_session set ended_at = $3 where workspace_id = $1 and session_id = $2 and ended_at is null",
    )
    .bind(workspace.as_uuid())
    .bind(session.as_uuid())
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?
    .rows_affected();
    record_invalidation(c, Invalidation::Session(workspace, session)).await?;
    Ok(n > 0)
}

/// Sets or replaces a member's password hash; returns 0 if the user does not exist.
pub(crate) async fn write_password(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    user: UserId,
    phc: &str,
    now: Timestamp,
) -> Result<u64> {
    Ok(sqlx::query(
        "insert into password_credential (workspace_id, user_id, phc, created_at, updated_at)
         select workspace_id, user_id, $3, $4, $4 from user_account where workspace_id = $1 and user_id = $2
         on conflict (workspace_id, user_id) do update set phc = excluded.phc, updated_at = excluded.updated_at",
    )
    .bind(workspace.as_uuid())
    .bind(user.as_uuid())
    .bind(phc)
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?
    .rows_affected())
}

pub(super) async fn insert_refresh_row(tx: &mut sqlx::PgConnection, t: &RefreshToken) -> Result<()> {
    sqlx::query(&format!(
        "insert into refresh_token ({REFRESH_COLUMNS})
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(&t.token_hash)
    .bind(t.workspace_id.as_uuid())
    .bind(t.family_id.as_uuid())
    .bind(t.application_id.as_uuid())
    .bind(t.user_id.as_uuid())
    .bind(t.login_session_id.as_uuid())
    .bind(&t.scope)
    .bind(ts(t.auth_time))
    .bind(amr_json(&t.amr))
    .bind(ts(t.created_at))
    .bind(ts(t.expires_at))
    .bind(t.rotated_at.map(ts))
    .bind(t.revoked_at.map(ts))
    .execute(&mut *tx)
    .await
    .db()?;
    Ok(())
}
