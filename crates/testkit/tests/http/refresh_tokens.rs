//! Refresh-token rotation under concurrency (SECURITY.md check 28): within the grace window every use of
//! a rotated token receives the same successor pair, so holders share one chain; a use out of step —
//! a rotated token after the window — revokes the whole family.

use std::collections::HashSet;
use std::time::Duration;

use secureflows_core::{Application, Plan, WorkspaceId};
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::hosted_login::{browser, client_app, pkce, sign_up_through_flow};
use crate::support::{assert_problem, raw_count};

backend_tests!(
    parallel_uses_of_one_refresh_token_share_one_chain,
    a_thief_out_of_step_revokes_the_family,
);

async fn token(
    app: &TestApp,
    ws: WorkspaceId,
    client: &Application,
    secret: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let r = app
        .http
        .post(format!("{}/w/{ws}/token", app.url))
        .basic_auth(client.id.to_string(), Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn refresh(
    app: &TestApp,
    ws: WorkspaceId,
    client: &Application,
    secret: &str,
    refresh_token: &str,
) -> (u16, serde_json::Value) {
    token(
        app,
        ws,
        client,
        secret,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
    )
    .await
}

/// A confidential client's first grant for a new user: (client, secret, grant).
async fn first_grant(
    app: &TestApp,
    ws: WorkspaceId,
    email: &str,
) -> (Application, String, serde_json::Value) {
    let (client, secret) = client_app(app, ws, false).await;
    let secret = secret.unwrap();
    let (verifier, challenge) = pkce();
    let code = sign_up_through_flow(app, &browser(), ws, &client, &challenge, email).await;
    let (status, grant) = token(
        app,
        ws,
        &client,
        &secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example/cb"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    (client, secret, grant)
}

async fn live_refresh_tokens(app: &TestApp) -> i64 {
    raw_count(
        app,
        "select count(*) from refresh_token where rotated_at is null and revoked_at is null",
        "select count(*) from refresh_token where rotated_at is null and revoked_at is null",
    )
    .await
}

async fn parallel_uses_of_one_refresh_token_share_one_chain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, secret, grant) = first_grant(&app, ws, "tabs@example.com").await;
    let r0 = grant["refresh_token"].as_str().unwrap().to_owned();

    // Fifty uses of one refresh token at once: every one succeeds with the same successor pair.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app_url, client_id, secret, r0) =
                (app.url.clone(), client.id.to_string(), secret.clone(), r0.clone());
            let http = app.http.clone();
            tokio::spawn(async move {
                let r = http
                    .post(format!("{app_url}/w/{ws}/token"))
                    .basic_auth(client_id, Some(secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", r0.as_str())])
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let mut pairs = HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        pairs.insert((
            body["refresh_token"].as_str().unwrap().to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
            body["id_token"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(pairs.len(), 1, "one successor pair for every use");
    assert_eq!(live_refresh_tokens(&app).await, 1, "one live token in the family");
    let (r1, access1, _) = pairs.into_iter().next().unwrap();
    assert_ne!(r1, r0);

    // The chain goes on from the one successor; the old token, still within its window, hands out the
    // same successor again (even though that one has moved on since).
    let (status, next) = refresh(&app, ws, &client, &secret, &r1).await;
    assert_eq!(status, 200);
    let r2 = next["refresh_token"].as_str().unwrap().to_owned();
    let (status, again) = refresh(&app, ws, &client, &secret, &r0).await;
    assert_eq!(
        (status, again["refresh_token"].as_str()),
        (200, Some(r1.as_str()))
    );
    assert_eq!(again["access_token"].as_str(), Some(access1.as_str()));
    // The successor itself, within its own window, hands out its successor.
    let (status, again) = refresh(&app, ws, &client, &secret, &r1).await;
    assert_eq!(
        (status, again["refresh_token"].as_str()),
        (200, Some(r2.as_str()))
    );
    assert_eq!(live_refresh_tokens(&app).await, 1);

    // Past the window, the sweeper forgets the sealed successors.
    app.advance(Duration::from_secs(11));
    secureflows_server::sweeper::sweep(app.services(), Duration::from_secs(3600)).await;
    let kept = raw_count(
        &app,
        "select count(*) from refresh_token where successor_sealed is not null",
        "select count(*) from refresh_token where successor_sealed is not null",
    )
    .await;
    assert_eq!(kept, 0);
    let (status, _) = refresh(&app, ws, &client, &secret, &r2).await;
    assert_eq!(status, 200, "the current token still works");
    app.stop().await;
}

async fn a_thief_out_of_step_revokes_the_family(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, secret, grant) = first_grant(&app, ws, "owner@example.com").await;
    let stolen = grant["refresh_token"].as_str().unwrap().to_owned();

    // The owner refreshes; a thief holding the same token uses it within the window and is handed the
    // owner's own successor: both hold one chain.
    let (_, owners) = refresh(&app, ws, &client, &secret, &stolen).await;
    let (_, thiefs) = refresh(&app, ws, &client, &secret, &stolen).await;
    assert_eq!(owners["refresh_token"], thiefs["refresh_token"]);
    let shared = owners["refresh_token"].as_str().unwrap().to_owned();

    // The owner refreshes on; the thief, later, replays a token the chain has moved past: out of step.
    app.advance(Duration::from_secs(5));
    let (status, owners) = refresh(&app, ws, &client, &secret, &shared).await;
    assert_eq!(status, 200);
    let current = owners["refresh_token"].as_str().unwrap().to_owned();
    let access = owners["access_token"].as_str().unwrap().to_owned();
    app.advance(Duration::from_secs(11));
    let (status, body) = refresh(&app, ws, &client, &secret, &shared).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    // The whole family is revoked: the owner's current token and access token too.
    let (status, _) = refresh(&app, ws, &client, &secret, &current).await;
    assert_eq!(status, 400);
    let r = app
        .http
        .get(format!("{}/api/v1/sessions", app.url))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "session-revoked").await;
    assert_eq!(live_refresh_tokens(&app).await, 0);
    let reuse = raw_count(
        &app,
        "select count(*) from audit_event where action = 'token.refresh_reuse'",
        "select count(*) from audit_event where action = 'token.refresh_reuse'",
    )
    .await;
    assert_eq!(reuse, 1);
    app.stop().await;
}
