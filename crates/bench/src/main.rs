//! `secureflows-bench`: starts the release server on SQLite and on PostgreSQL, seeds users and values
//! through the real API, drives `GET /sessions/get/{key}` and `POST /sessions/set/{key}` with wrk at a
//! fixed concurrency, and prints throughput and latency percentiles beside a bare endpoint of the same
//! HTTP stack measured in the same run.
//!
//! Run it with `scripts/bench` (which builds in release mode and installs wrk if needed).

// A measuring tool: it stamps its seed data with the wall clock and builds its own HTTP clients.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

mod console;
use futures_util::StreamExt;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "secureflows-bench")]
struct Args {
    #[command(subcommand)]
    bare: Option<Bare>,
    /// The release `secureflows` binary.
    #[arg(long, default_value = "target/release/secureflows")]
    secureflows: PathBuf,
    /// Seconds each load phase runs.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Users to seed.
    #[arg(long, default_value_t = 10_000)]
    users: u32,
    /// Keys per user.
    #[arg(long, default_value_t = 10)]
    keys: u32,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Backends to run: sqlite, postgres or both.
    #[arg(long, default_value = "sqlite,postgres")]
    backends: String,
    /// Drive only the first N seeded users (0: all of them); for finding where time goes.
    #[arg(long, default_value_t = 0)]
    hot_users: usize,
    /// The application's one tier's hourly budget per user: every call then goes through the tier
    /// lookup and the hourly limiter (0: no tiers, so neither runs; compare the two).
    #[arg(long, default_value_t = 4_000_000_000)]
    tier_budget: u32,
    /// Seconds of a mixed phase after GET and SET (80 % GET, 20 % SET), sampling the size of SQLite's
    /// write-ahead log every second; 0: none. Use 600 or more to show the log stays bounded.
    #[arg(long, default_value_t = 0)]
    mixed: u64,
    /// Run the console benchmark instead: seed users and audit events through the stores, then time
    /// each console page (p50/p99).
    #[arg(long)]
    console: bool,
    /// Console benchmark: users to seed.
    #[arg(long, default_value_t = 100_000)]
    console_users: u32,
    /// Console benchmark: audit events to seed.
    #[arg(long, default_value_t = 1_000_000)]
    console_events: u32,
    /// Console benchmark: requests per page.
    #[arg(long, default_value_t = 100)]
    console_requests: u32,
    /// PostgreSQL admin URL (a fresh database is created and dropped).
    #[arg(
        long,
        env = "SECUREFLOWS_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
}

#[derive(Debug, clap::Subcommand)]
enum Bare {
    /// Serve the bare endpoint (used by the benchmark itself).
    Bare {
        #[arg(long)]
        listen: String,
    },
}

#[derive(Debug, Clone)]
struct LoadResult {
    requests: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    errors: u64,
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not become ready")
}

fn peak_rss_mb(pid: u32) -> f64 {
    proc_status_mb(pid, "VmHWM:")
}

fn rss_mb(pid: u32) -> f64 {
    proc_status_mb(pid, "VmRSS:")
}

fn proc_status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

fn write_script(
    path: &Path,
    tokens: &[String],
    keys: u32,
    method: &str,
    value_size: usize,
) -> anyhow::Result<()> {
    let request = match method {
        "GET" => "wrk.format(\"GET\", PATH_PREFIX .. key, headers)",
        "POST" => "wrk.format(\"POST\", PATH_PREFIX .. key, headers, body)",
        // 80 % reads, 20 % writes of the same keys (PATH_PREFIX is unused).
        "MIXED" => {
            "(math.random() < 0.2) and wrk.format(\"POST\", \"/api/v1/sessions/set/k\" .. key, headers, body) \
             or wrk.format(\"GET\", \"/api/v1/sessions/get/k\" .. key, headers)"
        }
        _ => bail!("unknown method"),
    };
    let mut lua = String::with_capacity(tokens.len() * 1000);
    lua.push_str("local tokens = {\n");
    for t in tokens {
        lua.push_str(&lua_string(&format!("Bearer {t}")));
        lua.push_str(",\n");
    }
    lua.push_str("}\n");
    lua.push_str(&format!(
        "local nkeys = {keys}\nlocal body = string.rep(\"v\", {value_size})\n"
    ));
    lua.push_str("local thread_id = 0\nsetup = function(thread) thread_id = thread_id + 1; thread:set(\"seed\", thread_id) end\n");
    lua.push_str("init = function(args) math.randomseed(tonumber(seed or 1) * 7919) end\n");
    lua.push_str(&format!(
        "request = function()\n  local headers = {{ [\"Authorization\"] = tokens[math.random(#tokens)], [\"Content-Type\"] = \"application/octet-stream\" }}\n  local key = (math.random(nkeys) - 1)\n  return {request}\nend\n"
    ));
    lua.push_str(
        r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"p50":%f,"p99":%f,"p999":%f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#,
    );
    std::fs::write(path, lua)?;
    Ok(())
}

