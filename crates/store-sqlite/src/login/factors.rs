//! Second factors: TOTP, recovery codes and passkeys.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use secureflows_core::store::FactorStore;
use secureflows_core::{PasskeyId, PasskeyRecord, Result, Timestamp, TotpEnrolment, UserId, WorkspaceId};

use crate::data::SqliteStore;
use crate::error::SqlResult;

use super::rows::*;

#[async_trait]
impl FactorStore for SqliteStore {
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
}
