//! The console in a real headless Chromium: the first run from the printed link, then an application
//! registered in the browser whose curl snippet, run as printed, gets a `sessionToken` and stores a
//! value. Every page passes axe-core (no serious or critical violation) and is saved as a screenshot
//! at 1280 and 390 px wide (`$SECUREFLOWS_TEST_OUTPUT/screenshots/console`).

use secureflows_testkit::browser::{browser, click, element, fill, review_page, text, wait_for_text};
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::hosted_login::PASSWORD;

backend_tests!(console_first_run_and_an_application_in_the_browser);

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
