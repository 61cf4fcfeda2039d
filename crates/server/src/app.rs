//! Start-up: open the stores, unseal with the master key, build the services, bind the listener and
//! serve until shut down.
//!
//! SECURITY (sealed start): a master key is generated only on a fresh install (empty key ring, no
//! workspace). With existing data and no key, or a key that did not wrap the key ring, start-up fails
//! and nothing is served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use secureflows_core::auth::token::{TokenService, TokenSettings};
use secureflows_core::cache::{CacheSizes, StateCache};
use secureflows_core::keyring::KeyService;
use secureflows_core::login::LoginSettings;
use secureflows_core::login::password::PasswordHasher;
use secureflows_core::store::Stores;
use secureflows_core::{Clock, DomainSettings, Invalidation, Services};
use secureflows_crypto::MasterKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::access_log::AccessLog;
use crate::config::{Backend, Config};
use crate::request::PeerAddr;
use crate::state::AppState;
use crate::upstream::HttpJwksSource;

/// File name of the generated master key in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// What opening the stores produced.
pub struct Opened {
    /// The services.
    pub services: Arc<Services>,
    /// Where the master key came from.
    pub master_source: MasterSource,
    /// Raw access for tests and tools.
    pub raw: RawStore,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("master_source", &self.master_source)
            .finish_non_exhaustive()
    }
}

/// The backend store, for raw reads in tests and tools.
#[derive(Debug, Clone)]
pub enum RawStore {
    /// SQLite.
    Sqlite(Arc<secureflows_store_sqlite::SqliteStore>),
    /// PostgreSQL.
    Postgres(Arc<secureflows_store_postgres::PgStore>),
}

/// What opening the data may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `serve` and `migrate`: create the data directory and databases, apply migrations, and on a
    /// fresh install generate the development master key.
    Create,
    /// Every other command: the data must already exist with a current schema. A directory or
    /// database without secureFlows data is refused, so a command run in the wrong place creates
    /// nothing and does not answer with empty lists.
    Existing,
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSource {
    /// `SECUREFLOWS_MASTER_KEY` or `keys.master_key`.
    Value,
    /// A configured key file.
    ConfiguredFile(PathBuf),
    /// The data directory's `master.key` (generated on a fresh install).
    DataDirFile(PathBuf),
}

/// Creates a directory (and its parents) readable by its owner only (mode 0700), if missing.
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Reads a key file, refusing one that others can read.
pub fn read_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the key file {} is readable by other users (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    MasterKey::from_encoded(&text)
        .with_context(|| format!("{} does not hold a valid master key", path.display()))
}

/// Writes a key file with mode 0600, refusing to overwrite.
pub fn write_key_file(path: &Path, encoded: &str) -> anyhow::Result<()> {
    let mut bytes = encoded.as_bytes().to_vec();
    bytes.push(b'\n');
    write_private_file(path, &bytes)
}

/// Creates a new file readable by its owner only (mode 0600) and writes `bytes` durably. Refuses to
/// overwrite an existing file.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// File name of the first run's setup link in the data directory (mode 0600).
pub const SETUP_LINK_FILE: &str = "setup-link";

