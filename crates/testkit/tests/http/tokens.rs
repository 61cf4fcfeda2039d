//! Session tokens: forged, `alg: none`, HS256 with our public key, other application or workspace,
//! unknown `kid`, wrong type, time claims, malformed tokens, signing-key rotation and EdDSA.

use std::time::Duration;

use secureflows_core::auth::token::{TokenKind, console_audience};
use secureflows_core::{Plan, Role, SessionId};
use secureflows_crypto::jws::{SigningAlgorithm, SigningKey};
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};
use serde_json::json;

use crate::support::{assert_problem, b64, get_json, get_with, jwt_claims, jwt_header, server_signing_key};

backend_tests!(
    forged_and_malformed_tokens_are_401,
    alg_none_and_hmac_with_the_public_key_are_401,
    tokens_for_another_application_or_workspace_are_401,
    unknown_kid_wrong_issuer_and_wrong_type_are_401,
    user_jwt_on_the_session_api_is_403,
    time_claims_are_enforced_with_leeway,
    signing_key_rotation_keeps_old_tokens_valid,
    eddsa_tokens_work_end_to_end,
    upstream_id_token_is_not_a_session_token,
);

const SESSIONS: &str = "/api/v1/sessions";

async fn forged_and_malformed_tokens_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let token = session.token().to_owned();
    let parts: Vec<&str> = token.split('.').collect();

    let mut claims = jwt_claims(&token);
    claims["sub"] = json!(secureflows_core::UserId::new().to_string());
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]);
    let mut bad_sig = token.clone();
    bad_sig.pop();
    bad_sig.push(if token.ends_with('A') { 'B' } else { 'A' });
    let huge = format!("{}.{}.{}", b64(&vec![b'a'; 64 * 1024]), parts[1], parts[2]);
    let cases = [
        forged,
        bad_sig,
        format!("{}.{}", parts[0], parts[1]),
        format!("{token}.extra"),
        format!("{token}garbage"),
        "not-a-token".to_owned(),
        "a.b.c".to_owned(),
        format!("{}.{}.{}", parts[0], b64(b"not json"), parts[2]),
        huge,
    ];
    for bad in &cases {
        let response = get_with(&app, SESSIONS, bad).await;
        let problem = assert_problem(response, 401, "invalid-token").await;
        assert!(!problem.detail.unwrap_or_default().contains(bad.as_str()));
    }
    // Missing or non-bearer credentials.
    let response = app
        .http
        .get(format!("{}{SESSIONS}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, 401, "invalid-token").await;
    let response = app
        .http
        .get(format!("{}{SESSIONS}", app.url))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "invalid-token").await;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let response = app
        .http
        .get(format!("{}{SESSIONS}", app.url))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn alg_none_and_hmac_with_the_public_key_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let token = session.token();
    let header = jwt_header(token);
    let payload = token.split('.').nth(1).unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let mut h = header.clone();
        h["alg"] = json!(alg);
        let head = b64(h.to_string().as_bytes());
        for sig in ["", "c2lnbmF0dXJl"] {
            let response = get_with(&app, SESSIONS, &format!("{head}.{payload}.{sig}")).await;
            assert_problem(response, 401, "invalid-token").await;
        }
    }
    // HS256/384/512 keyed with our public key, in every form an attacker might try.
    let jwks = get_json(&app, "/.well-known/jwks.json").await;
    let jwk = &jwks["keys"][0];
    let secrets = [
        jwk.to_string().into_bytes(),
        jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ];
    for (alg, algorithm) in [
        ("HS256", aws_lc_rs::hmac::HMAC_SHA256),
        ("HS384", aws_lc_rs::hmac::HMAC_SHA384),
        ("HS512", aws_lc_rs::hmac::HMAC_SHA512),
    ] {
        for secret in &secrets {
            let mut h = header.clone();
            h["alg"] = json!(alg);
            let signing_input = format!("{}.{payload}", b64(h.to_string().as_bytes()));
            let tag = aws_lc_rs::hmac::sign(
                &aws_lc_rs::hmac::Key::new(algorithm, secret),
                signing_input.as_bytes(),
            );
            let response = get_with(&app, SESSIONS, &format!("{signing_input}.{}", b64(tag.as_ref()))).await;
            assert_problem(response, 401, "invalid-token").await;
        }
    }
    // The genuine token still works (nothing above poisoned a cache).
    assert_eq!(get_with(&app, SESSIONS, token).await.status(), 200);
}

