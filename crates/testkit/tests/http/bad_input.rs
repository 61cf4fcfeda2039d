//! Bad input over the wire: key names outside the grammar (including spellings HTTP clients would
//! normalise), invalid UTF-8, oversized bodies declared or chunked, unknown routes and methods.

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::support::{assert_problem, chunked, raw_request};

backend_tests!(
    key_names_outside_the_grammar_are_400_and_store_nothing,
    a_50_mb_body_is_refused_before_it_is_read,
    chunked_bodies_over_the_limit_are_413,
    unknown_routes_and_methods_are_problems,
    json_bodies_must_be_objects_of_the_right_shape,
    validation_errors_say_what_is_wrong_in_the_apis_words,
    two_authorization_headers_are_refused,
    unknown_query_parameters_are_refused_everywhere,
);

async fn json_bodies_must_be_objects_of_the_right_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app
        .console_token(ws, "owner@x.example", secureflows_core::Role::Owner)
        .await;
    let application = app.application(ws, "web").await;
    let path = format!("{}/api/v1/applications/{}", app.url, application.id);
    for (body, status, slug) in [
        ("[null, null]", 422, "validation-failed"),
        ("null", 422, "validation-failed"),
        ("\"name\"", 422, "validation-failed"),
        ("{\"name\": 5}", 422, "validation-failed"),
        ("{\"name\": \"x\", \"evil\": 1}", 422, "validation-failed"),
        ("{\"name\": ", 400, "malformed-request"),
        ("{\"name\": \"x\"} {}", 400, "malformed-request"),
    ] {
        let response = app
            .http
            .patch(&path)
            .bearer_auth(&owner)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, status, slug).await;
    }
    let response = app
        .http
        .patch(&path)
        .bearer_auth(&owner)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported-media-type").await;
    // Nothing changed.
    let read = app
        .http
        .get(&path)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(read["name"], "App web");
}

async fn key_names_outside_the_grammar_are_400_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let victim = app.sign_in(&application, "victim").await;
    victim.set("k", "text/plain", "victim's").await.unwrap();
    let auth = format!("authorization: Bearer {}", session.token());
    let long = "k".repeat(10_000);
    let bad_keys = [
        "..",
        "%2e%2e",
        ".",
        "%2E",
        "a%2Fb",
        "%2Fabs",
        "..%2Fk",
        "..%5Ck",
        "%00",
        "a%00b",
        "%FF",
        "%C3%28",
        "%E2%80%AE",
        "a%20b",
        "%F0%9F%98%80",
        "-x",
        long.as_str(),
    ];
    for key in bad_keys {
        for (method, route) in [("POST", "set"), ("GET", "get"), ("DELETE", "delete")] {
            let head = format!(
                "{method} /api/v1/sessions/{route}/{key} HTTP/1.1\nhost: x\n{auth}\ncontent-length: 5"
            );
            let response = raw_request(&app.url, &head, b"value").await;
            assert_eq!(response.status, 400, "{method} {key}: {response:?}");
            assert_eq!(response.problem().slug(), "malformed-request");
        }
    }
    // Paths that leave the route are not routes at all.
    for path in [
        "/api/v1/sessions/get/../get/k",
        "/api/v1/sessions/get/a/b",
        "/api/v1/sessions/get/",
    ] {
        let response = raw_request(&app.url, &format!("GET {path} HTTP/1.1\nhost: x\n{auth}"), b"").await;
        assert!(
            matches!(response.status, 400 | 404),
            "{path}: {}",
            response.status
        );
        assert_eq!(response.header("content-type"), Some("application/problem+json"));
    }
    assert!(
        session.list().await.unwrap().keys.is_empty(),
        "nothing was stored"
    );
    assert_eq!(&victim.get("k").await.unwrap().bytes[..], b"victim's");
}

async fn a_50_mb_body_is_refused_before_it_is_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let auth = format!("authorization: Bearer {}", session.token());
    // Only 1 KiB of the declared 50 MB is ever sent: the answer must not wait for the rest.
    let head = format!("POST /api/v1/sessions/set/big HTTP/1.1\nhost: x\n{auth}\ncontent-length: 52428800");
    let started = std::time::Instant::now();
    let response = raw_request(&app.url, &head, &[b'x'; 1024]).await;
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.problem().slug(), "request-too-large");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Content-Length 10^12 with a tiny body, on the public callback.
    let head = "POST /api/v1/auth/callback HTTP/1.1\nhost: x\ncontent-type: application/json\ncontent-length: 1000000000000";
    let response = raw_request(&app.url, head, b"{}").await;
    assert_eq!(response.status, 413);
    // A real 50 MB upload through an HTTP client gets 413 as well.
    let body = vec![b'x'; 50 * 1024 * 1024];
    let result = app
        .http
        .post(format!("{}/api/v1/sessions/set/big", app.url))
        .bearer_auth(session.token())
        .body(body)
        .send()
        .await;
    if let Ok(response) = result {
        assert_problem(response, 413, "request-too-large").await;
    }
    assert_eq!(session.get("big").await.unwrap_err().status(), Some(404));
}

