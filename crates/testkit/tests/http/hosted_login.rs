//! The hosted login end to end over HTTP, with a cookie-keeping client as the browser: sign-up and
//! sign-in pages, authorization code + PKCE, the seed's `POST /auth/callback`, the token endpoint with
//! refresh rotation and reuse detection, user info, revocation, introspection, browser logout, and the
//! abuse cases (replayed code, wrong verifier, open redirects, CSRF, throttling, enumeration).

use std::time::Duration;

use base64::Engine as _;
use secureflows_core::{Application, Plan, WorkspaceId};
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::support::assert_problem;

backend_tests!(
    public_client_signs_up_and_exchanges_its_code,
    confidential_client_refreshes_and_detects_reuse,
    authorization_requests_never_redirect_anywhere_unregistered,
    sign_in_is_throttled_and_reveals_nothing,
    parallel_guesses_lock_the_account_after_ten,
    anonymous_visitors_keep_their_vault_when_they_sign_up,
    csrf_cookies_are_rotated_at_sign_in_and_bound_to_the_session,
    error_pages_say_what_happened_offer_a_way_on_and_a_reference,
);

pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) fn pkce() -> (String, String) {
    let verifier = format!("v{}", uuid::Uuid::new_v4().simple()).repeat(2);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(secureflows_crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

pub(crate) fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The CSRF token of a page's form.
pub(crate) fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field");
    let rest = &html[at + 19..];
    rest[..rest.find('"').unwrap()].to_owned()
}

pub(crate) async fn client_app(
    app: &TestApp,
    ws: WorkspaceId,
    public: bool,
) -> (Application, Option<String>) {
    let (application, secret) = app
        .services()
        .create_application(
            ws,
            secureflows_core::workspace::NewApplication {
                name: "Web".into(),
                public,
                redirect_uris: vec!["https://app.example/cb".into()],
                post_logout_uris: vec!["https://app.example/bye".into()],
                ..Default::default()
            },
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    (application, secret.map(|s| s.expose().to_owned()))
}

pub(crate) fn authorize_url(
    app: &TestApp,
    ws: WorkspaceId,
    client: &Application,
    challenge: &str,
    extra: &str,
) -> String {
    format!(
        "{}/w/{ws}/authorize?response_type=code&client_id={}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb\
         &scope=openid%20email&state=st-1&nonce=n-1&code_challenge={challenge}&code_challenge_method=S256{extra}",
        app.url, client.id
    )
}

/// Signs up through the pages of a flow and returns the code the browser is sent back with.
pub(crate) async fn sign_up_through_flow(
    app: &TestApp,
    b: &reqwest::Client,
    ws: WorkspaceId,
    client: &Application,
    challenge: &str,
    email: &str,
) -> String {
    let r = b
        .get(authorize_url(app, ws, client, challenge, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let login = location(&r);
    assert!(login.starts_with(&format!("/w/{ws}/login?flow=")), "{login}");
    let flow = login.split("flow=").nth(1).unwrap().to_owned();
    let page = b
        .get(format!("{}/w/{ws}/signup?flow={flow}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/assets/strength.js"));
    let r = b
        .post(format!("{}/w/{ws}/signup", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("flow", &flow),
            ("email", email),
            ("name", "Ada"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let back = location(&r);
    assert!(back.starts_with("https://app.example/cb?"), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-1"));
    assert_eq!(query_param(&back, "iss"), Some(format!("{}/w/{ws}", app.url)));
    query_param(&back, "code").unwrap()
}

async fn public_client_signs_up_and_exchanges_its_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, secret) = client_app(&app, ws, true).await;
    assert!(secret.is_none());
    let discovery: serde_json::Value = app
        .http
        .get(format!("{}/w/{ws}/.well-known/openid-configuration", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], format!("{}/w/{ws}", app.url));
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );

    let b = browser();
    let (verifier, challenge) = pkce();
    let code = sign_up_through_flow(&app, &b, ws, &client, &challenge, "ada@example.com").await;

    // A wrong verifier fails (and spends the code).
    let (other_verifier, _) = pkce();
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": other_verifier}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "invalid-token").await;

    // A fresh code through single sign-on (no page): the browser is already signed in.
    let r = b
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let code = query_param(&location(&r), "code").unwrap();
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body.get("refreshToken").is_none(),
        "a browser client gets no refresh token"
    );
    let token = body["sessionToken"].as_str().unwrap().to_owned();
    let session = app.client.session(token.clone());
    session.set("k", "application/json", "{\"v\":1}").await.unwrap();
    assert_eq!(&session.get("k").await.unwrap().bytes[..], b"{\"v\":1}");

    // The code again: refused, and the session it was exchanged for ends (RFC 6749 §4.1.2).
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "invalid-token").await;
    let r = app
        .http
        .get(format!("{}/api/v1/sessions/get/k", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "session-revoked").await;

    // Browser logout by top-level redirect, to a registered URI only; vault data stays.
    let r = b
        .get(format!(
            "{}/api/v1/auth/logout?client_id={}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F",
            app.url, client.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = b
        .get(format!("{}{}", app.url, location(&r)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "an unregistered post-logout URI is never redirected to"
    );
    assert!(r.headers().get("location").is_none());
    let r = b
        .get(format!(
            "{}/w/{ws}/logout?client_id={}&post_logout_redirect_uri=https%3A%2F%2Fapp.example%2Fbye&state=s2",
            app.url, client.id
        ))
        .send()
        .await
        .unwrap();
    // No id_token_hint: the user confirms with a CSRF-protected form.
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let r = b
        .post(format!("{}/w/{ws}/logout", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("client_id", &client.id.to_string()),
            ("post_logout_redirect_uri", "https://app.example/bye"),
            ("state", "s2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "https://app.example/bye?state=s2");
    // Signed out: authorize asks for the login page again.
    let r = b
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert!(location(&r).contains("/login?flow="));
    app.stop().await;
}

async fn token_request(
    app: &TestApp,
    ws: WorkspaceId,
    client: &Application,
    secret: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    app.http
        .post(format!("{}/w/{ws}/token", app.url))
        .basic_auth(client.id.to_string(), Some(secret))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn confidential_client_refreshes_and_detects_reuse(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, secret) = client_app(&app, ws, false).await;
    let secret = secret.unwrap();
    let b = browser();
    let (verifier, challenge) = pkce();
    let code = sign_up_through_flow(&app, &b, ws, &client, &challenge, "bob@example.com").await;

    // Without the secret: invalid_client.
    let r = app
        .http
        .post(format!("{}/w/{ws}/token", app.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client.id.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let r = token_request(
        &app,
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
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let grant: serde_json::Value = r.json().await.unwrap();
    assert_eq!(grant["token_type"], "Bearer");
    let id_token = grant["id_token"].as_str().unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], format!("{}/w/{ws}", app.url));
    assert_eq!(claims["aud"], client.id.to_string());
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["email"], "bob@example.com");
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let r1 = grant["refresh_token"].as_str().unwrap().to_owned();

    let info: serde_json::Value = app
        .http
        .get(format!("{}/w/{ws}/userinfo", app.url))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["email"], "bob@example.com");

    let refresh = |token: String| {
        let (app, client, secret) = (&app, &client, &secret);
        async move {
            token_request(
                app,
                ws,
                client,
                secret,
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
            )
            .await
        }
    };
    let r = refresh(r1.clone()).await;
    assert_eq!(r.status(), 200);
    let g2: serde_json::Value = r.json().await.unwrap();
    let r2 = g2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    // Two tabs refreshing at once: the old token works again within the grace window.
    assert_eq!(refresh(r1.clone()).await.status(), 200);
    // Later, the old token is a replay: its whole family is revoked and the session ends.
    app.advance(Duration::from_secs(11));
    let r = refresh(r1.clone()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(refresh(r2).await.status(), 400, "the family is revoked");
    let new_access = g2["access_token"].as_str().unwrap();
    let r = app
        .http
        .get(format!("{}/api/v1/sessions", app.url))
        .bearer_auth(new_access)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "session-revoked").await;

    // Introspection and revocation of a fresh grant.
    let r = b
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    let code = query_param(&location(&r), "code").unwrap();
    let grant: serde_json::Value = token_request(
        &app,
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
    .await
    .json()
    .await
    .unwrap();
    let access = grant["access_token"].as_str().unwrap();
    let introspect = |token: String| {
        let (app, client, secret) = (&app, &client, &secret);
        async move {
            app.http
                .post(format!("{}/w/{ws}/introspect", app.url))
                .basic_auth(client.id.to_string(), Some(secret))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(introspect(access.to_owned()).await["active"], true);
    let r = app
        .http
        .post(format!("{}/w/{ws}/revoke", app.url))
        .basic_auth(client.id.to_string(), Some(&secret))
        .form(&[("token", grant["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(introspect(access.to_owned()).await["active"], false);
    assert_eq!(introspect("garbage".into()).await["active"], false);

    // A replay racing itself after the grace window: both refused, and the family is gone.
    let r = b
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    let code = query_param(&location(&r), "code").unwrap();
    let grant: serde_json::Value = token_request(
        &app,
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
    .await
    .json()
    .await
    .unwrap();
    let first = grant["refresh_token"].as_str().unwrap().to_owned();
    let rotated: serde_json::Value = refresh(first.clone()).await.json().await.unwrap();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    app.advance(Duration::from_secs(11));
    let (a, b2) = tokio::join!(refresh(first.clone()), refresh(first));
    assert_eq!((a.status().as_u16(), b2.status().as_u16()), (400, 400));
    assert_eq!(refresh(second).await.status(), 400, "the family is revoked");
    app.stop().await;
}

async fn authorization_requests_never_redirect_anywhere_unregistered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    let other_ws = app.workspace(Plan::pro()).await;
    let (_, challenge) = pkce();
    let b = browser();
    for url in [
        authorize_url(&app, ws, &client, &challenge, "").replace("app.example%2Fcb", "evil.example%2Fcb"),
        authorize_url(&app, ws, &client, &challenge, "").replace("app.example%2Fcb", "app.example%2Fcb%2F"),
        authorize_url(&app, ws, &client, &challenge, "")
            .replace(&client.id.to_string(), &uuid::Uuid::new_v4().to_string()),
        // Another workspace's issuer does not know this client.
        authorize_url(&app, other_ws, &client, &challenge, ""),
        authorize_url(
            &app,
            ws,
            &client,
            &challenge,
            "&redirect_uri=https%3A%2F%2Fevil.example%2F",
        ),
    ] {
        let r = b.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 400, "{url}");
        assert!(r.headers().get("location").is_none(), "{url}");
        // The page speaks to the person, not the developer, and offers a way on.
        let html = r.text().await.unwrap();
        assert!(html.contains("This sign-in link does not work"), "{html}");
        for developer_words in ["client_id", "redirect_uri", "client"] {
            assert!(
                !html.contains(developer_words),
                "{developer_words} on the page: {html}"
            );
        }
        assert!(
            html.contains(r#"id="continue">Sign in to your account</a>"#),
            "{html}"
        );
    }
    // With a registered redirect URI, errors go back to it: no PKCE for a public client.
    let url = authorize_url(&app, ws, &client, &challenge, "").replace(
        &format!("&code_challenge={challenge}&code_challenge_method=S256"),
        "",
    );
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(back.starts_with("https://app.example/cb?"));
    assert_eq!(query_param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-1"));
    // prompt=none without a signed-in browser.
    let r = b
        .get(authorize_url(&app, ws, &client, &challenge, "&prompt=none"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );

    // CSRF: a form without the token, with another browser's token, or from another origin.
    let page = b
        .get(format!("{}/w/{ws}/signup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let post = |client: &reqwest::Client, token: &str, origin: Option<&str>| {
        let mut req = client.post(format!("{}/w/{ws}/signup", app.url)).form(&[
            ("csrf", token),
            ("email", "eve@example.com"),
            ("password", PASSWORD),
        ]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    assert_eq!(post(&b, "", None).await.unwrap().status(), 403);
    assert_eq!(post(&browser(), &csrf, None).await.unwrap().status(), 403);
    assert_eq!(
        post(&b, &csrf, Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        403
    );
    for path in ["login", "logout"] {
        let r = b
            .post(format!("{}/w/{ws}/{path}", app.url))
            .form(&[("csrf", "forged"), ("email", "x@example.com"), ("password", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    assert_eq!(
        post(&b, &csrf, None).await.unwrap().status(),
        200,
        "signed up, no flow"
    );
    app.stop().await;
}

async fn sign_in_is_throttled_and_reveals_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/signup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/signup", app.url))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("email", "carol@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let attempt = |email: &'static str, password: &'static str| {
        let app = &app;
        async move {
            let b = browser();
            let page = b
                .get(format!("{}/w/{ws}/login", app.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let r = b
                .post(format!("{}/w/{ws}/login", app.url))
                .form(&[
                    ("csrf", csrf_of(&page).as_str()),
                    ("email", email),
                    ("password", password),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let html = r.text().await.unwrap();
            let html = match html.contains("name=\"csrf\"") {
                true => html.replace(&csrf_of(&html), "CSRF"),
                false => html,
            };
            (status, html.replace(email, "EMAIL"))
        }
    };
    // An unknown address and a wrong password answer alike.
    let unknown = attempt("nobody@example.com", "wrong password 1").await;
    let wrong = attempt("carol@example.com", "wrong password 1").await;
    assert_eq!(unknown.0, 401);
    assert_eq!(unknown, wrong);
    assert_eq!(
        attempt("carol@example.com", PASSWORD).await.0,
        200,
        "signed in (no flow)"
    );
    // 5 attempts per minute per account: the 6th is refused before the password is checked.
    for _ in 0..2 {
        attempt("carol@example.com", "wrong password 2").await;
    }
    let limited = attempt("carol@example.com", PASSWORD).await;
    assert_eq!(limited.0, 429);
    app.stop().await;
}

/// 30 wrong passwords at once, with the per-minute throttle lifted: the account locks after 10
/// failures, so even the right password is refused until the lock ends; an unknown address and a
/// known one take the same Argon2id time.
async fn parallel_guesses_lock_the_account_after_ten(backend: Backend) {
    let options = secureflows_testkit::TestOptions {
        configure: std::sync::Arc::new(|c| c.login.attempts_per_minute = 1000),
        ..Default::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/signup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    b.post(format!("{}/w/{ws}/signup", app.url))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("email", "olga@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let attempt = |email: &'static str, password: &'static str| {
        let url = app.url.clone();
        async move {
            let b = browser();
            let page = b
                .get(format!("{url}/w/{ws}/login"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let started = std::time::Instant::now();
            let status = b
                .post(format!("{url}/w/{ws}/login"))
                .form(&[
                    ("csrf", csrf_of(&page).as_str()),
                    ("email", email),
                    ("password", password),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (status, started.elapsed())
        }
    };

    // Timing: an unknown address costs what a wrong password costs (within a wide factor; without the
    // dummy verification the unknown address would answer about 30 times faster).
    let mut unknown = Vec::new();
    let mut known = Vec::new();
    for _ in 0..3 {
        unknown.push(attempt("nobody@example.com", "wrong password x").await.1);
        known.push(attempt("olga@example.com", "wrong password x").await.1);
    }
    unknown.sort();
    known.sort();
    let ratio = unknown[1].as_secs_f64() / known[1].as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "unknown {unknown:?} vs known {known:?}"
    );

    let tasks: Vec<_> = (0..30)
        .map(|_| tokio::spawn(attempt("olga@example.com", "wrong password y")))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 401);
    }
    assert_eq!(attempt("olga@example.com", PASSWORD).await.0, 401, "locked");
    app.advance(std::time::Duration::from_secs(15 * 60 + 1));
    assert_eq!(
        attempt("olga@example.com", PASSWORD).await.0,
        200,
        "the lock ended"
    );
    app.stop().await;
}

async fn anonymous_visitors_keep_their_vault_when_they_sign_up(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let (closed, _) = client_app(&app, ws, true).await;
    let client = app
        .services()
        .create_application(
            ws,
            secureflows_core::workspace::NewApplication {
                name: "Shop".into(),
                public: true,
                allow_anonymous: true,
                redirect_uris: vec!["https://app.example/cb".into()],
                ..Default::default()
            },
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap()
        .0;
    let anonymous = |client_id: String| {
        let app = &app;
        async move {
            app.http
                .post(format!("{}/api/v1/auth/anonymous", app.url))
                .json(&serde_json::json!({"client_id": client_id}))
                .send()
                .await
                .unwrap()
        }
    };
    let refused = assert_problem(anonymous(closed.id.to_string()).await, 403, "forbidden").await;
    assert_eq!(
        refused.detail.as_deref(),
        Some("this application does not allow anonymous (guest) sessions"),
        "the answer says why"
    );
    let r = anonymous(client.id.to_string()).await;
    assert_eq!(r.status(), 200);
    let anon_token = r.json::<serde_json::Value>().await.unwrap()["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let anon = app.client.session(anon_token.clone());
    anon.set("cart", "application/json", "{\"items\":3}")
        .await
        .unwrap();

    // The application gets an upgrade ticket and sends the visitor to sign up.
    let ticket = |token: String| {
        let app = &app;
        async move {
            app.http
                .post(format!("{}/api/v1/auth/upgrade", app.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let r = ticket(anon_token.clone()).await;
    assert_eq!(r.status(), 200);
    let upgrade = r.json::<serde_json::Value>().await.unwrap()["upgrade"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = browser();
    let (verifier, challenge) = pkce();
    let r = b
        .get(authorize_url(
            &app,
            ws,
            &client,
            &challenge,
            &format!("&upgrade={upgrade}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let signup = location(&r);
    assert!(signup.starts_with(&format!("/w/{ws}/signup?flow=")), "{signup}");
    let flow = query_param(&format!("{}{signup}", app.url), "flow").unwrap();
    let page = b
        .get(format!("{}{signup}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/signup", app.url))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("flow", &flow),
            ("email", "pia@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let code = query_param(&location(&r), "code").unwrap();
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<serde_json::Value>().await.unwrap()["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // Same user, same vault; the anonymous token stopped; the ticket was single use.
    let user = app.client.session(token.clone());
    assert_eq!(&user.get("cart").await.unwrap().bytes[..], b"{\"items\":3}");
    let r = app
        .http
        .get(format!("{}/api/v1/sessions", app.url))
        .bearer_auth(&anon_token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "session-revoked").await;
    let r = browser()
        .get(authorize_url(
            &app,
            ws,
            &client,
            &challenge,
            &format!("&upgrade={upgrade}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("invalid_request")
    );
    // Only anonymous sessions get tickets.
    assert_problem(ticket(token).await, 403, "forbidden").await;

    // The signed-in user downloads everything held about them, decrypted for them.
    let r = b
        .get(format!("{}/w/{ws}/account/export", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let data: serde_json::Value = r.json().await.unwrap();
    assert_eq!(data["user"]["email"], "pia@example.com");
    assert_eq!(data["vault"][0]["key"], "cart");
    assert_eq!(data["vault"][0]["value"], serde_json::json!({"items": 3}));
    let r = browser()
        .get(format!("{}/w/{ws}/account/export", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "only for the signed-in user");
    app.stop().await;
}

/// A CSRF cookie value chosen by someone else (planted in the browser before sign-in) is worth nothing
/// after it: the sign-in sets a new cookie, and tokens are bound to the browser session.
async fn csrf_cookies_are_rotated_at_sign_in_and_bound_to_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    app.services()
        .sign_up(
            ws,
            secureflows_core::login::hosted::SignUp {
                email: "cora@example.com".into(),
                password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                name: None,
            },
            None,
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let planted = "p".repeat(43);
    let http = &app.http;
    let base = app.url.clone();
    let base = &base;
    let get = |path: String, cookies: String| async move {
        http.get(format!("{base}{path}"))
            .header("cookie", cookies)
            .send()
            .await
            .unwrap()
    };
    let cookie_of = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|c| c.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c[name.len() + 1..c.find(';').unwrap()].to_owned())
    };
    // The attacker learns the token that goes with the planted value before the victim signs in.
    let page = get(format!("/w/{ws}/login"), format!("sf_csrf={planted}")).await;
    let planted_token = csrf_of(&page.text().await.unwrap());
    // The victim signs in with the planted cookie in the browser.
    let r = http
        .post(format!("{}/w/{ws}/login", app.url))
        .header("cookie", format!("sf_csrf={planted}"))
        .form(&[
            ("csrf", planted_token.as_str()),
            ("email", "cora@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sso = cookie_of(&r, "sf_sso").unwrap();
    let rotated = cookie_of(&r, "sf_csrf").expect("a new CSRF cookie at sign-in");
    assert_ne!(rotated, planted);
    // The planted pair no longer works on the signed-in browser's forms, even with the planted cookie.
    let end_others = |csrf_cookie: String, token: String| {
        let sso = sso.clone();
        async move {
            http.post(format!("{base}/w/{ws}/account/sessions/end-others"))
                .header("cookie", format!("sf_csrf={csrf_cookie}; sf_sso={sso}"))
                .form(&[("csrf", token.as_str())])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(end_others(planted.clone(), planted_token.clone()).await, 403);
    // The signed-in browser's own pages carry a token bound to its session and its new cookie.
    let account = get(
        format!("/w/{ws}/account"),
        format!("sf_csrf={rotated}; sf_sso={sso}"),
    )
    .await;
    let token = csrf_of(&account.text().await.unwrap());
    assert_ne!(token, planted_token);
    assert_eq!(end_others(rotated, token).await, 200);
}

/// Every error page is a page in the person's words, in the workspace's frame, with a way on and the
/// request id as a reference; the details stay in the log.
async fn error_pages_say_what_happened_offer_a_way_on_and_a_reference(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let b = browser();
    let cases = [
        // A form posted without this browser's CSRF cookie.
        (
            b.post(format!("{}/w/{ws}/login", app.url)).form(&[
                ("csrf", "forged"),
                ("email", "x@example.com"),
                ("password", "x"),
            ]),
            403,
            "This form has expired",
        ),
        // A form with fields missing.
        (
            b.post(format!("{}/w/{ws}/login", app.url)).form(&[("csrf", "x")]),
            400,
            "The form was incomplete",
        ),
        // Links that are unknown or lack their token.
        (
            b.get(format!("{}/w/{ws}/reset", app.url)),
            400,
            "This link does not work",
        ),
        (
            b.get(format!("{}/w/{ws}/invite/accept?token=sfi_nothing", app.url)),
            400,
            "This link does not work",
        ),
        // A second-factor step that is gone.
        (
            b.get(format!("{}/w/{ws}/mfa", app.url)),
            400,
            "This sign-in has expired",
        ),
        // A sign-out address that is not registered.
        (
            b.get(format!(
                "{}/w/{ws}/logout?post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F&client_id={}",
                app.url,
                uuid::Uuid::new_v4()
            )),
            400,
            "This sign-out link does not work",
        ),
    ];
    for (request, status, heading) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{heading}");
        assert!(r.headers().get("location").is_none());
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = r.text().await.unwrap();
        assert!(
            html.contains(&format!(r#"<h1 id="heading">{heading}</h1>"#)),
            "{html}"
        );
        assert!(
            html.contains(&format!(r#"<code id="reference">{request_id}</code>"#)),
            "{html}"
        );
        assert!(html.contains(r#"id="continue""#), "a way on: {html}");
        assert!(html.contains("<title>"), "{html}");
        for developer_words in ["csrf", "NotFound", "Malformed", "client_id", "internal"] {
            assert!(!html.contains(developer_words), "{developer_words}: {html}");
        }
    }
    // The workspace's sign-in page is the default way on; an unknown workspace has none to offer.
    let r = b.get(format!("{}/w/{ws}/mfa", app.url)).send().await.unwrap();
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!(r#"href="/w/{ws}/login" id="continue""#)),
        "{html}"
    );
    let r = b
        .get(format!("{}/w/{}/login", app.url, uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let html = r.text().await.unwrap();
    assert!(html.contains("There is no such page"), "{html}");
    app.stop().await;
}