async fn tokens_for_another_application_or_workspace_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws_a = app.workspace(Plan::pro()).await;
    let ws_b = app.workspace(Plan::pro()).await;
    let app_a = app.application(ws_a, "a").await;
    let app_b = app.application(ws_b, "b").await;
    let session = app.sign_in(&app_a, "alice").await;
    session.set("k", "text/plain", "a's").await.unwrap();
    let key = server_signing_key(&app).await;
    let claims = jwt_claims(session.token());

    // Validly signed, but the audience is an application of another workspace.
    let mut c = claims.clone();
    c["aud"] = json!(app_b.id.to_string());
    let response = get_with(
        &app,
        "/api/v1/sessions/get/k",
        &key.sign_jwt("sf-session+jwt", &c).unwrap(),
    )
    .await;
    assert_problem(response, 401, "invalid-token").await;
    // The workspace claim names another workspace.
    let mut c = claims.clone();
    c["ws"] = json!(ws_b.to_string());
    let response = get_with(
        &app,
        "/api/v1/sessions/get/k",
        &key.sign_jwt("sf-session+jwt", &c).unwrap(),
    )
    .await;
    assert_problem(response, 401, "invalid-token").await;
    // An application that does not exist.
    let mut c = claims.clone();
    c["aud"] = json!(secureflows_core::ApplicationId::new().to_string());
    let response = get_with(
        &app,
        "/api/v1/sessions/get/k",
        &key.sign_jwt("sf-session+jwt", &c).unwrap(),
    )
    .await;
    assert_problem(response, 401, "invalid-token").await;
    // A session id that was never issued, or belongs to someone else: revoked-session answer.
    let mut c = claims.clone();
    c["sid"] = json!(SessionId::new().to_string());
    let response = get_with(
        &app,
        "/api/v1/sessions/get/k",
        &key.sign_jwt("sf-session+jwt", &c).unwrap(),
    )
    .await;
    assert_problem(response, 401, "session-revoked").await;
    // An edited role claim does not matter to the vault, but a raised revision claim does not match.
    let mut c = claims.clone();
    c["rev"] = json!(99);
    let response = get_with(
        &app,
        "/api/v1/sessions/get/k",
        &key.sign_jwt("sf-session+jwt", &c).unwrap(),
    )
    .await;
    assert_problem(response, 401, "session-revoked").await;
    // Claims we do not issue are refused outright.
    let mut c = claims;
    c["admin"] = json!(true);
    let response = get_with(
        &app,
        "/api/v1/sessions/get/k",
        &key.sign_jwt("sf-session+jwt", &c).unwrap(),
    )
    .await;
    assert_problem(response, 401, "invalid-token").await;
}

async fn unknown_kid_wrong_issuer_and_wrong_type_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let claims = jwt_claims(session.token());

    let stranger = SigningKey::generate(SigningAlgorithm::Rs256).unwrap();
    let response = get_with(
        &app,
        SESSIONS,
        &stranger.sign_jwt("sf-session+jwt", &claims).unwrap(),
    )
    .await;
    assert_problem(response, 401, "invalid-token").await;
    // A stranger's key that claims our kid.
    let mut header = jwt_header(session.token());
    header["alg"] = json!("RS256");
    let signed = stranger.sign_jwt("sf-session+jwt", &claims).unwrap();
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    parts[0] = b64(header.to_string().as_bytes());
    let response = get_with(&app, SESSIONS, &parts.join(".")).await;
    assert_problem(response, 401, "invalid-token").await;
    // A kid that looks like a path.
    let mut h = jwt_header(session.token());
    h["kid"] = json!("../../etc/passwd");
    let t = session.token().split('.').collect::<Vec<_>>();
    let response = get_with(
        &app,
        SESSIONS,
        &format!("{}.{}.{}", b64(h.to_string().as_bytes()), t[1], t[2]),
    )
    .await;
    assert_problem(response, 401, "invalid-token").await;

    let key = server_signing_key(&app).await;
    let mut c = claims.clone();
    c["iss"] = json!("https://evil.example");
    let response = get_with(&app, SESSIONS, &key.sign_jwt("sf-session+jwt", &c).unwrap()).await;
    assert_problem(response, 401, "invalid-token").await;
    for typ in ["JWT", "at+jwt", "sf-refresh+jwt"] {
        let response = get_with(&app, SESSIONS, &key.sign_jwt(typ, &claims).unwrap()).await;
        assert_problem(response, 401, "invalid-token").await;
    }
}

