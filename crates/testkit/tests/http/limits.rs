//! Plan limits: value size (413), concurrent sessions per user and per workspace (429 with Retry-After,
//! atomic under concurrency), keys per user (403 quota-exceeded), and plan changes taking effect at once.

use std::sync::Arc;
use std::time::Duration;

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::support::assert_problem;

backend_tests!(
    values_over_the_plan_size_are_413,
    sessions_over_the_user_limit_are_429_until_one_ends,
    sessions_over_the_workspace_limit_are_429,
    concurrent_sign_ins_cannot_double_book_the_last_slot,
    keys_over_the_plan_quota_are_403,
    a_plan_change_takes_effect_at_once,
);

async fn callback(app: &TestApp, token: String) -> reqwest::Response {
    app.http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({ "id_token": token }))
        .send()
        .await
        .unwrap()
}

async fn values_over_the_plan_size_are_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::free()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    session
        .set("max", "application/octet-stream", vec![7u8; 64 * 1024])
        .await
        .unwrap();
    let response = app
        .http
        .post(format!("{}/api/v1/sessions/set/over", app.url))
        .bearer_auth(session.token())
        .body(vec![7u8; 64 * 1024 + 1])
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 413, "value-too-large").await;
    assert!(problem.detail.unwrap().contains("65536"));
    assert_eq!(session.get("over").await.unwrap_err().status(), Some(404));
    assert_eq!(session.get("max").await.unwrap().bytes.len(), 64 * 1024);
}

async fn sessions_over_the_user_limit_are_429_until_one_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::free()).await; // 3 sessions per user
    let application = app.application(ws, "web").await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(app.sign_in(&application, "alice").await);
    }
    let response = callback(&app, app.id_token(&application, "alice")).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=900).contains(&retry_after),
        "retry after the earliest session expires: {retry_after}"
    );
    assert_problem(response, 429, "too-many-sessions").await;
    // Another user is not affected.
    app.sign_in(&application, "bob").await;
    // Ending a session frees a slot.
    sessions.pop().unwrap().logout().await.unwrap();
    app.sign_in(&application, "alice").await;
    assert_eq!(
        callback(&app, app.id_token(&application, "alice")).await.status(),
        429
    );
    // Expired sessions stop counting.
    app.advance(Duration::from_secs(901));
    app.sign_in(&application, "alice").await;
}

async fn sessions_over_the_workspace_limit_are_429(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| c.plans.edit("base", |l| l.max_sessions_per_workspace = 2)),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::base()).await;
    let other_ws = app.workspace(Plan::base()).await;
    let application = app.application(ws, "web").await;
    let other = app.application(other_ws, "other").await;
    app.sign_in(&application, "a").await;
    app.sign_in(&application, "b").await;
    let response = callback(&app, app.id_token(&application, "c")).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 429, "too-many-sessions").await;
    app.sign_in(&other, "c").await; // limits are per workspace
}

async fn concurrent_sign_ins_cannot_double_book_the_last_slot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::free()).await;
    let application = app.application(ws, "web").await;
    let tokens: Vec<String> = (0..10).map(|_| app.id_token(&application, "alice")).collect();
    let mut tasks = Vec::new();
    for token in tokens {
        let (http, url) = (app.http.clone(), app.url.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/api/v1/auth/callback"))
                .json(&serde_json::json!({ "id_token": token }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");
}

async fn keys_over_the_plan_quota_are_403(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| c.plans.edit("free", |l| l.max_keys_per_user = 3)),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::free()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    for k in ["a", "b", "c"] {
        session.set(k, "text/plain", "v").await.unwrap();
    }
    let err = session.set("d", "text/plain", "v").await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.slug(), Some("quota-exceeded"));
    session.set("a", "text/plain", "overwrite is fine").await.unwrap();
    session.delete("b").await.unwrap();
    session.set("d", "text/plain", "now it fits").await.unwrap();
    // Concurrent new keys cannot exceed the quota either.
    let mut tasks = Vec::new();
    session.delete("d").await.unwrap();
    for i in 0..8 {
        let s = session.clone();
        tasks.push(tokio::spawn(async move {
            s.set(&format!("n{i}"), "text/plain", "v").await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1);
    assert_eq!(session.list().await.unwrap().keys.len(), 3);
}

async fn a_plan_change_takes_effect_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::free()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    assert_eq!(
        session
            .set("big", "application/octet-stream", vec![0u8; 100_000])
            .await
            .unwrap_err()
            .status(),
        Some(413)
    );
    app.services()
        .set_plan(ws, Plan::pro(), &secureflows_core::audit::Actor::operator())
        .await
        .unwrap();
    session
        .set("big", "application/octet-stream", vec![0u8; 100_000])
        .await
        .unwrap();
}
