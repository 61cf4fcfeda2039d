//! The `secureflows` binary: operator commands with `--json`, the generated master key, migrations,
//! key rotation, the single-node lock, and several server processes sharing one PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use secureflows_testkit::{Backend, TestIssuer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_secureflows");

fn command(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("SECUREFLOWS") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SECUREFLOWS_DATA_DIR", data_dir).env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    command(data_dir, env).args(args).output().unwrap()
}

fn run_json(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    let out = run(data_dir, env, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

struct ServerProcess {
    child: Child,
    url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(data_dir: &Path, env: &[(&str, &str)]) -> ServerProcess {
    serve_at(data_dir, env, free_port()).await
}

async fn serve_at(data_dir: &Path, env: &[(&str, &str)], port: u16) -> ServerProcess {
    serve_logging_to(data_dir, env, port, Stdio::null()).await
}

async fn serve_logging_to(data_dir: &Path, env: &[(&str, &str)], port: u16, log: Stdio) -> ServerProcess {
    let listen = format!("127.0.0.1:{port}");
    let child = command(data_dir, env)
        .args(["serve", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = ServerProcess {
        child,
        url: format!("http://{listen}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/readyz", server.url)).await
            && r.status() == 200
        {
            return server;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn random_key() -> String {
    let (_, encoded) = secureflows_crypto::MasterKey::generate().unwrap();
    encoded.to_string()
}

#[test]
fn fresh_data_dir_generates_a_private_master_key_and_commands_print_json() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    // Only `serve` and `migrate` create data.
    let out = run(&dir, &[], &["--json", "migrate"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GENERATED A NEW MASTER KEY"), "{stderr}");
    let ws = run_json(
        &dir,
        &[],
        &[
            "--json",
            "workspace",
            "create",
            "--name",
            "Tuff Flips",
            "--plan",
            "pro",
        ],
    );
    assert_eq!(ws["plan"], "pro");
    let id = ws["workspace_id"].as_str().unwrap().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("master.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    let app = run_json(
        &dir,
        &[],
        &[
            "--json",
            "app",
            "create",
            "--workspace",
            &id,
            "--name",
            "Web",
            "--trust-issuer",
            "https://accounts.google.com",
            "--trust-audience",
            "web-client",
            "--allow-origin",
            "https://app.tuffflips.com",
            "--session-ttl",
            "48h",
            "--token-ttl",
            "10m",
        ],
    );
    assert_eq!(app["session_ttl_secs"], 172_800);
    assert_eq!(app["token_ttl_secs"], 600);
    assert!(app["client_id"].as_str().unwrap().len() == 36);
    assert_eq!(app["kind"], "server");
    assert!(app["client_secret"].is_string());

    // Kinds: explicit, or as --public chooses; `app show` reads one back.
    let native = run_json(
        &dir,
        &[],
        &[
            "--json",
            "app",
            "create",
            "--workspace",
            &id,
            "--name",
            "Desktop",
            "--kind",
            "native",
            "--redirect-uri",
            "http://127.0.0.1:8765/cb",
            "--trust-issuer",
            "https://accounts.google.com",
            "--trust-audience",
            "desktop",
            "--trust-mfa-amr",
            "mfa",
        ],
    );
    assert_eq!(
        (native["kind"].as_str(), native["public"].as_bool()),
        (Some("native"), Some(true))
    );
    assert!(native.get("client_secret").is_none());
    let shown = run_json(
        &dir,
        &[],
        &["--json", "app", "show", native["client_id"].as_str().unwrap()],
    );
    assert_eq!(shown["kind"], "native");
    assert_eq!(shown["trust_mfa_amr"], serde_json::json!(["mfa"]));
    let spa = run_json(
        &dir,
        &[],
        &[
            "--json",
            "app",
            "create",
            "--workspace",
            &id,
            "--name",
            "Spa",
            "--public",
            "--redirect-uri",
            "https://app.tuffflips.com/cb",
        ],
    );
    assert_eq!(spa["kind"], "browser");
    let out = run(
        &dir,
        &[],
        &[
            "--json",
            "app",
            "create",
            "--workspace",
            &id,
            "--name",
            "Bad",
            "--kind",
            "native",
            "--redirect-uri",
            "https://app.tuffflips.com/cb",
        ],
    );
    assert!(!out.status.success());
    let out = run(
        &dir,
        &[],
        &["--json", "app", "show", "00000000-0000-0000-0000-000000000000"],
    );
    assert!(!out.status.success());

    // Bad input: a clear error, exit code 1, one JSON object.
    let out = run(
        &dir,
        &[],
        &[
            "--json",
            "app",
            "create",
            "--workspace",
            &id,
            "--name",
            "Bad",
            "--allow-origin",
            "https://x.example/",
        ],
    );
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("allowed_origins"),
        "{err}"
    );
    let out = run(&dir, &[], &["--json", "workspace", "delete", "not-an-id"]);
    assert!(!out.status.success());

    let rotated = run_json(&dir, &[], &["--json", "keys", "rotate", "--workspace", &id]);
    assert_eq!(rotated["data_key_version"], 2);
    let signing = run_json(&dir, &[], &["--json", "keys", "rotate-signing"]);
    assert!(signing["kid"].as_str().is_some());
    let plan = run_json(
        &dir,
        &[],
        &["--json", "workspace", "set-plan", &id, "--plan", "base"],
    );
    assert_eq!(plan["plan"], "base");
    let list = run_json(&dir, &[], &["--json", "workspace", "list"]);
    assert_eq!(list["workspaces"][0]["plan"], "base");
    let deleted = run_json(&dir, &[], &["--json", "workspace", "delete", &id]);
    assert_eq!(deleted["keys_destroyed"], true);
}

#[test]
fn master_key_rotation_replaces_the_generated_key() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    run_json(&dir, &[], &["--json", "migrate"]);
    let ws = run_json(&dir, &[], &["--json", "workspace", "create", "--name", "A"]);
    let id = ws["workspace_id"].as_str().unwrap();
    let old = std::fs::read_to_string(dir.join("master.key")).unwrap();
    let new_file = temp.path().join("new.key");
    let generated = run_json(
        &dir,
        &[],
        &[
            "--json",
            "keys",
            "generate-master",
            "--out",
            new_file.to_str().unwrap(),
        ],
    );
    let rotated = run_json(
        &dir,
        &[],
        &[
            "--json",
            "keys",
            "rotate-master",
            "--new-key-file",
            new_file.to_str().unwrap(),
        ],
    );
    assert_eq!(rotated["master_key_id"], generated["master_key_id"]);
    assert!(rotated["rewrapped_keys"].as_u64().unwrap() >= 2);
    assert_eq!(
        std::fs::read_to_string(dir.join("master.key")).unwrap(),
        std::fs::read_to_string(&new_file).unwrap()
    );
    assert!(!dir.join("master.key.new").exists());
    // Everything still opens with the new key.
    assert_eq!(
        run_json(&dir, &[], &["--json", "keys", "rotate", "--workspace", id])["data_key_version"],
        2
    );
    // The old key is refused: sealed.
    let out = run(
        &dir,
        &[("SECUREFLOWS_MASTER_KEY", old.trim())],
        &["--json", "workspace", "list"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sealed"));
    // A world-readable key file is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("master.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(&dir, &[], &["--json", "workspace", "list"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("readable by other users"));
    }
}

#[test]
fn a_changed_migration_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    assert_eq!(run_json(&dir, &[], &["--json", "migrate"])["migrated"], true);
    assert_eq!(
        run_json(&dir, &[], &["--json", "migrate"])["migrated"],
        true,
        "idempotent"
    );
    let conn = rusqlite::Connection::open(dir.join("secureflows.db")).unwrap();
    conn.execute(
        "update schema_migration set checksum = 'edited' where version = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let out = run(&dir, &[], &["--json", "migrate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed after it was applied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_migration_is_refused_on_postgres() {
    let Some(Backend::Postgres(db)) = Backend::postgres() else {
        return;
    };
    db.create().await;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let url = db.url();
    let key = random_key();
    let env = [
        ("SECUREFLOWS_DATABASE_URL", url.as_str()),
        ("SECUREFLOWS_MASTER_KEY", key.as_str()),
    ];
    assert_eq!(run_json(&dir, &env, &["--json", "migrate"])["migrated"], true);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("update _sqlx_migrations set checksum = '\\x00'::bytea where version = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let out = run(&dir, &env, &["--json", "migrate"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed after it was applied"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_single_node_and_sees_operator_changes() {
    let issuer = TestIssuer::start().await;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let env = [
        ("SECUREFLOWS__UPSTREAM__ALLOW_PRIVATE_NETWORKS", "true"),
        ("SECUREFLOWS__UPSTREAM__ALLOW_HTTP", "true"),
    ];
    run_json(&dir, &env, &["--json", "migrate"]);
    let ws = run_json(
        &dir,
        &env,
        &["--json", "workspace", "create", "--name", "A", "--plan", "pro"],
    );
    let id = ws["workspace_id"].as_str().unwrap().to_owned();
    let app = run_json(
        &dir,
        &env,
        &[
            "--json",
            "app",
            "create",
            "--workspace",
            &id,
            "--name",
            "Web",
            "--trust-issuer",
            &issuer.url,
            "--trust-audience",
            "web",
        ],
    );
    let server = serve(&dir, &env).await;

    // A second server on the same data directory is refused.
    let out = command(&dir, &env)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("single-node"));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = issuer.sign(&issuer.claims("alice", "web", now));
    let client = secureflows_client::Client::new(server.url.clone());
    let signed = client
        .sign_in_with_id_token(&token, app["client_id"].as_str())
        .await
        .unwrap();
    let session = client.session(signed.session_token);
    session.set("k", "text/plain", "v").await.unwrap();

    // Deleting the workspace from the command line while the server runs: its tokens stop working.
    run_json(&dir, &env, &["--json", "workspace", "delete", &id]);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match session.get("k").await {
            Err(e) if e.status() == Some(401) => break,
            _ => assert!(
                Instant::now() < deadline,
                "the running server still serves a deleted workspace"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_a_second_server_process_within_a_second() {
    let Some(Backend::Postgres(db)) = Backend::postgres() else {
        return;
    };
    db.create().await;
    let issuer = TestIssuer::start().await;
    let temp = tempfile::tempdir().unwrap();
    let url = db.url();
    let key = random_key();
    let env = [
        ("SECUREFLOWS_DATABASE_URL", url.as_str()),
        ("SECUREFLOWS_MASTER_KEY", key.as_str()),
        ("SECUREFLOWS__SERVER__PUBLIC_URL", "http://secureflows.test"),
        ("SECUREFLOWS__UPSTREAM__ALLOW_PRIVATE_NETWORKS", "true"),
        ("SECUREFLOWS__UPSTREAM__ALLOW_HTTP", "true"),
        // Only NOTIFY may make this fast: the fallback poll is far slower than the bound checked here.
        ("SECUREFLOWS__CACHE__POLL_INTERVAL_MS", "5000"),
        ("SECUREFLOWS__CACHE__MAX_STALENESS_MS", "15000"),
    ];
    let dir_a = temp.path().join("a");
    let dir_b = temp.path().join("b");
    run_json(&dir_a, &env, &["--json", "migrate"]);
    let ws = run_json(
        &dir_a,
        &env,
        &["--json", "workspace", "create", "--name", "A", "--plan", "pro"],
    );
    let id = ws["workspace_id"].as_str().unwrap().to_owned();
    let app = run_json(
        &dir_a,
        &env,
        &[
            "--json",
            "app",
            "create",
            "--workspace",
            &id,
            "--name",
            "Web",
            "--trust-issuer",
            &issuer.url,
            "--trust-audience",
            "web",
        ],
    );
    let a = serve(&dir_a, &env).await;
    let b = serve(&dir_b, &env).await;
    let client_a = secureflows_client::Client::new(a.url.clone());
    let client_b = secureflows_client::Client::new(b.url.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    for (round, end) in ["revoke", "logout"].iter().enumerate() {
        let token = issuer.sign(&issuer.claims(&format!("user{round}"), "web", now));
        let signed = client_a
            .sign_in_with_id_token(&token, app["client_id"].as_str())
            .await
            .unwrap();
        let on_a = client_a.session(signed.session_token.clone());
        let on_b = client_b.session(signed.session_token);
        on_a.set("k", "text/plain", "v").await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                &on_b.get("k").await.unwrap().bytes[..],
                b"v",
                "node B serves the token (and caches it)"
            );
        }
        match *end {
            "revoke" => on_a.revoke().await.unwrap(),
            _ => on_a.logout().await.unwrap(),
        }
        let ended = Instant::now();
        loop {
            match on_b.get("k").await {
                Err(e) if e.status() == Some(401) => break,
                Ok(_) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
            assert!(
                ended.elapsed() < Duration::from_secs(1),
                "{end} not seen by node B within one second"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("{end} seen by the second process after {:?}", ended.elapsed());
    }
    drop(a);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_tokens_support_operators_and_audit_verification() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    // Tokens minted on the command line carry the server's public URL as issuer.
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let env: &[(&str, &str)] = &[("SECUREFLOWS__SERVER__PUBLIC_URL", &public_url)];
    run_json(&dir, env, &["--json", "migrate"]);
    let ws = run_json(
        &dir,
        env,
        &["--json", "workspace", "create", "--name", "Tuff Flips"],
    );
    let id = ws["workspace_id"].as_str().unwrap().to_owned();

    // `token issue` creates the member and prints a USER JWT that the management API accepts.
    let issued = run_json(
        &dir,
        env,
        &[
            "--json",
            "token",
            "issue",
            "--workspace",
            &id,
            "--email",
            "Owner@Tuff.example",
            "--role",
            "owner",
            "--ttl",
            "10m",
        ],
    );
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(issued["expires_in"], 600);
    assert_eq!(issued["role"], "owner");
    let out = run(
        &dir,
        env,
        &[
            "--json",
            "token",
            "issue",
            "--workspace",
            &id,
            "--email",
            "x@y.example",
            "--role",
            "admin",
            "--ttl",
            "25h",
        ],
    );
    assert!(!out.status.success(), "a console token lives at most 24 hours");
    let out = run(
        &dir,
        env,
        &[
            "--json",
            "token",
            "issue",
            "--workspace",
            &id,
            "--email",
            "x@y.example",
            "--role",
            "support",
        ],
    );
    assert!(
        !out.status.success(),
        "SUPPORT tokens only for operators created with `support create`"
    );

    // SUPPORT operators exist only when created here.
    let support = run_json(
        &dir,
        env,
        &["--json", "support", "create", "--email", "help@ops.example"],
    );
    assert!(support["support_id"].as_str().is_some());
    let out = run(
        &dir,
        env,
        &["--json", "support", "create", "--email", "HELP@ops.example"],
    );
    assert!(!out.status.success(), "one operator per e-mail");
    let listed = run_json(&dir, env, &["--json", "support", "list"]);
    assert_eq!(listed["support"][0]["email"], "help@ops.example");
    let support_token = run_json(
        &dir,
        env,
        &[
            "--json",
            "token",
            "issue",
            "--workspace",
            &id,
            "--email",
            "help@ops.example",
            "--role",
            "support",
        ],
    );
    assert_eq!(support_token["role"], "support");

    let server = serve_at(&dir, env, port).await;
    let http = reqwest::Client::new();
    let me: Value = http
        .get(format!("{}/api/v1/users/me", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Stored in its canonical form (the address rule: lower case).
    assert_eq!(me["email"], "owner@tuff.example");
    assert_eq!(me["role"], "owner");
    let r = http
        .get(format!("{}/api/v1/workspaces", server.url))
        .bearer_auth(support_token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(server);

    // The chains verify; the export holds every event.
    let verified = run_json(&dir, env, &["--json", "audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    let export = run(&dir, env, &["audit", "export", "--workspace", &id]);
    assert!(export.status.success());
    let lines = String::from_utf8(export.stdout).unwrap();
    let actions: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for a in ["workspace.create", "user.create", "token.issue", "support.read"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    let csv_file = temp.path().join("audit.csv");
    let written = run_json(
        &dir,
        env,
        &[
            "--json",
            "audit",
            "export",
            "--workspace",
            &id,
            "--format",
            "csv",
            "--out",
            csv_file.to_str().unwrap(),
        ],
    );
    assert_eq!(written["events"], actions.len());
    assert_eq!(
        std::fs::read_to_string(&csv_file).unwrap().lines().count(),
        actions.len() + 1
    );

    // An edit in the database file is reported, with a failing exit code.
    let conn = rusqlite::Connection::open(dir.join("secureflows.db")).unwrap();
    conn.execute(
        "update audit_event set action = 'workspace.read' where seq = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let out = run(&dir, env, &["--json", "audit", "verify", "--workspace", &id]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["chains"][0]["faults"][0]["kind"], "edited");
    assert_eq!(report["chains"][0]["faults"][0]["seq"], 1);
}

/// Only `serve` and `migrate` create data: every other command pointed at a place without secureFlows
/// data refuses with a message that says so, and leaves nothing behind (no directory, no master key,
/// no tables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_refuse_a_place_without_data_and_create_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("missing");
    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let commands: [&[&str]; 4] = [
        &["--json", "workspace", "list"],
        &["--json", "support", "list"],
        &["--json", "keys", "rotate-signing"],
        &["--json", "audit", "verify"],
    ];
    for dir in [&missing, &empty] {
        for args in commands {
            let out = run(dir, &[], args);
            assert!(!out.status.success(), "{args:?} succeeded in {}", dir.display());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("holds no secureFlows data"), "{args:?}: {stderr}");
            assert!(stderr.contains("secureflows migrate"), "{args:?}: {stderr}");
        }
    }
    assert!(!missing.exists(), "a data directory was created");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "files were created"
    );

    let Some(Backend::Postgres(db)) = Backend::postgres() else {
        return;
    };
    db.create().await;
    let url = db.url();
    let key = random_key();
    let env = [
        ("SECUREFLOWS_DATABASE_URL", url.as_str()),
        ("SECUREFLOWS_MASTER_KEY", key.as_str()),
    ];
    for args in commands {
        let out = run(&empty, &env, args);
        assert!(!out.status.success(), "{args:?} succeeded on an empty database");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("holds no secureFlows data"), "{args:?}: {stderr}");
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(tables, 0, "tables were created");
}

/// A command given the server's `--listen` derives the issuer the server uses, so the console token
/// it mints is accepted by a server started with `serve --listen` and no public URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_take_the_servers_listen_address_for_the_issuer() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    run_json(&dir, &[], &["--json", "migrate"]);
    let ws = run_json(&dir, &[], &["--json", "workspace", "create", "--name", "A"]);
    let id = ws["workspace_id"].as_str().unwrap().to_owned();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = serve_at(&dir, &[], port).await;
    let issue = |extra: &[&str]| {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "token",
            "issue",
            "--workspace",
            &id,
            "--email",
            "owner@a.example",
            "--role",
            "owner",
        ]);
        run_json(&dir, &[], &args)["token"].as_str().unwrap().to_owned()
    };
    let client = reqwest::Client::new();
    let status = |token: String| {
        let request = client
            .get(format!("{}/api/v1/workspaces", server.url))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(issue(&["--listen", &listen])).await, 200);
    let shown = run_json(
        &dir,
        &[],
        &["--json", "--listen", &listen, "workspace", "show", &id],
    );
    assert!(
        shown["issuer"].as_str().unwrap().starts_with(&server.url),
        "{shown}"
    );
    // The first OWNER (made by `token issue`) gets a link to set a password on this server's pages.
    let linked = run_json(
        &dir,
        &[],
        &[
            "--json",
            "--listen",
            &listen,
            "member",
            "link",
            "--workspace",
            &id,
            "--email",
            "owner@a.example",
        ],
    );
    let link = linked["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{}/w/{id}/reset?token=sfl_", server.url)),
        "{linked}"
    );
    assert_eq!(linked["expires_in"], 900);
    let page = client.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let out = run(
        &dir,
        &[],
        &[
            "member",
            "link",
            "--workspace",
            &id,
            "--email",
            "nobody@a.example",
        ],
    );
    assert!(!out.status.success());
    // Without it the command cannot know the address: its tokens name another issuer.
    assert_eq!(status(issue(&[])).await, 401);
}

/// Without SMTP on a loopback public URL, mail goes to the data directory's outbox (mode 0600),
/// `secureflows mail list` shows it with its link, and the log says a message was written without
/// naming the address or the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_a_local_instance_writes_mail_to_the_outbox() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    run_json(&dir, &[], &["--json", "migrate"]);
    assert_eq!(
        run_json(&dir, &[], &["--json", "mail", "list"])["messages"],
        serde_json::json!([])
    );
    let ws = run_json(&dir, &[], &["--json", "workspace", "create", "--name", "A"]);
    let id = ws["workspace_id"].as_str().unwrap().to_owned();
    let log_path = temp.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = serve_logging_to(&dir, &[("RUST_LOG", "info")], port, log.into()).await;
    let token = run_json(
        &dir,
        &[],
        &[
            "--json",
            "--listen",
            &listen,
            "token",
            "issue",
            "--workspace",
            &id,
            "--email",
            "owner@a.example",
            "--role",
            "owner",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/invites", server.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"email": "new.member@a.example", "role": "user"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["delivery"], "sent", "{created}");
    assert!(created.get("link").is_none(), "{created}");

    let listed = run_json(&dir, &[], &["--json", "mail", "list"]);
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{listed}");
    assert_eq!(messages[0]["to"], "new.member@a.example");
    let text = messages[0]["text"].as_str().unwrap();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/invite/accept?token="))
        .unwrap_or_else(|| panic!("no link in {text}"));
    assert!(link.starts_with(&server.url), "{link}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let outbox = dir.join("outbox");
        assert_eq!(
            std::fs::metadata(&outbox).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = outbox.join(messages[0]["file"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let token_in_link = link.split("token=").nth(1).unwrap();
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("development outbox"), "{log}");
    assert!(!log.contains("new.member"), "the log names the address");
    assert!(!log.contains(token_in_link), "the log carries the link");
}

/// `secureflows --listen LISTEN example --workspace ID --port PORT`, as the README runs it.
fn example_command(dir: &Path, listen: &str, id: &str, port: &str) -> Command {
    let mut cmd = command(dir, &[]);
    cmd.args(["--listen", listen, "example", "--workspace", id, "--port", port]);
    cmd
}

/// `secureflows example` registers the example page as a browser application of the workspace (once)
/// and serves it on localhost, filled in for this server: the first walk needs nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_application_is_registered_once_and_served_filled_in() {
    use std::io::BufRead;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    run_json(&dir, &[], &["--json", "migrate"]);
    let ws = run_json(&dir, &[], &["--json", "workspace", "create", "--name", "A"]);
    let id = ws["workspace_id"].as_str().unwrap().to_owned();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = serve_at(&dir, &[], port).await;
    let page_port = free_port().to_string();
    let start = || {
        let mut child = example_command(&dir, &listen, &id, &page_port)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        (
            ServerProcess {
                child,
                url: started["url"].as_str().unwrap().to_owned(),
            },
            started,
        )
    };
    let (example, started) = start();
    assert_eq!(example.url, format!("http://localhost:{page_port}/"));
    let client_id = started["client_id"].as_str().unwrap().to_owned();
    for path in ["", "callback?code=x&state=y"] {
        let page = reqwest::get(format!("{}{path}", example.url)).await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains(&format!("const SECUREFLOWS = \"{}\";", server.url)),
            "{html}"
        );
        assert!(
            html.contains(&format!("const ISSUER = \"{}/w/{id}\";", server.url)),
            "{html}"
        );
        assert!(
            html.contains(&format!("const CLIENT_ID = \"{client_id}\";")),
            "{html}"
        );
    }
    // The registered application is a browser application the hosted login accepts for that page.
    let shown = run_json(&dir, &[], &["--json", "app", "show", &client_id]);
    assert_eq!(shown["kind"], "browser", "{shown}");
    let authorize = format!(
        "{}/w/{id}/authorize?response_type=code&client_id={client_id}\
         &redirect_uri=http%3A%2F%2Flocalhost%3A{page_port}%2Fcallback&scope=openid&state=s\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        server.url
    );
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(authorize)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    drop(example);
    // Started again, it serves the same application instead of registering another.
    let (_again, started) = start();
    assert_eq!(started["client_id"], client_id.as_str());
    let list = run_json(&dir, &[], &["--json", "app", "list", "--workspace", &id]);
    assert_eq!(list["applications"].as_array().unwrap().len(), 1, "{list}");
}

/// The README's first walk as written (with this test's own ports, passed as the README says): the
/// server, `workspace create`, `secureflows example`, then in Chromium: Sign in, Create an account, the
/// page's session token stores and reads a value, Sign out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_first_walk_in_a_browser() {
    use secureflows_testkit::browser::{browser, click, fill, wait_for_text};
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // `cargo run --release -p secureflows -- serve`: creates the data directory on first start.
    let _server = serve_at(&dir, &[], port).await;
    let ws = run_json(
        &dir,
        &[],
        &[
            "--json",
            "--listen",
            &listen,
            "workspace",
            "create",
            "--name",
            "Tuff Flips",
            "--plan",
            "pro",
        ],
    );
    let id = ws["workspace_id"].as_str().unwrap().to_owned();
    let page_port = free_port().to_string();
    let example = example_command(&dir, &listen, &id, &page_port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let example = ServerProcess {
        child: example,
        url: format!("http://localhost:{page_port}/"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(&example.url).await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "the example application did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    c.goto(&example.url).await.unwrap();
    click(c, "#sign-in").await;
    click(c, "#to-signup").await;
    fill(c, "#email", "reader@tuff.example").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-up").await;
    wait_for_text(c, "#result", "hello from the vault").await;
    assert_eq!(c.current_url().await.unwrap().as_str(), example.url);
    click(c, "#sign-out").await;
    click(c, "#confirm-logout").await;
    wait_for_text(c, "#status", "Not signed in.").await;
    browser.client.clone().close().await.unwrap();
}
