//! Encryption at rest, proven on the raw database: no plaintext in files or dumps, ciphertext bound to
//! its row, data-key and master-key rotation, crypto-shredding that survives a restored backup, and the
//! sealed start.

use std::sync::Arc;

use secureflows_core::audit::Actor;
use secureflows_core::{Clock, Plan, WorkspaceId};
use secureflows_server::app;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::support::{assert_problem, get_with, jwt_claims, marker, raw_count, raw_execute};

backend_tests!(
    raw_storage_holds_no_plaintext,
    ciphertext_moved_to_another_row_fails_closed,
    one_tampered_row_leaves_the_list_readable,
    data_key_rotation_keeps_everything_readable,
    master_key_rotation_keeps_everything_readable,
    deleted_workspace_stays_unreadable_even_from_a_backup,
    wrong_or_missing_master_key_keeps_the_server_sealed,
);

fn options_with(dir: Option<std::path::PathBuf>, key: Option<String>) -> TestOptions {
    TestOptions {
        configure: Arc::new(|c| c.server.public_url = Some("http://secureflows.test".into())),
        data_dir: dir,
        master_key: key,
    }
}

async fn raw_storage_holds_no_plaintext(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let subject = marker("subject");
    let session = app.sign_in(&application, &subject).await;
    let value = marker("value");
    let key = marker("key");
    session.set(&key, "text/plain", value.clone()).await.unwrap();
    session
        .set("other", "application/json", format!("{{\"v\":\"{value}\"}}"))
        .await
        .unwrap();
    assert_eq!(session.get(&key).await.unwrap().bytes, value.as_bytes());
    app.flush_access_log().await;

    let raw = app.raw_bytes().await;
    assert!(
        raw.len() > 10_000,
        "the raw read saw the database ({} bytes)",
        raw.len()
    );
    for (what, needle) in [
        ("value", value.as_str()),
        ("key name", key.as_str()),
        ("e-mail", &format!("{subject}@example.com")),
        ("subject", subject.as_str()),
        ("name", &format!("User {subject}")),
    ] {
        assert!(
            !secureflows_testkit::contains_marker(&raw, needle.as_bytes()),
            "{what} found in raw storage"
        );
    }
    // The check itself can see a marker where one is stored in the clear (the workspace name).
    let named = app
        .services()
        .create_workspace(&marker("visible"), Plan::free(), &Actor::operator())
        .await
        .unwrap();
    assert!(app.raw_contains(named.name.as_bytes()).await);
}

async fn ciphertext_moved_to_another_row_fails_closed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let alice = app.sign_in(&application, "alice").await;
    let bob = app.sign_in(&application, "bob").await;
    alice.set("k", "text/plain", "alice's secret").await.unwrap();
    alice.set("k2", "text/plain", "alice's other").await.unwrap();
    bob.set("k", "text/plain", "bob's value").await.unwrap();
    let alice_id = jwt_claims(alice.token())["sub"].as_str().unwrap().to_owned();
    let bob_id = jwt_claims(bob.token())["sub"].as_str().unwrap().to_owned();

    // Alice's ciphertext copied onto Bob's row for the same key name.
    let n = raw_execute(
        &app,
        "update vault_value set value_sealed = (select value_sealed from vault_value where user_id = ?1 limit 1)
         where user_id = ?2",
        "update vault_value set value_sealed = (select value_sealed from vault_value where user_id = $1::uuid limit 1)
         where user_id = $2::uuid",
        &[alice_id.clone(), bob_id],
    )
    .await;
    assert_eq!(n, 1);
    let response = get_with(&app, "/api/v1/sessions/get/k", bob.token()).await;
    let problem = assert_problem(response, 500, "internal-error").await;
    assert!(!serde_json::to_string(&problem).unwrap().contains("alice"));

    // Alice's own ciphertext moved to her other key name.
    let mut all = vec![];
    for k in ["k", "k2"] {
        all.push(alice.get(k).await.unwrap().bytes);
    }
    raw_execute(
        &app,
        "update vault_value set value_sealed = (select v.value_sealed from vault_value v
           where v.user_id = ?1 and v.size = 14) where user_id = ?1 and size = 13",
        "update vault_value set value_sealed = (select v.value_sealed from vault_value v
           where v.user_id = $1::uuid and v.size = 14) where user_id = $1::uuid and size = 13",
        &[alice_id],
    )
    .await;
    let statuses = [
        get_with(&app, "/api/v1/sessions/get/k", alice.token())
            .await
            .status()
            .as_u16(),
        get_with(&app, "/api/v1/sessions/get/k2", alice.token())
            .await
            .status()
            .as_u16(),
    ];
    assert!(statuses.contains(&500), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

async fn one_tampered_row_leaves_the_list_readable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let alice = app.sign_in(&application, "alice").await;
    for (k, v) in [("a", "1"), ("b", "22"), ("c", "333")] {
        alice.set(k, "text/plain", v).await.unwrap();
    }
    let alice_id = jwt_claims(alice.token())["sub"].as_str().unwrap().to_owned();
    // The sealed name of "b" replaced by that of "a": it no longer opens under b's associated data.
    let n = raw_execute(
        &app,
        "update vault_value set name_sealed = (select v.name_sealed from vault_value v
           where v.user_id = ?1 and v.size = 1) where user_id = ?1 and size = 2",
        "update vault_value set name_sealed = (select v.name_sealed from vault_value v
           where v.user_id = $1::uuid and v.size = 1) where user_id = $1::uuid and size = 2",
        &[alice_id],
    )
    .await;
    assert_eq!(n, 1);
    let r = get_with(&app, "/api/v1/sessions", alice.token()).await;
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = r.json().await.unwrap();
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{list}");
    assert_eq!(
        (keys[0]["key"].as_str(), keys[0].get("unreadable")),
        (Some("a"), None)
    );
    assert_eq!(
        (keys[1]["key"].as_str(), keys[1].get("unreadable")),
        (Some("c"), None)
    );
    assert_eq!(keys[2]["key"], serde_json::Value::Null);
    assert_eq!(keys[2]["unreadable"], true);
    assert_eq!(keys[2]["size"], 2);
    // The readable values still read.
    assert_eq!(alice.get("c").await.unwrap().bytes, &b"333"[..]);
}

