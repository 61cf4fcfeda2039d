//! Configuration: defaults, then a TOML file (`--config`), then environment variables
//! `SECUREFLOWS__SECTION__KEY`, then command-line flags (applied by the binary). Parsed and validated
//! once into [`Config`], which the rest of the code trusts. `secureflows serve` with no configuration
//! at all starts a working single node on SQLite.
//!
//! Every key is listed with its default in `docs/config.reference.toml`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secureflows_core::PlanCatalogue;
use secureflows_crypto::SecretString;
use secureflows_crypto::jws::SigningAlgorithm;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listener and edge behaviour.
    pub server: ServerConfig,
    /// Where data and keys are stored.
    pub storage: StorageConfig,
    /// Master key and signing keys.
    pub keys: KeysConfig,
    /// Access tokens.
    pub tokens: TokensConfig,
    /// Upstream OpenID Connect issuers.
    pub upstream: UpstreamConfig,
    /// Plan limits.
    pub plans: PlanCatalogue,
    /// The API-access log writer.
    pub access_log: AccessLogConfig,
    /// Caches and cross-node coherence.
    pub cache: CacheConfig,
    /// Background retention jobs.
    pub retention: RetentionConfig,
    /// Outgoing e-mail (invitations).
    pub smtp: SmtpConfig,
    /// Hosted login.
    pub login: LoginConfig,
    /// Logging.
    pub log: LogConfig,
    /// The web console.
    pub console: ConsoleConfig,
    /// Billing webhooks.
    pub billing: BillingConfig,
}

/// `[billing]`: Paddle (the operator bills workspaces) and the webhooks' rate limit. Stripe secrets are
/// per application, set in the console or the management API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Paddle's webhook signing secret (`pdl_ntfset_…`); unset: Paddle webhooks are refused.
    pub paddle_webhook_secret: Option<SecretString>,
    /// Paddle price id → catalogued plan name.
    pub paddle_prices: std::collections::BTreeMap<String, String>,
    /// The plan a workspace goes back to when its Paddle subscription is canceled or paused.
    pub paddle_cancel_plan: String,
    /// Webhook requests allowed per minute from one client address.
    pub webhooks_per_minute: u32,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            paddle_webhook_secret: None,
            paddle_prices: std::collections::BTreeMap::new(),
            paddle_cancel_plan: "free".to_owned(),
            webhooks_per_minute: 50,
        }
    }
}

/// `[console]`: the web console.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Anyone may create a new workspace at `/console/signup` and becomes its OWNER (default `false`:
    /// new workspaces come from an OWNER of an existing one, or the command line).
    pub open_signup: bool,
}

/// `[login]`: the hosted login's throttling, lifetimes and breached-password check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Sign-in attempts allowed per minute per account and per client address.
    pub attempts_per_minute: u32,
    /// Failed sign-ins before an account is locked.
    pub max_failures: u32,
    /// How long a lockout lasts.
    pub lockout_secs: u64,
    /// Lifetime of the browser's single sign-on session.
    pub browser_session_ttl_secs: u64,
    /// Lifetime of refresh tokens.
    pub refresh_ttl_secs: u64,
    /// How long a rotated refresh token keeps handing out its successor (concurrent refreshes from two
    /// tabs).
    pub refresh_grace_secs: u64,
    /// Password hashes computed at once (each Argon2id holds 19 MiB); 0: one per CPU core.
    pub hash_concurrency: usize,
    /// How long a sign-in waits for a hashing slot before it is answered 503 with `Retry-After`.
    pub hash_queue_secs: u64,
    /// A failed password sign-in is answered no sooner than this after it arrived, whatever the account
    /// (unknown, wrong password, locked): its timing tells nothing.
    pub failure_floor_ms: u64,
    /// Base URL of a k-anonymity range API (`{base}/range/{first five hex of SHA-1}`), e.g.
    /// `https://api.pwnedpasswords.com`. Unset: no online check.
    pub breached_range_url: Option<String>,
    /// A local file of breached SHA-1 hashes (upper-case hex, optionally `:count`, one per line, sorted),
    /// for machines without internet access. Used instead of the range API when set.
    pub breached_file: Option<PathBuf>,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            attempts_per_minute: 5,
            max_failures: 10,
            lockout_secs: 15 * 60,
            browser_session_ttl_secs: 7 * 24 * 3600,
            refresh_ttl_secs: 7 * 24 * 3600,
            refresh_grace_secs: 10,
            hash_concurrency: 0,
            hash_queue_secs: 10,
            failure_floor_ms: 300,
            breached_range_url: None,
            breached_file: None,
        }
    }
}

