//! The console signs in through the hosted login: a console client's code exchange gives the member a
//! USER JWT for the management API with their own role (never more), which the Session API refuses,
//! and which ends with a role change or the browser's sign-out.

use secureflows_core::{Plan, Role};
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::hosted_login::{
    PASSWORD, authorize_url, browser, csrf_of, location, pkce, query_param, sign_up_through_flow,
};
use crate::support::{assert_problem, call};

backend_tests!(console_signs_in_through_the_hosted_login);

async fn exchange(app: &TestApp, ws: &str, client: &str, code: &str, verifier: &str) -> serde_json::Value {
    let r = app
        .http
        .post(format!("{}/w/{ws}/token", app.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("client_id", client),
            ("redirect_uri", "https://app.example/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn console_signs_in_through_the_hosted_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@example.com", Role::Owner).await;
    let r = call(
        &app,
        "POST",
        "/api/v1/applications",
        &owner,
        Some(serde_json::json!({
            "name": "Console", "public": true, "console": true,
            "redirect_uris": ["https://app.example/cb"],
        })),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["application"]["console"], true);
    let console: secureflows_core::Application = app
        .services()
        .stores
        .applications
        .find_application(created["application"]["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let client = console.id.to_string();
    // A console client never takes guests.
    let r = call(
        &app,
        "POST",
        "/api/v1/applications",
        &owner,
        Some(serde_json::json!({"name": "C2", "public": true, "console": true, "allow_anonymous": true})),
    )
    .await;
    assert_problem(r, 422, "validation-failed").await;
    // Only an OWNER registers a console client or changes one: an ADMIN who could point one at their
    // own site would collect an OWNER's token.
    let admin = app.console_token(ws, "admin@example.com", Role::Admin).await;
    let r = call(
        &app,
        "POST",
        "/api/v1/applications",
        &admin,
        Some(serde_json::json!({"name": "Phish", "public": true, "console": true, "redirect_uris": ["https://evil.example/cb"]})),
    )
    .await;
    assert_problem(r, 403, "forbidden").await;
    let r = call(
        &app,
        "PATCH",
        &format!("/api/v1/applications/{client}"),
        &admin,
        Some(serde_json::json!({"redirect_uris": ["https://evil.example/cb"]})),
    )
    .await;
    assert_problem(r, 403, "forbidden").await;
    let r = call(
        &app,
        "DELETE",
        &format!("/api/v1/applications/{client}"),
        &admin,
        None,
    )
    .await;
    assert_problem(r, 403, "forbidden").await;

    // Dana signs up through the console's request: a USER, so her console token reads only herself.
    let b = browser();
    let (verifier, challenge) = pkce();
    let code = sign_up_through_flow(&app, &b, ws, &console, &challenge, "dana@example.com").await;
    let ws_id = ws.to_string();
    let grant = exchange(&app, &ws_id, &client, &code, &verifier).await;
    assert!(
        grant.get("refresh_token").is_none(),
        "a browser console gets no refresh token"
    );
    let token = grant["access_token"].as_str().unwrap().to_owned();
    let me = call(&app, "GET", "/api/v1/users/me", &token, None).await;
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["role"], "user");
    assert_problem(
        call(&app, "GET", "/api/v1/users", &token, None).await,
        403,
        "forbidden",
    )
    .await;
    // A USER JWT is not a SESSION JWT.
    assert_problem(
        call(&app, "GET", "/api/v1/sessions", &token, None).await,
        403,
        "wrong-token-kind",
    )
    .await;
    // The seed's callback (which answers a sessionToken) does not take a console client's code.
    let r = b
        .get(authorize_url(&app, ws, &console, &challenge, ""))
        .send()
        .await
        .unwrap();
    let code = query_param(&location(&r), "code").unwrap();
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert!(!r.text().await.unwrap().contains("sessionToken"));

    // The owner makes Dana an ADMIN: her old token and browser session end (the revision rose); she
    // signs in again and her new token carries the new role.
    let dana = me["id"].as_str().unwrap().to_owned();
    let r = call(
        &app,
        "PUT",
        &format!("/api/v1/users/{dana}/role"),
        &owner,
        Some(serde_json::json!({"role": "admin"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_problem(
        call(&app, "GET", "/api/v1/users/me", &token, None).await,
        401,
        "session-revoked",
    )
    .await;
    let r = b
        .get(authorize_url(&app, ws, &console, &challenge, ""))
        .send()
        .await
        .unwrap();
    let login = location(&r);
    assert!(login.starts_with(&format!("/w/{ws}/login?flow=")), "{login}");
    let html = b
        .get(format!("{}{login}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            (
                "flow",
                &query_param(&format!("{}{login}", app.url), "flow").unwrap(),
            ),
            ("email", "dana@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let code = query_param(&location(&r), "code").unwrap();
    let grant = exchange(&app, &ws_id, &client, &code, &verifier).await;
    let token = grant["access_token"].as_str().unwrap().to_owned();
    let users = call(&app, "GET", "/api/v1/users", &token, None).await;
    assert_eq!(users.status(), 200);

    // Signing the browser out ends the console session too.
    let page = b
        .get(format!("{}/w/{ws}/logout", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/logout", app.url))
        .form(&[("csrf", csrf_of(&page).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_problem(
        call(&app, "GET", "/api/v1/users", &token, None).await,
        401,
        "session-revoked",
    )
    .await;

    // Revocation (RFC 7009) at the issuer ends a console token, and deleting the console client ends
    // every session it opened.
    let code = password_sign_in(&app, ws, &console, &challenge).await;
    let token = exchange(&app, &ws_id, &client, &code, &verifier).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(&app, "GET", "/api/v1/users", &token, None).await.status(),
        200
    );
    let r = app
        .http
        .post(format!("{}/w/{ws}/revoke", app.url))
        .form(&[("token", token.as_str()), ("client_id", client.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_problem(
        call(&app, "GET", "/api/v1/users", &token, None).await,
        401,
        "session-revoked",
    )
    .await;
    let code = password_sign_in(&app, ws, &console, &challenge).await;
    let token = exchange(&app, &ws_id, &client, &code, &verifier).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(&app, "GET", "/api/v1/users", &token, None).await.status(),
        200
    );
    let r = call(
        &app,
        "DELETE",
        &format!("/api/v1/applications/{client}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_problem(
        call(&app, "GET", "/api/v1/users", &token, None).await,
        401,
        "session-revoked",
    )
    .await;
    app.stop().await;
}

/// Dana signs in with her password in a new browser through the console's request; returns the code.
async fn password_sign_in(
    app: &TestApp,
    ws: secureflows_core::WorkspaceId,
    console: &secureflows_core::Application,
    challenge: &str,
) -> String {
    let b = browser();
    let r = b
        .get(authorize_url(app, ws, console, challenge, ""))
        .send()
        .await
        .unwrap();
    let login = location(&r);
    let html = b
        .get(format!("{}{login}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            (
                "flow",
                &query_param(&format!("{}{login}", app.url), "flow").unwrap(),
            ),
            ("email", "dana@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    query_param(&location(&r), "code").unwrap()
}