async fn data_key_rotation_keeps_everything_readable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    session.set("before", "text/plain", "v1").await.unwrap();
    assert_eq!(
        app.services()
            .rotate_workspace_key(ws, &Actor::operator())
            .await
            .unwrap(),
        2
    );
    session.set("after", "text/plain", "v2").await.unwrap();
    assert_eq!(
        app.services()
            .rotate_workspace_key(ws, &Actor::operator())
            .await
            .unwrap(),
        3
    );
    assert_eq!(&session.get("before").await.unwrap().bytes[..], b"v1");
    assert_eq!(&session.get("after").await.unwrap().bytes[..], b"v2");
    session.set("latest", "text/plain", "v3").await.unwrap();
    // New writes carry the new key version in their ciphertext header.
    let keys = app.services().keys.workspace_keys(ws, false).await.unwrap();
    assert_eq!(keys.active().version(), 3);
    // New writes carry the new key version in their ciphertext header: format 1, version 3.
    let latest = raw_count(
        &app,
        "select count(*) from vault_value where size = 2 and hex(substr(value_sealed, 1, 5)) = '0100000003'",
        "select count(*) from vault_value where size = 2 and substring(value_sealed from 1 for 5) = '\\x0100000003'::bytea",
    )
    .await;
    assert_eq!(
        latest, 1,
        "only the value written after the second rotation uses version 3"
    );
    for (k, v) in [("before", "v1"), ("after", "v2"), ("latest", "v3")] {
        assert_eq!(session.get(k).await.unwrap().bytes, v.as_bytes());
    }
}

async fn master_key_rotation_keeps_everything_readable(backend: Backend) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let app = TestApp::spawn_with(backend.clone(), options_with(Some(dir.clone()), None)).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    session.set("k", "text/plain", "survives").await.unwrap();
    let token = session.token().to_owned();
    let old_key = app.master_key.clone();
    app.stop().await;

    // Rotate offline, as `secureflows keys rotate-master --new-key-file F` does.
    let mut config = TestApp::base_config(&backend, dir.clone(), &old_key);
    config.server.public_url = Some("http://secureflows.test".into());
    let opened = app::open(
        &config,
        Arc::new(secureflows_core::SystemClock),
        app::Access::Existing,
        false,
        "http://secureflows.test".into(),
    )
    .await
    .unwrap();
    let new_file = temp.path().join("new.key");
    let (_, encoded) = secureflows_crypto::MasterKey::generate().unwrap();
    app::write_key_file(&new_file, &encoded).unwrap();
    let count = app::rotate_master_key(&config, &opened, &new_file).await.unwrap();
    assert!(
        count >= 3,
        "data key, index key and signing key rewrapped: {count}"
    );
    drop(opened);

    let app = TestApp::spawn_with(
        backend.clone(),
        options_with(Some(dir.clone()), Some(encoded.to_string())),
    )
    .await;
    let again = app.client.session(token);
    assert_eq!(&again.get("k").await.unwrap().bytes[..], b"survives");
    again
        .set("k2", "text/plain", "written under the new master key")
        .await
        .unwrap();
    assert_eq!(
        &again.get("k2").await.unwrap().bytes[..],
        b"written under the new master key"
    );
    let _ = application;
    app.stop().await;

    // The old key no longer opens anything.
    let mut config = TestApp::base_config(&backend, dir, &old_key);
    config.server.public_url = Some("http://secureflows.test".into());
    let err = secureflows_server::Server::bind(config, Arc::new(secureflows_core::SystemClock))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("sealed"), "{err:#}");
}