async fn chunked_bodies_over_the_limit_are_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::free()).await; // 64 KiB values
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let auth = format!("authorization: Bearer {}", session.token());
    let chunk = vec![b'x'; 16 * 1024];
    let body = chunked(&[&chunk[..]; 5]);
    let head =
        format!("POST /api/v1/sessions/set/chunky HTTP/1.1\nhost: x\n{auth}\ntransfer-encoding: chunked");
    let response = raw_request(&app.url, &head, &body).await;
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.problem().slug(), "value-too-large");
    // Four chunks (exactly 64 KiB) fit.
    let body = chunked(&[&chunk[..]; 4]);
    let response = raw_request(&app.url, &head, &body).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(session.get("chunky").await.unwrap().bytes.len(), 64 * 1024);
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_problem(
        app.http.get(format!("{}/nope", app.url)).send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    assert_problem(
        app.http
            .get(format!("{}/api/v1/sessions/set/k", app.url))
            .send()
            .await
            .unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    assert_problem(
        app.http
            .put(format!("{}/api/v1/sessions", app.url))
            .send()
            .await
            .unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    let response = raw_request(&app.url, "TRACE /api/v1/sessions HTTP/1.1\nhost: x", b"").await;
    assert_eq!(response.status, 405);
    let response = raw_request(&app.url, "BREW /healthz HTTP/1.1\nhost: x", b"").await;
    assert_eq!(response.status, 405);
    assert_problem(
        app.http
            .get(format!("{}/api/v1/auth/callback", app.url))
            .send()
            .await
            .unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
}

async fn validation_errors_say_what_is_wrong_in_the_apis_words(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app
        .console_token(ws, "owner@x.example", secureflows_core::Role::Owner)
        .await;
    for (method, path, body, field, message) in [
        (
            "POST",
            "/api/v1/invites",
            r#"{"email": "a@b.example", "role": "user", "expires_in": "soon"}"#,
            "expires_in",
            "must be a whole number, 0 or more",
        ),
        (
            "POST",
            "/api/v1/invites",
            r#"{"email": "a@b.example", "role": "user", "expires_in": -5}"#,
            "expires_in",
            "must be a whole number, 0 or more",
        ),
        (
            "POST",
            "/api/v1/invites",
            r#"{"email": 7, "role": "user"}"#,
            "email",
            "must be a string",
        ),
        (
            "POST",
            "/api/v1/invites",
            r#"{"role": "user"}"#,
            "email",
            "is required",
        ),
        (
            "POST",
            "/api/v1/invites",
            r#"{"email": "a@b.example", "role": "user", "evil": 1}"#,
            "evil",
            "is not a field of this request",
        ),
        (
            "PATCH",
            "/api/v1/workspaces",
            r#"{"branding": {"color": 5}}"#,
            "branding.color",
            "must be a string",
        ),
        (
            "PATCH",
            "/api/v1/workspaces",
            r#"{"branding": []}"#,
            "branding",
            "must be an object",
        ),
    ] {
        let response = crate::support::call(
            &app,
            method,
            path,
            &owner,
            Some(serde_json::from_str(body).unwrap()),
        )
        .await;
        let problem = assert_problem(response, 422, "validation-failed").await;
        let text = serde_json::to_string(&problem).unwrap();
        assert_eq!(problem.errors.len(), 1, "{text}");
        assert_eq!(
            (
                problem.errors[0].field.as_str(),
                problem.errors[0].message.as_str()
            ),
            (field, message),
            "{body}"
        );
        for parser_words in ["expected", "u64", "invalid type", "struct ", "soon"] {
            assert!(!text.contains(parser_words), "{parser_words} in {text}");
        }
    }
}

async fn two_authorization_headers_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let owner = app
        .console_token(ws, "owner@x.example", secureflows_core::Role::Owner)
        .await;
    let host = app.url.trim_start_matches("http://").to_owned();
    for (path, first) in [
        ("/api/v1/sessions", session.token()),
        ("/api/v1/users/me", owner.as_str()),
    ] {
        for second in [first, "garbage"] {
            let response = raw_request(
                &app.url,
                &format!("GET {path} HTTP/1.1\nhost: {host}\nauthorization: Bearer {first}\nauthorization: Bearer {second}"),
                b"",
            )
            .await;
            assert_eq!(response.status, 400, "{path}");
            assert_eq!(response.problem().slug(), "malformed-request");
        }
        // One header works.
        let response = raw_request(
            &app.url,
            &format!("GET {path} HTTP/1.1\nhost: {host}\nauthorization: Bearer {first}"),
            b"",
        )
        .await;
        assert_eq!(response.status, 200, "{path}");
    }
}

async fn unknown_query_parameters_are_refused_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let owner = app
        .console_token(ws, "owner@x.example", secureflows_core::Role::Owner)
        .await;
    for (path, token) in [
        ("/api/v1/workspaces?foo=bar", owner.as_str()),
        ("/api/v1/users/me?x=1", owner.as_str()),
        ("/api/v1/users?foo=bar", owner.as_str()),
        ("/api/v1/audit/events?foo=bar", owner.as_str()),
        ("/api/v1/sessions?page=2", session.token()),
        ("/healthz?verbose=1", ""),
    ] {
        let response = crate::support::get_with(&app, path, token).await;
        assert_problem(response, 400, "malformed-request").await;
    }
    // Declared parameters are accepted.
    for path in [
        "/api/v1/users?limit=5",
        "/api/v1/audit/events?action=user.&limit=2",
    ] {
        let response = crate::support::get_with(&app, path, &owner).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}
