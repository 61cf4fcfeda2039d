//! "Continue with ..." on the hosted pages, against a real OpenID Connect provider: another workspace
//! of the same server, whose issuer, discovery, authorization code + PKCE, token endpoint and signed ID
//! tokens are the ones our applications use. Linking by e-mail happens only for an address the
//! provider verified; the callback is bound to the browser that started it.

use secureflows_core::audit::Actor;
use secureflows_core::login::hosted::SignUp;
use secureflows_core::{Plan, Role, WorkspaceId};
use secureflows_crypto::SecretString;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{
    PASSWORD, authorize_url, browser, client_app, csrf_of, location, pkce, query_param,
};
use crate::support::{assert_problem, call};

backend_tests!(
    upstream_provider_signs_in_links_verified_addresses_only,
    identity_providers_are_managed_by_admins,
    concurrent_starts_share_one_discovery_fetch,
    verify_first_provider_sign_ins_never_tell_whether_an_address_has_an_account,
);

/// The provider workspace, with a confidential client for `ours`; returns (provider workspace,
/// client id, client secret).
async fn provider(app: &TestApp, ours: WorkspaceId) -> (WorkspaceId, String, String) {
    let upstream = app.workspace(Plan::pro()).await;
    let (client, secret) = app
        .services()
        .create_application(
            upstream,
            secureflows_core::workspace::NewApplication {
                name: "Federation".into(),
                public: false,
                redirect_uris: vec![format!("{}/w/{ours}/upstream/callback", app.url)],
                ..Default::default()
            },
            &Actor::operator(),
        )
        .await
        .unwrap();
    (
        upstream,
        client.id.to_string(),
        secret.unwrap().expose().to_owned(),
    )
}

async fn sign_up(app: &TestApp, ws: WorkspaceId, email: &str) -> secureflows_core::User {
    app.services()
        .sign_up(
            ws,
            SignUp {
                email: email.into(),
                password: SecretString::new(PASSWORD.into()),
                name: None,
            },
            None,
            &Actor::operator(),
        )
        .await
        .unwrap()
        .0
}

/// Follows same-server redirects (GET) until a page, or a redirect elsewhere; returns the last response.
async fn follow(app: &TestApp, b: &reqwest::Client, mut url: String) -> reqwest::Response {
    for _ in 0..10 {
        let r = b.get(&url).send().await.unwrap();
        if r.status() != 303 {
            return r;
        }
        let next = location(&r);
        url = if next.starts_with('/') {
            format!("{}{next}", app.url)
        } else if next.starts_with(&app.url) {
            next
        } else {
            return r;
        };
    }
    panic!("too many redirects");
}

/// A new browser that pressed "Continue with" (`start`) and is at the provider's sign-in page.
async fn start_at_provider(app: &TestApp, start: &str) -> (reqwest::Client, reqwest::Response) {
    let b = browser();
    let r = b.get(format!("{}{start}", app.url)).send().await.unwrap();
    let login = follow(app, &b, location(&r)).await;
    (b, login)
}

/// Signs in at the provider's page (the browser is at its login page).
async fn provider_password(
    app: &TestApp,
    b: &reqwest::Client,
    login: reqwest::Response,
    email: &str,
) -> reqwest::Response {
    let url = login.url().clone();
    let html = login.text().await.unwrap();
    assert!(url.path().ends_with("/login"), "{url}");
    let flow = query_param(url.as_str(), "flow").unwrap();
    let r = b
        .post(format!("{}{}", app.url, url.path()))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("flow", &flow),
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let callback = location(&r);
    assert!(callback.contains("/upstream/callback?code="), "{callback}");
    follow(app, b, callback).await
}