/// The first run's one-time setup link while no workspace exists: the one in `setup-link` if it still
/// works and names this public URL (`reuse`, a restart), otherwise a new one, written there. Once a
/// workspace exists, the file is removed and there is none.
pub async fn setup_link(
    services: &Services,
    data_dir: &Path,
    reuse: bool,
) -> anyhow::Result<Option<secureflows_crypto::SecretString>> {
    use secureflows_core::setup::SetupState;
    let path = data_dir.join(SETUP_LINK_FILE);
    if services.stores.workspaces.any_workspace().await? {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    let prefix = format!(
        "{}/console/setup?token=",
        services.tokens.issuer().trim_end_matches('/')
    );
    if reuse
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Some(token) = text.trim().strip_prefix(&prefix)
        && services.setup_state(token).await? == SetupState::Open
    {
        return Ok(Some(secureflows_crypto::SecretString::new(
            text.trim().to_owned(),
        )));
    }
    let link = services.new_setup_link().await?;
    let pending = path.with_extension("new");
    let _ = std::fs::remove_file(&pending);
    write_private_file(&pending, format!("{}\n", link.expose()).as_bytes())?;
    std::fs::rename(&pending, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(link))
}

/// Prints the setup link to standard error, outside the log pipeline: log shipping never carries it.
#[allow(clippy::print_stderr)]
fn announce_setup_link(link: &secureflows_crypto::SecretString, data_dir: &Path) {
    eprintln!(
        "\n  secureFlows has no workspace yet. Open this one-time link within 24 hours to set it up:\n\n    {}\n\n  \
         (It is also in {}. `secureflows setup link` prints a new one.)\n",
        link.expose(),
        data_dir.join(SETUP_LINK_FILE).display()
    );
}

async fn open_backend(config: &Config, access: Access) -> anyhow::Result<(Stores, RawStore)> {
    let sqlite_mode = match access {
        Access::Create => secureflows_store_sqlite::MigrationMode::Apply,
        Access::Existing => secureflows_store_sqlite::MigrationMode::Check,
    };
    let postgres_mode = match access {
        Access::Create => secureflows_store_postgres::MigrationMode::Apply,
        Access::Existing => secureflows_store_postgres::MigrationMode::Check,
    };
    match config.backend()? {
        Backend::Sqlite(dir) => {
            if access == Access::Existing {
                let files = [
                    secureflows_store_sqlite::DATA_FILE,
                    secureflows_store_sqlite::KEYRING_FILE,
                ];
                if !files.iter().all(|f| dir.join(f).is_file()) {
                    bail!(
                        "{} holds no secureFlows data. Point --data-dir (SECUREFLOWS_DATA_DIR) at the server's data \
                         directory, or create one with `secureflows serve` or `secureflows migrate`",
                        dir.display()
                    );
                }
            }
            let dir = dir.clone();
            let options = secureflows_store_sqlite::SqliteOptions {
                wal_limit_bytes: config.storage.sqlite_wal_limit_mib.max(1) * 1024 * 1024,
            };
            let (stores, raw) = tokio::task::spawn_blocking(move || {
                secureflows_store_sqlite::open_stores(&dir, sqlite_mode, options)
            })
            .await?
            .context("cannot open the SQLite databases")?;
            Ok((stores, RawStore::Sqlite(raw)))
        }
        Backend::Postgres {
            database_url,
            keyring_url,
        } => {
            let settings = secureflows_store_postgres::PoolSettings {
                max_connections: config.storage.max_connections.max(2),
                acquire_timeout: Duration::from_secs(config.storage.acquire_timeout_secs.max(1)),
            };
            let (stores, raw) = secureflows_store_postgres::open_stores(
                &database_url,
                &keyring_url,
                postgres_mode,
                settings,
            )
            .await
            .context(match access {
                Access::Create => "cannot open the PostgreSQL databases".to_owned(),
                Access::Existing => "cannot open the PostgreSQL databases. If this database holds no secureFlows data, point \
                     --database-url (SECUREFLOWS_DATABASE_URL) at the server's, or create it with `secureflows migrate`"
                    .to_owned(),
            })?;
            Ok((stores, RawStore::Postgres(raw)))
        }
    }
}

async fn resolve_master_key(
    config: &Config,
    stores: &Stores,
    access: Access,
) -> anyhow::Result<(MasterKey, MasterSource)> {
    if let Some(value) = &config.keys.master_key {
        let key = MasterKey::from_encoded(value.expose())
            .context("SECUREFLOWS_MASTER_KEY is not a valid master key")?;
        return Ok((key, MasterSource::Value));
    }
    if let Some(path) = &config.keys.master_key_file {
        return Ok((read_key_file(path)?, MasterSource::ConfiguredFile(path.clone())));
    }
    let path = config.storage.data_dir.join(MASTER_KEY_FILE);
    if path.exists() {
        return Ok((read_key_file(&path)?, MasterSource::DataDirFile(path)));
    }
    let fresh = stores.keyring.is_empty().await? && !stores.workspaces.any_workspace().await?;
    if !fresh {
        bail!(
            "sealed: no master key was supplied and {} does not exist, but the key ring holds keys. Supply the \
             master key (SECUREFLOWS_MASTER_KEY or keys.master_key_file); a new key is never created over existing data",
            path.display()
        );
    }
    if access == Access::Existing {
        bail!(
            "no master key: supply it (SECUREFLOWS_MASTER_KEY or keys.master_key_file), or let `secureflows serve` \
             generate the development key in {}",
            config.storage.data_dir.display()
        );
    }
    let (key, encoded) = MasterKey::generate()?;
    write_key_file(&path, &encoded)?;
    tracing::warn!(
        path = %path.display(),
        master_key_id = key.id(),
        "GENERATED A NEW MASTER KEY in the data directory. This is for development and single-node trials only: \
         production must supply its own master key (SECUREFLOWS_MASTER_KEY or keys.master_key_file) and keep a \
         copy off this machine. Losing it loses every workspace's data."
    );
    Ok((key, MasterSource::DataDirFile(path)))
}

/// Opens stores, unseals and builds the services. `access` says whether data may be created;
/// `signing` makes sure a signing key exists (serve, minting tokens).
pub async fn open(
    config: &Config,
    clock: Arc<dyn Clock>,
    access: Access,
    signing: bool,
    issuer: String,
) -> anyhow::Result<Opened> {
    config.validate()?;
    if access == Access::Create {
        create_private_dir(&config.storage.data_dir)?;
    }
    let (stores, raw) = open_backend(config, access).await?;
    let (mut master, mut source) = resolve_master_key(config, &stores, access).await?;
    let mut keys = KeyService::new(master, stores.keyring.clone(), config.cache.tenant_entries);
    if keys.check_master_key().await.is_err() {
        // An interrupted `keys rotate-master` may have left the new key beside the old one.
        let pending = config.storage.data_dir.join(format!("{MASTER_KEY_FILE}.new"));
        if let MasterSource::DataDirFile(path) = &source
            && pending.exists()
        {
            let candidate = read_key_file(&pending)?;
            let trial = KeyService::new(candidate, stores.keyring.clone(), 1);
            if trial.check_master_key().await.is_ok() {
                std::fs::rename(&pending, path)
                    .context("cannot finish an interrupted master-key rotation")?;
                tracing::warn!("finished an interrupted master-key rotation");
                master = read_key_file(path)?;
                source = MasterSource::DataDirFile(path.clone());
                keys = KeyService::new(master, stores.keyring.clone(), config.cache.tenant_entries);
            }
        }
        keys.check_master_key().await.map_err(|_| {
            anyhow::anyhow!(
                "sealed: the master key (id {}) did not wrap the keys in the key ring; refusing to start",
                keys.master_key_id()
            )
        })?;
    }
    let keys = Arc::new(keys);
    let settings = DomainSettings {
        leeway: Duration::from_secs(config.tokens.leeway_secs),
        default_token_ttl: Duration::from_secs(config.tokens.default_ttl_secs),
        default_data_ttl: Duration::from_secs(24 * 3600),
        min_token_ttl: Duration::from_secs(config.tokens.min_ttl_secs),
        max_token_ttl: Duration::from_secs(config.tokens.max_ttl_secs),
        login: LoginSettings {
            max_failures: config.login.max_failures,
            lockout: Duration::from_secs(config.login.lockout_secs),
            browser_session_ttl: Duration::from_secs(config.login.browser_session_ttl_secs),
            refresh_ttl: Duration::from_secs(config.login.refresh_ttl_secs),
            refresh_grace: Duration::from_secs(config.login.refresh_grace_secs),
            failure_floor: Duration::from_millis(config.login.failure_floor_ms),
            ..LoginSettings::default()
        },
        billing: secureflows_core::billing::BillingSettings {
            paddle_secret: config.billing.paddle_webhook_secret.clone().map(Arc::new),
            paddle_prices: config.billing.paddle_prices.clone(),
            paddle_cancel_plan: config.billing.paddle_cancel_plan.clone(),
        },
    };
    let mailer = crate::mail::from_config(&config.smtp, &config.storage.data_dir, &issuer)?;
    let tokens = TokenService::new(
        TokenSettings {
            issuer,
            leeway: settings.leeway,
            algorithm: config.signing_algorithm(),
            cache_capacity: config.tokens.cache_entries,
        },
        keys.clone(),
    );
    if signing {
        tokens
            .ensure_signing_key(clock.now())
            .await
            .context("cannot load or create the signing key")?;
    } else {
        tokens.load_keys().await.context("cannot load the signing keys")?;
    }
    let state = StateCache::new(
        CacheSizes {
            tenants: config.cache.tenant_entries,
            sessions: config.cache.session_entries,
            ttl: Duration::from_secs(300),
        },
        Duration::from_millis(config.cache.max_staleness_ms),
    );
    let upstream = Arc::new(HttpJwksSource::new(config.upstream.clone())?);
    let budgets = secureflows_core::rate::HourlyBudgets::new(clock.clone());
    let services = Arc::new(Services {
        budgets,
        stores,
        clock,
        state,
        keys,
        tokens,
        plans: config.plans.clone(),
        upstream,
        mailer,
        breached: crate::breached::from_config(&config.login)?,
        passwords: PasswordHasher::new(
            match config.login.hash_concurrency {
                0 => std::thread::available_parallelism().map_or(2, usize::from),
                n => n,
            },
            Duration::from_secs(config.login.hash_queue_secs),
        )?,
        settings,
    });
    // Addresses stored before the address rule are indexed under it (once; a no-op afterwards).
    services
        .apply_email_rule()
        .await
        .context("cannot index stored e-mail addresses under the address rule")?;
    Ok(Opened {
        services,
        master_source: source,
        raw,
    })
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    raw: RawStore,
    router: Router,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    access_task: tokio::task::JoinHandle<()>,
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("secureflows.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => bail!(
            "another secureflows server is serving {} (SQLite is single-node; use PostgreSQL for several nodes)",
            dir.display()
        ),
    }
}

