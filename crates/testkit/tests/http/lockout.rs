//! Sign-in lockout and an administrator's unlock: `POST /users/{id}/unlock` ends a lockout after too
//! many failed sign-ins as well as a manual lock, and is audited either way.

use std::sync::Arc;

use secureflows_core::{Plan, Role};
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::hosted_email::sign_in;
use crate::hosted_login::{PASSWORD, browser};
use crate::support::call_ok;

backend_tests!(unlock_ends_a_sign_in_lockout_and_is_audited);

async fn unlock_events(app: &TestApp, owner: &str, user: &str) -> Vec<serde_json::Value> {
    let page = call_ok(
        app,
        "GET",
        &format!("/api/v1/audit/events?action=user.unlock&resource={user}"),
        owner,
        None,
        200,
    )
    .await;
    page["items"].as_array().unwrap().clone()
}

async fn unlock_ends_a_sign_in_lockout_and_is_audited(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| c.login.attempts_per_minute = 1000),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@example.com", Role::Owner).await;
    let (user, _) = app
        .services()
        .sign_up(
            ws,
            secureflows_core::login::hosted::SignUp {
                email: "locked.out@example.com".into(),
                password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                name: None,
            },
            None,
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let id = user.id.to_string();

    // Ten wrong passwords lock the account: the right one is refused for now.
    let guesses: Vec<_> = (0..10)
        .map(|i| {
            let app = &app;
            async move {
                sign_in(
                    app,
                    &browser(),
                    ws,
                    "locked.out@example.com",
                    &format!("wrong guess {i}"),
                )
                .await
            }
        })
        .collect();
    for status in futures_util::future::join_all(guesses).await {
        assert_eq!(status, 401);
    }
    assert_eq!(
        sign_in(&app, &browser(), ws, "locked.out@example.com", PASSWORD).await,
        401
    );

    // The administrator's unlock ends the lockout at once, and says what it ended.
    let unlocked = call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{id}/unlock"),
        &owner,
        None,
        200,
    )
    .await;
    assert_eq!(unlocked["status"], "active");
    assert_eq!(
        sign_in(&app, &browser(), ws, "locked.out@example.com", PASSWORD).await,
        200
    );
    let events = unlock_events(&app, &owner, &id).await;
    assert_eq!(events.len(), 1);
    let old = &events[0]["old"];
    assert_eq!(old["status"], "active");
    assert_eq!(old["failed_sign_ins"], 10);
    assert!(old["sign_in_locked_until"].is_string(), "{old}");
    assert_eq!(events[0]["new"]["sign_in_locked_until"], serde_json::Value::Null);

    // A manual lock and its unlock: the unlock is audited too, and a second unlock of an active
    // account with no lockout is still an audited administrator action.
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{id}/lock"),
        &owner,
        None,
        200,
    )
    .await;
    assert_eq!(
        sign_in(&app, &browser(), ws, "locked.out@example.com", PASSWORD).await,
        401
    );
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{id}/unlock"),
        &owner,
        None,
        200,
    )
    .await;
    assert_eq!(
        sign_in(&app, &browser(), ws, "locked.out@example.com", PASSWORD).await,
        200
    );
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{id}/unlock"),
        &owner,
        None,
        200,
    )
    .await;
    let events = unlock_events(&app, &owner, &id).await;
    assert_eq!(events.len(), 3);
    app.stop().await;
}
