//! Passkeys over HTTP, without an authenticator: what the pages offer, the ceremony options, and every
//! way a forged or replayed answer is refused. (The real ceremonies run in Chromium: `browser.rs`.)

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{PASSWORD, browser, csrf_of, location};

backend_tests!(
    passkeys_are_not_offered_under_an_ip_address,
    passkeys_are_offered_under_a_domain_name,
    forged_and_replayed_passkey_answers_are_refused,
    a_passkey_cannot_be_skipped_or_changed_by_a_stale_session,
);

async fn page(b: &reqwest::Client, url: &str) -> String {
    b.get(url).send().await.unwrap().text().await.unwrap()
}

async fn options(
    b: &reqwest::Client,
    app: &TestApp,
    ws: &str,
    csrf: &str,
    purpose: &str,
) -> reqwest::Response {
    b.post(format!("{}/w/{ws}/passkey/options", app.url))
        .form(&[("csrf", csrf), ("purpose", purpose)])
        .send()
        .await
        .unwrap()
}

async fn passkeys_are_not_offered_under_an_ip_address(backend: Backend) {
    // Under an IP address (WebAuthn refuses those as relying-party ids): no passkey button, no options.
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await.to_string();
    let b = browser();
    let login = page(&b, &format!("{}/w/{ws}/login", app.url)).await;
    assert!(!login.contains("passkey-sign-in"));
    let r = options(&b, &app, &ws, &csrf_of(&login), "sign_in").await;
    assert_eq!(r.status(), 404);
    app.stop().await;
}