async fn deleted_workspace_stays_unreadable_even_from_a_backup(backend: Backend) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let app = TestApp::spawn_with(backend.clone(), options_with(Some(dir.clone()), None)).await;
    let key = app.master_key.clone();
    let ws = app.workspace(Plan::pro()).await;
    let keep = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let kept_app = app.application(keep, "kept").await;
    let session = app.sign_in(&application, "alice").await;
    let kept = app.sign_in(&kept_app, "alice").await;
    let value = marker("shredded");
    session.set("k", "text/plain", value.clone()).await.unwrap();
    kept.set("k", "text/plain", "kept").await.unwrap();
    app.stop().await;

    // A backup of the data (never of the key ring) taken before the deletion.
    let backup = temp.path().join("backup");
    let dump = match &backend {
        Backend::Sqlite => {
            std::fs::create_dir_all(&backup).unwrap();
            // A consistent online snapshot, as a backup tool would take it.
            let conn = rusqlite::Connection::open(dir.join("secureflows.db")).unwrap();
            conn.execute(
                "vacuum into ?1",
                [backup.join("secureflows.db").to_str().unwrap()],
            )
            .unwrap();
            None
        }
        Backend::Postgres(db) => {
            let out = std::process::Command::new("pg_dump")
                .args(["--no-owner", "--clean", "--if-exists", &db.url()])
                .output()
                .unwrap();
            assert!(out.status.success());
            Some(out.stdout)
        }
    };

    let app = TestApp::spawn_with(
        backend.clone(),
        options_with(Some(dir.clone()), Some(key.clone())),
    )
    .await;
    app.services()
        .delete_workspace(ws, &Actor::operator())
        .await
        .unwrap();
    assert_problem(
        get_with(&app, "/api/v1/sessions/get/k", session.token()).await,
        401,
        "invalid-token",
    )
    .await;
    assert_eq!(
        &app.client.session(kept.token()).get("k").await.unwrap().bytes[..],
        b"kept"
    );
    assert!(app.services().keys.is_destroyed(ws).await.unwrap());
    assert!(
        app.services()
            .stores
            .keyring
            .workspace_keys(&ws.to_string())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        app.services()
            .delete_workspace(ws, &Actor::operator())
            .await
            .is_err(),
        "deleting twice is NotFound"
    );
    app.stop().await;

    // Restore the old data backup over the live data; the key ring stays as it is.
    match (&backend, dump) {
        (Backend::Sqlite, _) => {
            let _ = std::fs::remove_file(dir.join("secureflows.db-wal"));
            let _ = std::fs::remove_file(dir.join("secureflows.db-shm"));
            std::fs::copy(backup.join("secureflows.db"), dir.join("secureflows.db")).unwrap();
        }
        (Backend::Postgres(db), Some(dump)) => {
            let mut child = std::process::Command::new("psql")
                .args(["-q", "-v", "ON_ERROR_STOP=1", &db.url()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&dump).unwrap();
            assert!(child.wait().unwrap().success());
        }
        _ => unreachable!(),
    }
    let app = TestApp::spawn_with(backend.clone(), options_with(Some(dir.clone()), Some(key))).await;
    assert!(
        app.services().get_workspace(ws).await.is_ok(),
        "the restored backup brought the rows back"
    );
    assert_problem(
        get_with(&app, "/api/v1/sessions/get/k", session.token()).await,
        401,
        "invalid-token",
    )
    .await;
    assert!(
        app.services().keys.workspace_keys(ws, false).await.is_err(),
        "but not the keys"
    );
    let err = app
        .services()
        .keys
        .create_workspace_keys(ws, app.clock.now())
        .await
        .unwrap_err();
    assert!(matches!(err, secureflows_core::Error::Conflict(_)), "{err:?}");
    assert!(!app.raw_contains(value.as_bytes()).await);
    // The workspace that was not deleted is intact.
    assert_eq!(
        &app.client.session(kept.token()).get("k").await.unwrap().bytes[..],
        b"kept"
    );
    let _ = WorkspaceId::new();
}

async fn wrong_or_missing_master_key_keeps_the_server_sealed(backend: Backend) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let app = TestApp::spawn_with(backend.clone(), options_with(Some(dir.clone()), None)).await;
    app.workspace(Plan::free()).await;
    app.stop().await;

    let (_, other) = secureflows_crypto::MasterKey::generate().unwrap();
    let config = TestApp::base_config(&backend, dir.clone(), &other);
    let err = secureflows_server::Server::bind(config, Arc::new(secureflows_core::SystemClock))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("sealed"), "{err:#}");

    let mut config = TestApp::base_config(&backend, dir.clone(), "");
    config.keys.master_key = None;
    let err = secureflows_server::Server::bind(config, Arc::new(secureflows_core::SystemClock))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("sealed"), "{err:#}");
    assert!(
        !dir.join("master.key").exists(),
        "no key was generated over existing data"
    );
}
