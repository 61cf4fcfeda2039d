//! The key ring in a PostgreSQL database of its own, apart from the data so that a dump of the data
//! never holds key material.

use async_trait::async_trait;
use secureflows_core::store::{KeyringStore, StoredKey, StoredSigningKey};
use secureflows_core::{Error, Result, Timestamp};
use secureflows_crypto::KeyPurpose;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::PoolSettings;
use crate::data::{from_ts, ts};
use crate::error::SqlResult;
use crate::migrate::{self, MigrationMode};

/// PostgreSQL key ring.
#[derive(Debug)]
pub struct PgKeyring {
    pool: PgPool,
}

impl PgKeyring {
    /// Connects and migrates or checks.
    pub async fn connect(url: &str, mode: MigrationMode, settings: PoolSettings) -> Result<PgKeyring> {
        let settings = PoolSettings {
            max_connections: settings.max_connections.clamp(1, 4),
            ..settings
        };
        let pool = crate::pool(url, settings).await?;
        migrate::run(&pool, &migrate::KEYRING, mode).await?;
        Ok(PgKeyring { pool })
    }
}

const KEY_COLUMNS: &str = "owner, purpose, version, wrapped, master_key_id, active, created_at";
const SIGNING_COLUMNS: &str = "kid, alg, wrapped, public_jwk, master_key_id, created_at, retired_at";

fn key_row(r: &PgRow) -> Result<StoredKey> {
    Ok(StoredKey {
        owner: r.try_get("owner").db()?,
        purpose: KeyPurpose::parse(r.try_get::<&str, _>("purpose").db()?)
            .ok_or(Error::Integrity("key purpose"))?,
        version: u32::try_from(r.try_get::<i32, _>("version").db()?).unwrap_or(0),
        wrapped: r.try_get("wrapped").db()?,
        master_key_id: r.try_get("master_key_id").db()?,
        active: r.try_get("active").db()?,
        created_at: from_ts(r.try_get("created_at").db()?),
    })
}

fn signing_row(r: &PgRow) -> Result<StoredSigningKey> {
    Ok(StoredSigningKey {
        kid: r.try_get("kid").db()?,
        alg: r.try_get("alg").db()?,
        wrapped: r.try_get("wrapped").db()?,
        public_jwk: r.try_get("public_jwk").db()?,
        master_key_id: r.try_get("master_key_id").db()?,
        created_at: from_ts(r.try_get("created_at").db()?),
        retired_at: r
            .try_get::<Option<OffsetDateTime>, _>("retired_at")
            .db()?
            .map(from_ts),
    })
}