impl Server {
    /// Opens everything and binds the listener.
    pub async fn bind(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Server> {
        config.validate()?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let issuer = config.server.issuer(addr);
        create_private_dir(&config.storage.data_dir)?;
        let lock = match config.backend()? {
            Backend::Sqlite(dir) => Some(lock_data_dir(&dir)?),
            Backend::Postgres { .. } => None,
        };
        let opened = open(&config, clock, Access::Create, true, issuer.clone()).await?;
        let services = opened.services;
        warn_about_unknown_plans(&services).await;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (access_log, access_task) = AccessLog::spawn(
            services.clone(),
            config.access_log.queue_capacity,
            config.access_log.batch_size,
        );
        let tasks = vec![
            tokio::spawn(crate::coord::run(
                services.clone(),
                Duration::from_millis(config.cache.poll_interval_ms.max(10)),
                shutdown_rx.clone(),
            )),
            tokio::spawn(crate::sweeper::run(
                services.clone(),
                Duration::from_secs(config.retention.sweep_interval_secs.max(1)),
                Duration::from_secs(config.retention.ended_session_days * 24 * 3600),
                shutdown_rx,
            )),
        ];
        // A node that just created the first signing key tells the others.
        if let Err(e) = services.stores.coord.publish(Invalidation::SigningKeys).await {
            tracing::warn!(error = %e, "announcing signing keys failed");
        }
        match setup_link(&services, &config.storage.data_dir, true).await {
            Ok(Some(link)) => announce_setup_link(&link, &config.storage.data_dir),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the first run's setup link could not be made"),
        }
        let state = AppState::new(services, Arc::new(config), access_log, issuer);
        let router = crate::routes::router(state.clone());
        Ok(Server {
            listener,
            state,
            raw: opened.raw,
            router,
            shutdown_tx,
            tasks,
            access_task,
            _lock: lock,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The application state.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The backend store.
    pub fn raw_store(&self) -> RawStore {
        self.raw.clone()
    }

    /// Serves until `shutdown` resolves, then drains: stops accepting, waits for requests in flight (up
    /// to the configured time), writes the remaining access-log records and stops background tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let config = self.state.config().clone();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(config.server.header_timeout_secs.max(1)))
            .max_buf_size(256 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tracing::info!(address = %self.listener.local_addr()?, issuer = self.state.issuer(), "serving");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let router = self.router.clone();
                    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(PeerAddr(peer));
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: waiting for requests in flight");
        let timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
        if tokio::time::timeout(timeout, graceful.shutdown()).await.is_err() {
            tracing::warn!("requests still in flight after the shutdown time-out were cut off");
        }
        self.state.access_log().close().await;
        let _ = self.shutdown_tx.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        drop(self.router);
        drop(self.state);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.access_task).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Rewraps the key ring under the master key in `new_key_file` (`secureflows keys rotate-master`).
/// With the generated data-directory key, the new key replaces it (an interruption is finished at the
/// next start); otherwise the operator must switch the configured key before the next start.
pub async fn rotate_master_key(
    config: &Config,
    opened: &Opened,
    new_key_file: &Path,
) -> anyhow::Result<usize> {
    let new_key = read_key_file(new_key_file)?;
    if new_key.id() == opened.services.keys.master_key_id() {
        bail!("the new master key is the current one");
    }
    let pending = config.storage.data_dir.join(format!("{MASTER_KEY_FILE}.new"));
    if let MasterSource::DataDirFile(_) = &opened.master_source {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(new_key_file)?);
        if pending.exists() {
            std::fs::remove_file(&pending)?;
        }
        write_key_file(&pending, text.trim())?;
    }
    let count = opened.services.keys.rewrap_all(&new_key).await?;
    if let MasterSource::DataDirFile(path) = &opened.master_source {
        std::fs::rename(&pending, path).context("cannot replace the master key file")?;
    }
    Ok(count)
}

/// Warns when workspaces are on plans the catalogue no longer defines (they get the free plan's limits).
async fn warn_about_unknown_plans(services: &Services) {
    match services.stores.workspaces.list_workspaces().await {
        Ok(list) => {
            let unknown: std::collections::BTreeSet<&str> = list
                .iter()
                .filter(|w| !services.plans.contains(&w.plan))
                .map(|w| w.plan.as_str())
                .collect();
            if !unknown.is_empty() {
                tracing::warn!(
                    plans = ?unknown,
                    "workspaces are on plans the plan catalogue no longer defines: they get the free plan's \
                     limits until a [plans.<name>] section defines them again or `secureflows workspace \
                     set-plan` moves them"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not check the workspaces' plans against the catalogue"),
    }
}
