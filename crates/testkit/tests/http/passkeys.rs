//! Passkeys over HTTP, without an authenticator: what the pages offer, the ceremony options, and every
//! way a forged or replayed answer is refused. (The real ceremonies run in Chromium: `browser.rs`.)

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{browser, csrf_of};

backend_tests!(
    passkeys_are_not_offered_under_an_ip_address,
    passkeys_are_offered_under_a_domain_name,
    forged_and_replayed_passkey_answers_are_refused,
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
    let ws = app.workspace(Plan::Pro).await.to_string();
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
    let ws = app.workspace(Plan::Pro).await.to_string();
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
    let ws = app.workspace(Plan::Pro).await.to_string();
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
