//! Security headers on every response, CORS per application, the Host allow-list, and the public
//! well-known documents.

use std::sync::Arc;

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::support::{assert_problem, get_json, raw_request};

backend_tests!(
    every_response_carries_the_security_headers,
    cors_answers_only_allowed_origins,
    foreign_hosts_are_refused_when_public_hosts_are_set,
    well_known_documents_describe_the_issuer,
    health_and_readiness,
    the_issuer_answers_its_applications_origins,
);

fn check_headers(headers: &reqwest::header::HeaderMap, what: &str) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
    };
    assert!(
        get("strict-transport-security").contains("max-age=31536000"),
        "{what}"
    );
    let csp = get("content-security-policy");
    assert!(
        csp.contains("default-src") && csp.contains("frame-ancestors 'none'"),
        "{what}: {csp}"
    );
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert!(!get("x-request-id").is_empty());
    assert!(headers.get("server").is_none(), "{what}: no version banner");
}

async fn every_response_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::free()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    session.set("k", "text/plain", "v").await.unwrap();
    let url = |p: &str| format!("{}{p}", app.url);
    let responses = vec![
        (
            "200 get",
            app.http
                .get(url("/api/v1/sessions/get/k"))
                .bearer_auth(session.token())
                .send()
                .await
                .unwrap(),
        ),
        (
            "200 list",
            app.http
                .get(url("/api/v1/sessions"))
                .bearer_auth(session.token())
                .send()
                .await
                .unwrap(),
        ),
        (
            "201 set",
            app.http
                .post(url("/api/v1/sessions/set/n"))
                .bearer_auth(session.token())
                .body("x")
                .send()
                .await
                .unwrap(),
        ),
        ("401", app.http.get(url("/api/v1/sessions")).send().await.unwrap()),
        ("404", app.http.get(url("/nowhere")).send().await.unwrap()),
        (
            "405",
            app.http.patch(url("/api/v1/sessions")).send().await.unwrap(),
        ),
        (
            "413",
            app.http
                .post(url("/api/v1/sessions/set/big"))
                .bearer_auth(session.token())
                .body(vec![0u8; 70_000])
                .send()
                .await
                .unwrap(),
        ),
        (
            "415",
            app.http
                .post(url("/api/v1/auth/callback"))
                .body("x")
                .send()
                .await
                .unwrap(),
        ),
        ("200 health", app.http.get(url("/healthz")).send().await.unwrap()),
    ];
    for (what, response) in &responses {
        check_headers(response.headers(), what);
        assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
    }
    app.advance(std::time::Duration::from_secs(3600));
    let expired = app
        .http
        .get(url("/api/v1/sessions"))
        .bearer_auth(session.token())
        .send()
        .await
        .unwrap();
    check_headers(expired.headers(), "410");
    assert_problem(expired, 410, "token-expired").await;
}

async fn cors_answers_only_allowed_origins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let web = app
        .application_with(ws, "web", |a| {
            a.allowed_origins = vec!["https://app.tuffflips.com".into()]
        })
        .await;
    let _other = app
        .application_with(ws, "other", |a| {
            a.allowed_origins = vec!["https://other.example".into()]
        })
        .await;
    let session = app.sign_in(&web, "alice").await;
    let url = format!("{}/api/v1/sessions", app.url);
    let preflight = |origin: &str| {
        app.http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };

    let ok = preflight("https://app.tuffflips.com").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.tuffflips.com"
    );
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(ok.headers().get("access-control-allow-credentials").is_none());
    assert!(
        ok.headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("origin"))
    );
    for bad in [
        "https://evil.example",
        "null",
        "https://app.tuffflips.com.evil.example",
        "https://APP.tuffflips.com",
        "http://app.tuffflips.com",
    ] {
        let response = preflight(bad).await.unwrap();
        assert!(
            response.headers().get("access-control-allow-origin").is_none(),
            "{bad}"
        );
        assert_problem(response, 403, "origin-not-allowed").await;
    }

    // Actual requests: the token's own application must allow the origin.
    let get = |origin: &str| {
        app.http
            .get(&url)
            .bearer_auth(session.token())
            .header("origin", origin)
            .send()
    };
    let ok = get("https://app.tuffflips.com").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.tuffflips.com"
    );
    let response = get("https://other.example").await.unwrap();
    assert_problem(response, 403, "origin-not-allowed").await;
    let response = get("https://evil.example").await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
    assert_problem(response, 403, "origin-not-allowed").await;
    // No Origin (a server or native client): allowed.
    assert_eq!(
        app.http
            .get(&url)
            .bearer_auth(session.token())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Sign-in from a browser origin the application does not allow.
    let response = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .header("origin", "https://other.example")
        .json(&serde_json::json!({ "id_token": app.id_token(&web, "bob") }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "origin-not-allowed").await;
}

async fn foreign_hosts_are_refused_when_public_hosts_are_set(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| c.server.public_hosts = vec!["id.tuffflips.com".into()]),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ok = raw_request(&app.url, "GET /healthz HTTP/1.1\nhost: id.tuffflips.com", b"").await;
    assert_eq!(ok.status, 200);
    let ok = raw_request(&app.url, "GET /healthz HTTP/1.1\nhost: ID.TuffFlips.com", b"").await;
    assert_eq!(ok.status, 200, "host names compare case-insensitively");
    let ok = raw_request(
        &app.url,
        "GET http://id.tuffflips.com/healthz HTTP/1.1\nhost: id.tuffflips.com",
        b"",
    )
    .await;
    assert_eq!(ok.status, 200, "an absolute-form target naming the allowed host");
    for head in [
        "GET /healthz HTTP/1.1\nhost: origin.onrender.example",
        "GET /healthz HTTP/1.1\nhost: id.tuffflips.com:8443",
        "GET /healthz HTTP/1.1\nhost: id.tuffflips.com\nhost: evil.example",
        "GET http://evil.example/healthz HTTP/1.1\nhost: evil.example",
        "GET http://evil.example/healthz HTTP/1.1\nhost: id.tuffflips.com",
    ] {
        let response = raw_request(&app.url, head, b"").await;
        assert!(
            matches!(response.status, 400 | 421),
            "{head}: {}",
            response.status
        );
        if response.status == 421 {
            assert_eq!(response.problem().slug(), "misdirected-request");
            assert_eq!(response.header("x-frame-options"), Some("DENY"));
        }
    }
}

