//! Hosted login state: passwords, sign-in throttling, pending requests, browser sessions, codes and
//! refresh tokens. Every statement runs in its workspace's tenant transaction (row-level security).

use async_trait::async_trait;
use secureflows_core::store::{AttemptGate, CodeRedemption, LoginStore, RefreshRotation};
use secureflows_core::{
    AuthorizationCode, AuthorizationRequest, BrowserSession, BrowserSessionId, CeremonyPurpose, Error,
    FamilyId, FlowId, IdentityProvider, Invalidation, LinkPurpose, LoginFlow, LoginLink, PasskeyId,
    PasskeyRecord, ProviderKind, RefreshToken, Result, SessionId, Timestamp, TotpEnrolment, UserId,
    WebauthnCeremony, WorkspaceId,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::data::{PgStore, from_ts, record_invalidation, ts};
use crate::error::SqlResult;

fn request_json(request: &AuthorizationRequest) -> Result<String> {
    serde_json::to_string(request).map_err(|_| Error::internal("encoding a request"))
}

fn request_from(text: &str) -> Result<AuthorizationRequest> {
    serde_json::from_str(text).map_err(|_| Error::Integrity("request"))
}

fn amr_json(amr: &[String]) -> String {
    serde_json::Value::from(amr.to_vec()).to_string()
}

fn amr_from(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| Error::Integrity("amr"))
}

fn opt_ts(r: &PgRow, column: &str) -> Result<Option<Timestamp>> {
    Ok(r.try_get::<Option<OffsetDateTime>, _>(column).db()?.map(from_ts))
}

