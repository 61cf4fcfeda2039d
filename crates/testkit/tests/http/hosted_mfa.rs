//! Two-step sign-in with TOTP and recovery codes over HTTP: enrolment on the account page (QR code and
//! key), the second step after the password, single use of each code, recovery codes, turning it off,
//! and wrong codes counting towards the lockout.

use std::time::Duration;

use secureflows_core::{Plan, WorkspaceId};
use secureflows_crypto::totp::totp_code_from_base32;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use secureflows_core::Role;

use crate::hosted_login::{PASSWORD, browser, csrf_of, location};
use crate::support::{assert_problem, call, call_ok};

backend_tests!(
    totp_and_recovery_codes_guard_the_second_step,
    workspace_policy_requires_strict_passwords_and_a_second_factor,
    account_page_ends_sessions_and_changes_the_password,
);

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("no {start} in {html}")) + start.len();
    &html[from..from + html[from..].find(end).unwrap()]
}

fn now_secs(app: &TestApp) -> u64 {
    u64::try_from(app.services().clock.now().secs()).unwrap()
}

async fn post_form(
    b: &reqwest::Client,
    url: &str,
    page_html: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let csrf = csrf_of(page_html);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    b.post(url).form(&form).send().await.unwrap()
}

/// Password step in a fresh browser: returns the browser (holding the pending step's cookie).
async fn password_step(app: &TestApp, ws: WorkspaceId) -> reqwest::Client {
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/login", app.url),
        &page,
        &[("email", "kim@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/w/{ws}/mfa"));
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("sf_mfa="));
    b
}

