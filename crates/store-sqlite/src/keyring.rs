//! The key ring in its own SQLite file (`keyring.db`), apart from the data so that a backup of the data
//! never holds key material. `secure_delete` overwrites destroyed keys in the file, and a checkpoint
//! truncates the write-ahead log after a destruction so no copy lingers there either.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, Row, params};
use secureflows_core::store::{KeyringStore, StoredKey, StoredSigningKey};
use secureflows_core::{Error, Result, Timestamp};
use secureflows_crypto::KeyPurpose;

use crate::conn::{Database, SqliteOptions};
use crate::error::SqlResult;
use crate::migrate::{self, MigrationMode};

/// SQLite key ring.
#[derive(Debug)]
pub struct SqliteKeyring {
    db: Database,
}

impl SqliteKeyring {
    /// Opens the key ring file.
    pub fn open(path: &Path, mode: MigrationMode) -> Result<SqliteKeyring> {
        Ok(SqliteKeyring {
            db: Database::open(path, migrate::KEYRING, mode, SqliteOptions::default())?,
        })
    }
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<StoredKey> {
    let purpose: String = r.get(1)?;
    Ok(StoredKey {
        owner: r.get(0)?,
        purpose: KeyPurpose::parse(&purpose).ok_or_else(|| {
            rusqlite::Error::InvalidColumnType(1, "purpose".into(), rusqlite::types::Type::Text)
        })?,
        version: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        wrapped: r.get(3)?,
        master_key_id: r.get(4)?,
        active: r.get::<_, i64>(5)? != 0,
        created_at: Timestamp::from_millis(r.get(6)?),
    })
}

fn signing_row(r: &Row<'_>) -> rusqlite::Result<StoredSigningKey> {
    Ok(StoredSigningKey {
        kid: r.get(0)?,
        alg: r.get(1)?,
        wrapped: r.get(2)?,
        public_jwk: r.get(3)?,
        master_key_id: r.get(4)?,
        created_at: Timestamp::from_millis(r.get(5)?),
        retired_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
    })
}

const KEY_COLUMNS: &str = "owner, purpose, version, wrapped, master_key_id, active, created_at";
const SIGNING_COLUMNS: &str = "kid, alg, wrapped, public_jwk, master_key_id, created_at, retired_at";

fn insert_key(c: &Connection, k: &StoredKey) -> Result<()> {
    c.execute(
        &format!("insert into workspace_key ({KEY_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            k.owner,
            k.purpose.as_str(),
            i64::from(k.version),
            k.wrapped,
            k.master_key_id,
            i64::from(k.active),
            k.created_at.millis()
        ],
    )
    .db()?;
    Ok(())
}

fn is_destroyed(c: &Connection, owner: &str) -> Result<bool> {
    c.query_row(
        "select exists (select 1 from destroyed_workspace where owner = ?1)",
        params![owner],
        |r| r.get(0),
    )
    .db()
}

#[async_trait]
impl KeyringStore for SqliteKeyring {
    async fn is_empty(&self) -> Result<bool> {
        self.db.read(|c| {
            c.query_row(
                "select not exists (select 1 from workspace_key) and not exists (select 1 from signing_key)
                    and not exists (select 1 from destroyed_workspace)",
                [],
                |r| r.get(0),
            )
            .db()
        })
    }

