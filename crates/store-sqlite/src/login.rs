//! Hosted login state: passwords, sign-in throttling, pending requests, browser sessions, codes and
//! refresh tokens.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use secureflows_core::store::{AttemptGate, CodeRedemption, LoginStore, RefreshRotation};
use secureflows_core::{
    AuthorizationCode, AuthorizationRequest, BrowserSession, BrowserSessionId, CeremonyPurpose, Error,
    FamilyId, FlowId, IdentityProvider, Invalidation, LinkPurpose, LoginFlow, LoginLink, PasskeyId,
    PasskeyRecord, ProviderKind, RefreshToken, Result, SessionId, Timestamp, TotpEnrolment, UserId,
    WebauthnCeremony, WorkspaceId,
};

use crate::data::{SqliteStore, bad_column, json_list, origins_json, record_invalidation};
use crate::error::SqlResult;

fn request_json(request: &AuthorizationRequest) -> Result<String> {
    serde_json::to_string(request).map_err(|_| secureflows_core::Error::internal("encoding a request"))
}

fn request_from(text: &str) -> rusqlite::Result<AuthorizationRequest> {
    serde_json::from_str(text).map_err(|_| bad_column("request"))
}

fn millis(t: Option<i64>) -> Option<Timestamp> {
    t.map(Timestamp::from_millis)
}

