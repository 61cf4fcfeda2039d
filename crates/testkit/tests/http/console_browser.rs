//! The console in a real headless Chromium: the first run from the printed link, then an application
//! registered in the browser whose curl snippet, run as printed, gets a `sessionToken` and stores a
//! value. Every page passes axe-core (no serious or critical violation) and is saved as a screenshot
//! at 1280 and 390 px wide (`$SECUREFLOWS_TEST_OUTPUT/screenshots/console`).

use secureflows_testkit::browser::{browser, click, element, fill, review_page, text, wait_for_text};
use secureflows_testkit::{Backend, SmtpSink, TestApp, TestOptions, backend_tests};

use crate::hosted_login::PASSWORD;

backend_tests!(
    console_first_run_and_an_application_in_the_browser,
    console_members_users_and_audit_in_the_browser,
    console_first_run_with_a_passkey,
    console_tiers_and_billing_in_the_browser,
);

async fn console_first_run_and_an_application_in_the_browser(backend: Backend) {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn(backend.clone()).await;
    // Screenshots once (SQLite); both backends run the same pages.
    let shoot = matches!(backend, Backend::Sqlite);
    let review = |name: &'static str| async move {
        if shoot {
            review_page(c, "console", name).await;
        }
    };
    let link = std::fs::read_to_string(app.data_dir.join("setup-link"))
        .unwrap()
        .trim()
        .to_owned();

    // The server's address in a browser opens the console, which says how to finish the setup.
    c.goto(&format!("{}/", app.url)).await.unwrap();
    wait_for_text(c, "#heading", "Finish setting up secureFlows").await;
    review("start-before-setup").await;

    // The first run: the form, one mistake, then the workspace; the browser lands in its console.
    c.goto(&link).await.unwrap();
    wait_for_text(c, "#heading", "Set up secureFlows").await;
    review("setup").await;
    fill(c, "#workspace_name", "Tuff Flips").await;
    fill(c, "#email", "olga@tuff.example").await;
    fill(c, "#name", "Olga").await;
    fill(c, "#password", "short").await;
    click(c, "#create-workspace").await;
    assert!(text(c, "#form-error").await.contains("Password"));
    review("setup-error").await;
    fill(c, "#password", PASSWORD).await;
    click(c, "#create-workspace").await;
    wait_for_text(c, "#heading", "Tuff Flips").await;
    assert_eq!(
        text(c, "#signed-in-as").await,
        "Signed in as olga@tuff.example (owner)"
    );
    let ws = text(c, "#workspace-id").await;
    review("overview-first").await;

    // The link never works again.
    c.goto(&link).await.unwrap();
    wait_for_text(c, "#heading", "secureFlows is set up already").await;
    review("setup-used").await;

    // Register a browser application that allows guests.
    c.goto(&format!("{}/console/w/{ws}/applications", app.url))
        .await
        .unwrap();
    wait_for_text(c, "#heading", "Applications").await;
    review("applications-empty").await;
    click(c, "#new-application").await;
    wait_for_text(c, "#heading", "Register an application").await;
    review("application-new").await;
    fill(c, "#name", "Deal Finder").await;
    fill(c, "#redirect_uris", "http://localhost:3000/callback").await;
    fill(c, "#allowed_origins", "http://localhost:3000").await;
    click(c, "input[name=allow_anonymous]").await;
    click(c, "#save-application").await;
    wait_for_text(c, "#heading", "Deal Finder").await;
    assert_eq!(text(c, "#notice").await, "Deal Finder is registered.");
    review("application-created").await;

    // The curl snippet, run as printed, gets a sessionToken and stores a value in the vault.
    let snippet = text(c, "#snippet-curl").await;
    let out = tokio::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&snippet)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{snippet}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("hello from the vault"), "{stdout}");

    // A server application shows its secret once; its page later never does.
    c.goto(&format!("{}/console/w/{ws}/applications/new", app.url))
        .await
        .unwrap();
    fill(c, "#name", "Billing back end").await;
    click(c, "input[name=kind][value=server]").await;
    fill(c, "#redirect_uris", "https://billing.example/callback").await;
    click(c, "#save-application").await;
    let secret = text(c, "#client-secret").await;
    assert!(secret.len() > 30, "{secret}");
    review("application-secret-once").await;
    click(c, "nav.side a[href$='/applications']").await;
    wait_for_text(c, "#heading", "Applications").await;
    review("applications").await;
    click(c, "#applications tbody tr:last-child a").await;
    wait_for_text(c, "#heading", "Billing back end").await;
    assert!(
        !c.source().await.unwrap().contains(&secret),
        "a secret is never rendered again"
    );

    // Rotating asks first, then shows the new secret once.
    click(c, "#rotate-secret").await;
    wait_for_text(c, "#heading", "Rotate the secret of Billing back end?").await;
    review("application-rotate-confirm").await;
    click(c, "#confirm").await;
    let rotated = text(c, "#client-secret").await;
    assert_ne!(rotated, secret);

    // Settings are saved from the page; a bad redirect URI is explained, not stored.
    fill(c, "#redirect_uris", "not a url").await;
    click(c, "#save-application").await;
    assert!(text(c, "#form-error").await.contains("Redirect URIs"));
    review("application-error").await;

    // Deleting asks first.
    click(c, "#delete-application").await;
    wait_for_text(c, "#heading", "Delete Billing back end?").await;
    click(c, "#confirm").await;
    wait_for_text(c, "#heading", "Applications").await;
    assert!(!c.source().await.unwrap().contains("Billing back end"));
    c.goto(&format!("{}/console/w/{ws}", app.url)).await.unwrap();
    wait_for_text(c, "#heading", "Tuff Flips").await;
    review("overview").await;

    // Keyboard: the first Tab reaches the skip link, which moves to the page's content.
    c.goto(&format!("{}/console/w/{ws}/applications", app.url))
        .await
        .unwrap();
    element(c, "body").await.send_keys("\u{E004}").await.unwrap();
    let focused = c
        .execute("return document.activeElement.className", vec![])
        .await
        .unwrap();
    assert_eq!(focused, "skip");

    // A link from another site (an e-mail, a chat) opens the console page it names: the sign-in
    // round trip ends on a page whose own navigation carries the SameSite=Strict session cookie.
    let (other_site, listener) = crate::browser::loopback().await;
    let other_site = other_site.replace("127.0.0.1", "localhost");
    crate::browser::serve_page(
        listener,
        format!(
            "<!doctype html><title>Chat</title><a id=\"to-console\" href=\"{}/console/w/{ws}/applications\">console</a>",
            app.url
        ),
    );
    c.goto(&format!("{other_site}/")).await.unwrap();
    click(c, "#to-console").await;
    wait_for_text(c, "#heading", "Applications").await;

    // The start page lists the workspaces this browser is signed in to.
    c.goto(&format!("{}/console", app.url)).await.unwrap();
    wait_for_text(c, "#heading", "Your workspaces").await;
    assert!(text(c, "#workspaces").await.contains("Tuff Flips"));
    review("start").await;
    click(c, "#workspaces a").await;
    wait_for_text(c, "#heading", "Tuff Flips").await;

    // Sign out: of the console and the hosted login; the console (the server's only workspace) asks
    // for a sign-in again.
    click(c, "#sign-out").await;
    wait_for_text(c, "#heading", "Sign in").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&format!("/w/{ws}/login"))
    );

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}