async fn second_step(app: &TestApp, b: &reqwest::Client, ws: WorkspaceId, code: &str) -> u16 {
    let page = b.get(format!("{}/w/{ws}/mfa", app.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    post_form(b, &format!("{}/w/{ws}/mfa", app.url), &page, &[("code", code)])
        .await
        .status()
        .as_u16()
}

async fn totp_and_recovery_codes_guard_the_second_step(backend: Backend) {
    // This test signs the same account in more than 5 times a minute (the throttle has its own test).
    let options = TestOptions {
        configure: std::sync::Arc::new(|c| c.login.attempts_per_minute = 100),
        ..TestOptions::default()
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
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/signup", app.url),
        &page,
        &[("email", "kim@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status(), 200);

    // The account page: off; set up shows a QR code and the key.
    let account = b
        .get(format!("{}/w/{ws}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(account.contains("id=\"mfa-status\">Off."), "{account}");
    let setup = b
        .get(format!("{}/w/{ws}/account/totp", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(setup.contains("src=\"data:image/svg+xml;base64,"));
    let secret = between(&setup, "id=\"totp-secret\">", "<").to_owned();
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/account/totp", app.url),
        &setup,
        &[("code", "000000")],
    )
    .await;
    assert_eq!(r.status(), 422, "a wrong code does not turn it on");
    // The form again, with the message and the same key: the app already holds it.
    let again = r.text().await.unwrap();
    assert!(again.contains("role=\"alert\""), "{again}");
    assert!(again.contains("aria-describedby=\"form-error\""), "{again}");
    assert_eq!(between(&again, "id=\"totp-secret\">", "<"), secret);
    // A reload (or Back, or a second tab) shows the same key too, until it is confirmed.
    let setup = b
        .get(format!("{}/w/{ws}/account/totp", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secret_again = between(&setup, "id=\"totp-secret\">", "<").to_owned();
    assert_eq!(secret, secret_again, "the key survives a reload");
    let enrol_code = totp_code_from_base32(&secret, now_secs(&app)).unwrap();
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/account/totp", app.url),
        &setup,
        &[("code", &enrol_code)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let codes: Vec<String> = html
        .split("<li><code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let account = b
        .get(format!("{}/w/{ws}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        account.contains("On: authenticator app. 10 recovery codes left."),
        "{account}"
    );
    // The key is sealed at rest.
    assert!(!app.raw_contains(secret.as_bytes()).await);

    // Password alone is not enough; the enrolment's code was spent; a wrong code fails.
    let other = password_step(&app, ws).await;
    assert_eq!(second_step(&app, &other, ws, "123456").await, 401);
    assert_eq!(
        second_step(&app, &other, ws, &enrol_code).await,
        401,
        "a code is accepted once"
    );
    app.advance(Duration::from_secs(30));
    let code = totp_code_from_base32(&secret, now_secs(&app)).unwrap();
    assert_eq!(second_step(&app, &other, ws, &code).await, 200, "signed in");
    let account = other
        .get(format!("{}/w/{ws}/account", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), 200);

    // Recovery codes: once each, any case or spacing, in a field of their own that a phone does not
    // limit to digits (the app's code field does).
    let third = password_step(&app, ws).await;
    let page = third
        .get(format!("{}/w/{ws}/mfa", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let field = |id: &str| {
        let at = page
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id}: {page}"));
        page[at..at + page[at..].find('>').unwrap()].to_owned()
    };
    assert!(field("code").contains("inputmode=\"numeric\""));
    assert!(field("recovery-code").contains("inputmode=\"text\""));
    assert!(page.contains("<summary id=\"use-recovery-code\">"));
    assert_eq!(
        second_step(&app, &third, ws, &format!(" {} ", codes[0].to_uppercase())).await,
        200
    );
    let fourth = password_step(&app, ws).await;
    assert_eq!(second_step(&app, &fourth, ws, &codes[0]).await, 401);
    // Without the pending cookie there is no second step to complete.
    let stranger = browser();
    let r = stranger
        .get(format!("{}/w/{ws}/mfa", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Wrong codes count towards the lockout: after 10 failures even a right code fails.
    for _ in 0..8 {
        assert_eq!(second_step(&app, &fourth, ws, "999999").await, 401);
    }
    app.advance(Duration::from_secs(30));
    let code = totp_code_from_base32(&secret, now_secs(&app)).unwrap();
    assert_eq!(second_step(&app, &fourth, ws, &code).await, 401, "locked");
    app.advance(Duration::from_secs(16 * 60));
    let fifth = password_step(&app, ws).await;
    let code = totp_code_from_base32(&secret, now_secs(&app)).unwrap();
    assert_eq!(
        second_step(&app, &fifth, ws, &code).await,
        200,
        "the lock expired"
    );

    // Turning it off takes a code; then the password alone signs in again.
    let account = fifth
        .get(format!("{}/w/{ws}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = post_form(
        &fifth,
        &format!("{}/w/{ws}/account/totp/disable", app.url),
        &account,
        &[("code", "111111")],
    )
    .await;
    assert_eq!(r.status(), 422);
    let r = post_form(
        &fifth,
        &format!("{}/w/{ws}/account/totp/disable", app.url),
        &account,
        &[("code", &codes[1])],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("id=\"mfa-status\">Off."));
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/login", app.url),
        &page,
        &[("email", "kim@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status(), 200);
    app.stop().await;
}

async fn workspace_policy_requires_strict_passwords_and_a_second_factor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@policy.example", Role::Owner).await;
    let admin = app.console_token(ws, "admin@policy.example", Role::Admin).await;
    let policy = serde_json::json!({"login_policy": {"password_policy": "strict", "mfa_required": "all"}});
    // Only an OWNER sets it, and a refused request changes nothing else either.
    let mut both = policy.clone();
    both["name"] = "Renamed".into();
    let r = call(&app, "PATCH", "/api/v1/workspaces", &admin, Some(both)).await;
    assert_problem(r, 403, "forbidden").await;
    let shown = call_ok(&app, "PATCH", "/api/v1/workspaces", &owner, Some(policy), 200).await;
    assert_eq!(
        shown["login_policy"],
        // `signup` was not sent: it stays as it was.
        serde_json::json!({"password_policy": "strict", "mfa_required": "all", "signup": "immediate"})
    );
    assert_eq!(shown["name"], "Test Workspace");
    // (Verification-first sign-up and mail: hosted_email::what_needs_mail_follows_whether_it_can_be_sent.)

    // Strict passwords: a long lowercase passphrase is refused now.
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/signup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("At least 12 characters, with an upper-case letter"));
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/signup", app.url),
        &page,
        &[("email", "lee@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status(), 422);
    // A new account sets up the required second factor before it gets a session.
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/signup", app.url),
        &page,
        &[
            ("email", "lee@example.com"),
            ("password", "Correct-Horse-9-Battery"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/w/{ws}/mfa/setup"));
    let account = b.get(format!("{}/w/{ws}/account", app.url)).send().await.unwrap();
    let status = account.status();
    assert_eq!(
        status,
        303,
        "no session before the second factor: {}",
        account.text().await.unwrap()
    );
    let setup = b
        .get(format!("{}/w/{ws}/mfa/setup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secret = between(&setup, "id=\"totp-secret\">", "<").to_owned();
    let code = totp_code_from_base32(&secret, now_secs(&app)).unwrap();
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/mfa/setup", app.url),
        &setup,
        &[("code", &code)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("recovery-codes"));
    let account = b
        .get(format!("{}/w/{ws}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(account.contains("On: authenticator app."), "{account}");

    // Branding (OWNER or ADMIN): an accent colour served as a style sheet, and an https logo.
    // Nested objects written as arrays (serde would take them in field order) are refused.
    for body in [
        serde_json::json!({"branding": [null, null]}),
        serde_json::json!({"login_policy": ["strict", "all"]}),
    ] {
        let r = call(&app, "PATCH", "/api/v1/workspaces", &owner, Some(body)).await;
        assert_problem(r, 422, "validation-failed").await;
    }
    let r = call(
        &app,
        "POST",
        "/api/v1/applications",
        &owner,
        Some(serde_json::json!({"name": "x", "trust": ["https://issuer.example", "aud"]})),
    )
    .await;
    assert_problem(r, 422, "validation-failed").await;
    let bad = serde_json::json!({"branding": {"color": "red; } body { display:none", "logo_url": "javascript:alert(1)"}});
    let r = call(&app, "PATCH", "/api/v1/workspaces", &admin, Some(bad)).await;
    assert_problem(r, 422, "validation-failed").await;
    let good =
        serde_json::json!({"branding": {"color": "#aa3300", "logo_url": "https://cdn.example/logo.svg"}});
    let shown = call_ok(&app, "PATCH", "/api/v1/workspaces", &admin, Some(good), 200).await;
    assert_eq!(shown["branding"]["color"], "#aa3300");
    let page = browser()
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("href=\"/w/{ws}/brand.css\"")));
    assert!(page.contains("src=\"https://cdn.example/logo.svg\""));
    let css = browser()
        .get(format!("{}/w/{ws}/brand.css", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.text().await.unwrap().trim(), ":root { --accent: #aa3300; }");
    app.stop().await;
}

/// Signs `b` in as kim (password only) and returns its account page.
async fn signed_in_account(app: &TestApp, b: &reqwest::Client, ws: WorkspaceId, password: &str) -> String {
    let page = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = post_form(
        b,
        &format!("{}/w/{ws}/login", app.url),
        &page,
        &[("email", "kim@example.com"), ("password", password)],
    )
    .await;
    assert_eq!(r.status(), 200);
    account(app, b, ws).await
}

async fn account(app: &TestApp, b: &reqwest::Client, ws: WorkspaceId) -> String {
    let r = b.get(format!("{}/w/{ws}/account", app.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

async fn account_page_ends_sessions_and_changes_the_password(backend: Backend) {
    let options = TestOptions {
        configure: std::sync::Arc::new(|c| c.login.attempts_per_minute = 100),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let first = browser();
    let page = first
        .get(format!("{}/w/{ws}/signup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    post_form(
        &first,
        &format!("{}/w/{ws}/signup", app.url),
        &page,
        &[("email", "kim@example.com"), ("password", PASSWORD)],
    )
    .await;
    let second = browser();
    let wrong = second
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = post_form(
        &second,
        &format!("{}/w/{ws}/login", app.url),
        &wrong,
        &[("email", "kim@example.com"), ("password", "not it at all")],
    )
    .await;
    assert_eq!(r.status(), 401);
    signed_in_account(&app, &second, ws, PASSWORD).await;

    // Two browsers, this one marked; recent sign-ins include the failed attempt.
    let page = account(&app, &first, ws).await;
    assert_eq!(page.matches("class=\"session\"").count(), 2, "{page}");
    assert!(page.contains("(this browser)"));
    assert!(
        page.contains("failed attempt") && page.contains("signed in") && page.contains("account created")
    );
    let other = page
        .split("class=\"session\" data-session=\"")
        .skip(1)
        .find(|row| !row.split("</li>").next().unwrap().contains("(this browser)"))
        .map(|row| row.split('"').next().unwrap().to_owned())
        .unwrap();
    // Signing the other browser out; a session id that is not the user's is refused.
    let r = post_form(
        &first,
        &format!("{}/w/{ws}/account/sessions/end", app.url),
        &page,
        &[("session", &uuid::Uuid::now_v7().to_string())],
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = post_form(
        &first,
        &format!("{}/w/{ws}/account/sessions/end", app.url),
        &page,
        &[("session", &other)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        second
            .get(format!("{}/w/{ws}/account", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );

    // Everywhere else at once.
    signed_in_account(&app, &second, ws, PASSWORD).await;
    let page = account(&app, &first, ws).await;
    let r = post_form(
        &first,
        &format!("{}/w/{ws}/account/sessions/end-others", app.url),
        &page,
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        second
            .get(format!("{}/w/{ws}/account", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );

    // Changing the password needs the current one and a good new one, and signs the others out.
    signed_in_account(&app, &second, ws, PASSWORD).await;
    let page = account(&app, &first, ws).await;
    let change = |current: &'static str, new: &'static str| {
        let (first, app, page) = (&first, &app, page.clone());
        async move {
            post_form(
                first,
                &format!("{}/w/{ws}/account/password", app.url),
                &page,
                &[("current", current), ("new", new)],
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(change("wrong current", "a fresh passphrase here").await, 401);
    assert_eq!(change(PASSWORD, "short").await, 422);
    assert_eq!(change(PASSWORD, "a fresh passphrase here").await, 200);
    assert_eq!(
        second
            .get(format!("{}/w/{ws}/account", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    assert_eq!(
        account(&app, &first, ws)
            .await
            .matches("class=\"session\"")
            .count(),
        1,
        "this browser stays"
    );
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = post_form(
        &b,
        &format!("{}/w/{ws}/login", app.url),
        &page,
        &[("email", "kim@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status(), 401);
    signed_in_account(&app, &b, ws, "a fresh passphrase here").await;
    app.stop().await;
}
