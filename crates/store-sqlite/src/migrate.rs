//! Versioned migrations: `migrations/<set>/NNNN_name.sql`, embedded in the binary, applied in order in
//! one transaction each, and recorded with their SHA-256. A migration whose file changed after it was
//! applied is refused, as is a database migrated by a newer binary.

use rusqlite::{Connection, OptionalExtension, params};
use secureflows_core::{Error, Result};

use crate::error::SqlResult;

/// Whether opening a store may change its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationMode {
    /// Apply pending migrations (serve, migrate).
    Apply,
    /// Only check that the schema is current; refuse otherwise.
    Check,
}

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number.
    pub version: i64,
    /// Name (file name without number and extension).
    pub name: &'static str,
    /// SQL.
    pub sql: &'static str,
}

pub const DATA: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/data/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "management",
        sql: include_str!("../migrations/data/0002_management.sql"),
    },
    Migration {
        version: 3,
        name: "hosted_login",
        sql: include_str!("../migrations/data/0003_hosted_login.sql"),
    },
    Migration {
        version: 4,
        name: "passkeys",
        sql: include_str!("../migrations/data/0004_passkeys.sql"),
    },
    Migration {
        version: 5,
        name: "identity_providers",
        sql: include_str!("../migrations/data/0005_identity_providers.sql"),
    },
    Migration {
        version: 6,
        name: "console_clients",
        sql: include_str!("../migrations/data/0006_console_clients.sql"),
    },
    Migration {
        version: 7,
        name: "signup_mode",
        sql: include_str!("../migrations/data/0007_signup_mode.sql"),
    },
    // SQLite has no 0008: the PostgreSQL set numbers its row-level security migration separately.
    Migration {
        version: 9,
        name: "email_rule",
        sql: include_str!("../migrations/data/0009_email_rule.sql"),
    },
    Migration {
        version: 10,
        name: "refresh_successor",
        sql: include_str!("../migrations/data/0010_refresh_successor.sql"),
    },
    Migration {
        version: 11,
        name: "link_binding",
        sql: include_str!("../migrations/data/0011_link_binding.sql"),
    },
    Migration {
        version: 12,
        name: "application_kind",
        sql: include_str!("../migrations/data/0012_application_kind.sql"),
    },
    Migration {
        version: 13,
        name: "console",
        sql: include_str!("../migrations/data/0013_console.sql"),
    },
    Migration {
        version: 14,
        name: "plans_and_tiers",
        sql: include_str!("../migrations/data/0014_plans_and_tiers.sql"),
    },
];

pub const ACCESS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/access/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "workspace_order",
        sql: include_str!("../migrations/access/0002_workspace_order.sql"),
    },
];

pub const KEYRING: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("../migrations/keyring/0001_initial.sql"),
}];

fn checksum(sql: &str) -> String {
    secureflows_crypto::sha256_hex(sql.as_bytes())
}

/// Applies or checks `set` on `conn`.
pub fn run(conn: &mut Connection, set: &[Migration], mode: MigrationMode) -> Result<()> {
    conn.execute_batch(
        "create table if not exists schema_migration (
            version integer primary key,
            name text not null,
            checksum text not null,
            applied_at integer not null
        ) strict",
    )
    .db()?;
    let newest_known = set.iter().map(|m| m.version).max().unwrap_or(0);
    let newest_applied: Option<i64> = conn
        .query_row("select max(version) from schema_migration", [], |r| r.get(0))
        .db()?;
    if newest_applied.unwrap_or(0) > newest_known {
        return Err(Error::Unavailable(
            "the database was migrated by a newer secureflows; upgrade the binary",
        ));
    }
    for m in set {
        let applied: Option<String> = conn
            .query_row(
                "select checksum from schema_migration where version = ?1",
                params![m.version],
                |r| r.get(0),
            )
            .optional()
            .db()?;
        match applied {
            Some(sum) if sum == checksum(m.sql) => {}
            Some(_) => {
                tracing::error!(
                    version = m.version,
                    name = m.name,
                    "an applied migration was changed"
                );
                return Err(Error::Unavailable(
                    "an applied migration was changed after it was applied; refusing to start",
                ));
            }
            None if mode == MigrationMode::Check => {
                return Err(Error::Unavailable(
                    "the database schema is not current; run `secureflows migrate`",
                ));
            }
            None => {
                // SQLite's procedure for changing a table's definition: foreign keys off around the
                // transaction (the pragma is a no-op inside one), checked before it commits.
                conn.pragma_update(None, "foreign_keys", "OFF").db()?;
                let applied = apply_one(conn, m);
                conn.pragma_update(None, "foreign_keys", "ON").db()?;
                applied?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
            }
        }
    }
    Ok(())
}

/// Applies one migration in one transaction; refuses to commit one that broke a foreign key.
fn apply_one(conn: &mut Connection, m: &Migration) -> Result<()> {
    let tx = conn.transaction().db()?;
    tx.execute_batch(m.sql).db()?;
    let broken: Option<String> = tx
        .query_row("pragma foreign_key_check", [], |r| r.get(0))
        .optional()
        .db()?;
    if let Some(table) = broken {
        tracing::error!(version = m.version, table, "a migration broke a foreign key");
        return Err(Error::Unavailable(
            "a migration broke a foreign key; nothing was changed",
        ));
    }
    tx.execute(
        "insert into schema_migration (version, name, checksum, applied_at)
         values (?1, ?2, ?3, cast(unixepoch('subsec') * 1000 as integer))",
        params![m.version, m.name, checksum(m.sql)],
    )
    .db()?;
    tx.commit().db()
}

/// Whether every migration of `set` is applied, unchanged.
pub fn is_current(conn: &Connection, set: &[Migration]) -> Result<bool> {
    let mut stmt = conn
        .prepare_cached("select version, checksum from schema_migration")
        .db()?;
    let applied: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    Ok(applied.len() == set.len()
        && set.iter().all(|m| {
            applied
                .iter()
                .any(|(v, sum)| *v == m.version && *sum == checksum(m.sql))
        }))
}
