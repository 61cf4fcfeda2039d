//! `TestApp`: the real server, in process, on `127.0.0.1:0`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secureflows_client::{Client, Session};
use secureflows_core::audit::Actor;
use secureflows_core::workspace::NewApplication;
use secureflows_core::{Application, Clock, ManualClock, Plan, Role, Services, UpstreamTrust, WorkspaceId};
use secureflows_crypto::SecretString;
use secureflows_server::config::Config;
use secureflows_server::state::AppState;
use secureflows_server::{RawStore, Server};
use tokio::sync::oneshot;

use crate::{Backend, TestIssuer, contains_marker};

/// How to start a `TestApp`.
#[derive(Clone)]
pub struct TestOptions {
    /// Configuration changes.
    pub configure: Arc<dyn Fn(&mut Config) + Send + Sync>,
    /// Reuse this data directory (and its master key) instead of a fresh one.
    pub data_dir: Option<PathBuf>,
    /// Master key (base64); random when `None`.
    pub master_key: Option<String>,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            configure: Arc::new(|_| {}),
            data_dir: None,
            master_key: None,
        }
    }
}

impl TestOptions {
    /// Serves on a free loopback port under the name `localhost` (its public URL), as WebAuthn needs a
    /// domain name, not an address.
    pub fn localhost(self) -> TestOptions {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let previous = self.configure.clone();
        TestOptions {
            configure: Arc::new(move |cfg| {
                previous(cfg);
                cfg.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
                cfg.server.public_url = Some(format!("http://localhost:{port}"));
            }),
            ..self
        }
    }
}

impl std::fmt::Debug for TestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOptions")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A running server and what a test needs around it.
pub struct TestApp {
    /// Base URL.
    pub url: String,
    /// The server's clock; advance it to expire tokens.
    pub clock: ManualClock,
    /// The server's state (services, config).
    pub state: AppState,
    /// The backend, for raw reads.
    pub raw: RawStore,
    /// Typed client.
    pub client: Client,
    /// Plain HTTP client (no redirects) for bad requests.
    pub http: reqwest::Client,
    /// A local upstream issuer.
    pub issuer: Arc<TestIssuer>,
    /// The backend.
    pub backend: Backend,
    /// The master key in use (base64).
    pub master_key: String,
    /// The data directory.
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("url", &self.url)
            .field("backend", &self.backend.name())
            .finish()
    }
}

fn random_master_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(secureflows_crypto::random_bytes::<32>().unwrap())
}