async fn passkeys_are_offered_under_a_domain_name(backend: Backend) {
    // Under a name: the button (hidden until the script finds WebAuthn) and discoverable-credential
    // options for this host that require user verification.
    let app = TestApp::spawn_with(backend, TestOptions::default().localhost()).await;
    let ws = app.workspace(Plan::pro()).await.to_string();
    let b = browser();
    let login = page(&b, &format!("{}/w/{ws}/login", app.url)).await;
    assert!(login.contains(r#"id="passkey-sign-in""#));
    assert!(login.contains(r#"<script src="/assets/passkey.js" defer></script>"#));
    let r = options(&b, &app, &ws, &csrf_of(&login), "sign_in").await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("sf_webauthn=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["publicKey"]["rpId"], "localhost");
    assert_eq!(json["publicKey"]["userVerification"], "required");
    assert!(
        json["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    let script = reqwest::get(format!("{}/assets/passkey.js", app.url))
        .await
        .unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    app.stop().await;
}

async fn forged_and_replayed_passkey_answers_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, TestOptions::default().localhost()).await;
    let ws = app.workspace(Plan::pro()).await.to_string();
    let b = browser();
    let login = page(&b, &format!("{}/w/{ws}/login", app.url)).await;
    let csrf = csrf_of(&login);

    // No CSRF token, another purpose, or a step that needs a signed-in or pending browser: refused.
    assert_eq!(options(&b, &app, &ws, "forged", "sign_in").await.status(), 403);
    assert_eq!(options(&b, &app, &ws, &csrf, "everything").await.status(), 400);
    let r = options(&b, &app, &ws, &csrf, "register").await;
    assert_eq!(r.status(), 401);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    assert_eq!(options(&b, &app, &ws, &csrf, "second_factor").await.status(), 400);

    // A forged assertion: refused with the sign-in page, and the ceremony is spent.
    assert_eq!(options(&b, &app, &ws, &csrf, "sign_in").await.status(), 200);
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let forged = serde_json::json!({
        "id": b64(&[7; 16]),
        "rawId": b64(&[7; 16]),
        "type": "public-key",
        "response": {
            "authenticatorData": b64(&[0; 37]),
            "clientDataJSON": b64(br#"{"type":"webauthn.get","challenge":"AAAA","origin":"http://localhost"}"#),
            "signature": b64(&[1; 64]),
            "userHandle": b64(uuid::Uuid::new_v4().as_bytes()),
        }
    })
    .to_string();
    for attempt in 0..2 {
        let r = b
            .post(format!("{}/w/{ws}/passkey/sign-in", app.url))
            .form(&[("csrf", csrf.as_str()), ("credential", forged.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {attempt}");
        assert!(r.headers().get("location").is_none());
        let set_cookies: Vec<_> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(
            !set_cookies
                .iter()
                .any(|c| c.starts_with("sf_sso=") && !c.starts_with("sf_sso=;"))
        );
        assert!(r.text().await.unwrap().contains("could not sign you in"));
    }
    // Garbage in the credential field, and no credential at all.
    let r = b
        .post(format!("{}/w/{ws}/passkey/sign-in", app.url))
        .form(&[("csrf", csrf.as_str()), ("credential", "{not json")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = b
        .post(format!("{}/w/{ws}/passkey/sign-in", app.url))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Removing a passkey needs a signed-in browser.
    let r = b
        .post(format!("{}/w/{ws}/account/passkeys/remove", app.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("passkey", &uuid::Uuid::new_v4().to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    app.stop().await;
}

async fn a_passkey_cannot_be_skipped_or_changed_by_a_stale_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, TestOptions::default().localhost()).await;
    let ws = app.workspace(Plan::pro()).await;
    let actor = secureflows_core::audit::Actor::operator();
    let (user, _) = app
        .services()
        .sign_up(
            ws,
            secureflows_core::login::hosted::SignUp {
                email: "kai@example.com".into(),
                password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                name: None,
            },
            None,
            &actor,
        )
        .await
        .unwrap();
    // Kai has a passkey (as stored; no authenticator is needed to be asked for one).
    let passkey = secureflows_core::PasskeyRecord {
        id: secureflows_core::PasskeyId::new(),
        workspace_id: ws,
        user_id: user.id,
        credential_hash: vec![5; 32],
        sealed: vec![0; 48],
        created_at: app.services().clock.now(),
        last_used_at: None,
    };
    assert!(
        app.services()
            .stores
            .factors
            .insert_passkey(&passkey)
            .await
            .unwrap()
    );

    // The password leads to the second step, which asks for the passkey (or a recovery code).
    let b = browser();
    let login = page(&b, &format!("{}/w/{ws}/login", app.url)).await;
    let r = b
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&login).as_str()),
            ("email", "kai@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/w/{ws}/mfa"));
    let mfa = page(&b, &format!("{}/w/{ws}/mfa", app.url)).await;
    assert!(mfa.contains(r#"id="passkey-verify""#));
    assert!(mfa.contains("A recovery code"));
    // Enrolling a new factor instead (the page for users the workspace requires one of) is refused:
    // it would skip the passkey.
    let r = b
        .get(format!("{}/w/{ws}/mfa/setup", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = b
        .post(format!("{}/w/{ws}/mfa/setup", app.url))
        .form(&[("csrf", csrf_of(&mfa).as_str()), ("code", "123456")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("sf_sso="))
    );

    // A signed-in browser whose sign-in is older than 15 minutes may not add or remove passkeys.
    app.services()
        .stores
        .factors
        .delete_passkey(ws, user.id, passkey.id)
        .await
        .unwrap();
    let b = browser();
    let login = page(&b, &format!("{}/w/{ws}/login", app.url)).await;
    let r = b
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&login).as_str()),
            ("email", "kai@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed in");
    let account = page(&b, &format!("{}/w/{ws}/account", app.url)).await;
    let csrf = csrf_of(&account);
    assert_eq!(
        options(&b, &app, &ws.to_string(), &csrf, "register")
            .await
            .status(),
        200
    );
    app.advance(std::time::Duration::from_secs(16 * 60));
    let r = options(&b, &app, &ws.to_string(), &csrf, "register").await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("sign in again"));
    let r = b
        .post(format!("{}/w/{ws}/account/passkeys/remove", app.url))
        .form(&[("csrf", csrf.as_str()), ("passkey", &passkey.id.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("sign in again"));
    app.stop().await;
}
