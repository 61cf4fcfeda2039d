//! `POST /auth/callback` with upstream ID tokens: the issuer's keys come from its JWKS over HTTP; wrong
//! issuer, audience, expiry, key or algorithm, and replays, are refused.

use std::sync::Arc;

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};
use serde_json::json;

use crate::support::{assert_problem, b64, jwt_header};

backend_tests!(
    first_sign_in_creates_the_user_and_later_ones_find_them,
    wrong_issuer_audience_expiry_and_key_are_401,
    unknown_kid_triggers_one_jwks_refetch,
    unsigned_and_hmac_id_tokens_are_401,
    an_id_token_is_exchanged_once,
    callback_bodies_are_validated,
    ambiguous_applications_need_a_client_id,
    private_issuers_are_refused_unless_allowed,
    an_id_token_exchange_honours_the_second_factor,
);

async fn callback(app: &TestApp, body: serde_json::Value) -> reqwest::Response {
    app.http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn now(app: &TestApp) -> i64 {
    use secureflows_core::Clock;
    app.clock.now().secs()
}

async fn first_sign_in_creates_the_user_and_later_ones_find_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let response = callback(&app, json!({ "id_token": app.id_token(&application, "alice") })).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 900);
    let first = crate::support::jwt_claims(body["sessionToken"].as_str().unwrap());
    assert_eq!(first["aud"], json!(application.id.to_string()));
    assert_eq!(first["ws"], json!(ws.to_string()));
    assert_eq!(first["role"], "user");
    assert_eq!(first["rev"], 1);
    for claim in ["iss", "sub", "sid", "iat", "nbf", "exp", "jti"] {
        assert!(first.get(claim).is_some(), "claim {claim}");
    }
    let again = app.sign_in(&application, "alice").await;
    let second = crate::support::jwt_claims(again.token());
    assert_eq!(first["sub"], second["sub"], "same issuer and subject: same user");
    assert_ne!(first["sid"], second["sid"], "a new login session");
    let bob = app.sign_in(&application, "bob").await;
    assert_ne!(crate::support::jwt_claims(bob.token())["sub"], first["sub"]);
}

async fn wrong_issuer_audience_expiry_and_key_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let base = app.issuer.claims("alice", "web", now(&app));
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let cases = [
        (
            "wrong issuer",
            app.issuer
                .sign(&edit(&|c| c["iss"] = json!("https://accounts.evil.example"))),
        ),
        (
            "issuer with a trailing slash",
            app.issuer
                .sign(&edit(&|c| c["iss"] = json!(format!("{}/", app.issuer.url)))),
        ),
        (
            "wrong audience",
            app.issuer.sign(&edit(&|c| c["aud"] = json!("other-client"))),
        ),
        (
            "audience list without ours",
            app.issuer.sign(&edit(&|c| c["aud"] = json!(["x", "y"]))),
        ),
        (
            "expired",
            app.issuer.sign(&edit(&|c| c["exp"] = json!(now(&app) - 120))),
        ),
        (
            "issued in the future",
            app.issuer.sign(&edit(&|c| c["iat"] = json!(now(&app) + 3600))),
        ),
        (
            "not yet valid",
            app.issuer.sign(&edit(&|c| c["nbf"] = json!(now(&app) + 3600))),
        ),
        (
            "no subject",
            app.issuer.sign(&edit(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            })),
        ),
        ("empty subject", app.issuer.sign(&edit(&|c| c["sub"] = json!("")))),
        (
            "exp as a string",
            app.issuer.sign(&edit(&|c| c["exp"] = json!("tomorrow"))),
        ),
        ("unknown key", app.issuer.sign_with_unpublished_key(&base)),
    ];
    for (what, token) in cases {
        let response = callback(&app, json!({ "id_token": token })).await;
        assert_eq!(response.status(), 401, "{what}");
        assert_problem(response, 401, "invalid-token").await;
    }
    // An audience list that includes ours is fine.
    let ok = app.issuer.sign(&edit(&|c| c["aud"] = json!(["other", "web"])));
    assert_eq!(
        callback(
            &app,
            json!({ "id_token": ok, "client_id": application.id.to_string() })
        )
        .await
        .status(),
        200
    );
}

async fn unknown_kid_triggers_one_jwks_refetch(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    app.sign_in(&application, "alice").await;
    let fetches = app.issuer.jwks_fetches();
    assert_eq!(fetches, 1, "keys are cached after the first fetch");
    app.sign_in(&application, "bob").await;
    assert_eq!(app.issuer.jwks_fetches(), 1);

    // The issuer rotates to an RS256 key: an unknown kid makes us fetch again, once.
    app.issuer.rotate();
    let token = app.id_token(&application, "carol");
    assert_eq!(jwt_header(&token)["alg"], "RS256");
    assert_eq!(callback(&app, json!({ "id_token": token })).await.status(), 200);
    assert_eq!(app.issuer.jwks_fetches(), 2);
    // Tokens with keys nobody published do not make us hammer the issuer.
    for _ in 0..5 {
        let stray = app
            .issuer
            .sign_with_unpublished_key(&app.issuer.claims("x", "web", now(&app)));
        assert_eq!(callback(&app, json!({ "id_token": stray })).await.status(), 401);
    }
    assert!(app.issuer.jwks_fetches() <= 3, "refetches are rate-limited");
}

