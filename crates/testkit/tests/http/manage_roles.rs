//! The management API's access table: every endpoint × every kind of caller → the expected status, on
//! both backends, with fresh targets for every call so that one caller's change never decides another's
//! result.

use std::time::Duration;

use secureflows_core::auth::token::TokenKind;
use secureflows_core::{Clock, Plan, Role, SessionId, UserId, WorkspaceId};
use secureflows_testkit::{Backend, TestApp, backend_tests};

use crate::support::jwt_claims;

backend_tests!(every_endpoint_for_every_caller);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Owner,
    Admin,
    User,
    Support,
    SessionJwt,
    AnonSession,
    OtherOwner,
    NoToken,
    Expired,
}

const CALLERS: [Caller; 9] = [
    Caller::Owner,
    Caller::Admin,
    Caller::User,
    Caller::Support,
    Caller::SessionJwt,
    Caller::AnonSession,
    Caller::OtherOwner,
    Caller::NoToken,
    Caller::Expired,
];

/// Fresh things of workspace A for one call to act on.
struct Targets {
    application: String,
    user: String,
    invite: String,
}

struct Endpoint {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    /// Success status for OWNER and ADMIN.
    ok: u16,
    /// Whether SUPPORT may call it (metadata and audit reads).
    support: bool,
    /// OWNER only (ADMIN gets 403).
    owner_only: bool,
    /// Whether it acts on the caller's own workspace as a whole (another workspace's OWNER then gets
    /// `ok` for their own workspace) rather than on a named resource of workspace A (404 for them).
    collection: bool,
}

const fn ep(method: &'static str, path: &'static str, body: Option<&'static str>, ok: u16) -> Endpoint {
    Endpoint {
        method,
        path,
        body,
        ok,
        support: false,
        owner_only: false,
        collection: false,
    }
}

const fn owner(mut e: Endpoint) -> Endpoint {
    e.owner_only = true;
    e
}

const fn read(mut e: Endpoint) -> Endpoint {
    e.support = true;
    e
}

const fn whole(mut e: Endpoint) -> Endpoint {
    e.collection = true;
    e
}