/// `[smtp]`: the mail server invitations go through. Without a host, no mail is sent and the
/// invitation link is returned to the administrator who created it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Mail server host name; unset disables e-mail.
    pub host: Option<String>,
    /// Port (587 for STARTTLS, 465 for TLS, 25 for none).
    pub port: u16,
    /// `starttls` (required, default), `tls` (implicit TLS) or `none` (trusted local relay only).
    pub tls: String,
    /// User name for SMTP AUTH.
    pub username: Option<String>,
    /// Password for SMTP AUTH (prefer the environment variable).
    pub password: Option<SecretString>,
    /// Sender, e.g. `secureFlows <no-reply@example.com>`.
    pub from: String,
    /// Time-out of one delivery.
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: None,
            port: 587,
            tls: "starttls".into(),
            username: None,
            password: None,
            from: "secureFlows <no-reply@localhost>".into(),
            timeout_secs: 10,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Public base URL (the `iss` of tokens); defaults to `http://<listen address>`.
    pub public_url: Option<String>,
    /// Host names (with port if not default) requests must carry; empty accepts any Host.
    pub public_hosts: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Largest request body; larger is refused with 413 before it is read.
    pub max_body_bytes: u64,
    /// Longest time to receive request headers.
    pub header_timeout_secs: u64,
    /// Longest time for a whole request.
    pub request_timeout_secs: u64,
    /// How long shutdown waits for requests in flight.
    pub shutdown_timeout_secs: u64,
}

impl ServerConfig {
    /// The issuer base of this instance: `public_url` without a trailing slash, or
    /// `http://<address>` (the address the server is bound to, or for operator commands the
    /// configured `listen`). The server and every command derive it here, so they agree.
    pub fn issuer(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            public_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 2 * 1024 * 1024,
            header_timeout_secs: 10,
            request_timeout_secs: 30,
            shutdown_timeout_secs: 10,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Data directory (SQLite files, generated master key).
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL; unset uses SQLite in the data directory.
    pub database_url: Option<SecretString>,
    /// PostgreSQL key-ring database; defaults to the data database's name plus `_keyring`.
    pub keyring_url: Option<SecretString>,
    /// PostgreSQL pool size.
    pub max_connections: u32,
    /// Seconds to wait for a PostgreSQL connection before answering 503.
    pub acquire_timeout_secs: u64,
    /// SQLite: a write-ahead log larger than this many MiB is checkpointed and truncated, so it stays
    /// bounded under any load.
    pub sqlite_wal_limit_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("secureflows-data"),
            database_url: None,
            keyring_url: None,
            max_connections: 16,
            acquire_timeout_secs: 5,
            sqlite_wal_limit_mib: 64,
        }
    }
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// File holding the master key (base64 or hex of 32 bytes, mode 0600). Defaults to
    /// `<data_dir>/master.key`, generated on a fresh install.
    pub master_key_file: Option<PathBuf>,
    /// The master key itself (prefer the `SECUREFLOWS_MASTER_KEY` environment variable).
    pub master_key: Option<SecretString>,
    /// Algorithm of new signing keys: `rs256` (3072-bit RSA) or `eddsa` (Ed25519).
    pub signing_algorithm: String,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            master_key_file: None,
            master_key: None,
            signing_algorithm: "rs256".into(),
        }
    }
}

