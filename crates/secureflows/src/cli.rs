//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use secureflows_core::audit::Actor;
use secureflows_core::workspace::NewApplication;
use secureflows_core::{ApplicationKind, Plan, PlanCatalogue, Role, SystemClock, UpstreamTrust, WorkspaceId};
use secureflows_crypto::SecretString;
use secureflows_server::app::{self, Access, Opened};
use secureflows_server::config::Config;
use serde_json::{Value, json};

use crate::duration;

/// secureFlows: multi-tenant identity and encrypted session-vault server.
#[derive(Debug, Parser)]
#[command(name = "secureflows", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "SECUREFLOWS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite files and the generated master key).
    #[arg(long, global = true, env = "SECUREFLOWS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://…); without it, SQLite in the data directory.
    #[arg(long, global = true, env = "SECUREFLOWS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the master key (mode 0600). The key itself may come from SECUREFLOWS_MASTER_KEY.
    #[arg(long, global = true, env = "SECUREFLOWS_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Address the server listens on (default 127.0.0.1:8080). Commands that mint tokens or print
    /// URLs derive the issuer from it when no public URL is set, so give them the server's.
    #[arg(long, global = true)]
    pub listen: Option<SocketAddr>,
    /// Public base URL: the issuer of tokens (default http://<listen>).
    #[arg(long, global = true)]
    pub public_url: Option<String>,
    /// Print exactly one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Applications.
    #[command(subcommand)]
    App(Box<AppCommand>),
    /// Keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Console tokens (USER JWT) for the management API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Instance-level SUPPORT operators.
    #[command(subcommand)]
    Support(SupportCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Workspace members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Serve the example browser application (`docs/examples/hosted-login.html`) on
    /// http://localhost:PORT for a workspace, registering it as a browser application the first time:
    /// sign-up, a session token, the vault and sign-out on one machine. For development.
    Example {
        /// Workspace id.
        #[arg(long)]
        workspace: String,
        /// Port on localhost.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// The development outbox: mail written to the data directory when no SMTP server is configured
    /// and the public URL is a loopback address.
    #[command(subcommand)]
    Mail(MailCommand),
    /// The first run in the browser.
    #[command(subcommand)]
    Setup(SetupCommand),
}

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Print a new one-time setup link (`{public_url}/console/setup?token=…`, 24 hours, stored hashed)
    /// while no workspace exists, and write it to `setup-link` in the data directory (mode 0600).
    Link,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Print a one-time link (15 minutes, stored hashed) with which a member sets a password and signs
    /// in on the hosted login: for the first OWNER, whom `token issue` creates without one. Audited.
    Link {
        /// Workspace id.
        #[arg(long)]
        workspace: String,
        /// The member's e-mail.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// The messages in the outbox, oldest first, links included.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a console token for a member of a workspace (creates the member if needed; audited).
    Issue {
        /// Workspace id.
        #[arg(long)]
        workspace: String,
        /// The member's e-mail (for `support`, the SUPPORT operator's).
        #[arg(long)]
        email: String,
        /// Role.
        #[arg(long, value_parser = ["owner", "admin", "user", "support"])]
        role: String,
        /// Lifetime (default 15m, at most 24h).
        #[arg(long, value_parser = duration::parse, default_value = "15m")]
        ttl: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum SupportCommand {
    /// Create a SUPPORT operator (reads workspace metadata and audit trails of any workspace, audited).
    Create {
        /// E-mail.
        #[arg(long)]
        email: String,
    },
    /// List SUPPORT operators.
    List,
    /// Remove a SUPPORT operator; its tokens stop working at once.
    Delete {
        /// E-mail.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chains: reports edited, inserted, reordered or deleted events. Fails if any.
    Verify {
        /// Only this workspace (`00000000-0000-0000-0000-000000000000` is the instance's own chain).
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Export a workspace's events, oldest first.
    Export {
        /// Workspace id.
        #[arg(long)]
        workspace: String,
        /// Format.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Plan: a name of the configuration's plan catalogue (`free`, `base`, `pro` by default).
        #[arg(long, default_value = "free")]
        plan: String,
    },
    /// List workspaces.
    List,
    /// Show a workspace, with its OpenID Connect issuer URL.
    Show {
        /// Workspace id.
        id: String,
    },
    /// Change a workspace's plan.
    SetPlan {
        /// Workspace id.
        id: String,
        /// Plan: a name of the configuration's plan catalogue (`free`, `base`, `pro` by default).
        #[arg(long)]
        plan: String,
    },
    /// Delete a workspace: destroys its keys (its data can never be read again), then its data.
    Delete {
        /// Workspace id.
        id: String,
    },
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an application.
    Create {
        /// Workspace id.
        #[arg(long)]
        workspace: String,
        /// Name.
        #[arg(long)]
        name: String,
        /// Upstream OpenID issuer whose ID tokens sign users in.
        #[arg(long, requires = "trust_audience")]
        trust_issuer: Option<String>,
        /// Audience those ID tokens must carry.
        #[arg(long, requires = "trust_issuer")]
        trust_audience: Option<String>,
        /// An `amr` value by which the trusted issuer asserts a second factor (repeatable): users with a
        /// second factor are signed in by its ID tokens only with one of these (or an --trust-mfa-acr).
        #[arg(long = "trust-mfa-amr", requires = "trust_issuer")]
        trust_mfa_amr: Vec<String>,
        /// An `acr` value by which the trusted issuer asserts a second factor (repeatable).
        #[arg(long = "trust-mfa-acr", requires = "trust_issuer")]
        trust_mfa_acr: Vec<String>,
        /// Browser origin allowed to call the Session API (repeatable), e.g. https://app.example.com.
        #[arg(long = "allow-origin")]
        allow_origin: Vec<String>,
        /// How long vault values live after their last write (default 24h).
        #[arg(long, value_parser = duration::parse)]
        session_ttl: Option<std::time::Duration>,
        /// Access-token lifetime (default 15m).
        #[arg(long, value_parser = duration::parse)]
        token_ttl: Option<std::time::Duration>,
        /// What kind of client: browser (public, PKCE, no refresh token), native (public, PKCE, refresh
        /// tokens, loopback or private-use-scheme redirects) or server (confidential, a client secret,
        /// refresh tokens). Default: server, or with --public as --public chooses.
        #[arg(long, value_parser = ["browser", "native", "server"])]
        kind: Option<String>,
        /// Alias of --kind for a public client: native when every --redirect-uri is a loopback or
        /// private-use-scheme one, browser otherwise.
        #[arg(long, conflicts_with = "kind")]
        public: bool,
        /// Where the hosted login may send authorization codes (repeatable; exact match).
        #[arg(long = "redirect-uri")]
        redirect_uri: Vec<String>,
        /// Where sign-out may return to (repeatable; exact match).
        #[arg(long = "post-logout-uri")]
        post_logout_uri: Vec<String>,
        /// Visitors may get anonymous (ANON) sessions, upgraded in place when they sign up.
        #[arg(long)]
        allow_anonymous: bool,
        /// End-user tiers from a profile: `tuff-flips` (free 100, solo 1,000, pro and team 10,000
        /// requests per hour; new users on free). Change them later in the console or the API.
        #[arg(long, value_parser = ["tuff-flips"])]
        tiers: Option<String>,
        /// A console client: members who sign in through the hosted login get USER JWTs for the
        /// management API (with their own role) instead of SESSION JWTs.
        #[arg(long)]
        console: bool,
    },
    /// List a workspace's applications.
    List {
        /// Workspace id.
        #[arg(long)]
        workspace: String,
    },
    /// Show one application (its client id).
    Show {
        /// Client id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new data-key version for a workspace (old versions still decrypt).
    Rotate {
        /// Workspace id.
        #[arg(long)]
        workspace: String,
    },
    /// Rewrap every key under a new master key.
    RotateMaster {
        /// File holding the new master key (mode 0600).
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Create a new token-signing key; the old one keeps verifying until its tokens expire.
    RotateSigning,
    /// Write a new random master key to a file (mode 0600).
    GenerateMaster {
        /// File to create.
        #[arg(long)]
        out: PathBuf,
    },
}

fn config(global: &Global) -> anyhow::Result<Config> {
    let mut config = Config::load(global.config.as_deref())?;
    if let Some(dir) = &global.data_dir {
        config.storage.data_dir = dir.clone();
    }
    if let Some(url) = &global.database_url {
        config.storage.database_url = Some(SecretString::new(url.clone()));
    }
    if let Some(file) = &global.master_key_file {
        config.keys.master_key_file = Some(file.clone());
    }
    if let Some(listen) = global.listen {
        config.server.listen = listen;
    }
    if let Some(url) = &global.public_url {
        config.server.public_url = Some(url.clone());
    }
    #[allow(clippy::disallowed_methods)] // the contract variable of the master key
    if let Ok(key) = std::env::var("SECUREFLOWS_MASTER_KEY")
        && !key.is_empty()
    {
        config.keys.master_key = Some(SecretString::new(key));
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config, serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving {
        config.log.level.as_str()
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Opens existing data (refusing a directory or database without any).
async fn open(config: &Config) -> anyhow::Result<Opened> {
    open_with(config, Access::Existing, false).await
}

/// Opens the stores; with `signing`, also makes sure a signing key exists (to mint tokens). The issuer
/// is derived as the server derives it (`--public-url`, or `--listen`, from flags, file or environment).
async fn open_with(config: &Config, access: Access, signing: bool) -> anyhow::Result<Opened> {
    let issuer = config.server.issuer(config.server.listen);
    app::open(config, Arc::new(SystemClock), access, signing, issuer).await
}

fn workspace_id(text: &str) -> anyhow::Result<WorkspaceId> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a workspace id"))
}

/// A plan of the configuration's catalogue.
fn plan(catalogue: &PlanCatalogue, text: &str) -> anyhow::Result<Plan> {
    catalogue.find(text).ok_or_else(|| {
        let known: Vec<&str> = catalogue.iter().map(|(p, _)| p.as_str()).collect();
        anyhow::anyhow!(
            "unknown plan `{text}`: the plan catalogue has {} (add a [plans.<name>] section to define another)",
            known.join(", ")
        )
    })
}

fn domain(e: secureflows_core::Error) -> anyhow::Error {
    match e {
        secureflows_core::Error::Invalid(errors) => anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the command; returns the JSON object to print.
/// The example application, with its three constants left to fill in.
const EXAMPLE_PAGE: &str = include_str!("../../../docs/examples/hosted-login.html");

/// Registers (once) and serves the example application on localhost until interrupted. Prints where
/// it is when it starts; returns nothing more.
async fn serve_example(
    config: &Config,
    opened: &Opened,
    ws: WorkspaceId,
    port: u16,
    json_output: bool,
) -> anyhow::Result<Value> {
    let s = &opened.services;
    let origin = format!("http://localhost:{port}");
    let callback = format!("{origin}/callback");
    let registered = s
        .stores
        .applications
        .list_applications(ws)
        .await
        .map_err(domain)?
        .into_iter()
        .find(|a| a.redirect_uris.contains(&callback));
    let client = match registered {
        Some(app) => app,
        None => {
            let new = NewApplication {
                name: "Example page".into(),
                kind: Some(ApplicationKind::Browser),
                public: true,
                redirect_uris: vec![callback],
                post_logout_uris: vec![format!("{origin}/")],
                allowed_origins: vec![origin.clone()],
                ..Default::default()
            };
            s.create_application(ws, new, &Actor::operator())
                .await
                .map_err(domain)?
                .0
        }
    };
    let page = EXAMPLE_PAGE
        .replace("__SECUREFLOWS_URL__", &config.server.issuer(config.server.listen))
        .replace("__ISSUER__", &s.issuer_of(ws))
        .replace("__CLIENT_ID__", &client.id.to_string());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let started = json!({
        "url": format!("{origin}/"),
        "client_id": client.id,
        "workspace_id": ws,
    });
    if json_output {
        println!("{started}");
    } else {
        println!(
            "The example application is at {origin}/ (its client_id is {}); Ctrl-C stops it.",
            client.id
        );
    }
    let router = axum::Router::new().fallback(move || {
        let page = page.clone();
        async move { axum::response::Html(page) }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the example application stopped")?;
    Ok(Value::Null)
}

pub async fn run(cli: Cli) -> anyhow::Result<Value> {
    let config = config(&cli.global)?;
    let json_output = cli.global.json;
    init_logging(&config, matches!(cli.command, Command::Serve));
    match cli.command {
        Command::Serve => {
            let server = secureflows_server::Server::bind(config, Arc::new(SystemClock)).await?;
            server.run(shutdown_signal()).await?;
            Ok(json!({ "message": "stopped" }))
        }
        Command::Migrate => {
            let opened = open_with(&config, Access::Create, false).await?;
            // Accounts the address rule left unindexed (never merged): an operator sorts them out.
            let conflicts: Vec<Value> = opened
                .services
                .email_conflicts()
                .await
                .map_err(domain)?
                .into_iter()
                .map(|(workspace, user, reason)| {
                    json!({"workspace_id": workspace, "user_id": user, "reason": reason.as_str()})
                })
                .collect();
            let message = if conflicts.is_empty() {
                "migrations are current".to_owned()
            } else {
                format!(
                    "migrations are current; {} account(s) have e-mail addresses that collide under the address \
                     rule or that it refuses: they keep their data but cannot be found by address until an \
                     administrator changes or removes them (docs/operations.md)",
                    conflicts.len()
                )
            };
            Ok(json!({ "migrated": true, "message": message, "email_conflicts": conflicts }))
        }
        Command::Workspace(cmd) => {
            let opened = open(&config).await?;
            let s = &opened.services;
            match cmd {
                WorkspaceCommand::Create { name, plan: p } => {
                    let w = s
                        .create_workspace(&name, plan(&s.plans, &p)?, &Actor::operator())
                        .await
                        .map_err(domain)?;
                    Ok(json!({ "workspace_id": w.id, "name": w.name, "plan": w.plan.as_str() }))
                }
                WorkspaceCommand::List => {
                    let list = s.stores.workspaces.list_workspaces().await.map_err(domain)?;
                    let items: Vec<Value> = list
                        .iter()
                        .map(|w| json!({ "workspace_id": w.id, "name": w.name, "plan": w.plan.as_str(), "created_at": w.created_at }))
                        .collect();
                    Ok(json!({ "workspaces": items }))
                }
                WorkspaceCommand::Show { id } => {
                    let w = s.get_workspace(workspace_id(&id)?).await.map_err(domain)?;
                    let issuer = s.issuer_of(w.id);
                    Ok(json!({
                        "workspace_id": w.id,
                        "name": w.name,
                        "plan": w.plan.as_str(),
                        "created_at": w.created_at,
                        "issuer": issuer,
                        "discovery": format!("{issuer}/.well-known/openid-configuration"),
                    }))
                }
                WorkspaceCommand::SetPlan { id, plan: p } => {
                    let id = workspace_id(&id)?;
                    s.set_plan(id, plan(&s.plans, &p)?, &Actor::operator())
                        .await
                        .map_err(domain)?;
                    Ok(json!({ "workspace_id": id, "plan": p }))
                }
                WorkspaceCommand::Delete { id } => {
                    let id = workspace_id(&id)?;
                    s.delete_workspace(id, &Actor::operator()).await.map_err(domain)?;
                    Ok(json!({ "workspace_id": id, "deleted": true, "keys_destroyed": true }))
                }
            }
        }
        Command::App(cmd) => {
            let cmd = *cmd;
            let opened = open(&config).await?;
            let s = &opened.services;
            match cmd {
                AppCommand::Create {
                    workspace,
                    name,
                    trust_issuer,
                    trust_audience,
                    trust_mfa_amr,
                    trust_mfa_acr,
                    allow_origin,
                    session_ttl,
                    token_ttl,
                    kind,
                    public,
                    redirect_uri,
                    post_logout_uri,
                    allow_anonymous,
                    console,
                    tiers,
                } => {
                    let (tiers, default_tier) = match tiers {
                        Some(_) => {
                            let (tiers, default) = secureflows_core::tier::tuff_flips();
                            (tiers, Some(default))
                        }
                        None => (Vec::new(), None),
                    };
                    let trust = match (trust_issuer, trust_audience) {
                        (Some(issuer), Some(audience)) => Some(UpstreamTrust {
                            issuer,
                            audience,
                            second_factor_amr: trust_mfa_amr,
                            second_factor_acr: trust_mfa_acr,
                        }),
                        (None, None) => None,
                        _ => bail!("--trust-issuer and --trust-audience go together"),
                    };
                    let (app, secret) = s
                        .create_application(
                            workspace_id(&workspace)?,
                            NewApplication {
                                name,
                                trust,
                                allowed_origins: allow_origin,
                                data_ttl: session_ttl,
                                token_ttl,
                                kind: kind.as_deref().and_then(secureflows_core::ApplicationKind::parse),
                                public,
                                redirect_uris: redirect_uri,
                                post_logout_uris: post_logout_uri,
                                allow_anonymous,
                                console,
                                tiers,
                                default_tier,
                            },
                            &Actor::operator(),
                        )
                        .await
                        .map_err(domain)?;
                    let mut out = app_json(&app);
                    if let Some(secret) = secret {
                        out["client_secret"] = Value::from(secret.expose());
                    }
                    Ok(out)
                }
                AppCommand::List { workspace } => {
                    let list = s
                        .stores
                        .applications
                        .list_applications(workspace_id(&workspace)?)
                        .await
                        .map_err(domain)?;
                    Ok(json!({ "applications": list.iter().map(app_json).collect::<Vec<_>>() }))
                }
                AppCommand::Show { id } => {
                    let id: secureflows_core::ApplicationId = id
                        .parse()
                        .map_err(|_| anyhow::anyhow!("`{id}` is not a client id"))?;
                    let app = s
                        .stores
                        .applications
                        .find_application(id)
                        .await
                        .map_err(domain)?
                        .ok_or_else(|| anyhow::anyhow!("no application {id}"))?;
                    Ok(app_json(&app))
                }
            }
        }
        Command::Keys(KeysCommand::GenerateMaster { out }) => {
            let (key, encoded) = secureflows_crypto::MasterKey::generate()?;
            app::write_key_file(&out, &encoded)?;
            Ok(
                json!({ "master_key_id": key.id(), "file": out, "message": format!("wrote a new master key ({}) to {}", key.id(), out.display()) }),
            )
        }
        Command::Keys(cmd) => {
            let opened = open(&config).await?;
            let s = &opened.services;
            match cmd {
                KeysCommand::Rotate { workspace } => {
                    let id = workspace_id(&workspace)?;
                    let version = s
                        .rotate_workspace_key(id, &Actor::operator())
                        .await
                        .map_err(domain)?;
                    Ok(json!({ "workspace_id": id, "data_key_version": version }))
                }
                KeysCommand::RotateMaster { new_key_file } => {
                    // Loaded under the old master key before the rewrap, to record the rotation after it.
                    let instance = s.instance_keys().await.map_err(domain)?;
                    let count = app::rotate_master_key(&config, &opened, &new_key_file).await?;
                    let new_id = app::read_key_file(&new_key_file)?.id().to_owned();
                    s.record(
                        secureflows_core::audit::INSTANCE,
                        &instance,
                        &Actor::operator(),
                        vec![
                            secureflows_core::audit::NewEvent::new(
                                "keys.rotate_master",
                                "master_key",
                                &new_id,
                            )
                            .values(None, Some(json!({ "rewrapped_keys": count }))),
                        ],
                    )
                    .await
                    .map_err(domain)?;
                    let switched = matches!(opened.master_source, app::MasterSource::DataDirFile(_));
                    Ok(json!({
                        "rewrapped_keys": count,
                        "master_key_id": new_id,
                        "master_key_file_replaced": switched,
                        "message": if switched {
                            format!("rewrapped {count} keys; the data directory's master key is now {new_id}. Restart every node.")
                        } else {
                            format!("rewrapped {count} keys under {new_id}. Switch SECUREFLOWS_MASTER_KEY or the key file to the new key and restart every node.")
                        },
                    }))
                }
                KeysCommand::RotateSigning => {
                    let kid = s.rotate_signing_key(&Actor::operator()).await.map_err(domain)?;
                    Ok(json!({ "kid": kid, "algorithm": config.signing_algorithm().as_str() }))
                }
                KeysCommand::GenerateMaster { .. } => {
                    Err(anyhow::anyhow!("unreachable")).context("generate-master")
                }
            }
        }
        Command::Token(TokenCommand::Issue {
            workspace,
            email,
            role,
            ttl,
        }) => {
            let opened = open_with(&config, Access::Existing, true).await?;
            let s = &opened.services;
            let ws = workspace_id(&workspace)?;
            let actor = Actor::operator();
            let (subject, token) = if role == "support" {
                let (op, token) = s
                    .issue_support_token(ws, &email, ttl, &actor)
                    .await
                    .map_err(domain)?;
                (op.id, token)
            } else {
                let role = Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role `{role}`"))?;
                let (user, token) = s
                    .issue_console_token(ws, &email, role, ttl, &actor)
                    .await
                    .map_err(domain)?;
                (user.id, token)
            };
            Ok(json!({
                "token": token.token,
                "token_type": "Bearer",
                "expires_in": token.expires_in.as_secs(),
                "expires_at": token.expires_at.rfc3339(),
                "workspace_id": ws,
                "user_id": subject,
                "role": role,
            }))
        }
        Command::Support(cmd) => {
            let opened = open(&config).await?;
            let s = &opened.services;
            let actor = Actor::operator();
            match cmd {
                SupportCommand::Create { email } => {
                    let op = s.create_support(&email, &actor).await.map_err(domain)?;
                    Ok(json!({ "support_id": op.id, "email": email.trim(), "created_at": op.created_at }))
                }
                SupportCommand::List => {
                    let list = s.list_support().await.map_err(domain)?;
                    let items: Vec<Value> = list
                        .iter()
                        .map(|(op, email)| json!({ "support_id": op.id, "email": email, "created_at": op.created_at }))
                        .collect();
                    Ok(json!({ "support": items }))
                }
                SupportCommand::Delete { email } => {
                    s.delete_support(&email, &actor).await.map_err(domain)?;
                    Ok(json!({ "deleted": true }))
                }
            }
        }
        Command::Member(MemberCommand::Link { workspace, email }) => {
            let opened = open(&config).await?;
            let ws = workspace_id(&workspace)?;
            let (user, link, ttl) = opened
                .services
                .member_password_link(ws, &email, &Actor::operator())
                .await
                .map_err(domain)?;
            let minutes = ttl.as_secs() / 60;
            Ok(json!({
                "link": link.expose(),
                "expires_in": ttl.as_secs(),
                "workspace_id": ws,
                "user_id": user.id,
                "message": format!(
                    "Open this link within {minutes} minutes to set a password and sign in (it works once):\n{}",
                    link.expose()
                ),
            }))
        }
        Command::Setup(SetupCommand::Link) => {
            let opened = open(&config).await?;
            let link = secureflows_server::app::setup_link(&opened.services, &config.storage.data_dir, false)
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!("a workspace exists: setup is over (sign in to the console at /console)")
                })?;
            Ok(json!({
                "link": link.expose(),
                "expires_in": secureflows_core::setup::SETUP_TOKEN_TTL.as_secs(),
                "message": format!(
                    "Open this link within 24 hours to create the first workspace and its owner (it works once):\n{}",
                    link.expose()
                ),
            }))
        }
        Command::Example { workspace, port } => {
            let opened = open(&config).await?;
            serve_example(&config, &opened, workspace_id(&workspace)?, port, json_output).await
        }
        Command::Mail(MailCommand::List) => {
            // Refuses a place without secureFlows data, like every command but `serve` and `migrate`.
            open(&config).await?;
            let messages = secureflows_server::mail::Outbox::new(&config.storage.data_dir)
                .list()
                .context("cannot read the outbox")?;
            Ok(json!({ "messages": messages }))
        }
        Command::Audit(cmd) => {
            let opened = open(&config).await?;
            let s = &opened.services;
            match cmd {
                AuditCommand::Verify { workspace } => {
                    let target = workspace.as_deref().map(workspace_id).transpose()?;
                    let reports = s.verify_audit(target).await.map_err(domain)?;
                    let ok = reports.iter().all(|r| r.faults.is_empty());
                    let events: u64 = reports.iter().map(|r| r.events).sum();
                    let message = if ok {
                        format!("{} chain(s), {events} event(s): intact", reports.len())
                    } else {
                        let broken: Vec<String> = reports
                            .iter()
                            .filter(|r| !r.faults.is_empty())
                            .map(|r| {
                                let faults: Vec<String> = r
                                    .faults
                                    .iter()
                                    .map(|f| format!("{} at seq {}", f.kind, f.seq))
                                    .collect();
                                format!("workspace {}: {}", r.workspace_id, faults.join(", "))
                            })
                            .collect();
                        format!("TAMPERING DETECTED: {}", broken.join("; "))
                    };
                    Ok(json!({ "ok": ok, "events": events, "chains": reports, "message": message }))
                }
                AuditCommand::Export {
                    workspace,
                    format,
                    out,
                } => {
                    let records = s
                        .export_all_events(workspace_id(&workspace)?)
                        .await
                        .map_err(domain)?;
                    let bytes = if format == "csv" {
                        secureflows_core::audit_trail::to_csv(&records, true)
                    } else {
                        secureflows_core::audit_trail::to_json_lines(&records)
                    }
                    .map_err(domain)?;
                    match out {
                        Some(path) => {
                            app::write_private_file(&path, &bytes)?;
                            Ok(
                                json!({ "events": records.len(), "file": path, "message": format!("wrote {} event(s) to {}", records.len(), path.display()) }),
                            )
                        }
                        None => {
                            use std::io::Write;
                            let mut stdout = std::io::stdout().lock();
                            stdout.write_all(&bytes)?;
                            stdout.flush()?;
                            Ok(Value::Null)
                        }
                    }
                }
            }
        }
    }
}

fn app_json(app: &secureflows_core::Application) -> Value {
    json!({
        "client_id": app.id,
        "workspace_id": app.workspace_id,
        "name": app.name,
        "trust_issuer": app.trust.as_ref().map(|t| &t.issuer),
        "trust_audience": app.trust.as_ref().map(|t| &t.audience),
        "trust_mfa_amr": app.trust.as_ref().map(|t| &t.second_factor_amr),
        "trust_mfa_acr": app.trust.as_ref().map(|t| &t.second_factor_acr),
        "kind": app.kind.as_str(),
        "public": app.is_public(),
        "allowed_origins": app.allowed_origins,
        "redirect_uris": app.redirect_uris,
        "post_logout_uris": app.post_logout_uris,
        "allow_anonymous": app.allow_anonymous,
        "console": app.console,
        "tiers": app.tiers,
        "default_tier": app.default_tier,
        "session_ttl_secs": app.data_ttl.as_secs(),
        "token_ttl_secs": app.token_ttl.as_secs(),
    })
}