/// The first run in the browser: the workspace "Tuff Flips" with its OWNER olga@tuff.example, signed
/// in to its console. Returns the workspace id.
async fn first_run_in(c: &fantoccini::Client, app: &TestApp) -> String {
    let link = std::fs::read_to_string(app.data_dir.join("setup-link"))
        .unwrap()
        .trim()
        .to_owned();
    c.goto(&link).await.unwrap();
    fill(c, "#workspace_name", "Tuff Flips").await;
    fill(c, "#email", "olga@tuff.example").await;
    fill(c, "#password", PASSWORD).await;
    click(c, "#create-workspace").await;
    wait_for_text(c, "#heading", "Tuff Flips").await;
    text(c, "#workspace-id").await
}

async fn console_members_users_and_audit_in_the_browser(backend: Backend) {
    let Some(browser_a) = browser().await else {
        return;
    };
    let c = &browser_a.client;
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
    let app = TestApp::spawn_with(backend.clone(), options).await;
    let shoot = matches!(backend, Backend::Sqlite);
    let review = |name: &'static str| async move {
        if shoot {
            review_page(c, "console", name).await;
        }
    };
    let ws = first_run_in(c, &app).await;
    let home = format!("{}/console/w/{ws}", app.url);

    // Invite an admin; the e-mail arrives at the SMTP listener.
    c.goto(&format!("{home}/members")).await.unwrap();
    wait_for_text(c, "#heading", "Members").await;
    review("members-empty").await;
    fill(c, "#invite-email", "ada@tuff.example").await;
    click(c, "#send-invite").await;
    wait_for_text(c, "#notice", "An invitation was e-mailed to ada@tuff.example.").await;
    assert!(text(c, "#invites").await.contains("pending"));
    review("members").await;
    let mail = smtp
        .wait_for_containing("/invite/accept?token=", 1)
        .await
        .last()
        .map(|m| m.text())
        .unwrap();
    let link = mail
        .split_whitespace()
        .find(|w| w.contains("/invite/accept?token="))
        .unwrap()
        .to_owned();

    // Ada accepts in her own browser and runs the console as an admin.
    let browser_b = browser().await.unwrap();
    let b = &browser_b.client;
    b.goto(&link).await.unwrap();
    fill(b, "#password", "Ada-Kettle-Orbit-9-Lantern").await;
    click(b, "#accept-invite").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    b.goto(&format!("{}/console", app.url)).await.unwrap();
    wait_for_text(b, "#heading", "Tuff Flips").await;
    assert_eq!(
        text(b, "#signed-in-as").await,
        "Signed in as ada@tuff.example (admin)"
    );
    browser_b.client.clone().close().await.unwrap();
    c.goto(&format!("{home}/members")).await.unwrap();
    assert!(text(c, "#members").await.contains("ada@tuff.example"));
    assert!(text(c, "#invites").await.contains("accepted"));

    // An end user signs up through an application of the workspace.
    let ws_id: secureflows_core::WorkspaceId = ws.parse().unwrap();
    let (client, _) = crate::hosted_login::client_app(&app, ws_id, true).await;
    let (_, challenge) = crate::hosted_login::pkce();
    let end_user = crate::hosted_login::browser();
    crate::hosted_login::sign_up_through_flow(&app, &end_user, ws_id, &client, &challenge, "uma@example.com")
        .await;

    // Find her by exact address, and lock her account.
    c.goto(&format!("{home}/users")).await.unwrap();
    review("users").await;
    fill(c, "#search-email", "uma@example").await;
    click(c, "#search").await;
    wait_for_text(c, "#no-match", "No account has this address.").await;
    fill(c, "#search-email", "UMA@example.com").await;
    click(c, "#search").await;
    wait_for_text(c, "#heading", "uma@example.com").await;
    assert!(
        !c.current_url().await.unwrap().as_str().contains('@'),
        "no address in a URL"
    );
    assert!(text(c, "#history").await.contains("Signed up"));
    review("user").await;
    click(c, "#lock").await;
    wait_for_text(c, "#heading", "Lock uma@example.com?").await;
    review("user-lock-confirm").await;
    click(c, "#confirm").await;
    wait_for_text(c, "#user-status", "locked").await;

    // She cannot sign in any more (the answer is the uniform "not right").
    let fresh = crate::hosted_login::browser();
    let r = fresh
        .get(crate::hosted_login::authorize_url(
            &app, ws_id, &client, &challenge, "",
        ))
        .send()
        .await
        .unwrap();
    let login = format!("{}{}", app.url, crate::hosted_login::location(&r));
    let page = fresh.get(&login).send().await.unwrap().text().await.unwrap();
    let flow = login.split("flow=").nth(1).unwrap().to_owned();
    let r = fresh
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", crate::hosted_login::csrf_of(&page).as_str()),
            ("flow", &flow),
            ("email", "uma@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a locked account does not sign in");

    // The audit log shows it; filtered by action, and exported.
    c.goto(&format!("{home}/audit")).await.unwrap();
    review("audit").await;
    fill(c, "#action", "user.lock").await;
    click(c, "#filter").await;
    // The filter form posts, and the page it answers with names the filter in its address.
    for _ in 0..100 {
        if c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("action=user.lock")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let events = text(c, "#events").await;
    assert!(
        events.contains("user.lock") && events.contains("olga@tuff.example"),
        "{events}"
    );
    assert!(!events.contains("invite.create"), "{events}");
    click(c, "#verify-chain").await;
    assert!(text(c, "#chain-report").await.contains("The chain is intact"));
    review("audit-verified").await;
    // The export link downloads every event (read here with the browser's own cookies).
    let cookies = c.get_all_cookies().await.unwrap();
    let cookie_header = cookies
        .iter()
        .map(|k| format!("{}={}", k.name(), k.value()))
        .collect::<Vec<_>>()
        .join("; ");
    for (format, first) in [("csv", "workspace_id,seq,"), ("jsonl", "{")] {
        let r = app
            .http
            .get(format!("{home}/audit/export?format={format}"))
            .header("cookie", &cookie_header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        let body = r.text().await.unwrap();
        assert!(body.starts_with(first), "{body}");
        assert!(body.contains("user.lock"));
    }

    // The other pages.
    for (path, heading, name) in [
        ("/access", "API access", "access"),
        ("/settings", "Settings", "settings"),
        ("/plan", "Plan and usage", "plan"),
        ("/keys", "Keys", "keys"),
    ] {
        c.goto(&format!("{home}{path}")).await.unwrap();
        wait_for_text(c, "#heading", heading).await;
        review(name).await;
    }
    // Branding from the settings shows on the hosted pages.
    c.goto(&format!("{home}/settings")).await.unwrap();
    fill(c, "#color", "#aa3300").await;
    click(c, "#save-branding").await;
    wait_for_text(
        c,
        "#notice",
        "The branding is saved; the sign-in pages show it now.",
    )
    .await;
    let css = app
        .http
        .get(format!("{}/w/{ws}/brand.css", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(css.contains("#aa3300"), "{css}");
    // Rotating the data key, confirmed.
    c.goto(&format!("{home}/keys")).await.unwrap();
    click(c, "#rotate-key").await;
    click(c, "#confirm").await;
    wait_for_text(c, "#notice", "Data key version 2 is now active.").await;

    browser_a.client.clone().close().await.unwrap();
    app.stop().await;
}

/// The first run with a passkey instead of a password, where the host allows WebAuthn (a name, not an
/// IP address): recovery codes shown once, then the console; signing in again uses the passkey.
async fn console_first_run_with_a_passkey(backend: Backend) {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn_with(backend.clone(), TestOptions::default().localhost()).await;
    assert!(app.url.starts_with("http://localhost:"));
    browser.add_virtual_authenticator().await;
    let link = std::fs::read_to_string(app.data_dir.join("setup-link"))
        .unwrap()
        .trim()
        .to_owned();
    c.goto(&link).await.unwrap();
    fill(c, "#workspace_name", "Keyed").await;
    fill(c, "#email", "kim@keyed.example").await;
    if matches!(backend, Backend::Sqlite) {
        review_page(c, "console", "setup-with-passkey").await;
    }
    click(c, "#create-with-passkey").await;
    wait_for_text(c, "#heading", "Save your recovery codes").await;
    assert_eq!(text(c, "#recovery-codes").await.lines().count(), 10);
    if matches!(backend, Backend::Sqlite) {
        review_page(c, "console", "setup-recovery-codes").await;
    }
    click(c, "#continue").await;
    wait_for_text(c, "#heading", "Keyed").await;
    assert_eq!(
        text(c, "#signed-in-as").await,
        "Signed in as kim@keyed.example (owner)"
    );
    // No password was set; after signing out, the passkey signs in again (the sign-in page offers it
    // in the browser's autofill, which the virtual authenticator answers at once).
    let ws = app
        .services()
        .stores
        .workspaces
        .sole_workspace()
        .await
        .unwrap()
        .unwrap();
    let filter = secureflows_core::audit::EventFilter {
        action: Some("user.sign_in".into()),
        ..Default::default()
    };
    let count = || async {
        app.services()
            .stores
            .audit
            .list_events(ws, &filter, 100)
            .await
            .unwrap()
            .len()
    };
    let before = count().await;
    click(c, "#sign-out").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    wait_for_text(c, "#heading", "Keyed").await;
    assert_eq!(
        count().await,
        before + 1,
        "signed in again with the passkey, after the sign-out"
    );
    // The link never works again.
    c.goto(&link).await.unwrap();
    wait_for_text(c, "#heading", "secureFlows is set up already").await;
    browser.client.clone().close().await.unwrap();
    app.stop().await;
}

/// An application's tiers and Stripe secret, a user's tier, and a Paddle checkout reference, set in
/// the browser; each takes effect through the same services as the management API.
async fn console_tiers_and_billing_in_the_browser(backend: Backend) {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn(backend.clone()).await;
    let shoot = matches!(backend, Backend::Sqlite);
    let review = |name: &'static str| async move {
        if shoot {
            review_page(c, "console", name).await;
        }
    };
    let ws = first_run_in(c, &app).await;
    let home = format!("{}/console/w/{ws}", app.url);
    let workspace: secureflows_core::WorkspaceId = ws.parse().unwrap();
    let application = app.application(workspace, "deals").await;

    // Tiers: a mistake is shown field by field and keeps what was typed; the preset fills the table.
    c.goto(&format!("{home}/applications/{}", application.id))
        .await
        .unwrap();
    wait_for_text(c, "#heading", "App deals").await;
    fill(c, "input[name=tier_0_name]", "Basic Plan").await;
    fill(c, "input[name=tier_0_requests]", "lots").await;
    click(c, "#save-tiers").await;
    assert!(text(c, "#tiers-error").await.contains("Requests per hour"));
    fill(c, "input[name=tier_0_requests]", "250").await;
    click(c, "#save-tiers").await;
    let error = text(c, "#tiers-error").await;
    assert!(
        error.contains("Tier name") && error.contains("Default tier"),
        "{error}"
    );
    c.execute("document.getElementById('tiers').scrollIntoView()", vec![])
        .await
        .unwrap();
    review("application-tiers-error").await;
    click(c, "#tuff-flips-tiers").await;
    wait_for_text(
        c,
        "#notice",
        "Tiers saved. They apply from each user's next request.",
    )
    .await;
    let stored = app
        .services()
        .stores
        .applications
        .find_application(application.id)
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = stored.tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["free", "solo", "pro", "team"]);
    assert_eq!(stored.default_tier.as_deref(), Some("free"));
    // A row edited in place: solo gets a Stripe price.
    fill(c, "input[name=tier_1_prices]", "price_solo, solo_monthly").await;
    click(c, "#save-tiers").await;
    wait_for_text(
        c,
        "#notice",
        "Tiers saved. They apply from each user's next request.",
    )
    .await;

    // The Stripe signing secret: write only.
    assert!(text(c, "#stripe-status").await.contains("No signing secret yet"));
    fill(c, "#webhook_secret", "whsec_console_0123456789").await;
    click(c, "#save-stripe").await;
    wait_for_text(c, "#stripe-status", "A signing secret is set.").await;
    assert!(!c.source().await.unwrap().contains("whsec_console_0123456789"));
    assert!(
        text(c, "#stripe-webhook-url")
            .await
            .ends_with(&format!("/api/v1/webhooks/stripe/{}", application.id))
    );
    // The screenshots show the section, not the top of the page.
    c.execute("document.getElementById('tiers').scrollIntoView()", vec![])
        .await
        .unwrap();
    review("application-tiers").await;

    // A user's tier, set on their page, applies to their next request.
    let session = app.sign_in(&application, "alice").await;
    let user = crate::support::jwt_claims(session.token())["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    c.goto(&format!("{home}/users/{user}")).await.unwrap();
    assert!(text(c, "#user-tiers").await.contains("free (default)"));
    let select = element(c, "#user-tiers select[name=tier]").await;
    select.select_by_value("pro").await.unwrap();
    click(c, "#user-tiers button[type=submit]").await;
    wait_for_text(
        c,
        "#tier-saved",
        "The tier is saved; it applies from the user's next request.",
    )
    .await;
    let row = text(c, "#user-tiers").await;
    assert!(
        row.contains("pro") && row.contains("console") && !row.contains("(default)"),
        "{row}"
    );
    c.execute("document.getElementById('tiers').scrollIntoView()", vec![])
        .await
        .unwrap();
    review("user-tier").await;
    let response = app
        .http
        .get(format!("{}/api/v1/sessions", app.url))
        .bearer_auth(session.token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"user-hourly\";q=10000;w=3600"
    );

    // The OWNER creates a Paddle checkout reference on the plan page.
    c.goto(&format!("{home}/plan")).await.unwrap();
    click(c, "#create-reference").await;
    let reference = text(c, "#checkout-reference").await;
    assert!(reference.starts_with("sfr1."), "{reference}");
    let title = c.title().await.unwrap();
    assert!(
        title.starts_with("Plan and usage") && !title.contains("sfr1."),
        "{title}"
    );
    c.execute("document.getElementById('billing').scrollIntoView()", vec![])
        .await
        .unwrap();
    review("plan-reference").await;
}
