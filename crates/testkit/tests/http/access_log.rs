//! The API-access log: every Session API call is recorded with who, which application, method, key,
//! status, bytes, client address, user agent and time; key names are sealed; nothing is dropped.

use secureflows_core::access::access_key_aad;
use secureflows_core::store::AccessFilter;
use secureflows_core::{Plan, UserId};
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::support::jwt_claims;

backend_tests!(every_call_is_recorded, records_are_not_dropped_under_load);

async fn every_call_is_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let user: UserId = jwt_claims(session.token())["sub"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let url = |p: &str| format!("{}{p}", app.url);
    let ua = "sf-test-agent/1.0 (\u{e9}t\u{e9})";
    let send = |r: reqwest::RequestBuilder| r.bearer_auth(session.token()).header("user-agent", ua).send();
    assert_eq!(
        send(app.http.post(url("/api/v1/sessions/set/cart")).body("12345"))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        send(app.http.get(url("/api/v1/sessions/get/cart")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(app.http.get(url("/api/v1/sessions/get/missing")))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        send(app.http.get(url("/api/v1/sessions")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(app.http.delete(url("/api/v1/sessions/delete/cart")))
            .await
            .unwrap()
            .status(),
        204
    );
    app.flush_access_log().await;

    let records: Vec<_> = app
        .services()
        .stores
        .access
        .list_access(ws, &AccessFilter::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    // Newest first; the sign-in is recorded too.
    let routes: Vec<(&str, &str, u16)> = records
        .iter()
        .map(|r| (r.method.as_str(), r.route.as_str(), r.status))
        .collect();
    assert_eq!(
        routes,
        [
            ("DELETE", "/api/v1/sessions/delete/{key}", 204),
            ("GET", "/api/v1/sessions", 200),
            ("GET", "/api/v1/sessions/get/{key}", 404),
            ("GET", "/api/v1/sessions/get/{key}", 200),
            ("POST", "/api/v1/sessions/set/{key}", 201),
            ("POST", "/api/v1/auth/callback", 200),
        ]
    );
    let keys = app.services().keys.workspace_keys(ws, false).await.unwrap();
    for r in &records {
        assert_eq!(r.workspace_id, Some(ws));
        assert_eq!(r.application_id, Some(application.id));
        assert_eq!(r.user_id, Some(user));
        assert_eq!(r.client_ip, "127.0.0.1");
        assert!(!r.request_id.is_empty());
        assert!(r.at.millis() > 0);
    }
    for r in &records[..5] {
        assert!(r.user_agent.starts_with("sf-test-agent/1.0"), "{}", r.user_agent);
    }
    let set = &records[4];
    assert_eq!(set.bytes_in, 5);
    let get = &records[3];
    assert_eq!(get.bytes_out, 5);
    let sealed = get.key_sealed.as_ref().expect("the key name is recorded, sealed");
    assert_eq!(
        keys.open(&access_key_aad(ws, &get.request_id), sealed).unwrap(),
        b"cart"
    );
    assert!(records[5].key_sealed.is_none());
}

async fn records_are_not_dropped_under_load(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    session.set("k", "text/plain", "v").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let s = session.clone();
        tasks.push(tokio::spawn(async move { s.get("k").await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    app.flush_access_log().await;
    let records: Vec<_> = app
        .services()
        .stores
        .access
        .list_access(ws, &AccessFilter::default(), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(records.len(), 300 + 2);
}
