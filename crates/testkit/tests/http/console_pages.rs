//! The console over HTTP, as a browser without JavaScript uses it: the first run from the one-time
//! setup link (exactly one workspace under a race, never again after), the console session behind
//! its cookie (refreshed when the token expires, ended by sign-out, a role change or a lock), and the
//! walls around it (CSRF, another workspace's session and objects, a USER member).

use secureflows_core::{Plan, Role};
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::hosted_login::{PASSWORD, browser, csrf_of, location};
use crate::support::call;

backend_tests!(
    first_run_makes_one_workspace_and_never_works_again,
    console_sessions_refresh_and_end,
    console_walls,
    open_signup_makes_workspaces_only_when_configured,
    resend_replaces_an_invitation_in_one_change,
);

/// The setup link the server wrote to its data directory.
fn setup_link(app: &TestApp) -> String {
    std::fs::read_to_string(app.data_dir.join("setup-link"))
        .expect("a fresh server writes setup-link")
        .trim()
        .to_owned()
}

/// Follows redirects by hand (the cookie store keeps what each answer sets); returns the last answer.
/// Follows redirects (and the sign-in's continue page, whose meta refresh a browser follows) by
/// hand; the cookie store keeps what each answer sets. Returns the last answer.
async fn follow(app: &TestApp, b: &reqwest::Client, mut r: reqwest::Response) -> reqwest::Response {
    for _ in 0..10 {
        if r.url().path() == "/console/callback" && r.status() == 200 {
            let html = r.text().await.unwrap();
            let at = html.find("url=").expect("a continue page") + 4;
            let next = &html[at..];
            let next = next[..next.find('"').unwrap()]
                .replace("&#x2f;", "/")
                .replace("&#47;", "/")
                .replace("&amp;", "&");
            r = b.get(format!("{}{next}", app.url)).send().await.unwrap();
            continue;
        }
        if r.status() != 303 && r.status() != 302 {
            return r;
        }
        let to = location(&r);
        let url = if to.starts_with("http") {
            to
        } else {
            format!("{}{to}", app.url)
        };
        r = b.get(url).send().await.unwrap();
    }
    panic!("too many redirects");
}

