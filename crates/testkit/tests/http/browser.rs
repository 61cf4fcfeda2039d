//! The hosted login in a real headless Chromium, driven over WebDriver (ChromeDriver): the plain HTML
//! example application (`docs/examples/hosted-login.html`) signs a user up with the strength meter,
//! gets the code back, exchanges it, uses the vault, signs out by top-level redirect and signs in again.

use std::time::Duration;

use fantoccini::Locator;
use secureflows_core::{Plan, WorkspaceId};
use secureflows_crypto::totp::totp_code_from_base32;
use secureflows_testkit::browser::{browser, click, element, fill, text, wait_for_text};
use secureflows_testkit::{Backend, SmtpSink, TestApp, TestOptions, backend_tests, external_tool};

backend_tests!(
    example_page_signs_up_signs_out_and_signs_in,
    totp_and_magic_links_in_the_browser,
    passkeys_in_the_browser,
    a_required_second_factor_can_be_a_passkey,
    oidc_client_ts_signs_in_renews_and_signs_out,
);

/// A loopback listener for the example application, and its origin.
pub(crate) async fn loopback() -> (String, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (format!("http://{}", listener.local_addr().unwrap()), listener)
}

/// Serves `page` at every path of the listener.
pub(crate) fn serve_page(listener: tokio::net::TcpListener, page: String) {
    let router = axum::Router::new().fallback(move || {
        let page = page.clone();
        async move { axum::response::Html(page) }
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// The example application, registered and served for a new workspace. Returns its origin.
async fn serve_example(app: &TestApp) -> (WorkspaceId, String) {
    let ws = app.workspace(Plan::pro()).await;
    let (origin, listener) = loopback().await;
    let (client, _) = app
        .services()
        .create_application(
            ws,
            secureflows_core::workspace::NewApplication {
                name: "Example".into(),
                public: true,
                redirect_uris: vec![format!("{origin}/callback")],
                post_logout_uris: vec![format!("{origin}/")],
                allowed_origins: vec![origin.clone()],
                ..Default::default()
            },
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let page = include_str!("../../../../docs/examples/hosted-login.html")
        .replace("__SECUREFLOWS_URL__", &app.url)
        .replace("__ISSUER__", &format!("{}/w/{ws}", app.url))
        .replace("__CLIENT_ID__", &client.id.to_string());
    serve_page(listener, page);
    (ws, origin)
}

async fn example_page_signs_up_signs_out_and_signs_in(backend: Backend) {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn(backend).await;
    let (_, origin) = serve_example(&app).await;

    // Sign up, watching the strength meter.
    c.goto(&format!("{origin}/")).await.unwrap();
    click(c, "#sign-in").await;
    click(c, "#to-signup").await;
    fill(c, "#email", "dana@example.com").await;
    fill(c, "#password", "password").await;
    let meter = c.find(Locator::Css("#strength")).await.unwrap();
    assert_eq!(meter.attr("data-score").await.unwrap().as_deref(), Some("0"));
    wait_for_text(c, "#strength-text", "Strength: Very weak").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    let score: u32 = meter.attr("data-score").await.unwrap().unwrap().parse().unwrap();
    assert!(score >= 3, "a long mixed passphrase scores {score}");
    click(c, "#sign-up").await;
    wait_for_text(c, "#result", "hello from the vault").await;
    assert_eq!(c.current_url().await.unwrap().as_str(), format!("{origin}/"));

    // Sign out by top-level redirect: the hosted login asks, then returns to the application.
    click(c, "#sign-out").await;
    click(c, "#confirm-logout").await;
    wait_for_text(c, "#status", "Not signed in.").await;
    assert_eq!(c.current_url().await.unwrap().as_str(), format!("{origin}/"));

    // Signing in again needs the password: the single sign-on session is gone.
    click(c, "#sign-in").await;
    fill(c, "#email", "dana@example.com").await;
    fill(c, "#password", "wrong password here").await;
    click(c, "#sign-in").await;
    assert!(text(c, "#form-error").await.contains("not right"));
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-in").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}

async fn totp_and_magic_links_in_the_browser(backend: Backend) {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let smtp = SmtpSink::start().await;
    let port = smtp.port;
    let options = TestOptions {
        configure: std::sync::Arc::new(move |cfg| {
            cfg.smtp.host = Some("127.0.0.1".into());
            cfg.smtp.port = port;
            cfg.smtp.tls = "none".into();
        }),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let (ws, origin) = serve_example(&app).await;
    let code_now = |secret: &str| {
        totp_code_from_base32(secret, u64::try_from(app.services().clock.now().secs()).unwrap()).unwrap()
    };

    c.goto(&format!("{origin}/")).await.unwrap();
    click(c, "#sign-in").await;
    click(c, "#to-signup").await;
    fill(c, "#email", "lena@example.com").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-up").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    // Turn on TOTP from the account page: QR code and key, then a code from the "app".
    c.goto(&format!("{}/w/{ws}/account", app.url)).await.unwrap();
    click(c, "#setup-totp").await;
    let qr = element(c, "#totp-qr").await.attr("src").await.unwrap().unwrap();
    assert!(qr.starts_with("data:image/svg+xml;base64,"));
    let secret = text(c, "#totp-secret").await;
    fill(c, "#code", &code_now(&secret)).await;
    click(c, "#confirm-totp").await;
    let codes = text(c, "#recovery-codes").await;
    assert_eq!(codes.lines().count(), 10, "{codes}");

    // Sign out, then sign in with password and TOTP.
    c.goto(&format!("{origin}/")).await.unwrap();
    click(c, "#sign-out").await;
    click(c, "#confirm-logout").await;
    wait_for_text(c, "#status", "Not signed in.").await;
    click(c, "#sign-in").await;
    fill(c, "#email", "lena@example.com").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-in").await;
    app.advance(Duration::from_secs(30));
    fill(c, "#code", &code_now(&secret)).await;
    click(c, "#verify-code").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    // Sign out, then a magic link read from the SMTP listener (and TOTP again).
    click(c, "#sign-out").await;
    click(c, "#confirm-logout").await;
    wait_for_text(c, "#status", "Not signed in.").await;
    click(c, "#sign-in").await;
    fill(c, "#magic-email", "lena@example.com").await;
    click(c, "#send-magic-link").await;
    wait_for_text(c, "#heading", "Check your e-mail").await;
    let mail = smtp
        .wait_for_containing("/magic?token=", 1)
        .await
        .last()
        .map(|m| m.text())
        .expect("a magic link");
    let link = mail
        .lines()
        .find(|l| l.starts_with("http"))
        .unwrap()
        .trim()
        .to_owned();
    c.goto(&link).await.unwrap();
    click(c, "#confirm-magic-link").await;
    app.advance(Duration::from_secs(30));
    fill(c, "#code", &code_now(&secret)).await;
    click(c, "#verify-code").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}

async fn passkeys_in_the_browser(backend: Backend) {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    // Four sign-ins within the minute from one address: the throttle is raised (it is tested elsewhere).
    let options = TestOptions {
        configure: std::sync::Arc::new(|c| c.login.attempts_per_minute = 100),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options.localhost()).await;
    assert!(app.url.starts_with("http://localhost:"));
    let (ws, origin) = serve_example(&app).await;
    let authenticator = browser.add_virtual_authenticator().await;

    c.goto(&format!("{origin}/")).await.unwrap();
    click(c, "#sign-in").await;
    click(c, "#to-signup").await;
    fill(c, "#email", "piet@example.com").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-up").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    // Register a passkey on the account page.
    c.goto(&format!("{}/w/{ws}/account", app.url)).await.unwrap();
    fill(c, "#passkey-name", "Work laptop").await;
    click(c, "#add-passkey").await;
    wait_for_text(c, "#notice", "The passkey was added.").await;
    // The first passkey comes with recovery codes (a lost device must not lock the user out).
    assert_eq!(text(c, "#recovery-codes").await.lines().count(), 10);
    click(c, "#to-account").await;
    assert!(text(c, "#passkeys").await.contains("Work laptop"));
    assert_eq!(text(c, "#mfa-status").await, "On: passkey.");
    // The name is sealed with the credential.
    assert!(
        !app.raw_contains(b"Work laptop").await,
        "a passkey name is stored in the clear"
    );

    // Sign out, then sign in with the passkey alone, picked from the e-mail field's autofill (a
    // conditional request, which the virtual authenticator answers as a person picking it would):
    // back to the application, which exchanges the code.
    c.goto(&format!("{origin}/")).await.unwrap();
    click(c, "#sign-out").await;
    click(c, "#confirm-logout").await;
    wait_for_text(c, "#status", "Not signed in.").await;
    click(c, "#sign-in").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    // Nobody picks from the autofill: the request waits, and the button still signs in (it ends the
    // waiting request first).
    click(c, "#sign-out").await;
    click(c, "#confirm-logout").await;
    wait_for_text(c, "#status", "Not signed in.").await;
    browser.set_presence(&authenticator, false).await;
    click(c, "#sign-in").await;
    let email = element(c, "#email").await;
    assert_eq!(
        email.attr("autocomplete").await.unwrap().as_deref(),
        Some("username webauthn")
    );
    element(c, "form[data-passkey=sign_in][data-autofill=waiting]").await;
    browser.set_presence(&authenticator, true).await;
    click(c, "#passkey-sign-in").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    // Sign out, then the password: the passkey is now the second step (nobody picks from the
    // autofill).
    click(c, "#sign-out").await;
    click(c, "#confirm-logout").await;
    wait_for_text(c, "#status", "Not signed in.").await;
    browser.set_presence(&authenticator, false).await;
    click(c, "#sign-in").await;
    fill(c, "#email", "piet@example.com").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-in").await;
    wait_for_text(c, "#heading", "Two-step sign-in").await;
    browser.set_presence(&authenticator, true).await;
    click(c, "#passkey-verify").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}

async fn a_required_second_factor_can_be_a_passkey(backend: Backend) {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn_with(backend, TestOptions::default().localhost()).await;
    let (ws, origin) = serve_example(&app).await;
    browser.add_virtual_authenticator().await;
    let owner = app
        .console_token(ws, "owner@example.com", secureflows_core::Role::Owner)
        .await;
    let r = app
        .http
        .patch(format!("{}/api/v1/workspaces", app.url))
        .bearer_auth(owner)
        .json(&serde_json::json!({"login_policy": {"password_policy": "nist", "mfa_required": "all"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A new user must set up a second factor before anything else, and picks a passkey.
    c.goto(&format!("{origin}/")).await.unwrap();
    click(c, "#sign-in").await;
    click(c, "#to-signup").await;
    fill(c, "#email", "noor@example.com").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-up").await;
    wait_for_text(c, "#heading", "Set up an authenticator app").await;
    fill(c, "#passkey-name", "Phone").await;
    click(c, "#enrol-passkey").await;
    wait_for_text(c, "#notice", "The passkey was added.").await;
    assert_eq!(text(c, "#recovery-codes").await.lines().count(), 10);
    // The way on continues the application's request.
    click(c, "#to-account").await;
    wait_for_text(c, "#result", "hello from the vault").await;

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}

/// A browser application written with a standard library (oidc-client-ts from npm) against a
/// workspace's issuer: discovery, code + PKCE at the token endpoint and user info (both cross-origin,
/// CORS), no refresh token for a browser application, renewal by a top-level `prompt=none`, the vault,
/// and RP-initiated sign-out.
async fn oidc_client_ts_signs_in_renews_and_signs_out(backend: Backend) {
    let Some(bundle) = external_tool("SECUREFLOWS_TEST_OIDC_CLIENT_TS") else {
        return;
    };
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    app.services()
        .sign_up(
            ws,
            secureflows_core::login::hosted::SignUp {
                email: "olive@example.com".into(),
                password: secureflows_crypto::SecretString::new("Kettle-Orbit-9-Lantern-Swim".into()),
                name: None,
            },
            None,
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let (origin, listener) = loopback().await;
    let (client, _) = app
        .services()
        .create_application(
            ws,
            secureflows_core::workspace::NewApplication {
                name: "Library app".into(),
                kind: Some(secureflows_core::ApplicationKind::Browser),
                redirect_uris: vec![format!("{origin}/cb")],
                post_logout_uris: vec![format!("{origin}/bye")],
                allowed_origins: vec![origin.clone()],
                ..Default::default()
            },
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let script = include_str!("../interop/oidc_client_ts_app.js")
        .replace("__ISSUER__", &format!("{}/w/{ws}", app.url))
        .replace("__CLIENT_ID__", &client.id.to_string())
        .replace("__BASE__", &app.url);
    let page = include_str!("../interop/oidc_client_ts.html").to_owned();
    let library = std::fs::read_to_string(bundle).unwrap();
    let router = axum::Router::new()
        .route(
            "/oidc-client-ts.min.js",
            axum::routing::get(move || {
                let library = library.clone();
                async move { ([("content-type", "text/javascript")], library) }
            }),
        )
        .route(
            "/app.js",
            axum::routing::get(move || {
                let script = script.clone();
                async move { ([("content-type", "text/javascript")], script) }
            }),
        )
        .fallback(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        });
    tokio::spawn(async move { axum::serve(listener, router).await });

    c.goto(&format!("{origin}/")).await.unwrap();
    wait_for_text(c, "#status", "not signed in").await;
    click(c, "#sign-in").await;
    fill(c, "#email", "olive@example.com").await;
    fill(c, "#password", "Kettle-Orbit-9-Lantern-Swim").await;
    click(c, "#sign-in").await;
    wait_for_text(c, "#status", "signed in").await;
    assert_eq!(
        text(c, "#email").await,
        "olive@example.com",
        "user info, cross-origin"
    );
    assert_eq!(
        text(c, "#refresh").await,
        "no refresh token",
        "a browser application"
    );
    let first = element(c, "#token")
        .await
        .prop("textContent")
        .await
        .unwrap()
        .unwrap();
    click(c, "#vault").await;
    wait_for_text(c, "#vault-result", "vault 201").await;

    // Renewal: a top-level redirect with prompt=none comes back with new tokens (single sign-on).
    click(c, "#renew").await;
    wait_for_text(c, "#status", "signed in").await;
    let second = element(c, "#token")
        .await
        .prop("textContent")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first, second, "a new access token");

    // Sign-out: the ID token hint names the signed-in user, so it happens at once and returns.
    click(c, "#sign-out").await;
    wait_for_text(c, "#status", "signed out").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/bye");
    // Renewal now answers login_required.
    c.goto(&format!("{origin}/")).await.unwrap();
    wait_for_text(c, "#status", "not signed in").await;
    click(c, "#renew").await;
    wait_for_text(c, "#status", "error: login_required").await;

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}
