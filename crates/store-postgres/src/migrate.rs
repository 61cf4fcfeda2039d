//! Versioned migrations (`migrations/<set>/NNNN_name.sql`), embedded and applied by sqlx's migrator,
//! which records each migration's checksum and refuses one that changed after it was applied.

use secureflows_core::{Error, Result};
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

use crate::error::map;

/// Whether connecting may change the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationMode {
    /// Apply pending migrations.
    Apply,
    /// Only check that the schema is current.
    Check,
}

pub static DATA: Migrator = sqlx::migrate!("./migrations/data");
pub static KEYRING: Migrator = sqlx::migrate!("./migrations/keyring");

pub async fn run(pool: &PgPool, migrator: &Migrator, mode: MigrationMode) -> Result<()> {
    match mode {
        // Nothing to apply: no DDL and no lock, so a login role that may not change the schema can start.
        MigrationMode::Apply if is_current(pool, migrator).await? => Ok(()),
        MigrationMode::Apply => migrator.run(pool).await.map_err(|e| match e {
            MigrateError::VersionMismatch(version) => {
                tracing::error!(version, "an applied migration was changed");
                Error::Unavailable("an applied migration was changed after it was applied; refusing to start")
            }
            MigrateError::VersionMissing(_) => {
                Error::Unavailable("the database was migrated by a newer secureflows; upgrade the binary")
            }
            MigrateError::Execute(e) => map(e),
            other => Error::internal(other),
        }),
        MigrationMode::Check => {
            if is_current(pool, migrator).await? {
                Ok(())
            } else {
                Err(Error::Unavailable(
                    "the database schema is not current; run `secureflows migrate`",
                ))
            }
        }
    }
}

/// Whether every migration is applied, successfully and unchanged, and no unknown one is.
pub async fn is_current(pool: &PgPool, migrator: &Migrator) -> Result<bool> {
    let table_exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await
        .map_err(map)?;
    if !table_exists {
        return Ok(false);
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("select version, checksum, success from _sqlx_migrations")
            .fetch_all(pool)
            .await
            .map_err(map)?;
    let expected: Vec<_> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .collect();
    Ok(applied.len() == expected.len()
        && expected.iter().all(|m| {
            applied
                .iter()
                .any(|(v, sum, ok)| *v == m.version && *ok && sum.as_slice() == m.checksum.as_ref())
        }))
}