/// `[tokens]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Tolerated clock skew for `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Default access-token lifetime of new applications.
    pub default_ttl_secs: u64,
    /// Shortest access-token lifetime an application may set (tests of expiry lower it).
    pub min_ttl_secs: u64,
    /// Longest access-token lifetime an application may set.
    pub max_ttl_secs: u64,
    /// Verified tokens remembered (each saves a signature verification).
    pub cache_entries: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            leeway_secs: 30,
            default_ttl_secs: 900,
            min_ttl_secs: 60,
            max_ttl_secs: 86_400,
            cache_entries: 100_000,
        }
    }
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Allow discovery and JWKS fetches to loopback, private and link-local addresses (development only).
    pub allow_private_networks: bool,
    /// Allow `http://` issuers (development only).
    pub allow_http: bool,
    /// How long an issuer's key set is cached.
    pub jwks_cache_secs: u64,
    /// Time-out of one fetch.
    pub fetch_timeout_secs: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            allow_private_networks: false,
            allow_http: false,
            jwks_cache_secs: 600,
            fetch_timeout_secs: 5,
        }
    }
}

/// `[access_log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Records buffered in memory before requests wait for the writer (never dropped).
    pub queue_capacity: usize,
    /// Most records written per transaction.
    pub batch_size: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            queue_capacity: 65_536,
            batch_size: 1_000,
        }
    }
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How often the invalidation log is read when no notice arrives.
    pub poll_interval_ms: u64,
    /// Caches are bypassed when the invalidation log has not been read for this long.
    pub max_staleness_ms: u64,
    /// Login sessions and revisions cached.
    pub session_entries: u64,
    /// Applications and workspaces cached.
    pub tenant_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            poll_interval_ms: 500,
            max_staleness_ms: 3_000,
            session_entries: 200_000,
            tenant_entries: 10_000,
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often expired data is purged.
    pub sweep_interval_secs: u64,
    /// How long ended login sessions are kept (login history).
    pub ended_session_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            sweep_interval_secs: 60,
            ended_session_days: 30,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// Default filter (overridden by `RUST_LOG`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Which database the configuration selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// SQLite files in this directory.
    Sqlite(PathBuf),
    /// PostgreSQL: data URL and key-ring URL.
    Postgres {
        /// Data database.
        database_url: String,
        /// Key-ring database.
        keyring_url: String,
    },
}

