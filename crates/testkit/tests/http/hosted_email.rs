//! The hosted login's e-mail, over a real SMTP listener: verification at sign-up, magic links bound to
//! their flow, password reset (which ends every other session), and the security alerts (new device,
//! password changed, breached password, with a range API served by the test).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secureflows_core::{Plan, WorkspaceId};
use secureflows_testkit::{Backend, SmtpSink, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{
    PASSWORD, authorize_url, browser, client_app, csrf_of, location, pkce, query_param, sign_up_through_flow,
};
use crate::support::{assert_problem, call_ok};

backend_tests!(
    sign_up_mails_a_verification_link,
    magic_links_are_single_use_short_lived_and_continue_their_flow,
    password_reset_ends_other_sessions_and_alerts,
    new_devices_and_breached_passwords_are_reported,
    invitations_are_accepted_on_the_hosted_login,
    verify_first_sign_up_never_tells_whether_an_address_has_an_account,
    verify_first_sign_up_upgrades_an_anonymous_visitor,
    the_first_owner_sets_a_password_through_a_member_link,
    what_needs_mail_follows_whether_it_can_be_sent,
    the_account_page_names_browsers_and_shows_times,
);

pub(crate) async fn app_with_mail(backend: Backend, breached_url: Option<String>) -> (TestApp, SmtpSink) {
    let smtp = SmtpSink::start().await;
    let port = smtp.port;
    let options = TestOptions {
        configure: Arc::new(move |c| {
            c.smtp.host = Some("127.0.0.1".into());
            c.smtp.port = port;
            c.smtp.tls = "none".into();
            c.smtp.from = "Sign-in <no-reply@tuff.example>".into();
            c.login.breached_range_url = breached_url.clone();
        }),
        ..TestOptions::default()
    };
    (TestApp::spawn_with(backend, options).await, smtp)
}

/// The one link in a message.
pub(crate) fn link_in(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap_or_else(|| panic!("no link in {text}"))
        .to_owned()
}

/// Waits for `n` messages and returns the link of the last one that carries `path`.
pub(crate) async fn latest_link(smtp: &SmtpSink, n: usize, path: &str) -> String {
    smtp.wait_for(n)
        .await
        .iter()
        .rev()
        .map(|m| m.text())
        .find(|t| t.contains(path))
        .map(|t| link_in(&t))
        .unwrap_or_else(|| panic!("no mail with {path}"))
}

/// Opens a link's page (nothing is spent) and presses its button; returns the response.
pub(crate) async fn press(b: &reqwest::Client, app: &TestApp, link: &str) -> reqwest::Response {
    let page = b.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let action = html
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let token = query_param(link, "token").unwrap();
    b.post(format!("{}{action}", app.url))
        .form(&[("csrf", csrf_of(&html).as_str()), ("token", &token)])
        .send()
        .await
        .unwrap()
}

async fn sign_up(app: &TestApp, b: &reqwest::Client, ws: WorkspaceId, email: &str) {
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
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

pub(crate) async fn sign_in(
    app: &TestApp,
    b: &reqwest::Client,
    ws: WorkspaceId,
    email: &str,
    password: &str,
) -> u16 {
    let page = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    b.post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Posts a new password on the reset page `html` (opened from a link carrying `token`).
async fn choose_password(
    app: &TestApp,
    b: &reqwest::Client,
    ws: WorkspaceId,
    html: &str,
    token: &str,
    password: &str,
) -> reqwest::Response {
    b.post(format!("{}/w/{ws}/reset", app.url))
        .form(&[
            ("csrf", csrf_of(html).as_str()),
            ("token", token),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

async fn sign_up_mails_a_verification_link(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, None).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, secret) = client_app(&app, ws, false).await;
    let b = browser();
    let (verifier, challenge) = pkce();
    let code = sign_up_through_flow(&app, &b, ws, &client, &challenge, "erin@example.com").await;
    let mail = &smtp.wait_for(1).await[0];
    assert_eq!(mail.to, vec!["erin@example.com".to_owned()]);
    let link = link_in(&mail.text());
    assert!(
        link.starts_with(&format!("{}/w/{ws}/verify?token=sfl_", app.url)),
        "{link}"
    );

    // Before verification the ID token says so; the page alone spends nothing.
    let id_claims = |grant: serde_json::Value| {
        use base64::Engine as _;
        let payload = grant["id_token"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        serde_json::from_slice::<serde_json::Value>(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let token_request = |code: String, verifier: String| {
        let (app, client, secret) = (&app, &client, secret.clone().unwrap());
        async move {
            app.http
                .post(format!("{}/w/{ws}/token", app.url))
                .basic_auth(client.id.to_string(), Some(secret))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", "https://app.example/cb"),
                    ("code_verifier", verifier.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let claims = id_claims(token_request(code, verifier.clone()).await);
    assert_eq!(claims["email_verified"], false);
    assert_eq!(b.get(&link).send().await.unwrap().status(), 200);
    let r = press(&b, &app, &link).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("confirmed"));
    // Single use.
    assert_eq!(press(&b, &app, &link).await.status(), 400);
    let r = b
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    let code = query_param(&location(&r), "code").unwrap();
    assert_eq!(
        id_claims(token_request(code, verifier).await)["email_verified"],
        true
    );
    app.stop().await;
}

async fn magic_links_are_single_use_short_lived_and_continue_their_flow(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, None).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    sign_up(&app, &browser(), ws, "finn@example.com").await;
    smtp.wait_for(1).await; // the verification mail

    // A new browser starts a flow and asks for a link, for an existing and an unknown address.
    let b = browser();
    let (verifier, challenge) = pkce();
    let r = b
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    let login = format!("{}{}", app.url, location(&r));
    let flow = query_param(&login, "flow").unwrap();
    let html = b.get(&login).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("send-magic-link"));
    let ask = |email: &'static str, html: String| {
        let (b, app, flow) = (&b, &app, flow.clone());
        async move {
            let r = b
                .post(format!("{}/w/{ws}/magic", app.url))
                .form(&[
                    ("csrf", csrf_of(&html).as_str()),
                    ("flow", &flow),
                    ("email", email),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let unknown = ask("nobody@example.com", html.clone()).await;
    let known = ask("FINN@example.com ", html.clone()).await;
    assert_eq!(unknown, known, "the same answer with or without an account");
    assert_eq!(known.0, 200);
    let link = latest_link(&smtp, 2, "/magic?token=sfl_").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 2, "no mail for an unknown address");

    // Pressing the button signs in and continues the flow back to the application.
    let r = press(&b, &app, &link).await;
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(back.starts_with("https://app.example/cb?"), "{back}");
    let code = query_param(&back, "code").unwrap();
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Used once only; a wrong-workspace or forged token is refused the same way.
    assert_eq!(press(&b, &app, &link).await.status(), 400);
    let forged = link.replace("token=sfl_", "token=sfl_0");
    assert_eq!(press(&b, &app, &forged).await.status(), 400);

    // Expired after 15 minutes.
    let html = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/magic", app.url))
        .form(&[("csrf", csrf_of(&html).as_str()), ("email", "finn@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // (Mail 3 reported the sign-in from a new browser.)
    let link = latest_link(&smtp, 4, "/magic?token=sfl_").await;
    app.advance(Duration::from_secs(16 * 60));
    assert_eq!(press(&b, &app, &link).await.status(), 400);
    app.stop().await;
}

async fn password_reset_ends_other_sessions_and_alerts(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, None).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    let first = browser();
    let (verifier, challenge) = pkce();
    let code = sign_up_through_flow(&app, &first, ws, &client, &challenge, "gwen@example.com").await;
    let token: serde_json::Value = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_token = token["sessionToken"].as_str().unwrap().to_owned();
    smtp.wait_for(1).await;

    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/forgot", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/forgot", app.url))
        .form(&[("csrf", csrf_of(&page).as_str()), ("email", "gwen@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let link = latest_link(&smtp, 2, "/reset?token=sfl_").await;
    let html = b.get(&link).send().await.unwrap().text().await.unwrap();
    let token_param = query_param(&link, "token").unwrap();
    let reset = |password: &'static str| choose_password(&app, &b, ws, &html, &token_param, password);
    // A refused password leaves the link usable.
    assert_eq!(reset("short").await.status(), 422);
    assert_eq!(
        reset("gwen-likes-long-words").await.status(),
        422,
        "not the address, checked before spending"
    );
    assert_eq!(reset("a brand new passphrase").await.status(), 200);
    // The sign-in rotated the CSRF cookie: the old form is refused; a fresh one finds the link spent.
    assert_eq!(reset("another new passphrase").await.status(), 403);
    let fresh = b.get(&link).send().await.unwrap().text().await.unwrap();
    let r = b
        .post(format!("{}/w/{ws}/reset", app.url))
        .form(&[
            ("csrf", csrf_of(&fresh).as_str()),
            ("token", &token_param),
            ("password", "another new passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "single use");

    // Every other session ended; the old password is gone, the new one works; the user was told.
    let r = app
        .http
        .get(format!("{}/api/v1/sessions", app.url))
        .bearer_auth(&session_token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "session-revoked").await;
    let r = first
        .get(authorize_url(&app, ws, &client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert!(
        location(&r).contains("/login?flow="),
        "the first browser's single sign-on ended"
    );
    assert_eq!(
        sign_in(&app, &browser(), ws, "gwen@example.com", PASSWORD).await,
        401
    );
    assert_eq!(
        sign_in(&app, &b, ws, "gwen@example.com", "a brand new passphrase").await,
        200
    );
    let subjects: Vec<String> = smtp
        .wait_for(3)
        .await
        .iter()
        .map(|m| {
            m.data
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("Your password was changed")),
        "{subjects:?}"
    );
    app.stop().await;
}

async fn new_devices_and_breached_passwords_are_reported(backend: Backend) {
    // A range API that lists PASSWORD's hash once `breached` is set.
    let breached = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let range_url = format!("http://{}", listener.local_addr().unwrap());
    let flag = breached.clone();
    let digest = secureflows_crypto::password::breach_digest(PASSWORD);
    let router = axum::Router::new().route(
        "/range/{prefix}",
        axum::routing::get(move |axum::extract::Path(prefix): axum::extract::Path<String>| {
            let (flag, digest) = (flag.clone(), digest.clone());
            async move {
                let mut body = "0000000000000000000000000000000000A:3\r\n".to_owned();
                if flag.load(Ordering::SeqCst) && digest.starts_with(&prefix) {
                    body.push_str(&format!("{}:42\r\n", &digest[5..]));
                }
                body
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (app, smtp) = app_with_mail(backend, Some(range_url)).await;
    let ws = app.workspace(Plan::pro()).await;
    let b = browser();
    sign_up(&app, &b, ws, "hana@example.com").await;
    smtp.wait_for(1).await;
    // The same browser again: nothing to report.
    assert_eq!(sign_in(&app, &b, ws, "hana@example.com", PASSWORD).await, 200);
    // Another browser: "new sign-in".
    assert_eq!(
        sign_in(&app, &browser(), ws, "hana@example.com", PASSWORD).await,
        200
    );
    let mails = smtp.wait_for(2).await;
    assert!(mails[1].data.contains("New sign-in"), "{}", mails[1].data);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 2);

    // Now the password shows up in a breach: sign-up refuses it, sign-in reports it.
    breached.store(true, Ordering::SeqCst);
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
            ("email", "ivan@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("data breach"));
    assert_eq!(sign_in(&app, &b, ws, "hana@example.com", PASSWORD).await, 200);
    let mails = smtp.wait_for(3).await;
    assert!(mails[2].data.contains("data breach"), "{}", mails[2].data);
    app.stop().await;
}

async fn invitations_are_accepted_on_the_hosted_login(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, None).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app
        .console_token(ws, "owner@invite.example", secureflows_core::Role::Owner)
        .await;
    let invite = |email: &'static str| {
        let (app, owner) = (&app, owner.clone());
        async move {
            call_ok(
                app,
                "POST",
                "/api/v1/invites",
                &owner,
                Some(serde_json::json!({"email": email, "role": "admin", "expires_in": 3600})),
                201,
            )
            .await
        }
    };
    invite("mona@example.com").await;
    let link = latest_link(&smtp, 1, "/invite/accept?token=sfinv_").await;
    assert!(
        link.starts_with(&format!("{}/w/{ws}/invite/accept?token=", app.url)),
        "{link}"
    );

    let b = browser();
    let page = b.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("mona@example.com") && html.contains("<strong>admin</strong>"));
    let token = query_param(&link, "token").unwrap();
    let accept = |password: &'static str| {
        let (b, app, html, token) = (&b, &app, html.clone(), token.clone());
        async move {
            b.post(format!("{}/w/{ws}/invite/accept", app.url))
                .form(&[
                    ("csrf", csrf_of(&html).as_str()),
                    ("token", &token),
                    ("password", password),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        accept("short").await,
        422,
        "a refused password leaves the invitation usable"
    );
    assert_eq!(accept("an admin passphrase 7").await, 200);
    // The sign-in rotated this browser's CSRF cookie: the old form is refused as such.
    assert_eq!(
        accept("an admin passphrase 8").await,
        403,
        "a form from before the sign-in"
    );
    // From another browser with a valid form token: the link is spent.
    let other = browser();
    let login = other
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let replay = other
        .post(format!("{}/w/{ws}/invite/accept", app.url))
        .form(&[
            ("csrf", csrf_of(&login).as_str()),
            ("token", &token),
            ("password", "an admin passphrase 8"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400, "single use");
    assert_eq!(b.get(&link).send().await.unwrap().status(), 400);
    // A member with the invited role, signed in, the address verified; the invitation is accepted.
    let users = call_ok(&app, "GET", "/api/v1/users", &owner, None, 200).await;
    let member = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "mona@example.com")
        .unwrap_or_else(|| panic!("{users}"))
        .clone();
    assert_eq!(member["role"], "admin");
    let invites = call_ok(&app, "GET", "/api/v1/invites", &owner, None, 200).await;
    assert_eq!(invites["items"][0]["state"], "accepted");
    assert_eq!(
        b.get(format!("{}/w/{ws}/account", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        sign_in(&app, &browser(), ws, "mona@example.com", "an admin passphrase 7").await,
        200
    );

    // An expired invitation's link does nothing; another workspace's issuer does not know it.
    invite("nils@example.com").await;
    let link = latest_link(&smtp, 2, "/invite/accept?token=sfinv_").await;
    let other = app.workspace(Plan::pro()).await;
    let elsewhere = link.replace(&ws.to_string(), &other.to_string());
    assert_eq!(b.get(&elsewhere).send().await.unwrap().status(), 400);
    app.advance(Duration::from_secs(3601));
    assert_eq!(b.get(&link).send().await.unwrap().status(), 400);
    app.stop().await;
}

async fn verify_first_sign_up_never_tells_whether_an_address_has_an_account(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, None).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app
        .console_token(ws, "owner@example.com", secureflows_core::Role::Owner)
        .await;
    let r = app
        .http
        .patch(format!("{}/api/v1/workspaces", app.url))
        .bearer_auth(&owner)
        .json(&serde_json::json!({"login_policy": {"password_policy": "nist", "mfa_required": "off", "signup": "verify_first"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["login_policy"]["signup"], "verify_first");
    // Old has an account (its own verification mail is message 1).
    app.services()
        .sign_up(
            ws,
            secureflows_core::login::hosted::SignUp {
                email: "old@example.com".into(),
                password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                name: None,
            },
            None,
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    smtp.wait_for(1).await;

    // A new address and a taken one get the same answer, and no browser is signed in.
    let sign_up = |email: &'static str| {
        let app = &app;
        async move {
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
                    ("email", email),
                    ("password", PASSWORD),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status();
            let binds = r.headers().get_all("set-cookie").iter().any(|c| {
                c.to_str().unwrap().starts_with("sf_signup=") && c.to_str().unwrap().contains("HttpOnly")
            });
            assert!(binds, "the browser that asked is the one that can finish");
            let signed_in = r.headers().get_all("set-cookie").iter().any(|c| {
                c.to_str().unwrap().starts_with("sf_sso=") && !c.to_str().unwrap().starts_with("sf_sso=;")
            });
            (status, signed_in, r.text().await.unwrap(), b)
        }
    };
    let (new_status, new_signed_in, new_page, b) = sign_up("new@example.com").await;
    let (old_status, old_signed_in, old_page, _) = sign_up("old@example.com").await;
    assert_eq!((new_status.as_u16(), old_status.as_u16()), (200, 200));
    assert!(!new_signed_in && !old_signed_in);
    assert_eq!(new_page, old_page);
    assert!(new_page.contains("Check your e-mail"));
    let keys = app.services().keys.workspace_keys(ws, false).await.unwrap();
    let index = secureflows_core::auth::callback::email_index(
        &keys,
        &secureflows_core::EmailAddress::parse("new@example.com").unwrap(),
    );
    assert!(
        app.services()
            .stores
            .users
            .find_user_by_email(ws, &index)
            .await
            .unwrap()
            .is_none()
    );

    // The owner of the taken address is told; the new address gets the link that makes the account.
    let mails = smtp.wait_for(3).await;
    assert!(
        mails
            .iter()
            .any(|m| m.to.iter().any(|t| t.contains("old@example.com"))
                && m.text().contains("You already have one"))
    );
    let link = latest_link(&smtp, 3, "/signup/confirm?token=").await;
    let page = b.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"id="confirm-signup""#));
    let token = query_param(&link, "token").unwrap();
    let confirm = |b: reqwest::Client, page: String| {
        let url = format!("{}/w/{ws}/signup/confirm", app.url);
        let token = token.clone();
        async move {
            b.post(url)
                .form(&[("csrf", csrf_of(&page).as_str()), ("token", token.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    let r = confirm(b.clone(), page.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("sf_sso="))
    );
    let users = app
        .services()
        .stores
        .users
        .find_user_by_email(ws, &index)
        .await
        .unwrap()
        .into_iter()
        .collect::<Vec<_>>();
    assert_eq!(users.len(), 1);
    assert!(
        app.services()
            .stores
            .passwords
            .email_verified(ws, users[0].id)
            .await
            .unwrap()
    );
    // The link works once (a fresh form: the sign-in rotated the browser's CSRF cookie, so the old
    // form is refused before the link is even looked at).
    assert_eq!(confirm(b.clone(), page).await.status(), 403);
    let fresh = b.get(&link).send().await.unwrap().text().await.unwrap();
    assert_eq!(confirm(b, fresh).await.status(), 400);

    // A link opened in another browser than the one that filled in the form does nothing (and is
    // spent): someone who signs up with another person's address cannot have them finish it.
    let (_, _, _, b3) = sign_up("third@example.com").await;
    let mails = smtp.wait_for(4).await;
    let third = mails
        .iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t.contains("third@example.com")))
        .map(|m| link_in(&m.text()))
        .unwrap();
    let token = query_param(&third, "token").unwrap();
    let other = browser();
    let page = other.get(&third).send().await.unwrap().text().await.unwrap();
    let r = other
        .post(format!("{}/w/{ws}/signup/confirm", app.url))
        .form(&[("csrf", csrf_of(&page).as_str()), ("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let page = b3.get(&third).send().await.unwrap().text().await.unwrap();
    let r = b3
        .post(format!("{}/w/{ws}/signup/confirm", app.url))
        .form(&[("csrf", csrf_of(&page).as_str()), ("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let index = secureflows_core::auth::callback::email_index(
        &keys,
        &secureflows_core::EmailAddress::parse("third@example.com").unwrap(),
    );
    assert!(
        app.services()
            .stores
            .users
            .find_user_by_email(ws, &index)
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

async fn verify_first_sign_up_upgrades_an_anonymous_visitor(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, None).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app
        .console_token(ws, "owner@example.com", secureflows_core::Role::Owner)
        .await;
    let policy = serde_json::json!({"login_policy": {"password_policy": "nist", "mfa_required": "off", "signup": "verify_first"}});
    call_ok(&app, "PATCH", "/api/v1/workspaces", &owner, Some(policy), 200).await;
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
    let r = app
        .http
        .post(format!("{}/api/v1/auth/anonymous", app.url))
        .json(&serde_json::json!({"client_id": client.id.to_string()}))
        .send()
        .await
        .unwrap();
    let anon_token = r.json::<serde_json::Value>().await.unwrap()["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    app.client
        .session(anon_token.clone())
        .set("cart", "application/json", "{\"items\":3}")
        .await
        .unwrap();
    let r = app
        .http
        .post(format!("{}/api/v1/auth/upgrade", app.url))
        .bearer_auth(&anon_token)
        .send()
        .await
        .unwrap();
    let upgrade = r.json::<serde_json::Value>().await.unwrap()["upgrade"]
        .as_str()
        .unwrap()
        .to_owned();

    // Sign-up in the upgrade flow answers "check your e-mail" too; the link finishes the upgrade.
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
    let signup = location(&r);
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
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Check your e-mail"));
    let link = latest_link(&smtp, 1, "/signup/confirm?token=").await;
    let page = b.get(&link).send().await.unwrap().text().await.unwrap();
    let r = b
        .post(format!("{}/w/{ws}/signup/confirm", app.url))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("token", query_param(&link, "token").unwrap().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(back.starts_with("https://app.example/cb?code="), "{back}");
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&serde_json::json!({"code": query_param(&back, "code").unwrap(), "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<serde_json::Value>().await.unwrap()["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same user: the vault is intact, and the anonymous token stopped.
    let user = app.client.session(token);
    assert_eq!(&user.get("cart").await.unwrap().bytes[..], b"{\"items\":3}");
    let r = app
        .http
        .get(format!("{}/api/v1/sessions", app.url))
        .bearer_auth(&anon_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

/// `token issue` makes the first OWNER without a password; `secureflows member link` (here its domain
/// call) gives a one-time link with which they set one on the hosted login and then sign in with it.
async fn the_first_owner_sets_a_password_through_a_member_link(backend: Backend) {
    use secureflows_core::Role;
    use secureflows_core::audit::Actor;
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let services = app.services();
    let email = "owner@tuff.example";
    services
        .issue_console_token(
            ws,
            email,
            Role::Owner,
            Duration::from_secs(600),
            &Actor::operator(),
        )
        .await
        .unwrap();
    assert_eq!(
        sign_in(&app, &browser(), ws, email, "a brand new passphrase").await,
        401,
        "no password yet"
    );

    // An unknown address gets no link.
    assert!(matches!(
        services
            .member_password_link(ws, "nobody@tuff.example", &Actor::operator())
            .await,
        Err(secureflows_core::Error::NotFound(_))
    ));
    let (user, link, ttl) = services
        .member_password_link(ws, email, &Actor::operator())
        .await
        .unwrap();
    assert_eq!(ttl, Duration::from_secs(15 * 60));
    let link = link.expose().to_owned();
    assert!(
        link.starts_with(&format!("{}/w/{ws}/reset?token=sfl_", app.url)),
        "{link}"
    );

    let b = browser();
    let html = b.get(&link).send().await.unwrap().text().await.unwrap();
    let token = query_param(&link, "token").unwrap();
    let set = |password: &'static str| {
        let response = choose_password(&app, &b, ws, &html, &token, password);
        async move { response.await.status().as_u16() }
    };
    assert_eq!(set("a brand new passphrase").await, 200);
    // Single use.
    assert_ne!(set("yet another passphrase").await, 200);
    assert_eq!(
        sign_in(&app, &browser(), ws, email, "a brand new passphrase").await,
        200,
        "signed in (no flow)"
    );

    // The operator's act is in the workspace's audit log.
    let events = services.export_all_events(ws).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "member.link" && e.resource_id == user.id.to_string()),
        "no member.link event"
    );
}

/// Without SMTP, a server on a loopback public URL writes mail to the development outbox, so what
/// needs mail is offered; on any other public URL nothing can be sent, so it is not: no magic link on
/// the sign-in page, verification-first sign-up refused, the invitation link returned instead.
async fn what_needs_mail_follows_whether_it_can_be_sent(backend: Backend) {
    use secureflows_core::Role;
    for (public_url, can_send) in [(None, true), (Some("https://id.tuff.example"), false)] {
        let options = TestOptions {
            configure: Arc::new(move |c| c.server.public_url = public_url.map(str::to_owned)),
            ..TestOptions::default()
        };
        // A database of its own for each server.
        let backend = match (&backend, can_send) {
            (Backend::Postgres(_), false) => Backend::postgres().unwrap(),
            _ => backend.clone(),
        };
        let app = TestApp::spawn_with(backend, options).await;
        let ws = app.workspace(Plan::pro()).await;
        let owner = app.console_token(ws, "owner@tuff.example", Role::Owner).await;
        let page = browser()
            .get(format!("{}/w/{ws}/login", app.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            page.contains("E-mail me a sign-in link"),
            can_send,
            "{public_url:?}"
        );
        let policy = serde_json::json!({"login_policy": {"password_policy": "strict", "mfa_required": "all", "signup": "verify_first"}});
        let r = app
            .http
            .patch(format!("{}/api/v1/workspaces", app.url))
            .bearer_auth(&owner)
            .json(&policy)
            .send()
            .await
            .unwrap();
        if can_send {
            let status = r.status();
            assert_eq!(status, 200, "{public_url:?}: {}", r.text().await.unwrap());
        } else {
            assert_problem(r, 422, "validation-failed").await;
        }
        let invite = call_ok(
            &app,
            "POST",
            "/api/v1/invites",
            &owner,
            Some(serde_json::json!({"email": "new@tuff.example", "role": "user"})),
            201,
        )
        .await;
        let outbox = app.data_dir.join("outbox");
        let written = std::fs::read_dir(&outbox).map(|d| d.count()).unwrap_or(0);
        if can_send {
            assert_eq!(invite["delivery"], "sent");
            assert!(invite.get("invite_url").is_none(), "{invite}");
            assert_eq!(written, 1, "the invitation is in the outbox");
        } else {
            assert_eq!(invite["delivery"], "disabled");
            assert!(invite["invite_url"].as_str().is_some(), "{invite}");
            assert_eq!(written, 0);
        }
        app.stop().await;
    }
}

/// The account page names a browser "Chrome on Linux", not by its raw `User-Agent`, and shows times as
/// `<time datetime>` in UTC with readable wording.
async fn the_account_page_names_browsers_and_shows_times(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    let agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(agent)
        .build()
        .unwrap();
    let (_, challenge) = pkce();
    sign_up_through_flow(&app, &b, ws, &client, &challenge, "tess@example.com").await;
    let html = b
        .get(format!("{}/w/{ws}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"<span class="device">Chrome on Linux</span>"#),
        "{html}"
    );
    assert!(!html.contains("Mozilla/5.0"), "the raw user agent is shown");
    let at = html.find("<time datetime=\"").expect("a <time> element");
    let rest = &html[at..];
    let element = &rest[..rest.find("</time>").unwrap()];
    assert!(element.contains("UTC"), "{element}");
    assert!(
        element.contains("Z\">"),
        "the datetime attribute is UTC: {element}"
    );
    // Destructive actions look like it and ask first; the new password has a visible strength meter.
    assert!(
        html.contains(r#"<button type="submit" id="end-others" class="danger">"#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-confirm="Sign out every other browser?"#),
        "{html}"
    );
    assert!(html.contains(r#"<meter id="strength""#), "{html}");
    assert!(
        html.contains(r#"<script src="/assets/confirm.js" defer>"#),
        "{html}"
    );
    let script = b
        .get(format!("{}/assets/confirm.js", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().contains("data-confirm"));
    app.stop().await;
}