async fn unsigned_and_hmac_id_tokens_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let _application = app.application(ws, "web").await;
    let claims = app.issuer.claims("alice", "web", now(&app));
    let payload = b64(claims.to_string().as_bytes());
    for alg in ["none", "NONE"] {
        let head = b64(json!({ "alg": alg, "typ": "JWT" }).to_string().as_bytes());
        assert_problem(
            callback(&app, json!({ "id_token": format!("{head}.{payload}.") })).await,
            401,
            "invalid-token",
        )
        .await;
    }
    let jwks: serde_json::Value = reqwest::get(format!("{}/jwks", app.issuer.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap();
    let head = b64(json!({ "alg": "HS256", "typ": "JWT", "kid": kid })
        .to_string()
        .as_bytes());
    let input = format!("{head}.{payload}");
    let secret = jwks["keys"][0].to_string();
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes()),
        input.as_bytes(),
    );
    assert_problem(
        callback(
            &app,
            json!({ "id_token": format!("{input}.{}", b64(tag.as_ref())) }),
        )
        .await,
        401,
        "invalid-token",
    )
    .await;
}

async fn an_id_token_is_exchanged_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let token = app.id_token(&application, "alice");
    assert_eq!(callback(&app, json!({ "id_token": token })).await.status(), 200);
    assert_problem(
        callback(&app, json!({ "id_token": token })).await,
        401,
        "credential-replayed",
    )
    .await;
    // Concurrent replays: exactly one wins.
    let token = app.id_token(&application, "bob");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, token) = (app.http.clone(), app.url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/api/v1/auth/callback"))
                .json(&json!({ "id_token": token }))
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
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401));
}

async fn callback_bodies_are_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let url = format!("{}/api/v1/auth/callback", app.url);
    let post = |body: &'static str, ct: &'static str| {
        app.http.post(&url).header("content-type", ct).body(body).send()
    };
    assert_problem(
        post("{", "application/json").await.unwrap(),
        400,
        "malformed-request",
    )
    .await;
    assert_problem(
        post("{\"id_token\": \"x\",}", "application/json").await.unwrap(),
        400,
        "malformed-request",
    )
    .await;
    assert_problem(
        post("[1,2]", "application/json").await.unwrap(),
        422,
        "validation-failed",
    )
    .await;
    assert_problem(
        post("{}", "application/json").await.unwrap(),
        422,
        "validation-failed",
    )
    .await;
    assert_problem(
        post("{\"id_token\": 5}", "application/json").await.unwrap(),
        422,
        "validation-failed",
    )
    .await;
    assert_problem(
        post("{\"id_token\": \"x\", \"user_id\": \"1\"}", "application/json")
            .await
            .unwrap(),
        422,
        "validation-failed",
    )
    .await;
    assert_problem(
        post("{\"id_token\": \"x\"}", "text/plain").await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    assert_problem(
        post("id_token=x", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    assert_problem(
        post(
            "{\"id_token\": \"x\", \"client_id\": \"nope\"}",
            "application/json",
        )
        .await
        .unwrap(),
        422,
        "validation-failed",
    )
    .await;
    // 10,000-deep nesting is refused as the wrong shape before any recursion happens.
    for deep in [
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        format!(
            "{{\"id_token\": \"x\", \"client_id\": {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    ] {
        let response = app
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(deep)
            .send()
            .await
            .unwrap();
        assert_problem(response, 422, "validation-failed").await;
    }
    for odd in [
        "NaN",
        "{\"id_token\": NaN}",
        "{\"id_token\": 1e400}",
        "\"\\ud800\"",
    ] {
        let response = app
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(odd)
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status().as_u16(), 400 | 422),
            "{odd}: {}",
            response.status()
        );
    }
    let response = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b'{', 0xff, b'}'])
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed-request").await;
    assert_problem(
        callback(&app, json!({ "id_token": "garbage" })).await,
        401,
        "invalid-token",
    )
    .await;
    // After all that, a good request still works.
    assert_eq!(
        callback(&app, json!({ "id_token": app.id_token(&application, "alice") }))
            .await
            .status(),
        200
    );
}

