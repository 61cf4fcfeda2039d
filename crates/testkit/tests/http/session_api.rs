//! The Session API end to end: sign-in, set/get/list/delete, data TTL, logout and revocation.

use std::time::Duration;

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::support::assert_problem;

backend_tests!(
    happy_path,
    values_are_returned_byte_for_byte_with_their_content_type,
    data_outlives_the_token,
    data_expires_after_the_application_ttl,
    logout_ends_only_this_session,
    revoke_ends_every_session_of_the_user,
    users_and_applications_are_isolated,
    concurrent_writes_lose_nothing_acknowledged,
);

async fn happy_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "tuff-flips-web").await;
    let session = app.sign_in(&application, "alice").await;

    let (created, meta) = session
        .set("profile.theme", "application/json", r#"{"theme":"dark"}"#)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(meta.key, "profile.theme");
    assert_eq!(meta.size, 16);
    let (created, _) = session
        .set("profile.theme", "application/json", r#"{"theme":"light"}"#)
        .await
        .unwrap();
    assert!(!created, "second write replaces");

    let value = session.get("profile.theme").await.unwrap();
    assert_eq!(value.content_type, "application/json");
    assert_eq!(&value.bytes[..], br#"{"theme":"light"}"#);

    session.set("cart:items", "text/plain", "3").await.unwrap();
    let list = session.list().await.unwrap();
    let keys: Vec<_> = list.keys.iter().map(|k| k.key.as_deref().unwrap()).collect();
    assert_eq!(keys, ["cart:items", "profile.theme"]);

    session.delete("cart:items").await.unwrap();
    let err = session.get("cart:items").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.slug(), Some("not-found"));
    let err = session.delete("cart:items").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

async fn values_are_returned_byte_for_byte_with_their_content_type(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "bytes").await;
    let session = app.sign_in(&application, "bob").await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    session
        .set("blob", "application/octet-stream", bytes.clone())
        .await
        .unwrap();
    let value = session.get("blob").await.unwrap();
    assert_eq!(value.bytes.to_vec(), bytes);
    assert_eq!(value.content_type, "application/octet-stream");

    // No content type: stored as application/octet-stream. An empty value is a value.
    let response = app
        .http
        .post(format!("{}/api/v1/sessions/set/empty", app.url))
        .bearer_auth(session.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let value = session.get("empty").await.unwrap();
    assert!(value.bytes.is_empty());
    assert_eq!(value.content_type, "application/octet-stream");

    // The served value cannot run as a page.
    let response = app
        .http
        .get(format!("{}/api/v1/sessions/get/blob", app.url))
        .bearer_auth(session.token())
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("sandbox"), "{csp}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

async fn data_outlives_the_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "ttl").await;
    let session = app.sign_in(&application, "carol").await;
    session.set("draft", "text/plain", "keep me").await.unwrap();

    app.advance(Duration::from_secs(15 * 60 + 31));
    let err = session.get("draft").await.unwrap_err();
    assert_eq!(err.status(), Some(410));
    assert_eq!(err.slug(), Some("token-expired"));
    let response = app
        .http
        .get(format!("{}/api/v1/sessions", app.url))
        .bearer_auth(session.token())
        .send()
        .await
        .unwrap();
    assert_problem(response, 410, "token-expired").await;

    let again = app.sign_in(&application, "carol").await;
    assert_eq!(&again.get("draft").await.unwrap().bytes[..], b"keep me");
}

async fn data_expires_after_the_application_ttl(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app
        .application_with(ws, "short", |a| {
            a.data_ttl = Some(Duration::from_secs(600));
            a.token_ttl = Some(Duration::from_secs(3600));
        })
        .await;
    let session = app.sign_in(&application, "dave").await;
    session.set("a", "text/plain", "1").await.unwrap();
    session.set("b", "text/plain", "2").await.unwrap();
    app.advance(Duration::from_secs(300));
    session.set("b", "text/plain", "2 again").await.unwrap(); // a write renews the TTL
    app.advance(Duration::from_secs(301));
    assert_eq!(session.get("a").await.unwrap_err().status(), Some(404));
    assert_eq!(&session.get("b").await.unwrap().bytes[..], b"2 again");
    let keys: Vec<_> = session
        .list()
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.key.unwrap())
        .collect();
    assert_eq!(keys, ["b"]);

    // The sweeper removes what expired.
    secureflows_server::sweeper::sweep(app.services(), Duration::from_secs(86_400)).await;
    let (created, _) = session.set("a", "text/plain", "new").await.unwrap();
    assert!(created, "an expired key is a new key");
}

