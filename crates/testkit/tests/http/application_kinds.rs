//! Application kinds are explicit (issue 10 §3.4): `browser` (public, PKCE, no refresh token), `native`
//! (public, PKCE, refresh tokens, loopback or private-use-scheme redirects) and `server` (confidential,
//! refresh tokens). A development setup on a loopback address behaves like production.

use secureflows_core::{Plan, Role, WorkspaceId};
use secureflows_testkit::{Backend, TestApp, backend_tests};
use serde_json::json;

use crate::hosted_login::{PASSWORD, browser, csrf_of, location, pkce, query_param};
use crate::support::{assert_problem, call, call_ok};

backend_tests!(
    kinds_are_chosen_validated_and_reported,
    refresh_tokens_follow_the_kind_not_the_redirect,
);

async fn kinds_are_chosen_validated_and_reported(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@example.com", Role::Owner).await;
    let create = |body: serde_json::Value| {
        let (app, owner) = (&app, owner.clone());
        async move { call(app, "POST", "/api/v1/applications", &owner, Some(body)).await }
    };
    for (body, kind, public, secret) in [
        (
            json!({"name": "Spa", "kind": "browser", "redirect_uris": ["https://a.example/cb"]}),
            "browser",
            true,
            false,
        ),
        (
            json!({"name": "Spa dev", "kind": "browser", "redirect_uris": ["http://localhost:5173/cb"]}),
            "browser",
            true,
            false,
        ),
        (
            json!({"name": "Desktop", "kind": "native", "redirect_uris": ["http://127.0.0.1/cb", "com.example.app:/cb"]}),
            "native",
            true,
            false,
        ),
        (
            json!({"name": "Backend", "kind": "server", "redirect_uris": ["https://a.example/cb"]}),
            "server",
            false,
            true,
        ),
        (json!({"name": "Backend too"}), "server", false, true),
        // `public` alone, as before: browser unless every redirect URI is a native one.
        (
            json!({"name": "Old spa", "public": true, "redirect_uris": ["https://a.example/cb"]}),
            "browser",
            true,
            false,
        ),
        (
            json!({"name": "Old cli", "public": true, "redirect_uris": ["http://127.0.0.1:8765/cb"]}),
            "native",
            true,
            false,
        ),
    ] {
        let r = create(body.clone()).await;
        assert_eq!(r.status(), 201, "{body}");
        let created: serde_json::Value = r.json().await.unwrap();
        assert_eq!(created["application"]["kind"], kind, "{body}");
        assert_eq!(created["application"]["public"], public, "{body}");
        assert_eq!(created["client_secret"].is_string(), secret, "{body}");
        let id = created["application"]["id"].as_str().unwrap();
        let read = call_ok(
            &app,
            "GET",
            &format!("/api/v1/applications/{id}"),
            &owner,
            None,
            200,
        )
        .await;
        assert_eq!(read["kind"], kind);
    }
    for body in [
        json!({"name": "x", "kind": "native", "redirect_uris": ["https://a.example/cb"]}),
        json!({"name": "x", "kind": "browser", "redirect_uris": ["com.example.app:/cb"]}),
        json!({"name": "x", "kind": "server", "public": true}),
        json!({"name": "x", "kind": "spa"}),
    ] {
        assert_problem(create(body).await, 422, "validation-failed").await;
    }
}

/// Runs the hosted login for `client` with `redirect` and returns the token endpoint's answer.
async fn grant(
    app: &TestApp,
    ws: WorkspaceId,
    client: &str,
    redirect: &str,
    secret: Option<&str>,
) -> serde_json::Value {
    let b = browser();
    let (verifier, challenge) = pkce();
    let authorize = format!(
        "{}/w/{ws}/authorize?response_type=code&client_id={client}&redirect_uri={}&scope=openid&state=s\
         &code_challenge={challenge}&code_challenge_method=S256",
        app.url,
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let r = b.get(&authorize).send().await.unwrap();
    let login = format!("{}{}", app.url, location(&r));
    let html = b.get(&login).send().await.unwrap().text().await.unwrap();
    let flow = query_param(&login, "flow").unwrap();
    let r = b
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("flow", &flow),
            ("email", "kai@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let code = query_param(&location(&r), "code").unwrap();
    let mut request = app.http.post(format!("{}/w/{ws}/token", app.url));
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", redirect.to_owned()),
        ("code_verifier", verifier),
    ];
    match secret {
        Some(secret) => request = request.basic_auth(client, Some(secret)),
        None => form.push(("client_id", client.to_owned())),
    }
    let r = request.form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn refresh_tokens_follow_the_kind_not_the_redirect(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        secureflows_testkit::TestOptions {
            configure: std::sync::Arc::new(|c| c.login.attempts_per_minute = 100),
            ..Default::default()
        },
    )
    .await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@example.com", Role::Owner).await;
    app.services()
        .sign_up(
            ws,
            secureflows_core::login::hosted::SignUp {
                email: "kai@example.com".into(),
                password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                name: None,
            },
            None,
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let register = |kind: &str, redirect: &str| {
        let (app, owner) = (&app, owner.clone());
        let body = json!({"name": kind, "kind": kind, "redirect_uris": [redirect]});
        async move {
            let created = call_ok(app, "POST", "/api/v1/applications", &owner, Some(body), 201).await;
            (
                created["application"]["id"].as_str().unwrap().to_owned(),
                created["client_secret"].as_str().map(str::to_owned),
            )
        }
    };
    // A browser application in development (loopback redirect) gets no refresh token, as in production.
    let (spa, _) = register("browser", "http://localhost:5173/cb").await;
    let g = grant(&app, ws, &spa, "http://localhost:5173/cb", None).await;
    assert!(g.get("refresh_token").is_none(), "{g}");
    assert!(g["id_token"].is_string());
    let (spa, _) = register("browser", "https://spa.example/cb").await;
    assert!(
        grant(&app, ws, &spa, "https://spa.example/cb", None)
            .await
            .get("refresh_token")
            .is_none()
    );
    // A native app and a server application get one.
    let (native, _) = register("native", "http://127.0.0.1:8765/cb").await;
    assert!(grant(&app, ws, &native, "http://127.0.0.1:8765/cb", None).await["refresh_token"].is_string());
    let (server, secret) = register("server", "https://api.example/cb").await;
    let g = grant(&app, ws, &server, "https://api.example/cb", secret.as_deref()).await;
    assert!(g["refresh_token"].is_string());
}