async fn ambiguous_applications_need_a_client_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws1 = app.workspace(Plan::pro()).await;
    let ws2 = app.workspace(Plan::pro()).await;
    let a1 = app.application(ws1, "shared-audience").await;
    let a2 = app.application(ws2, "shared-audience").await;
    let token = app.id_token(&a1, "alice");
    assert_problem(
        callback(&app, json!({ "id_token": token })).await,
        400,
        "malformed-request",
    )
    .await;
    let token = app.id_token(&a1, "alice");
    let body: serde_json::Value =
        callback(&app, json!({ "id_token": token, "client_id": a2.id.to_string() }))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(
        crate::support::jwt_claims(body["sessionToken"].as_str().unwrap())["ws"],
        json!(ws2.to_string())
    );
}

async fn private_issuers_are_refused_unless_allowed(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| {
            c.upstream.allow_private_networks = false;
        }),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let response = callback(&app, json!({ "id_token": app.id_token(&application, "alice") })).await;
    assert_problem(response, 503, "service-unavailable").await;
    assert_eq!(
        app.issuer.jwks_fetches(),
        0,
        "nothing was fetched from a loopback address"
    );
}

/// An application's ID-token exchange is a sign-in like any other: a user with a second factor, or
/// whom the workspace requires to have one, is signed in only when the issuer asserts a second factor
/// by the `amr`/`acr` values the application trusts it for; the exchange never changes the member's
/// address.
async fn an_id_token_exchange_honours_the_second_factor(backend: Backend) {
    use secureflows_core::Clock;
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let owner = app
        .console_token(ws, "owner@example.com", secureflows_core::Role::Owner)
        .await;
    let exchange = |subject: &'static str, extra: serde_json::Value| {
        let app = &app;
        let id = application.id.to_string();
        async move {
            let mut claims = app.issuer.claims(subject, "web", app.clock.now().secs());
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            callback(
                app,
                json!({ "id_token": app.issuer.sign(&claims), "client_id": id }),
            )
            .await
        }
    };
    let first = exchange("alice", json!({})).await;
    assert_eq!(first.status(), 200);
    let body: serde_json::Value = first.json().await.unwrap();
    let alice_id = crate::support::jwt_claims(body["sessionToken"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    // Alice turns TOTP on (through the hosted login's services; she has no password).
    let alice = app
        .services()
        .stores
        .users
        .find_user(ws, alice_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let setup = app.services().start_totp(&alice).await.unwrap();
    let now = u64::try_from(app.clock.now().secs()).unwrap();
    let code = secureflows_crypto::totp::totp_code_from_base32(setup.secret_base32.expose(), now).unwrap();
    app.services()
        .confirm_totp(&alice, &code, &secureflows_core::audit::Actor::operator())
        .await
        .unwrap();

    // Now an ID token alone does not sign her in, whatever it claims unless the application trusts it.
    for extra in [
        json!({}),
        json!({"amr": ["pwd", "mfa"]}),
        json!({"acr": "urn:example:loa:2"}),
    ] {
        let r = exchange("alice", extra.clone()).await;
        let problem = assert_problem(r, 403, "second-factor-required").await;
        assert!(problem.detail.unwrap().contains("hosted login"), "{extra}");
    }
    // The application says how its issuer asserts a second factor.
    crate::support::call_ok(
        &app,
        "PATCH",
        &format!("/api/v1/applications/{}", application.id),
        &owner,
        Some(json!({"trust": {
            "issuer": app.issuer.url,
            "audience": "web",
            "second_factor_amr": ["mfa", "hwk"],
            "second_factor_acr": ["urn:example:loa:2"],
        }})),
        200,
    )
    .await;
    assert_problem(
        exchange("alice", json!({"amr": ["pwd"]})).await,
        403,
        "second-factor-required",
    )
    .await;
    assert_problem(
        exchange("alice", json!({"amr": "mfa"})).await,
        403,
        "second-factor-required",
    )
    .await;
    assert_problem(
        exchange("alice", json!({"acr": "urn:example:loa:1"})).await,
        403,
        "second-factor-required",
    )
    .await;
    assert_eq!(
        exchange("alice", json!({"amr": ["pwd", "mfa"]})).await.status(),
        200
    );
    // The token's address is another one, verified: the member's address does not change.
    let r = exchange(
        "alice",
        json!({"acr": "urn:example:loa:2", "email": "someone.else@example.com"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let token: serde_json::Value = r.json().await.unwrap();
    let info: serde_json::Value = app
        .http
        .get(format!("{}/w/{ws}/userinfo", app.url))
        .bearer_auth(token["sessionToken"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["email_verified"], true);

    // A workspace that requires a second factor of everyone: the same for a user without one.
    assert_eq!(exchange("bob", json!({})).await.status(), 200);
    crate::support::call_ok(
        &app,
        "PATCH",
        "/api/v1/workspaces",
        &owner,
        Some(json!({"login_policy": {"password_policy": "nist", "mfa_required": "all"}})),
        200,
    )
    .await;
    assert_problem(exchange("bob", json!({})).await, 403, "second-factor-required").await;
    assert_eq!(exchange("bob", json!({"amr": ["hwk"]})).await.status(), 200);
}
