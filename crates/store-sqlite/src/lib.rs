//! SQLite implementation of the secureFlows store traits (the embedded, single-node shape).
//!
//! Durability: WAL with `synchronous=FULL`, so an acknowledged write survives a crash or power loss.
//! Writes go through one writer thread that commits whole batches (group commit): every caller's
//! change runs in its own savepoint, one fsync covers the batch, and each caller is answered only
//! after that commit. Reads use a pool of connections and run on the caller's thread; they are point
//! look-ups on indexes and never wait for writers (WAL).
//!
//! Every tenant query takes the `WorkspaceId` and filters on it; keys and indexes lead with it.

mod billing;
mod conn;
mod data;
mod error;
mod keyring;
mod login;
mod manage;
mod migrate;

use std::path::Path;
use std::sync::Arc;

pub use conn::{Database, SqliteOptions};
pub use data::SqliteStore;
pub use keyring::SqliteKeyring;
pub use migrate::MigrationMode;

use secureflows_core::Result;
use secureflows_core::store::Stores;

/// File name of the data database inside the data directory.
pub const DATA_FILE: &str = "secureflows.db";
/// File name of the API-access log inside the data directory.
pub const ACCESS_FILE: &str = "access.db";
/// File name of the key ring inside the data directory.
pub const KEYRING_FILE: &str = "keyring.db";

/// Opens (and, with `MigrationMode::Apply`, migrates) the databases in `data_dir`.
pub fn open_stores(
    data_dir: &Path,
    mode: MigrationMode,
    options: SqliteOptions,
) -> Result<(Stores, Arc<SqliteStore>)> {
    let data = Arc::new(SqliteStore::open(
        &data_dir.join(DATA_FILE),
        &data_dir.join(ACCESS_FILE),
        mode,
        options,
    )?);
    let keyring = Arc::new(SqliteKeyring::open(&data_dir.join(KEYRING_FILE), mode)?);
    Ok((Stores::new(data.clone(), keyring), data))
}