async fn user_jwt_on_the_session_api_is_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let claims = jwt_claims(session.token());
    let user = claims["sub"].as_str().unwrap().parse().unwrap();
    let sid = claims["sid"].as_str().unwrap().parse().unwrap();
    let issued = app
        .services()
        .tokens
        .issue(
            TokenKind::User,
            console_audience(ws),
            ws,
            user,
            sid,
            Role::Owner,
            1,
            Duration::from_secs(900),
            {
                use secureflows_core::Clock;
                app.clock.now()
            },
            None,
        )
        .unwrap();
    let response = get_with(&app, SESSIONS, &issued.token).await;
    assert_problem(response, 403, "wrong-token-kind").await;
}

async fn time_claims_are_enforced_with_leeway(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let key = server_signing_key(&app).await;
    let claims = jwt_claims(session.token());
    let exp = claims["exp"].as_i64().unwrap();

    // Inside the 30 s leeway after exp: still accepted; past it: 410.
    app.advance(Duration::from_secs(15 * 60 + 29));
    assert_eq!(get_with(&app, SESSIONS, session.token()).await.status(), 200);
    app.advance(Duration::from_secs(2));
    assert_problem(
        get_with(&app, SESSIONS, session.token()).await,
        410,
        "token-expired",
    )
    .await;

    // Not yet valid (nbf beyond the leeway), and malformed time claims.
    let fresh = app.sign_in(&application, "bob").await;
    let claims = jwt_claims(fresh.token());
    let mut c = claims.clone();
    c["nbf"] = json!(exp + 3600);
    c["exp"] = json!(exp + 7200);
    assert_problem(
        get_with(&app, SESSIONS, &key.sign_jwt("sf-session+jwt", &c).unwrap()).await,
        401,
        "invalid-token",
    )
    .await;
    for bad in [json!("2030-01-01"), json!(1.5e10), json!(null)] {
        let mut c = claims.clone();
        c["exp"] = bad;
        assert_problem(
            get_with(&app, SESSIONS, &key.sign_jwt("sf-session+jwt", &c).unwrap()).await,
            401,
            "invalid-token",
        )
        .await;
    }
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    assert_problem(
        get_with(&app, SESSIONS, &key.sign_jwt("sf-session+jwt", &c).unwrap()).await,
        401,
        "invalid-token",
    )
    .await;
}

async fn signing_key_rotation_keeps_old_tokens_valid(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let before = app.sign_in(&application, "alice").await;
    let old_kid = jwt_header(before.token())["kid"].as_str().unwrap().to_owned();

    let new_kid = app
        .services()
        .tokens
        .rotate_signing_key({
            use secureflows_core::Clock;
            app.clock.now()
        })
        .await
        .unwrap();
    assert_ne!(old_kid, new_kid);
    let after = app.sign_in(&application, "bob").await;
    assert_eq!(jwt_header(after.token())["kid"], json!(new_kid));
    assert_eq!(get_with(&app, SESSIONS, before.token()).await.status(), 200);
    assert_eq!(get_with(&app, SESSIONS, after.token()).await.status(), 200);
    let jwks = get_json(&app, "/.well-known/jwks.json").await;
    let kids: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid));
    for k in jwks["keys"].as_array().unwrap() {
        assert!(
            k.get("d").is_none() && k.get("p").is_none(),
            "no private members in the JWKS"
        );
    }
}

async fn eddsa_tokens_work_end_to_end(backend: Backend) {
    let options = TestOptions {
        configure: std::sync::Arc::new(|c| c.keys.signing_algorithm = "eddsa".into()),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    assert_eq!(jwt_header(session.token())["alg"], json!("EdDSA"));
    session.set("k", "text/plain", "v").await.unwrap();
    let jwks = get_json(&app, "/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"][0]["kty"], json!("OKP"));
    assert_eq!(jwks["keys"][0]["crv"], json!("Ed25519"));
}

async fn upstream_id_token_is_not_a_session_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let id_token = app.id_token(&application, "alice");
    assert_problem(get_with(&app, SESSIONS, &id_token).await, 401, "invalid-token").await;
}