/// Runs the first run through the setup form; returns (browser, workspace id, the overview's HTML).
async fn first_run(app: &TestApp) -> (reqwest::Client, String, String) {
    let b = browser();
    let link = setup_link(app);
    let page = b.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["referrer-policy"],
        "same-origin",
        "the token never leaves this site"
    );
    let html = page.text().await.unwrap();
    let token = link.split("token=").nth(1).unwrap();
    let r = b
        .post(format!("{}/console/setup", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("token", token),
            ("workspace_name", "Tuff Flips"),
            ("email", "olga@tuff.example"),
            ("name", "Olga"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let to = location(&r);
    let ws = to
        .strip_prefix("/console/w/")
        .and_then(|rest| rest.strip_suffix("/signin"))
        .unwrap_or_else(|| panic!("{to}"))
        .to_owned();
    let overview = follow(app, &b, r).await;
    assert_eq!(overview.status(), 200);
    assert_eq!(overview.url().path(), format!("/console/w/{ws}"));
    let html = overview.text().await.unwrap();
    assert!(html.contains("Signed in as olga@tuff.example (owner)"), "{html}");
    (b, ws, html)
}

async fn first_run_makes_one_workspace_and_never_works_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The link file is the owner's only (0600), and names this server.
    let link = setup_link(&app);
    assert!(
        link.starts_with(&format!("{}/console/setup?token=sfsetup_", app.url)),
        "{link}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.data_dir.join("setup-link"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A browser asking for / goes to the console; an API client keeps problem+json.
    let r = app
        .http
        .get(format!("{}/", app.url))
        .header("accept", "text/html,*/*")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), location(&r).as_str()), (303, "/console"));
    let r = app
        .http
        .get(format!("{}/", app.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let start = app
        .http
        .get(format!("{}/console", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(start.contains("Finish setting up secureFlows"), "{start}");

    // A wrong or missing token is refused with a way on; no form is shown.
    for bad in ["", "?token=sfsetup_nope", "?token=x"] {
        let r = app
            .http
            .get(format!("{}/console/setup{bad}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 410, "{bad}");
        assert!(r.text().await.unwrap().contains("secureflows setup link"));
    }

    let b = browser();
    let html = b.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(
        !html.contains("create-with-passkey"),
        "no passkey under an IP address (WebAuthn needs a host name)"
    );
    let csrf = csrf_of(&html);
    // The passkey options refuse a forged form, and a host WebAuthn does not allow, with a JSON error.
    let r = b
        .post(format!("{}/console/setup/passkey/options", app.url))
        .form(&[
            ("csrf", "forged"),
            ("token", link.split("token=").nth(1).unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let r = b
        .post(format!("{}/console/setup/passkey/options", app.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", link.split("token=").nth(1).unwrap()),
            ("workspace_name", "W"),
            ("email", "a@b.example"),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // A passkey answer without its pending setup (another browser, a forged cookie) creates nothing.
    let r = b
        .post(format!("{}/console/setup", app.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", link.split("token=").nth(1).unwrap()),
            ("workspace_name", "W"),
            ("email", "a@b.example"),
            ("credential", "{\"id\":\"x\"}"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(!app.services().stores.workspaces.any_workspace().await.unwrap());
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let post = |b: &reqwest::Client, csrf: &str, password: &str| {
        b.post(format!("{}/console/setup", app.url))
            .form(&[
                ("csrf", csrf),
                ("token", token.as_str()),
                ("workspace_name", "Tuff Flips"),
                ("email", "olga@tuff.example"),
                ("password", password),
            ])
            .send()
    };
    // A forged form (no matching CSRF token) and a form from another site are refused.
    assert_eq!(post(&b, "forged", PASSWORD).await.unwrap().status(), 403);
    let r = b
        .post(format!("{}/console/setup", app.url))
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", token.as_str()),
            ("workspace_name", "X"),
            ("email", "a@b.example"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A form that breaks a rule is shown again with what to fix, and spends nothing.
    let r = post(&b, &csrf, "short").await.unwrap();
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("Password:"), "{html}");
    assert!(html.contains("value=\"Tuff Flips\""), "what was entered stays");

    // Twenty first runs at once with the same link: exactly one workspace.
    let mut runs = Vec::new();
    for _ in 0..20 {
        let b = b.clone();
        let csrf = csrf.clone();
        let request = post(&b, &csrf, PASSWORD);
        runs.push(tokio::spawn(request));
    }
    let mut statuses = Vec::new();
    for run in runs {
        statuses.push(run.await.unwrap().unwrap().status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 303).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 303 || *s == 410), "{statuses:?}");
    assert_eq!(
        app.services()
            .stores
            .workspaces
            .list_workspaces()
            .await
            .unwrap()
            .len(),
        1
    );
    let ws = app.services().stores.workspaces.list_workspaces().await.unwrap()[0].clone();
    assert_eq!(ws.plan, Plan::pro());
    let apps = app
        .services()
        .stores
        .applications
        .list_applications(ws.id)
        .await
        .unwrap();
    assert_eq!(apps.len(), 1, "the console's own client");
    assert!(apps[0].console && app.services().is_own_console_client(&apps[0]));

    // Never again: the link, a new one, and the file are gone.
    let r = app.http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("set up already"));
    assert!(!app.data_dir.join("setup-link").exists());
    let again = secureflows_server::app::setup_link(app.services(), &app.data_dir, false)
        .await
        .unwrap();
    assert!(
        again.is_none(),
        "`secureflows setup link` refuses once a workspace exists"
    );
    assert!(matches!(
        app.services().new_setup_link().await,
        Err(secureflows_core::Error::Conflict("setup-done"))
    ));
    // The first run is audited in the new workspace's log, with the OWNER as the actor.
    let owner = app.console_token(ws.id, "olga@tuff.example", Role::Owner).await;
    let events: serde_json::Value = call(&app, "GET", "/api/v1/audit/events", &owner, None)
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["workspace.create", "user.create", "application.create"] {
        assert!(actions.contains(&action), "{actions:?}");
    }
    app.stop().await;
}

async fn console_sessions_refresh_and_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (b, ws, _) = first_run(&app).await;
    let overview = format!("{}/console/w/{ws}", app.url);

    // The session cookie is HttpOnly, SameSite=Strict, under /console; the tokens stay on the server,
    // sealed.
    let sessions = app.services().stores.workspaces.list_workspaces().await.unwrap();
    assert_eq!(sessions.len(), 1);
    let r = b.get(&overview).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline")
            && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(
        !app.raw_contains(b"eyJ").await,
        "no token in the clear in the database"
    );

    // The USER JWT lives 15 minutes; the console refreshes it.
    app.advance(std::time::Duration::from_secs(20 * 60));
    assert_eq!(b.get(&overview).send().await.unwrap().status(), 200);
    // Pages fired together all get through (refreshes share one chain).
    app.advance(std::time::Duration::from_secs(20 * 60));
    let mut pages = Vec::new();
    for _ in 0..10 {
        pages.push(tokio::spawn(b.get(&overview).send()));
    }
    for p in pages {
        assert_eq!(p.await.unwrap().unwrap().status(), 200);
    }

    // Sign-out ends the console session and the hosted login's, and comes back to the console.
    let html = b.get(&overview).send().await.unwrap().text().await.unwrap();
    let r = b
        .post(format!("{overview}/signout"))
        .form(&[("csrf", csrf_of(&html))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console");
    let r = b.get(&overview).send().await.unwrap();
    assert_eq!(r.status(), 303, "signed out");
    assert!(location(&r).starts_with(&format!("/console/w/{ws}/signin")));
    // Signing in again needs the password: the single sign-on is gone too.
    let r = follow(&app, &b, r).await;
    assert!(r.url().path().ends_with("/login"), "{}", r.url());
    app.stop().await;
}

async fn console_walls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (b, ws, html) = first_run(&app).await;
    let ws_id: secureflows_core::WorkspaceId = ws.parse().unwrap();
    let overview = format!("{}/console/w/{ws}", app.url);

    // A form without the CSRF token of this session, or from another site, changes nothing.
    let r = b
        .post(format!("{overview}/applications"))
        .form(&[("csrf", "forged"), ("name", "X"), ("kind", "browser")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .post(format!("{overview}/applications"))
        .header("sec-fetch-site", "cross-site")
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("name", "X"),
            ("kind", "browser"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        app.services()
            .stores
            .applications
            .list_applications(ws_id)
            .await
            .unwrap()
            .len(),
        1
    );

    // Another workspace: its objects are not found through this one, and this session's secret under
    // its cookie name is no session there.
    let other = app.workspace(Plan::pro()).await;
    let other_app = app.application(other, "aud-other").await;
    let r = b
        .get(format!("{overview}/applications/{}", other_app.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let stranger = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = stranger
        .get(format!("{}/console/w/{other}", app.url))
        .header("cookie", format!("sf_console_{other}={}", "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "no such session");
    assert!(location(&r).starts_with(&format!("/console/w/{other}/signin")));

    // Under another host name (localhost for 127.0.0.1) the console sends the browser to its public
    // address before any cookie is set; a form sent there is refused with a way on.
    let r = app
        .http
        .get(format!("{overview}/applications?x=1"))
        .header("host", "localhost:1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{overview}/applications?x=1"));
    assert!(r.headers().get("set-cookie").is_none());
    let r = app
        .http
        .post(format!("{overview}/applications"))
        .header("host", "localhost:1")
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    // An address under /console that is no page is a page saying so, not JSON.
    let r = b.get(format!("{overview}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // A USER member who signs in is refused every console page, and gets no session.
    let user = browser();
    let r = user.get(&overview).send().await.unwrap();
    let login = follow(&app, &user, r).await;
    assert!(login.url().path().ends_with("/login"), "{}", login.url());
    let flow = login.url().query().unwrap().to_owned();
    let signup = user
        .get(format!("{}/w/{ws}/signup?{flow}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = user
        .post(format!("{}/w/{ws}/signup", app.url))
        .form(&[
            ("csrf", csrf_of(&signup).as_str()),
            ("flow", flow.trim_start_matches("flow=")),
            ("email", "uma@tuff.example"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let refused = follow(&app, &user, r).await;
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("The console is for administrators")
    );
    for page in ["", "/applications", "/applications/new"] {
        let r = user.get(format!("{overview}{page}")).send().await.unwrap();
        assert_eq!(r.status(), 303, "{page}: not signed in to the console");
    }

    // The OWNER is demoted by another OWNER through the management API: the next page is refused;
    // promoted again and then locked, the session ends.
    let other_owner = app.console_token(ws_id, "second@tuff.example", Role::Owner).await;
    let members: serde_json::Value = call(&app, "GET", "/api/v1/users", &other_owner, None)
        .await
        .json()
        .await
        .unwrap();
    let olga = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "olga@tuff.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        &app,
        "PUT",
        &format!("/api/v1/users/{olga}/role"),
        &other_owner,
        Some(serde_json::json!({"role": "user"})),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    let r = b.get(&overview).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "the demoted member's session ended (its token revision moved)"
    );
    app.stop().await;
}

async fn open_signup_makes_workspaces_only_when_configured(backend: Backend) {
    // Closed (the default): no page, no form, nothing made.
    let app = TestApp::spawn(backend.clone()).await;
    let (_, ws, _) = first_run(&app).await;
    let r = app
        .http
        .get(format!("{}/console/signup", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let b = browser();
    let start = b.get(format!("{}/console", app.url)).send().await.unwrap();
    assert_eq!(
        location(&start),
        format!("/console/w/{ws}"),
        "a server with one workspace opens it"
    );
    let r = b
        .post(format!("{}/console/signup", app.url))
        .form(&[
            ("csrf", "x"),
            ("workspace_name", "Mine"),
            ("email", "eve@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        app.services()
            .stores
            .workspaces
            .list_workspaces()
            .await
            .unwrap()
            .len(),
        1
    );
    app.stop().await;

    // Open: anyone makes a free-plan workspace and runs it; sign-ups are throttled per address.
    let options = secureflows_testkit::TestOptions {
        configure: std::sync::Arc::new(|cfg| cfg.console.open_signup = true),
        ..secureflows_testkit::TestOptions::default()
    };
    let backend = match backend {
        Backend::Sqlite => Backend::Sqlite,
        Backend::Postgres(_) => Backend::postgres().unwrap(),
    };
    let app = TestApp::spawn_with(backend, options).await;
    // Before the first run, no sign-up: it would take the operator's first workspace.
    let r = app
        .http
        .get(format!("{}/console/signup", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    first_run(&app).await;
    let b = browser();
    let start = b
        .get(format!("{}/console", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(start.contains("href=\"/console/signup\""), "{start}");
    let page = b.get(format!("{}/console/signup", app.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Create a workspace") && !html.contains("name=\"token\""));
    let r = b
        .post(format!("{}/console/signup", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("workspace_name", "Eve's shop"),
            ("email", "eve@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let overview = follow(&app, &b, r).await;
    assert_eq!(overview.status(), 200);
    assert!(
        overview
            .text()
            .await
            .unwrap()
            .contains("Signed in as eve@example.com (owner)")
    );
    let made = app.services().stores.workspaces.list_workspaces().await.unwrap();
    assert!(
        made.iter()
            .any(|w| w.name == "Eve's shop" && w.plan == Plan::free()),
        "{made:?}"
    );
    // The setup link is another matter: it still creates nothing once a workspace exists.
    assert!(app.services().new_setup_link().await.is_err());
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = b
            .post(format!("{}/console/signup", app.url))
            .form(&[
                ("csrf", csrf_of(&html).as_str()),
                ("workspace_name", "More"),
                ("email", &format!("more{i}@example.com")),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.contains(&429),
        "sign-ups are throttled per address: {statuses:?}"
    );
    app.stop().await;
}

async fn resend_replaces_an_invitation_in_one_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (b, ws, _) = first_run(&app).await;
    let members = format!("{}/console/w/{ws}/members", app.url);
    // Without SMTP on a loopback address, mail goes to the data directory's outbox.
    let links = || -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(app.data_dir.join("outbox")) else {
            return Vec::new();
        };
        let mut found: Vec<String> = dir
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter(|w| w.contains("/invite/accept?token="))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        found.sort();
        found
    };
    let html = b.get(&members).send().await.unwrap().text().await.unwrap();
    let page = b
        .post(format!("{members}/invites"))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("email", "ada@tuff.example"),
            ("role", "admin"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("The invitation to ada@tuff.example is in the development outbox"),
        "{page}"
    );
    let first = links();
    assert_eq!(first.len(), 1);
    let id_at = page.find("/members/invites/").unwrap() + 17;
    let id = &page[id_at..id_at + 36];
    let page = b
        .post(format!("{members}/invites/{id}/resend"))
        .form(&[("csrf", csrf_of(&page))])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("revoked") && page.contains("pending"), "{page}");
    let both = links();
    assert_eq!(both.len(), 2);
    let second = both.iter().find(|l| !first.contains(l)).unwrap();
    assert_ne!(
        app.http.get(&first[0]).send().await.unwrap().status(),
        200,
        "the first link is dead"
    );
    assert_eq!(
        app.http.get(second).send().await.unwrap().status(),
        200,
        "the new one works"
    );
    // Revoked and replaced in one audited change.
    let filter = secureflows_core::audit::EventFilter {
        resource: Some(id.to_owned()),
        ..Default::default()
    };
    let events = app
        .services()
        .stores
        .audit
        .list_events(ws.parse().unwrap(), &filter, 10)
        .await
        .unwrap();
    let actions: Vec<String> = events.into_iter().map(|e| e.event.action.to_string()).collect();
    assert!(actions.contains(&"invite.revoke".to_owned()), "{actions:?}");
    app.stop().await;
}