fn run_wrk(args: &Args, url: &str, script: &Path, path_prefix: &str) -> anyhow::Result<LoadResult> {
    run_wrk_for(args, args.duration, url, script, path_prefix)
}

fn run_wrk_for(
    args: &Args,
    seconds: u64,
    url: &str,
    script: &Path,
    path_prefix: &str,
) -> anyhow::Result<LoadResult> {
    let script_text = std::fs::read_to_string(script)?;
    let with_prefix = format!("PATH_PREFIX = {}\n{script_text}", lua_string(path_prefix));
    let final_script = script.with_extension("run.lua");
    std::fs::write(&final_script, with_prefix)?;
    let out = Command::new("wrk")
        .args([
            &format!("-t{}", args.threads),
            &format!("-c{}", args.connections),
            &format!("-d{seconds}s"),
            "--timeout",
            "10s",
            "-s",
            final_script.to_str().unwrap_or_default(),
            url,
        ])
        .output()
        .context("running wrk (install it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .with_context(|| format!("wrk output: {text}"))?;
    let v: Value = serde_json::from_str(line)?;
    let requests = v["requests"].as_u64().unwrap_or(0);
    let duration_s = v["duration_us"].as_f64().unwrap_or(1.0) / 1e6;
    Ok(LoadResult {
        requests,
        rps: requests as f64 / duration_s,
        p50_us: v["p50"].as_f64().unwrap_or(0.0),
        p99_us: v["p99"].as_f64().unwrap_or(0.0),
        p999_us: v["p999"].as_f64().unwrap_or(0.0),
        errors: v["errors"].as_u64().unwrap_or(0),
    })
}

async fn bare_server(listen: String) -> anyhow::Result<()> {
    let body = bytes_1k();
    let app = axum::Router::new().route(
        "/bare/{key}",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/octet-stream")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn bytes_1k() -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'v'; 1024])
}

async fn measure_bare(args: &Args, work: &Path, tokens: &[String]) -> anyhow::Result<LoadResult> {
    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["bare", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _bare = Process(child);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/bare/0")).await?;
    let script = work.join("bare.lua");
    write_script(&script, tokens, args.keys, "GET", 0)?;
    run_wrk(args, &url, &script, "/bare/")
}

struct Backend {
    name: &'static str,
    env: Vec<(String, String)>,
    cleanup_db: Option<String>,
}

fn cli(args: &Args, data_dir: &Path, env: &[(String, String)], cli_args: &[&str]) -> anyhow::Result<Value> {
    let mut cmd = Command::new(&args.secureflows);
    cmd.env("SECUREFLOWS_DATA_DIR", data_dir).env("RUST_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .arg("--json")
        .args(cli_args)
        .output()
        .context("running secureflows")?;
    if !out.status.success() {
        bail!(
            "secureflows {cli_args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn bench_backend(args: &Args, backend: &Backend, bare: &LoadResult) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let data_dir = work.path().join("data");
    let issuer = secureflows_testkit::TestIssuer::start().await;
    let mut env = backend.env.clone();
    env.push((
        "SECUREFLOWS__UPSTREAM__ALLOW_PRIVATE_NETWORKS".into(),
        "true".into(),
    ));
    env.push(("SECUREFLOWS__UPSTREAM__ALLOW_HTTP".into(), "true".into()));
    env.push(("SECUREFLOWS__LOG__LEVEL".into(), "warn".into()));
    cli(args, &data_dir, &env, &["migrate"])?;
    let ws = cli(
        args,
        &data_dir,
        &env,
        &["workspace", "create", "--name", "Bench", "--plan", "pro"],
    )?;
    let ws = ws["workspace_id"].as_str().context("workspace id")?.to_owned();
    let app = cli(
        args,
        &data_dir,
        &env,
        &[
            "app",
            "create",
            "--workspace",
            &ws,
            "--name",
            "Bench",
            "--trust-issuer",
            &issuer.url,
            "--trust-audience",
            "bench",
            "--token-ttl",
            "2h",
        ],
    )?;
    let client_id = app["client_id"].as_str().context("client id")?.to_owned();

    let port = free_port()?;
    let mut cmd = Command::new(&args.secureflows);
    cmd.env("SECUREFLOWS_DATA_DIR", &data_dir);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let child = cmd
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let _server = Process(child);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/readyz")).await?;

    // The application sells one tier whose hourly budget is far beyond what the run uses: every call
    // goes through the tier lookup and the hourly limiter, as with a real application's tiers, and
    // none is refused.
    if args.tier_budget > 0 {
        let owner = cli(
            args,
            &data_dir,
            &env,
            &[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "token",
                "issue",
                "--workspace",
                &ws,
                "--email",
                "bench@bench.example",
                "--role",
                "owner",
            ],
        )?;
        let owner = owner["token"].as_str().context("console token")?.to_owned();
        let tiers = reqwest::Client::new()
            .patch(format!("{url}/api/v1/applications/{client_id}"))
            .bearer_auth(&owner)
            .json(&serde_json::json!({
                "tiers": [{"name": "bench", "requests_per_hour": args.tier_budget}],
                "default_tier": "bench"
            }))
            .send()
            .await?;
        if !tiers.status().is_success() {
            bail!("setting the bench tier: {}", tiers.text().await?);
        }
    }

    // Seed through the real API: sign every user in, then write their values.
    let started = Instant::now();
    let client = secureflows_client::Client::new(url.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let tokens: Vec<String> = futures_util::stream::iter(0..args.users)
        .map(|i| {
            let token = issuer.sign(&issuer.claims(&format!("user-{i}"), "bench", now));
            let (client, client_id) = (client.clone(), client_id.clone());
            async move {
                client
                    .sign_in_with_id_token(&token, Some(&client_id))
                    .await
                    .map(|r| r.session_token)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let value = vec![b'v'; args.value_size];
    let writes = futures_util::stream::iter(
        tokens
            .iter()
            .flat_map(|t| (0..args.keys).map(move |k| (t.clone(), k))),
    )
    .map(|(token, k)| {
        let (session, value) = (client.session(token), value.clone());
        async move {
            session
                .set(&format!("k{k}"), "application/octet-stream", value)
                .await
                .map(|_| ())
        }
    })
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let failed = writes.iter().filter(|w| w.is_err()).count();
    if failed > 0 {
        bail!("{failed} seed writes failed");
    }
    println!(
        "  {}: seeded {} users x {} keys of {} B in {:.1}s (RSS now {:.1} MB, peak {:.1} MB); {}",
        backend.name,
        args.users,
        args.keys,
        args.value_size,
        started.elapsed().as_secs_f64(),
        rss_mb(pid),
        peak_rss_mb(pid),
        if args.tier_budget > 0 {
            format!(
                "every call charged to a tier budget of {} per hour",
                args.tier_budget
            )
        } else {
            "no tiers: no hourly limiter".to_owned()
        }
    );

    let driven = if args.hot_users > 0 {
        &tokens[..args.hot_users.min(tokens.len())]
    } else {
        &tokens[..]
    };
    let get_script = work.path().join("get.lua");
    write_script(&get_script, driven, args.keys, "GET", args.value_size)?;
    let get = run_wrk(args, &url, &get_script, "/api/v1/sessions/get/k")?;
    let set_script = work.path().join("set.lua");
    write_script(&set_script, driven, args.keys, "POST", args.value_size)?;
    let after_get = rss_mb(pid);
    let set = run_wrk(args, &url, &set_script, "/api/v1/sessions/set/k")?;
    let rss = peak_rss_mb(pid);
    for (label, r) in [
        ("GET /sessions/get/{key}", &get),
        ("POST /sessions/set/{key}", &set),
    ] {
        print_row(&format!("{} {label}", backend.name), r, Some(bare));
    }
    println!(
        "  {}: peak RSS {:.1} MB with {} stored values (RSS after GET {:.1} MB, after SET {:.1} MB)",
        backend.name,
        rss,
        u64::from(args.users) * u64::from(args.keys),
        after_get,
        rss_mb(pid)
    );
    if args.mixed > 0 {
        mixed_phase(args, backend, &url, driven, work.path(), &data_dir, pid, bare)?;
    }
    Ok(())
}

/// Sustained mixed load (80 % GET, 20 % SET of `value_size` bytes), sampling every second the size of
/// SQLite's write-ahead log (`secureflows.db-wal`) and of the database: the log must stay bounded
/// however long the load lasts.
#[allow(clippy::too_many_arguments)]
fn mixed_phase(
    args: &Args,
    backend: &Backend,
    url: &str,
    tokens: &[String],
    work: &Path,
    data_dir: &Path,
    pid: u32,
    bare: &LoadResult,
) -> anyhow::Result<()> {
    let script = work.join("mixed.lua");
    write_script(&script, tokens, args.keys, "MIXED", args.value_size)?;
    let wal = data_dir.join("secureflows.db-wal");
    let db = data_dir.join("secureflows.db");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let (mut peak, mut samples, mut sum) = (0u64, 0u64, 0u64);
            let mut minute_peaks = Vec::new();
            let mut minute_peak = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = size(&wal);
                peak = peak.max(now);
                minute_peak = minute_peak.max(now);
                sum += now;
                samples += 1;
                if samples % 60 == 0 {
                    minute_peaks.push(minute_peak);
                    minute_peak = 0;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (peak, sum / samples.max(1), size(&wal), size(&db), minute_peaks)
        })
    };
    let mixed = run_wrk_for(args, args.mixed, url, &script, "")?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (peak, mean, last, db_size, minute_peaks) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the write-ahead log sampler failed"))?;
    print_row(
        &format!("{} mixed 80/20 for {} s", backend.name, args.mixed),
        &mixed,
        Some(bare),
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if backend.name == "sqlite" {
        println!(
            "  {}: write-ahead log peak {:.1} MiB, mean {:.1} MiB, at the end {:.1} MiB (database {:.1} MiB); \
             peak per minute: {}",
            backend.name,
            mib(peak),
            mib(mean),
            mib(last),
            mib(db_size),
            minute_peaks
                .iter()
                .map(|p| format!("{:.0}", mib(*p)))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "  {}: peak RSS {:.1} MB after the mixed phase",
        backend.name,
        peak_rss_mb(pid)
    );
    Ok(())
}

fn print_row(label: &str, r: &LoadResult, bare: Option<&LoadResult>) {
    let ratio = bare.map_or_else(
        || "      -".to_owned(),
        |b| format!("{:6.1}%", 100.0 * r.rps / b.rps),
    );
    println!(
        "{label:<42} {:>10.0} req/s  {ratio} of bare   p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  errors {}  ({} requests)",
        r.rps,
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.p999_us / 1000.0,
        r.errors,
        r.requests
    );
}

async fn create_pg_database(admin: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("sf_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .context("connect to PostgreSQL")?;
    sqlx::query(&format!("create database \"{name}\""))
        .execute(&mut conn)
        .await?;
    Ok(name)
}

async fn drop_pg_database(admin: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        for db in [name.to_owned(), format!("{name}_keyring")] {
            let _ = sqlx::query(&format!("drop database if exists \"{db}\" with (force)"))
                .execute(&mut conn)
                .await;
        }
    }
}

fn db_url(admin: &str, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(admin)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Bare::Bare { listen }) = args.bare {
        return bare_server(listen).await;
    }
    if args.console {
        let bench = console::ConsoleBench {
            users: args.console_users,
            events: args.console_events,
            requests: args.console_requests,
            pg_url: args.pg_url.clone(),
        };
        return console::run(&bench, &args.backends).await;
    }
    if !args.secureflows.exists() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p secureflows`",
            args.secureflows.display()
        );
    }
    let (_, key) = secureflows_crypto::MasterKey::generate()?;
    let key = key.to_string();
    println!(
        "secureFlows benchmark: {} users x {} keys of {} B, {} connections, {} wrk threads, {} s per phase, {} CPUs",
        args.users,
        args.keys,
        args.value_size,
        args.connections,
        args.threads,
        args.duration,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let work = tempfile::tempdir()?;
    let bare_tokens: Vec<String> = (0..args.users).map(|i| format!("bare-token-{i:0>600}")).collect();
    let bare = measure_bare(&args, work.path(), &bare_tokens).await?;
    print_row("bare axum endpoint (1 KiB)", &bare, None);

    let mut backends = Vec::new();
    for name in args.backends.split(',').map(str::trim) {
        match name {
            "sqlite" => backends.push(Backend {
                name: "sqlite",
                env: vec![("SECUREFLOWS_MASTER_KEY".into(), key.clone())],
                cleanup_db: None,
            }),
            "postgres" => {
                let db = create_pg_database(&args.pg_url).await?;
                backends.push(Backend {
                    name: "postgres",
                    env: vec![
                        ("SECUREFLOWS_MASTER_KEY".into(), key.clone()),
                        ("SECUREFLOWS_DATABASE_URL".into(), db_url(&args.pg_url, &db)?),
                    ],
                    cleanup_db: Some(db),
                })
            }
            other => bail!("unknown backend {other}"),
        }
    }
    let mut result = Ok(());
    for backend in &backends {
        if let Err(e) = bench_backend(&args, backend, &bare).await {
            eprintln!("{} failed: {e:#}", backend.name);
            result = Err(e);
        }
        if let Some(db) = &backend.cleanup_db {
            drop_pg_database(&args.pg_url, db).await;
        }
    }
    let bare_again = measure_bare(&args, work.path(), &bare_tokens).await?;
    print_row("bare axum endpoint (1 KiB), again", &bare_again, None);
    result
}