async fn logout_ends_only_this_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "logout").await;
    let laptop = app.sign_in(&application, "erin").await;
    let phone = app.sign_in(&application, "erin").await;
    laptop.set("k", "text/plain", "v").await.unwrap();

    laptop.logout().await.unwrap();
    let response = app
        .http
        .get(format!("{}/api/v1/sessions/get/k", app.url))
        .bearer_auth(laptop.token())
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "session-revoked").await;
    assert_eq!(&phone.get("k").await.unwrap().bytes[..], b"v");
}

async fn revoke_ends_every_session_of_the_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let web = app.application(ws, "web").await;
    let mobile = app.application(ws, "mobile").await;
    let a = app.sign_in(&web, "frank").await;
    let b = app.sign_in(&mobile, "frank").await;
    let other_user = app.sign_in(&web, "grace").await;
    a.set("k", "text/plain", "v").await.unwrap();
    b.list().await.unwrap();

    a.revoke().await.unwrap();
    for session in [&a, &b] {
        let response = app
            .http
            .get(format!("{}/api/v1/sessions", app.url))
            .bearer_auth(session.token())
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 401, "session-revoked").await;
        assert!(problem.request_id.is_some());
    }
    other_user.list().await.unwrap();
    // Signing in again works, and the data is intact.
    let again = app.sign_in(&web, "frank").await;
    assert_eq!(&again.get("k").await.unwrap().bytes[..], b"v");
}

async fn users_and_applications_are_isolated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let web = app.application(ws, "web").await;
    let admin_tool = app.application(ws, "admin-tool").await;
    let alice_web = app.sign_in(&web, "alice").await;
    let alice_tool = app.sign_in(&admin_tool, "alice").await;
    let mallory = app.sign_in(&web, "mallory").await;
    alice_web.set("secret", "text/plain", "alice's").await.unwrap();

    assert_eq!(mallory.get("secret").await.unwrap_err().status(), Some(404));
    assert!(mallory.list().await.unwrap().keys.is_empty());
    assert_eq!(mallory.delete("secret").await.unwrap_err().status(), Some(404));
    // Another application of the same workspace never sees it either.
    assert_eq!(alice_tool.get("secret").await.unwrap_err().status(), Some(404));
    // Identity comes from the token only: hints in headers change nothing, and in the query they are
    // refused (no operation takes parameters it does not declare).
    let response = app
        .http
        .get(format!("{}/api/v1/sessions/get/secret", app.url))
        .header("x-user-id", "alice")
        .header("x-workspace-id", ws.to_string())
        .bearer_auth(mallory.token())
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not-found").await;
    let response = app
        .http
        .get(format!(
            "{}/api/v1/sessions/get/secret?user_id=alice&workspace_id={ws}",
            app.url
        ))
        .bearer_auth(mallory.token())
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed-request").await;
    assert_eq!(&alice_web.get("secret").await.unwrap().bytes[..], b"alice's");

    // Another workspace with the same key names and subjects.
    let ws2 = app.workspace(Plan::pro()).await;
    let web2 = app.application(ws2, "web-2").await;
    let alice2 = app.sign_in(&web2, "alice").await;
    assert_eq!(alice2.get("secret").await.unwrap_err().status(), Some(404));
}

async fn concurrent_writes_lose_nothing_acknowledged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "concurrent").await;
    let session = app.sign_in(&application, "heidi").await;

    // Many writers on one key: the final value is one of the acknowledged writes, whole.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = session.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("writer-{i:02}-").repeat(50);
            s.set("shared", "text/plain", body.clone()).await.map(|_| body)
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.push(t.await.unwrap().unwrap());
    }
    let last = String::from_utf8(session.get("shared").await.unwrap().bytes.to_vec()).unwrap();
    assert!(
        acknowledged.contains(&last),
        "final value is one that was acknowledged, unmixed"
    );

    // Many writers on distinct keys: every acknowledged key is there with its value.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let s = session.clone();
        tasks.push(tokio::spawn(async move {
            s.set(&format!("k{i}"), "text/plain", format!("v{i}")).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let list = session.list().await.unwrap();
    assert_eq!(list.keys.len(), 61);
    for i in 0..60 {
        assert_eq!(
            session.get(&format!("k{i}")).await.unwrap().bytes,
            format!("v{i}").into_bytes()
        );
    }
}