async fn upstream_provider_signs_in_links_verified_addresses_only(backend: Backend) {
    // More callbacks from one address than the sign-in throttle allows in a minute (it has its own test).
    let options = TestOptions {
        configure: std::sync::Arc::new(|c| c.login.attempts_per_minute = 100),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ours = app.workspace(Plan::pro()).await;
    let (upstream, client_id, secret) = provider(&app, ours).await;
    let owner = app.console_token(ours, "owner@example.com", Role::Owner).await;
    let r = app
        .http
        .post(format!("{}/api/v1/identity-providers", app.url))
        .bearer_auth(&owner)
        .json(&serde_json::json!({
            "kind": "oidc", "name": "Upstream", "issuer": format!("{}/w/{upstream}", app.url),
            "client_id": client_id, "client_secret": secret,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        created["redirect_uri"],
        format!("{}/w/{ours}/upstream/callback", app.url)
    );
    assert_eq!(created["confidential"], true);
    assert!(created.get("client_secret").is_none());
    assert!(
        !app.raw_contains(secret.as_bytes()).await,
        "the client secret is stored in the clear"
    );

    // Bob exists only at the provider, which verified his address: his first sign-in creates his
    // account here, with that address.
    let bob_there = sign_up(&app, upstream, "bob@example.com").await;
    app.services()
        .stores
        .passwords
        .set_email_verified(upstream, bob_there.id)
        .await
        .unwrap();
    let b = browser();
    let page = follow(&app, &b, format!("{}/w/{ours}/login", app.url))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Continue with Upstream"));
    let start = page
        .split("href=\"")
        .find(|s| s.contains("/upstream/"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let r = b.get(format!("{}{start}", app.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let to_provider = location(&r);
    assert!(to_provider.starts_with(&format!("{}/w/{upstream}/authorize?", app.url)));
    for p in ["state", "nonce", "code_challenge"] {
        assert!(query_param(&to_provider, p).is_some(), "{p}");
    }
    assert_eq!(
        query_param(&to_provider, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("sf_upstream=") && cookie.contains("SameSite=Lax") && cookie.contains("HttpOnly")
    );
    let login = follow(&app, &b, to_provider).await;
    let done = provider_password(&app, &b, login, "bob@example.com").await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("You are signed in"));
    let keys = app.services().keys.workspace_keys(ours, false).await.unwrap();
    let index = secureflows_core::auth::callback::email_index(
        &keys,
        &secureflows_core::EmailAddress::parse("bob@example.com").unwrap(),
    );
    let bobs = app
        .services()
        .stores
        .users
        .find_user_by_email(ours, &index)
        .await
        .unwrap();
    assert!(bobs.is_some());

    // Through an application's request, in a new browser: the provider's button carries the request,
    // and after the provider the application gets its code.
    let (client, _) = client_app(&app, ours, true).await;
    let (_, challenge) = pkce();
    let b = browser();
    let login = follow(&app, &b, authorize_url(&app, ours, &client, &challenge, "")).await;
    let page = login.text().await.unwrap();
    let with_flow = page
        .split("href=\"")
        .find(|s| s.contains("/upstream/"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(with_flow.contains("?flow="), "{with_flow}");
    let r = b.get(format!("{}{with_flow}", app.url)).send().await.unwrap();
    let login = follow(&app, &b, location(&r)).await;
    let back = provider_password(&app, &b, login, "bob@example.com").await;
    assert_eq!(back.status(), 303);
    let back = location(&back);
    assert!(back.starts_with("https://app.example/cb?code="), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-1"));

    // Carol's address is not verified by the provider: her account here is made without it, so it can
    // never claim (or be found as) the owner of that address.
    sign_up(&app, upstream, "carol@example.com").await;
    let (b, login) = start_at_provider(&app, &start).await;
    assert_eq!(
        provider_password(&app, &b, login, "carol@example.com")
            .await
            .status(),
        200
    );
    let index = secureflows_core::auth::callback::email_index(
        &keys,
        &secureflows_core::EmailAddress::parse("carol@example.com").unwrap(),
    );
    assert!(
        app.services()
            .stores
            .users
            .find_user_by_email(ours, &index)
            .await
            .unwrap()
            .is_none()
    );

    // Dora has an account here and one at the provider whose address the provider has not verified:
    // the address never finds her account (no link, no sign-in to it, no 409 that would tell it
    // exists): the identity is a member of its own, without the address.
    let dora_here = sign_up(&app, ours, "dora@example.com").await;
    sign_up(&app, upstream, "dora@example.com").await;
    let members_before = app
        .services()
        .stores
        .users
        .list_users(ours, None, 100)
        .await
        .unwrap()
        .len();
    let b = browser();
    let r = b
        .get(format!("{}{start}", app.url).replace("?flow=", "?x="))
        .send()
        .await
        .unwrap();
    let login = follow(&app, &b, location(&r)).await;
    let separate = provider_password(&app, &b, login, "dora@example.com").await;
    assert_eq!(separate.status(), 200);
    let members = app
        .services()
        .stores
        .users
        .list_users(ours, None, 100)
        .await
        .unwrap();
    assert_eq!(members.len(), members_before + 1);
    let newcomer = members
        .iter()
        .find(|u| u.id != dora_here.id && u.email_sealed.is_none() && u.created_at >= dora_here.created_at)
        .expect("a member without an address");
    assert!(newcomer.email_index.is_none());
    // That identity is now known: it signs in to that member again, never to Dora's account.
    let (b, login) = start_at_provider(&app, &start).await;
    assert_eq!(
        provider_password(&app, &b, login, "dora@example.com")
            .await
            .status(),
        200
    );
    assert_eq!(
        app.services()
            .stores
            .users
            .list_users(ours, None, 100)
            .await
            .unwrap()
            .len(),
        members_before + 1
    );

    // Alice has an account here and one at the provider.
    let alice_here = sign_up(&app, ours, "alice@example.com").await;
    let alice_there = sign_up(&app, upstream, "alice@example.com").await;

    // The provider verified the address, but the account here never did (anyone can open an account
    // in someone else's name): still no link.
    app.services()
        .stores
        .passwords
        .set_email_verified(upstream, alice_there.id)
        .await
        .unwrap();
    let (b, login) = start_at_provider(&app, &start).await;
    assert_eq!(
        provider_password(&app, &b, login, "alice@example.com")
            .await
            .status(),
        409
    );

    // An ADMIN's account is never joined through a provider's e-mail claim, verified or not.
    let admin_here = sign_up(&app, ours, "root@example.com").await;
    app.services()
        .stores
        .passwords
        .set_email_verified(ours, admin_here.id)
        .await
        .unwrap();
    let r = call(
        &app,
        "PUT",
        &format!("/api/v1/users/{}/role", admin_here.id),
        &owner,
        Some(serde_json::json!({"role": "admin"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let root_there = sign_up(&app, upstream, "root@example.com").await;
    app.services()
        .stores
        .passwords
        .set_email_verified(upstream, root_there.id)
        .await
        .unwrap();
    let (b, login) = start_at_provider(&app, &start).await;
    assert_eq!(
        provider_password(&app, &b, login, "root@example.com")
            .await
            .status(),
        409
    );

    // The ADMIN links the provider from the account page instead: signed in here (recently), then at
    // the provider in the same browser. Afterwards "Continue with" signs them in.
    let b = browser();
    let login = follow(&app, &b, format!("{}/w/{ours}/login", app.url))
        .await
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ours}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&login).as_str()),
            ("email", "root@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let account = b
        .get(format!("{}/w/{ours}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(account.contains("Link Upstream"));
    let provider_id = created["id"].as_str().unwrap();
    let link = |b: reqwest::Client, csrf: String| {
        let url = format!("{}/w/{ours}/account/upstream", app.url);
        let provider_id = provider_id.to_owned();
        async move {
            b.post(url)
                .form(&[("csrf", csrf.as_str()), ("provider", provider_id.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    // Carol's provider identity belongs to Carol's account here: it cannot be linked to another.
    let r = link(b.clone(), csrf_of(&account)).await;
    assert_eq!(r.status(), 303);
    let login = follow(&app, &b, location(&r)).await;
    let refused = provider_password(&app, &b, login, "carol@example.com").await;
    assert_eq!(refused.status(), 409);
    // The browser is signed in at the provider as Carol now: sign out there, then link Root's identity.
    let page = b
        .get(format!("{}/w/{upstream}/logout", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    b.post(format!("{}/w/{upstream}/logout", app.url))
        .form(&[("csrf", csrf_of(&page).as_str())])
        .send()
        .await
        .unwrap();
    let r = link(b.clone(), csrf_of(&account)).await;
    let login = follow(&app, &b, location(&r)).await;
    let linked = provider_password(&app, &b, login, "root@example.com").await;
    assert_eq!(linked.status(), 200);
    assert!(
        linked
            .text()
            .await
            .unwrap()
            .contains("The provider account is linked")
    );
    let (b, login) = start_at_provider(&app, &start).await;
    let signed = provider_password(&app, &b, login, "root@example.com").await;
    assert_eq!(signed.status(), 200);
    let account = b
        .get(format!("{}/w/{ours}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(account.contains("root@example.com"));

    // Once both sides verified the address, the identity is linked to the existing account.
    app.services()
        .stores
        .passwords
        .set_email_verified(ours, alice_here.id)
        .await
        .unwrap();
    let b = browser();
    let r = b.get(format!("{}{start}", app.url)).send().await.unwrap();
    let callback_url = {
        let login = follow(&app, &b, location(&r)).await;
        let url = login.url().clone();
        let html = login.text().await.unwrap();
        let r = b
            .post(format!("{}{}", app.url, url.path()))
            .form(&[
                ("csrf", csrf_of(&html).as_str()),
                ("flow", &query_param(url.as_str(), "flow").unwrap()),
                ("email", "alice@example.com"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        location(&r)
    };
    let linked = follow(&app, &b, callback_url.clone()).await;
    assert_eq!(linked.status(), 200);
    let account = b
        .get(format!("{}/w/{ours}/account", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(account.contains("alice@example.com"));
    let index = secureflows_core::auth::callback::email_index(
        &keys,
        &secureflows_core::EmailAddress::parse("alice@example.com").unwrap(),
    );
    let alices = app
        .services()
        .stores
        .users
        .find_user_by_email(ours, &index)
        .await
        .unwrap();
    assert_eq!(alices.map(|u| u.id), Some(alice_here.id));
    // The same callback again: the pending sign-in was used up (its cookie is gone).
    let replay = b.get(&callback_url).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    // Another browser with the callback (a login CSRF attempt): refused.
    let replay = browser().get(&callback_url).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    // A callback with another state for the started browser: refused.
    let b = browser();
    let r = b.get(format!("{}{start}", app.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let r = b
        .get(format!(
            "{}/w/{ours}/upstream/callback?code=x&state=forged",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.stop().await;
}

async fn identity_providers_are_managed_by_admins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let admin = app.console_token(ws, "admin@example.com", Role::Admin).await;
    let user = app.console_token(ws, "user@example.com", Role::User).await;
    let url = format!("{}/api/v1/identity-providers", app.url);
    let post = |token: String, body: serde_json::Value| {
        let http = app.http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let google = serde_json::json!({"kind": "google", "client_id": "1234.apps.googleusercontent.com", "client_secret": "s3cret"});
    assert_problem(post(user.clone(), google.clone()).await, 403, "forbidden").await;
    let r = post(admin.clone(), google).await;
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["issuer"], "https://accounts.google.com");
    assert_eq!(created["name"], "Google");
    for bad in [
        serde_json::json!({"kind": "google", "issuer": "https://evil.example", "client_id": "x"}),
        serde_json::json!({"kind": "oidc", "client_id": "x"}),
        serde_json::json!({"kind": "oidc", "issuer": "javascript:alert(1)", "client_id": "x"}),
        serde_json::json!({"kind": "oidc", "issuer": "https://id.example", "client_id": ""}),
        serde_json::json!({"kind": "oidc", "issuer": "https://id.example", "client_id": "x", "name": "a\u{7}"}),
    ] {
        assert_problem(post(admin.clone(), bad).await, 422, "validation-failed").await;
    }
    let r = post(
        admin.clone(),
        serde_json::json!({"kind": "saml", "client_id": "x"}),
    )
    .await;
    assert!(r.status() == 400 || r.status() == 422, "{}", r.status());
    let list: serde_json::Value = app
        .http
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let id = created["id"].as_str().unwrap();
    // The login page offers it.
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Continue with Google"));
    // Another workspace's admin cannot remove it.
    let other = app.workspace(Plan::pro()).await;
    let other_admin = app.console_token(other, "admin@example.com", Role::Admin).await;
    let r = app
        .http
        .delete(format!("{url}/{id}"))
        .bearer_auth(&other_admin)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not-found").await;
    let r = app
        .http
        .delete(format!("{url}/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .http
        .delete(format!("{url}/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not-found").await;
    app.stop().await;
}

/// Twenty browsers starting a sign-in with one provider at once: one discovery fetch, not twenty.
async fn concurrent_starts_share_one_discovery_fetch(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ours = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ours, "owner@example.com", Role::Owner).await;
    let r = app
        .http
        .post(format!("{}/api/v1/identity-providers", app.url))
        .bearer_auth(&owner)
        .json(&serde_json::json!({
            "kind": "oidc", "name": "Test issuer", "issuer": app.issuer.url, "client_id": "ours",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let provider: serde_json::Value = r.json().await.unwrap();
    let start = format!(
        "{}/w/{ours}/upstream/{}",
        app.url,
        provider["id"].as_str().unwrap()
    );
    let before = app.issuer.discovery_fetches();
    let starts: Vec<_> = (0..20)
        .map(|_| {
            let start = start.clone();
            tokio::spawn(async move { browser().get(&start).send().await.unwrap() })
        })
        .collect();
    for s in starts {
        let r = s.await.unwrap();
        assert_eq!(r.status(), 303);
        assert!(location(&r).starts_with(&format!("{}/authorize?", app.issuer.url)));
    }
    assert_eq!(app.issuer.discovery_fetches() - before, 1);
}

/// A workspace whose sign-up never tells whether an address has an account (`signup: verify_first`):
/// a provider's (verified) claim of a member's address that may not be linked signs in as a member of
/// its own, like a new address does, and the address's owner is told.
async fn verify_first_provider_sign_ins_never_tell_whether_an_address_has_an_account(backend: Backend) {
    let (app, smtp) = crate::hosted_email::app_with_mail(backend, None).await;
    let ours = app.workspace(Plan::pro()).await;
    let (upstream, client_id, secret) = provider(&app, ours).await;
    let owner = app.console_token(ours, "owner@example.com", Role::Owner).await;
    crate::support::call_ok(
        &app,
        "PATCH",
        "/api/v1/workspaces",
        &owner,
        Some(serde_json::json!({"login_policy": {"password_policy": "nist", "mfa_required": "off", "signup": "verify_first"}})),
        200,
    )
    .await;
    let created = crate::support::call_ok(
        &app,
        "POST",
        "/api/v1/identity-providers",
        &owner,
        Some(serde_json::json!({
            "kind": "oidc", "name": "Upstream", "issuer": format!("{}/w/{upstream}", app.url),
            "client_id": client_id, "client_secret": secret,
        })),
        201,
    )
    .await;
    let start = format!("/w/{ours}/upstream/{}", created["id"].as_str().unwrap());
    // Nora is an ADMIN here (never joined through a provider's e-mail claim); Oscar is new here. The
    // provider verified both addresses.
    let nora_here = sign_up(&app, ours, "nora@example.com").await;
    app.services()
        .stores
        .passwords
        .set_email_verified(ours, nora_here.id)
        .await
        .unwrap();
    call(
        &app,
        "PUT",
        &format!("/api/v1/users/{}/role", nora_here.id),
        &owner,
        Some(serde_json::json!({"role": "admin"})),
    )
    .await;
    for email in ["nora@example.com", "oscar@example.com"] {
        let there = sign_up(&app, upstream, email).await;
        app.services()
            .stores
            .passwords
            .set_email_verified(upstream, there.id)
            .await
            .unwrap();
    }
    let mails_before = smtp.messages().len();
    let mut answers = Vec::new();
    for email in ["nora@example.com", "oscar@example.com"] {
        let (b, login) = start_at_provider(&app, &start).await;
        let r = provider_password(&app, &b, login, email).await;
        let status = r.status().as_u16();
        let html = r.text().await.unwrap();
        answers.push((status, html.contains("You are signed in")));
    }
    assert_eq!(
        answers,
        vec![(200, true), (200, true)],
        "the same answer for a taken and a new address"
    );
    // Nora's account kept its address and role; the provider identity became a member of its own; Nora
    // was told.
    let keys = app.services().keys.workspace_keys(ours, false).await.unwrap();
    let nora = app
        .services()
        .stores
        .users
        .find_user_by_email(
            ours,
            &secureflows_core::auth::callback::email_index(
                &keys,
                &secureflows_core::EmailAddress::parse("nora@example.com").unwrap(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((nora.id, nora.role), (nora_here.id, Role::Admin));
    let notice = smtp.wait_for(mails_before + 1).await;
    assert!(
        notice
            .iter()
            .any(|m| m.to.iter().any(|t| t == "nora@example.com") && m.text().contains("separate account"))
    );
}