async fn insert_key(c: &mut PgConnection, k: &StoredKey) -> Result<()> {
    sqlx::query(&format!(
        "insert into workspace_key ({KEY_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&k.owner)
    .bind(k.purpose.as_str())
    .bind(i32::try_from(k.version).unwrap_or(i32::MAX))
    .bind(&k.wrapped)
    .bind(&k.master_key_id)
    .bind(k.active)
    .bind(ts(k.created_at))
    .execute(c)
    .await
    .db()?;
    Ok(())
}

/// Serialises key-ring changes of one workspace (transaction-scoped advisory lock), so that a key added
/// concurrently with the workspace's destruction cannot slip in after the tombstone.
async fn lock_owner(c: &mut PgConnection, owner: &str) -> Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(owner)
        .execute(c)
        .await
        .db()?;
    Ok(())
}

async fn destroyed(c: &mut PgConnection, owner: &str) -> Result<bool> {
    sqlx::query_scalar("select exists (select 1 from destroyed_workspace where owner = $1)")
        .bind(owner)
        .fetch_one(c)
        .await
        .db()
}

#[async_trait]
impl KeyringStore for PgKeyring {
    async fn is_empty(&self) -> Result<bool> {
        sqlx::query_scalar(
            "select not exists (select 1 from workspace_key) and not exists (select 1 from signing_key)
                and not exists (select 1 from destroyed_workspace)",
        )
        .fetch_one(&self.pool)
        .await
        .db()
    }

    async fn master_key_ids(&self) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "select master_key_id from workspace_key union select master_key_id from signing_key",
        )
        .fetch_all(&self.pool)
        .await
        .db()
    }

    async fn insert_keys(&self, keys: &[StoredKey]) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        for k in keys {
            lock_owner(&mut tx, &k.owner).await?;
            if destroyed(&mut tx, &k.owner).await? {
                return Err(Error::Conflict("the workspace's keys were destroyed"));
            }
            insert_key(&mut tx, k).await?;
        }
        tx.commit().await.db()
    }

    async fn workspace_keys(&self, workspace: &str) -> Result<Vec<StoredKey>> {
        sqlx::query(&format!(
            "select {KEY_COLUMNS} from workspace_key where owner = $1 order by version"
        ))
        .bind(workspace)
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(key_row)
        .collect()
    }

    async fn add_data_key(&self, key: &StoredKey) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        lock_owner(&mut tx, &key.owner).await?;
        if destroyed(&mut tx, &key.owner).await? {
            return Err(Error::Conflict("the workspace's keys were destroyed"));
        }
        sqlx::query("update workspace_key set active = false where owner = $1 and purpose = 'data'")
            .bind(&key.owner)
            .execute(&mut *tx)
            .await
            .db()?;
        insert_key(&mut tx, key).await?;
        tx.commit().await.db()
    }

    async fn destroy_workspace_keys(&self, workspace: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        lock_owner(&mut tx, workspace).await?;
        sqlx::query("delete from workspace_key where owner = $1")
            .bind(workspace)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(
            "insert into destroyed_workspace (owner, destroyed_at) values ($1, $2) on conflict (owner) do nothing",
        )
        .bind(workspace)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        // Reclaim the dead tuples so the wrapped keys do not linger in the table's pages.
        if let Err(e) = sqlx::query("vacuum workspace_key").execute(&self.pool).await {
            tracing::warn!(error = %e, "vacuum of the key ring failed");
        }
        Ok(())
    }

    async fn is_destroyed(&self, workspace: &str) -> Result<bool> {
        let mut conn = self.pool.acquire().await.db()?;
        destroyed(&mut conn, workspace).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        sqlx::query(&format!(
            "select {SIGNING_COLUMNS} from signing_key order by created_at"
        ))
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(signing_row)
        .collect()
    }

    async fn insert_signing_key(&self, key: &StoredSigningKey, now: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        sqlx::query("update signing_key set retired_at = $1 where retired_at is null")
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(&format!(
            "insert into signing_key ({SIGNING_COLUMNS}) values ($1, $2, $3, $4, $5, $6, null)"
        ))
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.wrapped)
        .bind(&key.public_jwk)
        .bind(&key.master_key_id)
        .bind(ts(key.created_at))
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    async fn delete_signing_keys_retired_before(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query("delete from signing_key where retired_at < $1")
            .bind(ts(before))
            .execute(&self.pool)
            .await
            .db()?
            .rows_affected())
    }

    async fn all_keys(&self) -> Result<(Vec<StoredKey>, Vec<StoredSigningKey>)> {
        let keys = sqlx::query(&format!("select {KEY_COLUMNS} from workspace_key"))
            .fetch_all(&self.pool)
            .await
            .db()?
            .iter()
            .map(key_row)
            .collect::<Result<Vec<_>>>()?;
        let signing = sqlx::query(&format!("select {SIGNING_COLUMNS} from signing_key"))
            .fetch_all(&self.pool)
            .await
            .db()?
            .iter()
            .map(signing_row)
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, signing))
    }

    async fn replace_wrapped(&self, keys: &[StoredKey], signing: &[StoredSigningKey]) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        for k in keys {
            sqlx::query(
                "update workspace_key set wrapped = $4, master_key_id = $5
                 where owner = $1 and purpose = $2 and version = $3",
            )
            .bind(&k.owner)
            .bind(k.purpose.as_str())
            .bind(i32::try_from(k.version).unwrap_or(i32::MAX))
            .bind(&k.wrapped)
            .bind(&k.master_key_id)
            .execute(&mut *tx)
            .await
            .db()?;
        }
        for k in signing {
            sqlx::query("update signing_key set wrapped = $2, master_key_id = $3 where kid = $1")
                .bind(&k.kid)
                .bind(&k.wrapped)
                .bind(&k.master_key_id)
                .execute(&mut *tx)
                .await
                .db()?;
        }
        tx.commit().await.db()
    }

    async fn check_ready(&self) -> Result<()> {
        if migrate::is_current(&self.pool, &migrate::KEYRING).await? {
            Ok(())
        } else {
            Err(Error::Unavailable("key ring migrations are not current"))
        }
    }
}