    async fn master_key_ids(&self) -> Result<Vec<String>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare(
                    "select master_key_id from workspace_key union select master_key_id from signing_key",
                )
                .db()?;
            let rows = stmt.query_map([], |r| r.get(0)).db()?;
            rows.collect::<rusqlite::Result<Vec<String>>>().db()
        })
    }

    async fn insert_keys(&self, keys: &[StoredKey]) -> Result<()> {
        let keys = keys.to_vec();
        self.db
            .write(move |c| {
                for k in &keys {
                    if is_destroyed(c, &k.owner)? {
                        return Err(Error::Conflict("the workspace's keys were destroyed"));
                    }
                    insert_key(c, k)?;
                }
                Ok(())
            })
            .await
    }

    async fn workspace_keys(&self, workspace: &str) -> Result<Vec<StoredKey>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select {KEY_COLUMNS} from workspace_key where owner = ?1 order by version"
                ))
                .db()?;
            let rows = stmt.query_map(params![workspace], key_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn add_data_key(&self, key: &StoredKey) -> Result<()> {
        let key = key.clone();
        self.db
            .write(move |c| {
                if is_destroyed(c, &key.owner)? {
                    return Err(Error::Conflict("the workspace's keys were destroyed"));
                }
                c.execute(
                    "update workspace_key set active = 0 where owner = ?1 and purpose = 'data'",
                    params![key.owner],
                )
                .db()?;
                insert_key(c, &key)
            })
            .await
    }

    async fn destroy_workspace_keys(&self, workspace: &str, now: Timestamp) -> Result<()> {
        let owner = workspace.to_owned();
        self.db
            .write(move |c| {
                c.execute("delete from workspace_key where owner = ?1", params![owner]).db()?;
                c.execute(
                    "insert into destroyed_workspace (owner, destroyed_at) values (?1, ?2) on conflict do nothing",
                    params![owner, now.millis()],
                )
                .db()?;
                Ok(())
            })
            .await?;
        // Move the overwritten pages into the main file and truncate the log, so no copy of the
        // destroyed keys is left in the write-ahead log.
        self.db.checkpoint()
    }

    async fn is_destroyed(&self, workspace: &str) -> Result<bool> {
        self.db.read(|c| is_destroyed(c, workspace))
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "select {SIGNING_COLUMNS} from signing_key order by created_at"
                ))
                .db()?;
            let rows = stmt.query_map([], signing_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
    }

    async fn insert_signing_key(&self, key: &StoredSigningKey, now: Timestamp) -> Result<()> {
        let key = key.clone();
        self.db
            .write(move |c| {
                c.execute(
                    "update signing_key set retired_at = ?1 where retired_at is null",
                    params![now.millis()],
                )
                .db()?;
                c.execute(
                    &format!(
                        "insert into signing_key ({SIGNING_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6, null)"
                    ),
                    params![
                        key.kid,
                        key.alg,
                        key.wrapped,
                        key.public_jwk,
                        key.master_key_id,
                        key.created_at.millis()
                    ],
                )
                .db()?;
                Ok(())
            })
            .await
    }

    async fn delete_signing_keys_retired_before(&self, before: Timestamp) -> Result<u64> {
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "delete from signing_key where retired_at < ?1",
                        params![before.millis()],
                    )
                    .db()?;
                Ok(n as u64)
            })
            .await
    }

    async fn all_keys(&self) -> Result<(Vec<StoredKey>, Vec<StoredSigningKey>)> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare(&format!("select {KEY_COLUMNS} from workspace_key"))
                .db()?;
            let keys = stmt
                .query_map([], key_row)
                .db()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()?;
            let mut stmt = c
                .prepare(&format!("select {SIGNING_COLUMNS} from signing_key"))
                .db()?;
            let signing = stmt
                .query_map([], signing_row)
                .db()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()?;
            Ok((keys, signing))
        })
    }

    async fn replace_wrapped(&self, keys: &[StoredKey], signing: &[StoredSigningKey]) -> Result<()> {
        let (keys, signing) = (keys.to_vec(), signing.to_vec());
        self.db
            .write(move |c| {
                for k in &keys {
                    c.execute(
                        "update workspace_key set wrapped = ?4, master_key_id = ?5
                         where owner = ?1 and purpose = ?2 and version = ?3",
                        params![
                            k.owner,
                            k.purpose.as_str(),
                            i64::from(k.version),
                            k.wrapped,
                            k.master_key_id
                        ],
                    )
                    .db()?;
                }
                for k in &signing {
                    c.execute(
                        "update signing_key set wrapped = ?2, master_key_id = ?3 where kid = ?1",
                        params![k.kid, k.wrapped, k.master_key_id],
                    )
                    .db()?;
                }
                Ok(())
            })
            .await
    }

    async fn check_ready(&self) -> Result<()> {
        if self.db.read(|c| migrate::is_current(c, migrate::KEYRING))? {
            Ok(())
        } else {
            Err(Error::Unavailable("key ring migrations are not current"))
        }
    }
}