fn passkey_row(r: &Row<'_>) -> rusqlite::Result<PasskeyRecord> {
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

const BROWSER_COLUMNS: &str = "browser_session_id, workspace_id, user_id, token_hash, auth_time, amr, client_sealed, \
                               created_at, last_seen_at, expires_at, ended_at, revision";

fn browser_row(r: &Row<'_>) -> rusqlite::Result<BrowserSession> {
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

const CODE_COLUMNS: &str = "code_hash, workspace_id, application_id, user_id, browser_session_id, request, auth_time, \
                            amr, created_at, expires_at";

fn code_row(r: &Row<'_>) -> rusqlite::Result<AuthorizationCode> {
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

const REFRESH_COLUMNS: &str = "token_hash, workspace_id, family_id, application_id, user_id, login_session_id, scope, \
                               auth_time, amr, created_at, expires_at, rotated_at, revoked_at";

fn refresh_row(r: &Row<'_>) -> rusqlite::Result<RefreshToken> {
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

fn link_row(
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

const LINK_COLUMNS: &str = "user_id, flow_id, created_at, expires_at, amr, user_revision, browser_hash";

fn insert_link_row(c: &Connection, link: &LoginLink) -> Result<()> {
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

fn find_refresh_in(c: &Connection, workspace: WorkspaceId, hash: &[u8]) -> Result<Option<RefreshToken>> {
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

#[async_trait]
impl LoginStore for SqliteStore {
    async fn find_password(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<String>> {
        self.db.read(|c| {
            c.prepare_cached("select phc from password_credential where workspace_id = ?1 and user_id = ?2")
                .db()?
                .query_row(params![workspace.as_uuid(), user.as_uuid()], |r| r.get(0))
                .optional()
                .db()
        })
    }

    async fn set_password(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        phc: &str,
        now: Timestamp,
    ) -> Result<()> {
        let phc = phc.to_owned();
        self.db
            .write(move |c| {
                write_password(c, workspace, user, &phc, now)?;
                Ok(())
            })
            .await
    }

    async fn begin_attempt(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        max_failures: u32,
        now: Timestamp,
    ) -> Result<AttemptGate> {
        self.db
            .write(move |c| {
                // An expired lock starts a fresh count; an active lock or an exhausted count refuses.
                let n = c
                    .execute(
                        "update user_account set
                           failed_sign_ins = case when sign_in_locked_until is not null then 1
                                                  else failed_sign_ins + 1 end,
                           sign_in_locked_until = null
                         where workspace_id = ?1 and user_id = ?2
                           and ((sign_in_locked_until is not null and sign_in_locked_until <= ?4)
                                or (sign_in_locked_until is null and failed_sign_ins < ?3))",
                        params![workspace.as_uuid(), user.as_uuid(), max_failures, now.millis()],
                    )
                    .db()?;
                if n > 0 {
                    return Ok(AttemptGate::Proceed);
                }
                let until: Option<Option<i64>> = c
                    .query_row(
                        "select sign_in_locked_until from user_account where workspace_id = ?1 and user_id = ?2",
                        params![workspace.as_uuid(), user.as_uuid()],
                        |r| r.get(0),
                    )
                    .optional()
                    .db()?;
                // Exhausted but not yet locked (a parallel attempt is still being verified): refuse as
                // locked for now.
                Ok(AttemptGate::Locked(
                    until.flatten().map_or(now, Timestamp::from_millis),
                ))
            })
            .await
    }

    async fn lock_if_exhausted(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        max_failures: u32,
        until: Timestamp,
    ) -> Result<bool> {
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "update user_account set sign_in_locked_until = ?4
                         where workspace_id = ?1 and user_id = ?2 and failed_sign_ins >= ?3
                           and sign_in_locked_until is null",
                        params![workspace.as_uuid(), user.as_uuid(), max_failures, until.millis()],
                    )
                    .db()?;
                Ok(n > 0)
            })
            .await
    }

    async fn clear_failures(&self, workspace: WorkspaceId, user: UserId) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "update user_account set failed_sign_ins = 0, sign_in_locked_until = null
                     where workspace_id = ?1 and user_id = ?2
                       and (failed_sign_ins <> 0 or sign_in_locked_until is not null)",
                    params![workspace.as_uuid(), user.as_uuid()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn sign_in_failures(
        &self,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<(u32, Option<Timestamp>)> {
        self.db.read(|c| {
            c.prepare_cached(
                "select failed_sign_ins, sign_in_locked_until from user_account
                 where workspace_id = ?1 and user_id = ?2",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), user.as_uuid()], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
                ))
            })
            .optional()
            .db()?
            .ok_or(Error::NotFound("user"))
        })
    }

    async fn set_email_verified(&self, workspace: WorkspaceId, user: UserId) -> Result<()> {
        self.db
            .write(move |c| {
                c.execute(
                    "update user_account set email_verified = 1 where workspace_id = ?1 and user_id = ?2",
                    params![workspace.as_uuid(), user.as_uuid()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

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

    async fn find_totp(&self, workspace: WorkspaceId, user: UserId) -> Result<Option<TotpEnrolment>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select secret_sealed, confirmed_at, last_step, created_at from mfa_totp
                 where workspace_id = ?1 and user_id = ?2",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), user.as_uuid()], |r| {
                Ok(TotpEnrolment {
                    secret_sealed: r.get(0)?,
                    confirmed_at: millis(r.get(1)?),
                    last_step: r.get(2)?,
                    created_at: Timestamp::from_millis(r.get(3)?),
                })
            })
            .optional()
            .db()
        })
    }

    async fn begin_totp(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        secret_sealed: &[u8],
        pending_since: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let secret_sealed = secret_sealed.to_vec();
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "insert into mfa_totp (workspace_id, user_id, secret_sealed, created_at) values (?1, ?2, ?3, ?4)
                         on conflict (workspace_id, user_id) do update
                           set secret_sealed = excluded.secret_sealed, created_at = excluded.created_at, last_step = 0
                           where mfa_totp.confirmed_at is null and mfa_totp.created_at < ?5",
                        params![
                            workspace.as_uuid(),
                            user.as_uuid(),
                            secret_sealed,
                            now.millis(),
                            pending_since.millis()
                        ],
                    )
                    .db()?;
                Ok(n > 0)
            })
            .await
    }

    async fn use_totp_step(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        step: i64,
        now: Timestamp,
    ) -> Result<bool> {
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "update mfa_totp set last_step = ?3, confirmed_at = coalesce(confirmed_at, ?4)
                         where workspace_id = ?1 and user_id = ?2 and last_step < ?3",
                        params![workspace.as_uuid(), user.as_uuid(), step, now.millis()],
                    )
                    .db()?;
                Ok(n > 0)
            })
            .await
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
        self.db
            .write(move |c| {
                for table in tables {
                    c.execute(
                        &format!("delete from {table} where workspace_id = ?1 and user_id = ?2"),
                        params![workspace.as_uuid(), user.as_uuid()],
                    )
                    .db()?;
                }
                Ok(())
            })
            .await
    }

    async fn replace_recovery_codes(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        hashes: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<()> {
        let hashes = hashes.to_vec();
        self.db
            .write(move |c| {
                c.execute(
                    "delete from recovery_code where workspace_id = ?1 and user_id = ?2",
                    params![workspace.as_uuid(), user.as_uuid()],
                )
                .db()?;
                for hash in &hashes {
                    c.execute(
                        "insert into recovery_code (workspace_id, user_id, code_hash, created_at) values (?1, ?2, ?3, ?4)",
                        params![workspace.as_uuid(), user.as_uuid(), hash, now.millis()],
                    )
                    .db()?;
                }
                Ok(())
            })
            .await
    }

    async fn use_recovery_code(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        hash: &[u8],
        now: Timestamp,
    ) -> Result<bool> {
        let hash = hash.to_vec();
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "update recovery_code set used_at = ?4
                         where workspace_id = ?1 and user_id = ?2 and code_hash = ?3 and used_at is null",
                        params![workspace.as_uuid(), user.as_uuid(), hash, now.millis()],
                    )
                    .db()?;
                Ok(n > 0)
            })
            .await
    }

    async fn recovery_codes_left(&self, workspace: WorkspaceId, user: UserId) -> Result<u32> {
        self.db.read(|c| {
            c.prepare_cached(
                "select count(*) from recovery_code where workspace_id = ?1 and user_id = ?2 and used_at is null",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), user.as_uuid()], |r| r.get(0))
            .db()
        })
    }

    async fn email_verified(&self, workspace: WorkspaceId, user: UserId) -> Result<bool> {
        self.db.read(|c| {
            Ok(c.prepare_cached(
                "select email_verified from user_account where workspace_id = ?1 and user_id = ?2",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), user.as_uuid()], |r| {
                r.get::<_, bool>(0)
            })
            .optional()
            .db()?
            .unwrap_or(false))
        })
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

    async fn insert_passkey(&self, passkey: &PasskeyRecord) -> Result<bool> {
        let p = passkey.clone();
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "insert into passkey
                           (passkey_id, workspace_id, user_id, credential_hash, sealed, created_at, last_used_at)
                         values (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         on conflict (workspace_id, credential_hash) do nothing",
                        params![
                            p.id.as_uuid(),
                            p.workspace_id.as_uuid(),
                            p.user_id.as_uuid(),
                            p.credential_hash,
                            p.sealed,
                            p.created_at.millis(),
                            p.last_used_at.map(Timestamp::millis),
                        ],
                    )
                    .db()?;
                Ok(n > 0)
            })
            .await
    }

    async fn passkeys(&self, workspace: WorkspaceId, user: UserId) -> Result<Vec<PasskeyRecord>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "select passkey_id, workspace_id, user_id, credential_hash, sealed, created_at, last_used_at
                     from passkey where workspace_id = ?1 and user_id = ?2 order by created_at, passkey_id",
                )
                .db()?;
            let rows = stmt
                .query_map(params![workspace.as_uuid(), user.as_uuid()], passkey_row)
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn update_passkey(
        &self,
        workspace: WorkspaceId,
        passkey: PasskeyId,
        sealed: &[u8],
        used_at: Timestamp,
    ) -> Result<()> {
        let sealed = sealed.to_vec();
        self.db
            .write(move |c| {
                c.execute(
                    "update passkey set sealed = ?3, last_used_at = ?4 where workspace_id = ?1 and passkey_id = ?2",
                    params![workspace.as_uuid(), passkey.as_uuid(), sealed, used_at.millis()],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn delete_passkey(&self, workspace: WorkspaceId, user: UserId, passkey: PasskeyId) -> Result<bool> {
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "delete from passkey where workspace_id = ?1 and user_id = ?2 and passkey_id = ?3",
                        params![workspace.as_uuid(), user.as_uuid(), passkey.as_uuid()],
                    )
                    .db()?;
                Ok(n > 0)
            })
            .await
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

fn insert_refresh_row(c: &Connection, t: &RefreshToken) -> Result<()> {
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
