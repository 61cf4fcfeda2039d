//! PostgreSQL implementation of the secureFlows store traits (the cluster shape: several stateless
//! nodes share one PostgreSQL).
//!
//! Cache coherence between nodes: every change that nodes cache is written to the `invalidation` table
//! in the same transaction and announced with `NOTIFY secureflows_invalidation`; each node listens and
//! reads the table (see `secureflows-server`'s coordinator).
//!
//! Durability: PostgreSQL's `synchronous_commit = on` (the default); a multi-row change is one
//! transaction. Concurrency limits lock the workspace or user row (`FOR NO KEY UPDATE`) so that
//! check-then-insert is atomic.

mod billing;
mod data;
mod error;
mod keyring;
mod listen;
mod login;
mod manage;
mod migrate;

use std::sync::Arc;
use std::time::Duration;

pub use data::PgStore;
pub use keyring::PgKeyring;
pub use migrate::MigrationMode;

use secureflows_core::store::Stores;
use secureflows_core::{Error, Result};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres};

/// Connection pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections per pool.
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The key ring's URL when none is configured: the data database's name with `_keyring` appended.
pub fn default_keyring_url(database_url: &str) -> Result<String> {
    let mut url =
        url::Url::parse(database_url).map_err(|_| Error::Malformed("invalid database URL".into()))?;
    let name = url.path().trim_start_matches('/').to_owned();
    let name = if name.is_empty() {
        "postgres".to_owned()
    } else {
        name
    };
    url.set_path(&format!("/{name}_keyring"));
    Ok(url.to_string())
}

/// Creates the database named in `url` if it does not exist (needs the CREATEDB privilege).
pub async fn ensure_database(url: &str) -> Result<()> {
    let exists = Postgres::database_exists(url).await.map_err(error::map)?;
    if !exists
        && let Err(e) = Postgres::create_database(url).await
        // Another node may have created it at the same moment.
        && !Postgres::database_exists(url).await.map_err(error::map)?
    {
        tracing::error!(error = %e, "cannot create database");
        return Err(Error::Unavailable(
            "cannot create the database; create it or grant CREATEDB",
        ));
    }
    Ok(())
}

/// The role the server's data connections run as (created by the migrations): no BYPASSRLS, owns
/// nothing, so PostgreSQL's row-level security applies to every query.
pub const APP_ROLE: &str = "secureflows_app";

/// The pool the server's data queries run on: every connection switches to [`APP_ROLE`] before use.
pub(crate) async fn app_pool(url: &str, settings: PoolSettings) -> Result<PgPool> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .map_err(|_| Error::Malformed("invalid PostgreSQL URL".into()))?
        .application_name("secureflows")
        .log_statements(tracing::log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, "set role secureflows_app").await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot connect as the {APP_ROLE} role");
            Error::Unavailable("cannot connect to PostgreSQL as the secureflows_app role; run `secureflows migrate` with the owner's URL, and grant secureflows_app to the server's login role")
        })
}

/// Refuses to run the server's queries with a role that would bypass row-level security.
pub(crate) async fn check_app_role(pool: &PgPool) -> Result<()> {
    let (role, bypass, owns, creates): (String, bool, bool, bool) = sqlx::query_as(
        "select current_user::text,
                (select rolsuper or rolbypassrls from pg_roles where rolname = current_user),
                exists (select 1 from pg_tables where schemaname = 'public'
                        and pg_has_role(current_user, tableowner, 'USAGE')),
                has_schema_privilege(current_user, 'public', 'CREATE')",
    )
    .fetch_one(pool)
    .await
    .map_err(error::map)?;
    if role != APP_ROLE || bypass || owns || creates {
        tracing::error!(
            role,
            bypass,
            owns,
            creates,
            "the data connection would bypass row-level security (superuser, BYPASSRLS, a member of the \
             tables' owner, or allowed to create objects in schema public)"
        );
        return Err(Error::Unavailable(
            "the data connection would bypass row-level security; refusing to start",
        ));
    }
    Ok(())
}

pub(crate) async fn pool(url: &str, settings: PoolSettings) -> Result<PgPool> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .map_err(|_| Error::Malformed("invalid PostgreSQL URL".into()))?
        .application_name("secureflows")
        .log_statements(tracing::log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(error::map)
}

/// Connects to (and, with `MigrationMode::Apply`, migrates) the data and key-ring databases.
pub async fn open_stores(
    database_url: &str,
    keyring_url: &str,
    mode: MigrationMode,
    settings: PoolSettings,
) -> Result<(Stores, Arc<PgStore>)> {
    if mode == MigrationMode::Apply {
        ensure_database(keyring_url).await?;
    }
    let data = Arc::new(PgStore::connect(database_url, mode, settings).await?);
    let keyring = Arc::new(PgKeyring::connect(keyring_url, mode, settings).await?);
    Ok((Stores::new(data.clone(), keyring), data))
}