impl TestApp {
    /// Starts a server on `backend` with the test defaults.
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, TestOptions::default()).await
    }

    /// The configuration a test server gets: loopback, fresh storage, private upstreams allowed.
    pub fn base_config(backend: &Backend, data_dir: PathBuf, master_key: &str) -> Config {
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.data_dir = data_dir;
        config.storage.max_connections = 8;
        config.keys.master_key = Some(SecretString::new(master_key.to_owned()));
        config.upstream.allow_private_networks = true;
        config.upstream.allow_http = true;
        config.cache.poll_interval_ms = 100;
        if let Backend::Postgres(db) = backend {
            config.storage.database_url = Some(SecretString::new(db.url()));
        }
        config
    }

    /// Starts a server with options.
    pub async fn spawn_with(backend: Backend, options: TestOptions) -> TestApp {
        let issuer = Arc::new(TestIssuer::start().await);
        TestApp::spawn_full(backend, options, issuer).await
    }

    async fn spawn_full(backend: Backend, options: TestOptions, issuer: Arc<TestIssuer>) -> TestApp {
        if let Backend::Postgres(db) = &backend {
            let exists = {
                use sqlx::Connection;
                sqlx::PgConnection::connect(&db.url()).await.is_ok()
            };
            if !exists {
                db.create().await;
            }
        }
        let (temp, data_dir) = match options.data_dir.clone() {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir().unwrap();
                let dir = temp.path().join("data");
                (Some(temp), dir)
            }
        };
        let master_key = options.master_key.clone().unwrap_or_else(random_master_key);
        let mut config = TestApp::base_config(&backend, data_dir.clone(), &master_key);
        (options.configure)(&mut config);
        // A server on loopback under the name localhost (TestOptions::localhost) is reached by that name;
        // any other public URL is only what the server calls itself.
        let public_url = config
            .server
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| u.starts_with("http://localhost:"));
        let clock = ManualClock::starting_now();
        let server = Server::bind(config, Arc::new(clock.clone()))
            .await
            .expect("server starts");
        let addr = server.local_addr().unwrap();
        let state = server.state();
        let raw = server.raw_store();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let url = public_url.unwrap_or_else(|| format!("http://{addr}"));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            client: Client::with_http(http.clone(), url.clone()),
            url,
            clock,
            state,
            raw,
            http,
            issuer,
            backend,
            master_key,
            data_dir,
            _temp: temp,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A second node on the same PostgreSQL database (and master key), with its own clock and caches.
    pub async fn spawn_peer(&self) -> TestApp {
        let options = TestOptions {
            master_key: Some(self.master_key.clone()),
            ..TestOptions::default()
        };
        TestApp::spawn_full(self.backend.clone(), options, self.issuer.clone()).await
    }

    /// The domain services.
    pub fn services(&self) -> &Services {
        self.state.services()
    }

    /// Creates a workspace.
    pub async fn workspace(&self, plan: Plan) -> WorkspaceId {
        self.services()
            .create_workspace("Test Workspace", plan, &Actor::operator())
            .await
            .unwrap()
            .id
    }

    /// Registers an application trusting the test issuer with `audience`.
    pub async fn application(&self, workspace: WorkspaceId, audience: &str) -> Application {
        self.application_with(workspace, audience, |_| {}).await
    }

    /// Registers an application, adjusting its settings.
    pub async fn application_with(
        &self,
        workspace: WorkspaceId,
        audience: &str,
        adjust: impl FnOnce(&mut NewApplication),
    ) -> Application {
        let mut new = NewApplication {
            name: format!("App {audience}"),
            trust: Some(UpstreamTrust {
                issuer: self.issuer.url.clone(),
                audience: audience.to_owned(),
                ..UpstreamTrust::default()
            }),
            ..NewApplication::default()
        };
        adjust(&mut new);
        self.services()
            .create_application(workspace, new, &Actor::operator())
            .await
            .unwrap()
            .0
    }

    /// A console token (USER JWT) for `email` with `role` in `workspace`, minted as an operator would.
    pub async fn console_token(&self, workspace: WorkspaceId, email: &str, role: Role) -> String {
        self.services()
            .issue_console_token(
                workspace,
                email,
                role,
                Duration::from_secs(900),
                &Actor::operator(),
            )
            .await
            .unwrap()
            .1
            .token
    }

    /// A SUPPORT token for `workspace`, creating the operator `email` if needed.
    pub async fn support_token(&self, workspace: WorkspaceId, email: &str) -> String {
        let services = self.services();
        if services.find_support(email).await.is_err() {
            services.create_support(email, &Actor::operator()).await.unwrap();
        }
        services
            .issue_support_token(workspace, email, Duration::from_secs(900), &Actor::operator())
            .await
            .unwrap()
            .1
            .token
    }

    /// An upstream ID token for `subject` at the server's current time.
    pub fn id_token(&self, app: &Application, subject: &str) -> String {
        let audience = &app.trust.as_ref().unwrap().audience;
        self.issuer
            .sign(&self.issuer.claims(subject, audience, self.clock.now().secs()))
    }

    /// Signs `subject` in to `app` over HTTP and returns their Session API client.
    pub async fn sign_in(&self, app: &Application, subject: &str) -> Session {
        let token = self.id_token(app, subject);
        let response = self
            .client
            .sign_in_with_id_token(&token, Some(&app.id.to_string()))
            .await
            .unwrap_or_else(|e| panic!("sign-in failed: {e:?}"));
        self.client.session(response.session_token)
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// Waits until every access-log record so far is written.
    pub async fn flush_access_log(&self) {
        self.state.access_log().flush().await;
    }

    /// Every byte the backend holds on disk or in a dump: for SQLite the files of the data directory
    /// (database, WAL, shared memory, key ring), for PostgreSQL `pg_dump` of the data database.
    pub async fn raw_bytes(&self) -> Vec<u8> {
        match &self.backend {
            Backend::Sqlite => {
                let mut all = Vec::new();
                for entry in std::fs::read_dir(&self.data_dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.file_name().is_some_and(|n| n == "master.key") {
                        continue;
                    }
                    all.extend(std::fs::read(&path).unwrap_or_default());
                }
                all
            }
            Backend::Postgres(db) => {
                let mut all = Vec::new();
                for url in [db.url(), db.keyring_url()] {
                    let out = tokio::process::Command::new("pg_dump")
                        .arg("--no-owner")
                        .arg(&url)
                        .output()
                        .await
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "pg_dump failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    all.extend(out.stdout);
                }
                all
            }
        }
    }

    /// A connection pool to the PostgreSQL data database as its owner (an administrator with direct
    /// database access, outside row-level security): for raw reads and deliberate tampering.
    pub async fn owner_pool(&self) -> sqlx::PgPool {
        match &self.backend {
            Backend::Postgres(db) => sqlx::PgPool::connect(&db.url()).await.unwrap(),
            Backend::Sqlite => panic!("owner_pool is for PostgreSQL"),
        }
    }

    /// Whether `marker` can be found in [`TestApp::raw_bytes`] in any common encoding.
    pub async fn raw_contains(&self, marker: &[u8]) -> bool {
        contains_marker(&self.raw_bytes().await, marker)
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
