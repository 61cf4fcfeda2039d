//! Sign-ins keep up with the user's factors (issue 10 §2): a browser session from before a second
//! factor (or a workspace rule requiring one) steps up before it is used; changing a factor needs a
//! recent sign-in; e-mailed links end with what should end them, and continue an authorization request
//! only in the browser that asked.

use std::sync::Arc;
use std::time::Duration;

use secureflows_core::{Plan, Role, WorkspaceId};
use secureflows_crypto::totp::totp_code_from_base32;
use secureflows_testkit::{Backend, SmtpSink, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{
    PASSWORD, authorize_url, browser, client_app, csrf_of, location, pkce, query_param, sign_up_through_flow,
};
use crate::support::{call_ok, jwt_claims};

backend_tests!(
    a_session_from_before_the_second_factor_steps_up,
    a_new_workspace_rule_steps_sessions_up_to_enrol,
    changing_a_factor_needs_a_recent_sign_in,
    e_mailed_links_end_with_what_should_end_them,
    a_magic_link_continues_the_request_only_in_the_browser_that_asked,
);

fn options(smtp: Option<&SmtpSink>) -> TestOptions {
    let port = smtp.map(|s| s.port);
    TestOptions {
        configure: Arc::new(move |c| {
            c.login.attempts_per_minute = 1000;
            if let Some(port) = port {
                c.smtp.host = Some("127.0.0.1".into());
                c.smtp.port = port;
                c.smtp.tls = "none".into();
            }
        }),
        ..TestOptions::default()
    }
}

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("no {start} in {html}")) + start.len();
    &html[from..from + html[from..].find(end).unwrap()]
}

async fn page(b: &reqwest::Client, url: String) -> String {
    b.get(url).send().await.unwrap().text().await.unwrap()
}

async fn post(b: &reqwest::Client, url: String, html: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let csrf = csrf_of(html);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    b.post(url).form(&form).send().await.unwrap()
}

/// Signs `b` in with the password (no application request); returns the status.
async fn password_sign_in(app: &TestApp, b: &reqwest::Client, ws: WorkspaceId, email: &str) -> u16 {
    let html = page(b, format!("{}/w/{ws}/login", app.url)).await;
    post(
        b,
        format!("{}/w/{ws}/login", app.url),
        &html,
        &[("email", email), ("password", PASSWORD)],
    )
    .await
    .status()
    .as_u16()
}

/// Turns TOTP on from a signed-in browser's account page; returns the key (base32).
async fn turn_totp_on(app: &TestApp, b: &reqwest::Client, ws: WorkspaceId) -> String {
    let setup = page(b, format!("{}/w/{ws}/account/totp", app.url)).await;
    let secret = between(&setup, "id=\"totp-secret\">", "<").to_owned();
    let now = u64::try_from(app.services().clock.now().secs()).unwrap();
    let code = totp_code_from_base32(&secret, now).unwrap();
    let r = post(
        b,
        format!("{}/w/{ws}/account/totp", app.url),
        &setup,
        &[("code", &code)],
    )
    .await;
    assert_eq!(r.status(), 200, "TOTP turned on");
    secret
}

fn now(app: &TestApp) -> u64 {
    u64::try_from(app.services().clock.now().secs()).unwrap()
}

async fn exchange(app: &TestApp, code: &str, verifier: &str) -> serde_json::Value {
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn a_session_from_before_the_second_factor_steps_up(backend: Backend) {
    let app = TestApp::spawn_with(backend, options(None)).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    // Browser A signs up (password only) through an application's request.
    let a = browser();
    let (_, challenge) = pkce();
    sign_up_through_flow(&app, &a, ws, &client, &challenge, "sam@example.com").await;
    // Elsewhere, the same user signs in and turns TOTP on.
    let b = browser();
    assert_eq!(password_sign_in(&app, &b, ws, "sam@example.com").await, 200);
    let secret = turn_totp_on(&app, &b, ws).await;
    // The browser that turned it on proved it: it stays signed in.
    assert_eq!(
        b.get(format!("{}/w/{ws}/account", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Browser A's single sign-on no longer meets the user's factors: no code without the second one.
    let (verifier, challenge) = pkce();
    let r = a
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/w/{ws}/mfa"), "a step up, not a code");
    // prompt=none: the standard answer, not a code.
    let r = a
        .get(authorize_url(&app, ws, &client, &challenge, "&prompt=none"))
        .send()
        .await
        .unwrap();
    let back = location(&r);
    assert!(back.starts_with("https://app.example/cb?"), "{back}");
    assert_eq!(
        query_param(&back, "error").as_deref(),
        Some("interaction_required")
    );
    assert!(query_param(&back, "code").is_none());
    // The account page steps up too.
    let r = a.get(format!("{}/w/{ws}/account", app.url)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), location(&r)), (303, format!("/w/{ws}/mfa")));

    // The second factor signs A in again, and the application's request continues.
    let r = a
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), format!("/w/{ws}/mfa"));
    app.advance(Duration::from_secs(30));
    let code = totp_code_from_base32(&secret, now(&app)).unwrap();
    let html = page(&a, format!("{}/w/{ws}/mfa", app.url)).await;
    let r = post(&a, format!("{}/w/{ws}/mfa", app.url), &html, &[("code", &code)]).await;
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(back.starts_with("https://app.example/cb?code="), "{back}");
    let grant = exchange(&app, &query_param(&back, "code").unwrap(), &verifier).await;
    let claims = jwt_claims(grant["sessionToken"].as_str().unwrap());
    assert!(claims["sub"].is_string());
    // From now on A is signed in with both factors: single sign-on works again.
    let (_, challenge) = pkce();
    let r = a
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("https://app.example/cb?code="));
    app.stop().await;
}