/// A configuration error, naming the key and its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, the optional TOML file and `SECUREFLOWS__*` environment variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("SECUREFLOWS__").split("__"));
        let config: Config = figment.extract().map_err(|e| {
            let mut messages = Vec::new();
            for err in e {
                let key = err.path.join(".");
                let env = format!("SECUREFLOWS__{}", err.path.join("__").to_uppercase());
                messages.push(if key.is_empty() {
                    err.to_string()
                } else {
                    format!("configuration key `{key}` (environment {env}): {}", err.kind)
                });
            }
            ConfigError(messages.join("; "))
        })?;
        Ok(config)
    }

    /// Checks cross-field rules. Called after flags are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, msg: &str| {
            Err(ConfigError(format!(
                "configuration key `{key}` (environment SECUREFLOWS__{}): {msg}",
                key.replace('.', "__").to_uppercase()
            )))
        };
        if SigningAlgorithm::parse(&self.keys.signing_algorithm).is_none() {
            return err("keys.signing_algorithm", "must be `rs256` or `eddsa`");
        }
        if let Some(url) = &self.storage.database_url
            && !is_postgres_url(url.expose())
        {
            return err(
                "storage.database_url",
                "must be a postgres:// or postgresql:// URL (unset for SQLite)",
            );
        }
        if let Some(url) = &self.storage.keyring_url
            && !is_postgres_url(url.expose())
        {
            return err(
                "storage.keyring_url",
                "must be a postgres:// or postgresql:// URL",
            );
        }
        if self.server.max_body_bytes == 0 {
            return err("server.max_body_bytes", "must be positive");
        }
        for (price, plan) in &self.billing.paddle_prices {
            if self.plans.find(plan).is_none() {
                return err(
                    "billing.paddle_prices",
                    &format!("price `{price}` names `{plan}`, which is not a plan of the catalogue"),
                );
            }
        }
        if self.plans.find(&self.billing.paddle_cancel_plan).is_none() {
            return err("billing.paddle_cancel_plan", "must be a plan of the catalogue");
        }
        if self.billing.webhooks_per_minute == 0 {
            return err("billing.webhooks_per_minute", "must be positive");
        }
        if let Some(url) = &self.server.public_url
            && url::Url::parse(url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
        {
            return err("server.public_url", "must be an absolute http(s) URL");
        }
        if self.tokens.min_ttl_secs == 0 || self.tokens.min_ttl_secs > self.tokens.max_ttl_secs {
            return err(
                "tokens.min_ttl_secs",
                "must be at least 1 and at most tokens.max_ttl_secs",
            );
        }
        if self.tokens.default_ttl_secs < self.tokens.min_ttl_secs.max(60)
            || self.tokens.default_ttl_secs > self.tokens.max_ttl_secs
        {
            return err(
                "tokens.default_ttl_secs",
                "must be at least 60 (and tokens.min_ttl_secs) and at most tokens.max_ttl_secs",
            );
        }
        if !matches!(self.smtp.tls.as_str(), "starttls" | "tls" | "none") {
            return err("smtp.tls", "must be `starttls`, `tls` or `none`");
        }
        if self.smtp.from.parse::<lettre::message::Mailbox>().is_err() {
            return err("smtp.from", "must be an address like `Name <user@example.com>`");
        }
        if self.smtp.username.is_some() != self.smtp.password.is_some() {
            return err(
                "smtp.username",
                "set both smtp.username and smtp.password, or neither",
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return err("log.format", "must be `text` or `json`");
        }
        Ok(())
    }

    /// The selected backend.
    pub fn backend(&self) -> Result<Backend, ConfigError> {
        match &self.storage.database_url {
            None => Ok(Backend::Sqlite(self.storage.data_dir.clone())),
            Some(url) => {
                let keyring_url = match &self.storage.keyring_url {
                    Some(k) => k.expose().to_owned(),
                    None => secureflows_store_postgres::default_keyring_url(url.expose())
                        .map_err(|e| ConfigError(format!("storage.database_url: {e}")))?,
                };
                Ok(Backend::Postgres {
                    database_url: url.expose().to_owned(),
                    keyring_url,
                })
            }
        }
    }

    /// The signing algorithm.
    pub fn signing_algorithm(&self) -> SigningAlgorithm {
        SigningAlgorithm::parse(&self.keys.signing_algorithm).unwrap_or(SigningAlgorithm::Rs256)
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(
            c.backend().unwrap(),
            Backend::Sqlite(PathBuf::from("secureflows-data"))
        );
    }

    #[test]
    fn the_reference_file_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.reference.toml");
        let c = Config::load(Some(&path)).unwrap();
        c.validate().unwrap();
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.server.max_body_bytes, d.server.max_body_bytes);
        assert_eq!(c.tokens.default_ttl_secs, d.tokens.default_ttl_secs);
        assert_eq!(c.plans, d.plans);
        assert_eq!(c.cache.max_staleness_ms, d.cache.max_staleness_ms);
        assert_eq!(c.console.open_signup, d.console.open_signup);
        assert_eq!(c.billing.paddle_cancel_plan, d.billing.paddle_cancel_plan);
        assert_eq!(c.billing.webhooks_per_minute, d.billing.webhooks_per_minute);
        assert_eq!(c.billing.paddle_prices, d.billing.paddle_prices);
    }

    #[test]
    fn billing_prices_must_name_catalogued_plans() {
        let mut c = Config::default();
        c.billing.paddle_prices.insert("pri_1".into(), "gold".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("billing.paddle_prices") && e.contains("gold"), "{e}");
        c.billing.paddle_prices.insert("pri_1".into(), "pro".into());
        c.validate().unwrap();
        c.billing.paddle_cancel_plan = "nothing".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("billing.paddle_cancel_plan")
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile_dir();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().0;
        assert!(e.contains("lisen"), "{e}");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
