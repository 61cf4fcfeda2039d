//! Every management change writes its audit event, with the actor, the request's client address and
//! user agent, and the right old and new values — and no secret or e-mail address among them.

use secureflows_core::{Plan, Role};
use secureflows_testkit::{Backend, TestApp, backend_tests};
use serde_json::{Value, json};

use crate::support::{call_ok, jwt_claims};

backend_tests!(each_change_is_audited_with_old_and_new_values);

/// The newest event with this action on this resource.
async fn event(app: &TestApp, token: &str, action: &str, resource: &str) -> Value {
    let page = call_ok(
        app,
        "GET",
        &format!("/api/v1/audit/events?action={action}&resource={resource}&limit=1"),
        token,
        None,
        200,
    )
    .await;
    let e = page["items"][0].clone();
    assert_eq!(e["action"], action, "no {action} event on {resource}");
    e
}

async fn each_change_is_audited_with_old_and_new_values(backend: Backend) {
    // Not on loopback and no SMTP: nothing is mailed, and the invitation link is returned.
    let options = secureflows_testkit::TestOptions {
        configure: std::sync::Arc::new(|c| c.server.public_url = Some("https://id.x.example".into())),
        ..Default::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    let owner_id = jwt_claims(&owner)["sub"].as_str().unwrap().to_owned();
    let member = app.console_token(ws, "member@x.example", Role::User).await;
    let member_id = jwt_claims(&member)["sub"].as_str().unwrap().to_owned();
    let ua = "audit-test-agent/1.0";
    let send = |method: &'static str, path: String, body: Option<Value>| {
        let app = &app;
        let owner = owner.clone();
        async move {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut r = app
                .http
                .request(m, format!("{}{path}", app.url))
                .bearer_auth(owner)
                .header("user-agent", ua);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let response = r.send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{method} {path}: {}",
                response.status()
            );
            response.json::<Value>().await.unwrap_or(Value::Null)
        }
    };

    // Workspace rename.
    send(
        "PATCH",
        "/api/v1/workspaces".into(),
        Some(json!({"name": "Tuff Flips"})),
    )
    .await;
    let e = event(&app, &owner, "workspace.update", &ws.to_string()).await;
    assert_eq!(e["old"], json!({"name": "Test Workspace"}));
    assert_eq!(e["new"], json!({"name": "Tuff Flips"}));
    assert_eq!(e["actor"], json!({"kind": "user", "id": owner_id}));
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["user_agent"], ua);
    assert!(e["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(e["at"].as_str().unwrap().ends_with('Z'), "UTC");

    // Applications: create, update, secret rotation, delete.
    let created = send(
        "POST",
        "/api/v1/applications".into(),
        Some(json!({"name": "Web", "allowed_origins": ["https://a.example"]})),
    )
    .await;
    let app_id = created["application"]["id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let e = event(&app, &owner, "application.create", &app_id).await;
    assert!(e["old"].is_null());
    assert_eq!(e["new"]["name"], "Web");
    assert_eq!(e["new"]["allowed_origins"], json!(["https://a.example"]));
    send(
        "PATCH",
        format!("/api/v1/applications/{app_id}"),
        Some(json!({"token_ttl": 600})),
    )
    .await;
    let e = event(&app, &owner, "application.update", &app_id).await;
    assert_eq!(e["old"]["token_ttl"], 900);
    assert_eq!(e["new"]["token_ttl"], 600);
    let rotated = send("POST", format!("/api/v1/applications/{app_id}/secret"), None).await;
    let e = event(&app, &owner, "application.secret.rotate", &app_id).await;
    assert_eq!(e["new"], json!({"client_secret": "[redacted]"}));
    send("DELETE", format!("/api/v1/applications/{app_id}"), None).await;
    let e = event(&app, &owner, "application.delete", &app_id).await;
    assert_eq!(e["old"]["name"], "Web");
    assert!(e["new"].is_null());

    // Members: role, lock, unlock, end sessions, delete.
    send(
        "PUT",
        format!("/api/v1/users/{member_id}/role"),
        Some(json!({"role": "admin"})),
    )
    .await;
    let e = event(&app, &owner, "user.role.change", &member_id).await;
    assert_eq!(
        (e["old"]["role"].clone(), e["new"]["role"].clone()),
        (json!("user"), json!("admin"))
    );
    send("POST", format!("/api/v1/users/{member_id}/lock"), None).await;
    let e = event(&app, &owner, "user.lock", &member_id).await;
    assert_eq!(
        (e["old"]["status"].clone(), e["new"]["status"].clone()),
        (json!("active"), json!("locked"))
    );
    send("POST", format!("/api/v1/users/{member_id}/unlock"), None).await;
    let e = event(&app, &owner, "user.unlock", &member_id).await;
    assert_eq!(
        (e["old"]["status"].clone(), e["new"]["status"].clone()),
        (json!("locked"), json!("active"))
    );
    send("POST", format!("/api/v1/users/{member_id}/revoke"), None).await;
    let e = event(&app, &owner, "user.sessions.revoke", &member_id).await;
    assert!(e["new"]["revision"].as_i64().unwrap() > e["old"]["revision"].as_i64().unwrap());
    send("DELETE", format!("/api/v1/users/{member_id}"), None).await;
    let e = event(&app, &owner, "user.delete", &member_id).await;
    assert_eq!(e["old"], json!({"role": "admin"}));

    // Invitations.
    let invite = send(
        "POST",
        "/api/v1/invites".into(),
        Some(json!({"email": "someone@x.example", "role": "user"})),
    )
    .await;
    let invite_id = invite["invite"]["id"].as_str().unwrap().to_owned();
    let invite_url = invite["invite_url"].as_str().unwrap().to_owned();
    let e = event(&app, &owner, "invite.create", &invite_id).await;
    assert_eq!(e["new"]["role"], "user");
    send("DELETE", format!("/api/v1/invites/{invite_id}"), None).await;
    let e = event(&app, &owner, "invite.revoke", &invite_id).await;
    assert_eq!(
        (e["old"]["state"].clone(), e["new"]["state"].clone()),
        (json!("pending"), json!("revoked"))
    );

    // Nothing secret or personal in any event.
    let all = call_ok(&app, "GET", "/api/v1/audit/events?limit=200", &owner, None, 200)
        .await
        .to_string();
    let token_in_link = invite_url.split("token=").nth(1).unwrap();
    for needle in [
        secret.as_str(),
        rotated["client_secret"].as_str().unwrap(),
        token_in_link,
        "someone@x.example",
        "member@x.example",
        "owner@x.example",
        owner.as_str(),
    ] {
        assert!(
            !all.contains(needle),
            "an audit event holds a secret or an e-mail address"
        );
    }
}