async fn a_new_workspace_rule_steps_sessions_up_to_enrol(backend: Backend) {
    let app = TestApp::spawn_with(backend, options(None)).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    let owner = app.console_token(ws, "owner@example.com", Role::Owner).await;
    let a = browser();
    let (_, challenge) = pkce();
    sign_up_through_flow(&app, &a, ws, &client, &challenge, "rule@example.com").await;
    call_ok(
        &app,
        "PATCH",
        "/api/v1/workspaces",
        &owner,
        Some(serde_json::json!({"login_policy": {"password_policy": "nist", "mfa_required": "all"}})),
        200,
    )
    .await;
    let r = a
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, format!("/w/{ws}/mfa/setup"))
    );
    let r = a
        .get(authorize_url(&app, ws, &client, &challenge, "&prompt=none"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("interaction_required")
    );
    app.stop().await;
}

async fn changing_a_factor_needs_a_recent_sign_in(backend: Backend) {
    let app = TestApp::spawn_with(backend, options(None)).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    let b = browser();
    let (_, challenge) = pkce();
    sign_up_through_flow(&app, &b, ws, &client, &challenge, "stale@example.com").await;
    // A session cookie older than the re-authentication window (as a thief might hold) cannot start or
    // confirm an enrolment.
    app.advance(Duration::from_secs(16 * 60));
    let r = b
        .get(format!("{}/w/{ws}/account/totp", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let html = r.text().await.unwrap();
    assert!(html.contains("sign in again"), "{html}");
    assert!(!html.contains("totp-secret"));
    let account = page(&b, format!("{}/w/{ws}/account", app.url)).await;
    let r = post(
        &b,
        format!("{}/w/{ws}/account/totp", app.url),
        &account,
        &[("code", "123456")],
    )
    .await;
    assert_eq!(r.status(), 403);
    // Signing in again makes it possible.
    assert_eq!(password_sign_in(&app, &b, ws, "stale@example.com").await, 200);
    let secret = turn_totp_on(&app, &b, ws).await;
    // Turning it off needs a recent sign-in as well.
    app.advance(Duration::from_secs(16 * 60));
    let code = totp_code_from_base32(&secret, now(&app)).unwrap();
    let account = page(&b, format!("{}/w/{ws}/account", app.url)).await;
    let r = post(
        &b,
        format!("{}/w/{ws}/account/totp/disable", app.url),
        &account,
        &[("code", &code)],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(
        page(&b, format!("{}/w/{ws}/account", app.url))
            .await
            .contains("authenticator app")
    );
    app.stop().await;
}

/// Asks for a link (`forgot` or the magic form on the sign-in page) for `email` from browser `b`; waits
/// for its mail (the `n`th such) and returns the link.
#[allow(clippy::too_many_arguments)]
async fn ask_for_link(
    app: &TestApp,
    smtp: &SmtpSink,
    b: &reqwest::Client,
    ws: WorkspaceId,
    kind: &str,
    email: &str,
    flow: Option<&str>,
    n: usize,
) -> String {
    let (page_path, action, needle) = match kind {
        "magic" => ("login", "magic", "/magic?token="),
        _ => ("forgot", "forgot", "/reset?token="),
    };
    let html = page(b, format!("{}/w/{ws}/{page_path}", app.url)).await;
    let mut fields = vec![("email", email)];
    if let Some(flow) = flow {
        fields.push(("flow", flow));
    }
    let r = post(b, format!("{}/w/{ws}/{action}", app.url), &html, &fields).await;
    assert_eq!(r.status(), 200);
    let text = smtp.wait_for_containing(needle, n).await.last().unwrap().text();
    text.split_whitespace()
        .find(|w| w.contains(needle))
        .unwrap()
        .to_owned()
}

/// Opens a magic link in `b` and presses its button: the response.
async fn press_magic(b: &reqwest::Client, link: &str) -> reqwest::Response {
    let html = b.get(link).send().await.unwrap().text().await.unwrap();
    let token = query_param(link, "token").unwrap();
    let action = between(&html, "action=\"", "\"").to_owned();
    let base = &link[..link.find("/w/").unwrap()];
    post(b, format!("{base}{action}"), &html, &[("token", &token)]).await
}

async fn e_mailed_links_end_with_what_should_end_them(backend: Backend) {
    let smtp = SmtpSink::start().await;
    let app = TestApp::spawn_with(backend, options(Some(&smtp))).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@example.com", Role::Owner).await;
    let (client, _) = client_app(&app, ws, true).await;
    let me = browser();
    let (_, challenge) = pkce();
    sign_up_through_flow(&app, &me, ws, &client, &challenge, "linda@example.com").await;
    let user = app
        .services()
        .stores
        .users
        .list_users(ws, None, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.role == Role::User)
        .unwrap();
    let mut magic = 0;
    let mut reset = 0;

    // A newer link of the same kind ends the older one.
    magic += 1;
    let first = ask_for_link(
        &app,
        &smtp,
        &browser(),
        ws,
        "magic",
        "linda@example.com",
        None,
        magic,
    )
    .await;
    magic += 1;
    let second = ask_for_link(
        &app,
        &smtp,
        &browser(),
        ws,
        "magic",
        "linda@example.com",
        None,
        magic,
    )
    .await;
    assert_eq!(
        press_magic(&browser(), &first).await.status(),
        400,
        "replaced by a newer link"
    );
    assert_eq!(press_magic(&browser(), &second).await.status(), 200);

    // Sign out everywhere ends outstanding links.
    magic += 1;
    let link = ask_for_link(
        &app,
        &smtp,
        &browser(),
        ws,
        "magic",
        "linda@example.com",
        None,
        magic,
    )
    .await;
    reset += 1;
    let reset_link = ask_for_link(
        &app,
        &smtp,
        &browser(),
        ws,
        "forgot",
        "linda@example.com",
        None,
        reset,
    )
    .await;
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{}/revoke", user.id),
        &owner,
        None,
        204,
    )
    .await;
    assert_eq!(
        press_magic(&browser(), &link).await.status(),
        400,
        "after sign-out everywhere"
    );
    let r = browser();
    let html = page(&r, reset_link.clone()).await;
    let token = query_param(&reset_link, "token").unwrap();
    let response = post(
        &r,
        format!("{}/w/{ws}/reset", app.url),
        &html,
        &[("token", &token), ("password", "another good passphrase 1")],
    )
    .await;
    assert_eq!(response.status(), 400, "a reset link after sign-out everywhere");

    // A lock and an unlock end them too.
    magic += 1;
    let link = ask_for_link(
        &app,
        &smtp,
        &browser(),
        ws,
        "magic",
        "linda@example.com",
        None,
        magic,
    )
    .await;
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{}/lock", user.id),
        &owner,
        None,
        200,
    )
    .await;
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{}/unlock", user.id),
        &owner,
        None,
        200,
    )
    .await;
    assert_eq!(
        press_magic(&browser(), &link).await.status(),
        400,
        "after a lock and unlock"
    );

    // A password change (account page) ends them.
    magic += 1;
    let link = ask_for_link(
        &app,
        &smtp,
        &browser(),
        ws,
        "magic",
        "linda@example.com",
        None,
        magic,
    )
    .await;
    let b = browser();
    assert_eq!(password_sign_in(&app, &b, ws, "linda@example.com").await, 200);
    let account = page(&b, format!("{}/w/{ws}/account", app.url)).await;
    let r = post(
        &b,
        format!("{}/w/{ws}/account/password", app.url),
        &account,
        &[("current", PASSWORD), ("new", "a quite different passphrase 99")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        press_magic(&browser(), &link).await.status(),
        400,
        "after a password change"
    );
    app.stop().await;
}

async fn a_magic_link_continues_the_request_only_in_the_browser_that_asked(backend: Backend) {
    let smtp = SmtpSink::start().await;
    let app = TestApp::spawn_with(backend, options(Some(&smtp))).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    sign_up_through_flow(&app, &browser(), ws, &client, &pkce().1, "mia@example.com").await;

    // A browser starts the application's request and asks for a link; the link is opened elsewhere.
    let asking = browser();
    let (verifier, challenge) = pkce();
    let r = asking
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    let flow = query_param(&format!("{}{}", app.url, location(&r)), "flow").unwrap();
    let link = ask_for_link(
        &app,
        &smtp,
        &asking,
        ws,
        "magic",
        "mia@example.com",
        Some(&flow),
        1,
    )
    .await;
    let elsewhere = browser();
    let r = press_magic(&elsewhere, &link).await;
    assert_eq!(
        r.status(),
        200,
        "signed in there, but the request is not completed there"
    );
    assert!(r.headers().get("location").is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains("You are signed in"), "{html}");

    // The same again, opened in the browser that asked: the request continues to the application.
    let link = ask_for_link(
        &app,
        &smtp,
        &asking,
        ws,
        "magic",
        "mia@example.com",
        Some(&flow),
        2,
    )
    .await;
    let r = press_magic(&asking, &link).await;
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(back.starts_with("https://app.example/cb?code="), "{back}");
    exchange(&app, &query_param(&back, "code").unwrap(), &verifier).await;
    app.stop().await;
}
