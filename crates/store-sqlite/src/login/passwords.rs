//! Passwords, e-mail verification and the sign-in lockout.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use secureflows_core::store::{AttemptGate, PasswordStore};
use secureflows_core::{Error, Result, Timestamp, UserId, WorkspaceId};

use crate::data::SqliteStore;
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl PasswordStore for SqliteStore {
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
}