const ENDPOINTS: &[Endpoint] = &[
    owner(whole(ep(
        "POST",
        "/api/v1/workspaces",
        Some(r#"{"name":"Another"}"#),
        201,
    ))),
    whole(read(ep("GET", "/api/v1/workspaces", None, 200))),
    whole(ep(
        "PATCH",
        "/api/v1/workspaces",
        Some(r#"{"name":"Renamed"}"#),
        200,
    )),
    whole(ep(
        "POST",
        "/api/v1/applications",
        Some(r#"{"name":"New app","allowed_origins":["https://a.example"]}"#),
        201,
    )),
    whole(read(ep("GET", "/api/v1/applications", None, 200))),
    read(ep("GET", "/api/v1/applications/{app}", None, 200)),
    ep(
        "PATCH",
        "/api/v1/applications/{app}",
        Some(r#"{"name":"Changed"}"#),
        200,
    ),
    ep("DELETE", "/api/v1/applications/{app}", None, 204),
    ep("POST", "/api/v1/applications/{app}/secret", None, 200),
    whole(ep(
        "POST",
        "/api/v1/invites",
        Some(r#"{"email":"new@example.com","role":"user"}"#),
        201,
    )),
    whole(ep("GET", "/api/v1/invites", None, 200)),
    ep("DELETE", "/api/v1/invites/{invite}", None, 200),
    whole(ep("GET", "/api/v1/users", None, 200)),
    ep("GET", "/api/v1/users/{user}", None, 200),
    ep(
        "PUT",
        "/api/v1/users/{user}/role",
        Some(r#"{"role":"admin"}"#),
        200,
    ),
    ep("POST", "/api/v1/users/{user}/lock", None, 200),
    ep("POST", "/api/v1/users/{user}/unlock", None, 200),
    ep("POST", "/api/v1/users/{user}/revoke", None, 204),
    ep("DELETE", "/api/v1/users/{user}", None, 204),
    ep("GET", "/api/v1/users/{user}/sessions", None, 200),
    ep("GET", "/api/v1/users/{user}/sessions/{app}/profile", None, 200),
    whole(read(ep("GET", "/api/v1/audit/events", None, 200))),
    whole(read(ep(
        "GET",
        "/api/v1/audit/events/export?format=csv",
        None,
        200,
    ))),
    whole(read(ep("GET", "/api/v1/audit/api-access", None, 200))),
];

fn expected(e: &Endpoint, caller: Caller) -> u16 {
    match caller {
        Caller::Admin if e.owner_only => 403,
        Caller::Owner | Caller::Admin => e.ok,
        Caller::Support if e.support => e.ok,
        Caller::User | Caller::Support => 403,
        Caller::SessionJwt | Caller::AnonSession => 403,
        Caller::OtherOwner if e.collection => e.ok,
        Caller::OtherOwner => 404,
        Caller::NoToken => 401,
        Caller::Expired => 410,
    }
}

async fn targets(app: &TestApp, ws: WorkspaceId, n: usize) -> Targets {
    let application = app.application(ws, &format!("aud-{n}")).await;
    let session = app.sign_in(&application, &format!("end-user-{n}")).await;
    session.set("profile", "text/plain", "hello").await.unwrap();
    let user = jwt_claims(session.token())["sub"].as_str().unwrap().to_owned();
    let owner = app.console_token(ws, "owner@a.example", Role::Owner).await;
    let invite: serde_json::Value = app
        .http
        .post(format!("{}/api/v1/invites", app.url))
        .bearer_auth(&owner)
        .json(&serde_json::json!({"email": format!("invitee-{n}@example.com"), "role": "user"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Targets {
        application: application.id.to_string(),
        user,
        invite: invite["invite"]["id"].as_str().unwrap().to_owned(),
    }
}

async fn every_endpoint_for_every_caller(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.workspace(Plan::pro()).await;
    let b = app.workspace(Plan::pro()).await;
    let end_users = app.application(a, "end-users").await;
    let session_jwt = app.sign_in(&end_users, "someone").await.token().to_owned();
    let claims = jwt_claims(&session_jwt);
    let anon_session = app
        .services()
        .tokens
        .issue(
            TokenKind::Session,
            end_users.id.to_string(),
            a,
            claims["sub"].as_str().unwrap().parse::<UserId>().unwrap(),
            claims["sid"].as_str().unwrap().parse::<SessionId>().unwrap(),
            Role::Anon,
            1,
            Duration::from_secs(900),
            app.clock.now(),
            None,
        )
        .unwrap()
        .token;

    let mut n = 0;
    let mut failures = Vec::new();
    for e in ENDPOINTS {
        for caller in CALLERS {
            n += 1;
            let t = targets(&app, a, n).await;
            // Tokens are minted per call: some calls (role changes, locks) end the caller's own tokens.
            let token = match caller {
                Caller::Owner => Some(app.console_token(a, "owner@a.example", Role::Owner).await),
                Caller::Admin => Some(app.console_token(a, "admin@a.example", Role::Admin).await),
                Caller::User => Some(app.console_token(a, "user@a.example", Role::User).await),
                Caller::Support => Some(app.support_token(a, "support@ops.example").await),
                Caller::SessionJwt => Some(session_jwt.clone()),
                Caller::AnonSession => Some(anon_session.clone()),
                Caller::OtherOwner => Some(app.console_token(b, "owner@b.example", Role::Owner).await),
                Caller::NoToken => None,
                Caller::Expired => {
                    let token = app.console_token(a, "late@a.example", Role::Admin).await;
                    app.advance(Duration::from_secs(16 * 60));
                    Some(token)
                }
            };
            let path = e
                .path
                .replace("{app}", &t.application)
                .replace("{user}", &t.user)
                .replace("{invite}", &t.invite);
            let method = reqwest::Method::from_bytes(e.method.as_bytes()).unwrap();
            let mut request = app.http.request(method, format!("{}{path}", app.url));
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = e.body {
                request = request.header("content-type", "application/json").body(body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let want = expected(e, caller);
            if status >= 400 {
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                assert_eq!(
                    content_type, "application/problem+json",
                    "{} {path} as {caller:?}",
                    e.method
                );
            }
            if status != want {
                let body = response.text().await.unwrap_or_default();
                failures.push(format!(
                    "{} {} as {caller:?}: {status}, expected {want}: {body}",
                    e.method, e.path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