/// One issuer for session tokens: the workspace's. Its discovery document is complete (OpenID Connect
/// Discovery §3) and its `jwks_uri` serves the keys that sign them; the instance URL is no issuer.
async fn well_known_documents_describe_the_issuer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(secureflows_core::Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let claims = crate::support::jwt_claims(session.token());
    let issuer = format!("{}/w/{ws}", app.url);
    assert_eq!(claims["iss"], serde_json::json!(issuer));
    let r = app
        .http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["issuer"], serde_json::json!(issuer));
    for required in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(doc.get(required).is_some(), "{required}");
    }
    let supported = doc["claims_supported"].as_array().unwrap();
    for claim in ["azp", "at_hash", "auth_time", "sid"] {
        assert!(supported.contains(&serde_json::json!(claim)), "{claim}");
    }
    let instance = app
        .http
        .get(format!("{}/.well-known/openid-configuration", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(instance.status(), 404, "the instance URL is no issuer");
    let jwks = app
        .http
        .get(doc["jwks_uri"].as_str().unwrap())
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.headers()["content-type"], "application/jwk-set+json");
    assert_eq!(jwks.headers()["access-control-allow-origin"], "*");
    // The key set verifies the session token.
    let kid = crate::support::jwt_header(session.token())["kid"].clone();
    let jwks: serde_json::Value = jwks.json().await.unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("the token's key is published");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    use base64::Engine as _;
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key["n"].as_str().unwrap())
        .unwrap();
    assert_eq!(n.len() * 8, 3072, "RS256 keys have 3072 bits");
}

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health = get_json(&app, "/healthz").await;
    assert_eq!(health["status"], "ok");
    let ready = app.http.get(format!("{}/readyz", app.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

/// The workspace issuer's token, user-info, revocation and introspection endpoints answer CORS
/// requests and preflights from the origins its applications allow — echoed, never reflected, never
/// with credentials — and nothing to other origins or other workspaces' applications' origins.
async fn the_issuer_answers_its_applications_origins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(secureflows_core::Plan::pro()).await;
    let other = app.workspace(secureflows_core::Plan::pro()).await;
    for (workspace, origin) in [(ws, "https://spa.example"), (other, "https://other.example")] {
        app.services()
            .create_application(
                workspace,
                secureflows_core::workspace::NewApplication {
                    name: "Spa".into(),
                    kind: Some(secureflows_core::ApplicationKind::Browser),
                    redirect_uris: vec![format!("{origin}/cb")],
                    allowed_origins: vec![origin.into()],
                    ..Default::default()
                },
                &secureflows_core::audit::Actor::operator(),
            )
            .await
            .unwrap();
    }
    let issuer = format!("{}/w/{ws}", app.url);
    for endpoint in ["token", "userinfo", "revoke", "introspect"] {
        let preflight = |origin: &'static str| {
            let url = format!("{issuer}/{endpoint}");
            let http = app.http.clone();
            async move {
                http.request(reqwest::Method::OPTIONS, url)
                    .header("origin", origin)
                    .header("access-control-request-method", "POST")
                    .header("access-control-request-headers", "authorization, content-type")
                    .send()
                    .await
                    .unwrap()
            }
        };
        let r = preflight("https://spa.example").await;
        assert_eq!(r.status(), 204, "{endpoint}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://spa.example");
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("authorization")
        );
        assert!(h.get("access-control-allow-credentials").is_none());
        assert!(h["vary"].to_str().unwrap().contains("origin"));
        for refused in [
            "https://evil.example",
            "null",
            "https://spa.example.evil.example",
            "https://other.example",
        ] {
            let r = preflight(refused).await;
            assert_eq!(r.status(), 403, "{endpoint} {refused}");
            assert!(
                r.headers().get("access-control-allow-origin").is_none(),
                "{endpoint} {refused}"
            );
        }
        // The request itself carries the allowed origin back (an OAuth error here: no credentials).
        let r = app
            .http
            .post(format!("{issuer}/{endpoint}"))
            .header("origin", "https://spa.example")
            .form(&[("grant_type", "authorization_code"), ("code", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://spa.example",
            "{endpoint}"
        );
        let r = app
            .http
            .post(format!("{issuer}/{endpoint}"))
            .header("origin", "https://evil.example")
            .form(&[("grant_type", "authorization_code"), ("code", "x")])
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{endpoint}"
        );
    }
}