fn passkey_row(r: &PgRow) -> Result<PasskeyRecord> {
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

const BROWSER_COLUMNS: &str = "browser_session_id, workspace_id, user_id, token_hash, auth_time, amr, client_sealed, \
                               created_at, last_seen_at, expires_at, ended_at, revision";

fn browser_row(r: &PgRow) -> Result<BrowserSession> {
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

const CODE_COLUMNS: &str = "code_hash, workspace_id, application_id, user_id, browser_session_id, request, auth_time, \
                            amr, created_at, expires_at";

fn code_row(r: &PgRow) -> Result<AuthorizationCode> {
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

const REFRESH_COLUMNS: &str = "token_hash, workspace_id, family_id, application_id, user_id, login_session_id, scope, \
                               auth_time, amr, created_at, expires_at, rotated_at, revoked_at";

fn refresh_row(r: &PgRow) -> Result<RefreshToken> {
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

fn link_row(r: &PgRow, workspace: WorkspaceId, link_hash: &[u8], purpose: LinkPurpose) -> Result<LoginLink> {
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

async fn insert_link_row(c: &mut PgConnection, link: &LoginLink) -> Result<()> {
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

#[async_trait]
impl LoginStore for PgStore {
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

    async fn insert_flow(&self, flow: &LoginFlow) -> Result<()> {
        self.tenant_execute(
            flow.workspace_id,
            sqlx::query(
                "insert into login_flow (workspace_id, flow_id, application_id, request, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(flow.workspace_id.as_uuid())
            .bind(flow.id.as_uuid())
            .bind(flow.application_id.as_uuid())
            .bind(request_json(&flow.request)?)
            .bind(ts(flow.created_at))
            .bind(ts(flow.expires_at)),
        )
        .await
        .map(|_| ())
    }

    async fn find_flow(
        &self,
        workspace: WorkspaceId,
        id: FlowId,
        now: Timestamp,
    ) -> Result<Option<LoginFlow>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select flow_id, workspace_id, application_id, request, created_at, expires_at from login_flow
                     where workspace_id = $1 and flow_id = $2 and expires_at > $3",
                )
                .bind(workspace.as_uuid())
                .bind(id.as_uuid())
                .bind(ts(now)),
            )
            .await?;
        row.map(|r| {
            Ok(LoginFlow {
                id: FlowId::from_uuid(r.try_get("flow_id").db()?),
                workspace_id: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
                application_id: r.try_get::<Uuid, _>("application_id").db()?.into(),
                request: request_from(r.try_get("request").db()?)?,
                created_at: from_ts(r.try_get("created_at").db()?),
                expires_at: from_ts(r.try_get("expires_at").db()?),
            })
        })
        .transpose()
    }

    async fn delete_flow(&self, workspace: WorkspaceId, id: FlowId) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query("delete from login_flow where workspace_id = $1 and flow_id = $2")
                .bind(workspace.as_uuid())
                .bind(id.as_uuid()),
        )
        .await
        .map(|_| ())
    }

    async fn insert_browser_session(&self, s: &BrowserSession) -> Result<()> {
        self.tenant_execute(
            s.workspace_id,
            sqlx::query(&format!(
                "insert into browser_session ({BROWSER_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(s.id.as_uuid())
            .bind(s.workspace_id.as_uuid())
            .bind(s.user_id.as_uuid())
            .bind(&s.token_hash)
            .bind(ts(s.auth_time))
            .bind(amr_json(&s.amr))
            .bind(&s.client_sealed)
            .bind(ts(s.created_at))
            .bind(ts(s.last_seen_at))
            .bind(ts(s.expires_at))
            .bind(s.ended_at.map(ts))
            .bind(s.revision),
        )
        .await
        .map(|_| ())
    }

    async fn find_browser_session(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<BrowserSession>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {BROWSER_COLUMNS} from browser_session
                 where workspace_id = $1 and token_hash = $2 and ended_at is null and expires_at > $3"
            ))
            .bind(workspace.as_uuid())
            .bind(token_hash)
            .bind(ts(now)),
        )
        .await?
        .as_ref()
        .map(browser_row)
        .transpose()
    }

    async fn list_browser_sessions(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<BrowserSession>> {
        self.tenant_fetch_all(
            workspace,
            sqlx::query(&format!(
                "select {BROWSER_COLUMNS} from browser_session
                 where workspace_id = $1 and user_id = $2 and ended_at is null and expires_at > $3
                 order by created_at"
            ))
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .bind(ts(now)),
        )
        .await?
        .iter()
        .map(browser_row)
        .collect()
    }

    async fn touch_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query("update browser_session set last_seen_at = $3 where workspace_id = $1 and browser_session_id = $2")
                .bind(workspace.as_uuid())
                .bind(id.as_uuid())
                .bind(ts(now)),
        )
        .await
        .map(|_| ())
    }

    async fn set_browser_session_amr(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        amr: &[String],
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update browser_session set amr = $3 where workspace_id = $1 and browser_session_id = $2",
            )
            .bind(workspace.as_uuid())
            .bind(id.as_uuid())
            .bind(amr_json(amr)),
        )
        .await
        .map(|_| ())
    }

    async fn end_browser_session(
        &self,
        workspace: WorkspaceId,
        id: BrowserSessionId,
        now: Timestamp,
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.tenant(workspace).await?;
        sqlx::query(
            "update browser_session set ended_at = $3
             where workspace_id = $1 and browser_session_id = $2 and ended_at is null",
        )
        .bind(workspace.as_uuid())
        .bind(id.as_uuid())
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .db()?;
        let sessions: Vec<Uuid> = sqlx::query_scalar(
            "select session_id from login_session
             where workspace_id = $1 and browser_session_id = $2 and ended_at is null",
        )
        .bind(workspace.as_uuid())
        .bind(id.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let sessions: Vec<SessionId> = sessions.into_iter().map(SessionId::from_uuid).collect();
        for session in &sessions {
            end_login_session(&mut tx, workspace, *session, now).await?;
        }
        tx.commit().await.db()?;
        Ok(sessions)
    }

    async fn insert_code(&self, code: &AuthorizationCode) -> Result<()> {
        self.tenant_execute(
            code.workspace_id,
            sqlx::query(&format!(
                "insert into authorization_code ({CODE_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&code.code_hash)
            .bind(code.workspace_id.as_uuid())
            .bind(code.application_id.as_uuid())
            .bind(code.user_id.as_uuid())
            .bind(code.browser_session_id.as_uuid())
            .bind(request_json(&code.request)?)
            .bind(ts(code.auth_time))
            .bind(amr_json(&code.amr))
            .bind(ts(code.created_at))
            .bind(ts(code.expires_at)),
        )
        .await
        .map(|_| ())
    }

    async fn redeem_code(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        now: Timestamp,
    ) -> Result<CodeRedemption> {
        let mut tx = self.tenant(workspace).await?;
        // Row lock: of two concurrent redemptions, the second sees the first's used_at.
        let row = sqlx::query(&format!(
            "select {CODE_COLUMNS}, used_at, login_session_id from authorization_code
             where workspace_id = $1 and code_hash = $2 for update"
        ))
        .bind(workspace.as_uuid())
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let outcome = match row {
            None => CodeRedemption::Invalid,
            Some(r) => {
                let used: Option<OffsetDateTime> = r.try_get("used_at").db()?;
                let session: Option<Uuid> = r.try_get("login_session_id").db()?;
                let code = code_row(&r)?;
                if used.is_some() {
                    CodeRedemption::Replayed(session.map(SessionId::from_uuid))
                } else if code.expires_at <= now {
                    CodeRedemption::Invalid
                } else {
                    sqlx::query("update authorization_code set used_at = $3 where workspace_id = $1 and code_hash = $2")
                        .bind(workspace.as_uuid())
                        .bind(code_hash)
                        .bind(ts(now))
                        .execute(&mut *tx)
                        .await
                        .db()?;
                    CodeRedemption::Fresh(code)
                }
            }
        };
        tx.commit().await.db()?;
        Ok(outcome)
    }

    async fn attach_code_session(
        &self,
        workspace: WorkspaceId,
        code_hash: &[u8],
        session: SessionId,
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update authorization_code set login_session_id = $3 where workspace_id = $1 and code_hash = $2",
            )
            .bind(workspace.as_uuid())
            .bind(code_hash)
            .bind(session.as_uuid()),
        )
        .await
        .map(|_| ())
    }

    async fn insert_refresh(&self, t: &RefreshToken) -> Result<()> {
        let mut tx = self.tenant(t.workspace_id).await?;
        insert_refresh_row(&mut tx, t).await?;
        tx.commit().await.db()
    }

    async fn rotate_refresh(
        &self,
        workspace: WorkspaceId,
        token_hash: &[u8],
        successor: &RefreshToken,
        successor_sealed: &[u8],
        now: Timestamp,
    ) -> Result<RefreshRotation> {
        let mut tx = self.tenant(workspace).await?;
        // SECURITY: check-then-act in one statement (the row lock orders concurrent rotations).
        let rotated = sqlx::query(
            "update refresh_token set rotated_at = $3, successor_sealed = $4
             where workspace_id = $1 and token_hash = $2
               and rotated_at is null and revoked_at is null and expires_at > $3",
        )
        .bind(workspace.as_uuid())
        .bind(token_hash)
        .bind(ts(now))
        .bind(successor_sealed)
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected();
        if rotated == 0 {
            return Ok(RefreshRotation::NotCurrent);
        }
        insert_refresh_row(&mut tx, successor).await?;
        tx.commit().await.db()?;
        Ok(RefreshRotation::Rotated)
    }

    async fn refresh_successor(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<Vec<u8>>> {
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "select successor_sealed from refresh_token where workspace_id = $1 and token_hash = $2",
                )
                .bind(workspace.as_uuid())
                .bind(token_hash),
            )
            .await?;
        match row {
            Some(r) => r.try_get::<Option<Vec<u8>>, _>(0).db(),
            None => Ok(None),
        }
    }

    async fn find_refresh(&self, workspace: WorkspaceId, token_hash: &[u8]) -> Result<Option<RefreshToken>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(&format!(
                "select {REFRESH_COLUMNS} from refresh_token where workspace_id = $1 and token_hash = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(token_hash),
        )
        .await?
        .as_ref()
        .map(refresh_row)
        .transpose()
    }

    async fn revoke_family(&self, workspace: WorkspaceId, family: FamilyId, now: Timestamp) -> Result<()> {
        let mut tx = self.tenant(workspace).await?;
        let sessions: Vec<Uuid> = sqlx::query_scalar(
            "update refresh_token set revoked_at = coalesce(revoked_at, $3)
             where workspace_id = $1 and family_id = $2 returning login_session_id",
        )
        .bind(workspace.as_uuid())
        .bind(family.as_uuid())
        .bind(ts(now))
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let mut sessions: Vec<SessionId> = sessions.into_iter().map(SessionId::from_uuid).collect();
        sessions.sort();
        sessions.dedup();
        for session in sessions {
            end_login_session(&mut tx, workspace, session, now).await?;
        }
        tx.commit().await.db()
    }

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

    async fn remember_device(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        device_hash: &[u8],
        now: Timestamp,
    ) -> Result<bool> {
        // `xmax = 0` only for a freshly inserted row.
        let row = self
            .tenant_fetch_optional(
                workspace,
                sqlx::query(
                    "insert into known_device (workspace_id, user_id, device_hash, first_seen_at, last_seen_at)
                     values ($1, $2, $3, $4, $4)
                     on conflict (workspace_id, user_id, device_hash) do update set last_seen_at = excluded.last_seen_at
                     returning (xmax = 0) as inserted",
                )
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(device_hash)
                .bind(ts(now)),
            )
            .await?;
        Ok(row
            .map(|r| r.try_get::<bool, _>("inserted"))
            .transpose()
            .db()?
            .unwrap_or(false))
    }

    async fn extend_session(
        &self,
        workspace: WorkspaceId,
        session: SessionId,
        expires_at: Timestamp,
    ) -> Result<()> {
        self.tenant_execute(
            workspace,
            sqlx::query(
                "update login_session set expires_at = greatest(expires_at, $3)
                 where workspace_id = $1 and session_id = $2 and ended_at is null",
            )
            .bind(workspace.as_uuid())
            .bind(session.as_uuid())
            .bind(ts(expires_at)),
        )
        .await
        .map(|_| ())
    }

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

    async fn purge_login_state(&self, before: Timestamp) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("select secureflows_purge_login_state($1)")
            .bind(ts(before))
            .fetch_one(&self.pool)
            .await
            .db()?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

async fn insert_refresh_row(tx: &mut sqlx::PgConnection, t: &RefreshToken) -> Result<()> {
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
