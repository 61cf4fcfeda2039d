//! The management API's rules end to end: the role hierarchy and the last OWNER, changes that end
//! tokens at once, isolation between workspaces, audited admin reads, SUPPORT, invitations over a real
//! SMTP listener, pagination, and the OpenAPI description.

use std::sync::Arc;

use secureflows_core::{Plan, Role};
use secureflows_testkit::{Backend, SmtpSink, TestApp, TestOptions, backend_tests};
use serde_json::json;

use crate::support::{assert_problem, call, call_ok, jwt_claims, marker};

backend_tests!(
    the_hierarchy_holds_and_the_last_owner_stays,
    role_changes_and_locks_end_tokens_at_once,
    nothing_of_another_workspace_is_visible_or_changeable,
    applications_round_trip_and_secrets_are_shown_once,
    admin_vault_reads_are_audited_and_support_never_reads_values,
    support_reads_land_in_the_workspace_audit_log,
    invitations_are_mailed_single_use_and_revocable,
    lists_page_with_opaque_cursors,
    the_openapi_description_lists_every_route,
);

async fn user_id(app: &TestApp, token: &str) -> String {
    let _ = app;
    jwt_claims(token)["sub"].as_str().unwrap().to_owned()
}

async fn the_hierarchy_holds_and_the_last_owner_stays(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    let owner_id = user_id(&app, &owner).await;
    let admin = app.console_token(ws, "admin@x.example", Role::Admin).await;
    let member = app.console_token(ws, "member@x.example", Role::User).await;
    let member_id = user_id(&app, &member).await;

    // An ADMIN cannot create, promote or touch an OWNER.
    let r = call(
        &app,
        "POST",
        "/api/v1/invites",
        &admin,
        Some(json!({"email": "o2@x.example", "role": "owner"})),
    )
    .await;
    assert_problem(r, 403, "forbidden").await;
    let r = call(
        &app,
        "PUT",
        &format!("/api/v1/users/{member_id}/role"),
        &admin,
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_problem(r, 403, "forbidden").await;
    for (method, path) in [
        ("PUT", format!("/api/v1/users/{owner_id}/role")),
        ("POST", format!("/api/v1/users/{owner_id}/lock")),
        ("POST", format!("/api/v1/users/{owner_id}/revoke")),
        ("DELETE", format!("/api/v1/users/{owner_id}")),
    ] {
        let body = (method == "PUT").then(|| json!({"role": "user"}));
        let r = call(&app, method, &path, &admin, body).await;
        assert_problem(r, 403, "forbidden").await;
    }
    // Roles outside owner/admin/user are refused.
    for role in ["anon", "support", "OWNER", "root"] {
        let r = call(
            &app,
            "PUT",
            &format!("/api/v1/users/{member_id}/role"),
            &owner,
            Some(json!({"role": role})),
        )
        .await;
        assert_problem(r, 422, "validation-failed").await;
    }

    // Nobody demotes, locks or deletes the last OWNER, not even the owner.
    let r = call(
        &app,
        "PUT",
        &format!("/api/v1/users/{owner_id}/role"),
        &owner,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_problem(r, 409, "last-owner").await;
    let r = call(
        &app,
        "POST",
        &format!("/api/v1/users/{owner_id}/lock"),
        &owner,
        None,
    )
    .await;
    assert_problem(r, 409, "last-owner").await;
    let r = call(&app, "DELETE", &format!("/api/v1/users/{owner_id}"), &owner, None).await;
    assert_problem(r, 409, "last-owner").await;
    // The refused changes left the owner as they were: their token still works.
    call_ok(&app, "GET", "/api/v1/users/me", &owner, None, 200).await;

    // With a second OWNER, the first may step down.
    let promoted = call_ok(
        &app,
        "PUT",
        &format!("/api/v1/users/{member_id}/role"),
        &owner,
        Some(json!({"role": "owner"})),
        200,
    )
    .await;
    assert_eq!(promoted["role"], "owner");
    let demoted = call_ok(
        &app,
        "PUT",
        &format!("/api/v1/users/{owner_id}/role"),
        &owner,
        Some(json!({"role": "admin"})),
        200,
    )
    .await;
    assert_eq!(demoted["role"], "admin");

    // Each change is in the audit log with old and new values.
    let new_owner = app.console_token(ws, "member@x.example", Role::Owner).await;
    let events = call_ok(
        &app,
        "GET",
        "/api/v1/audit/events?action=user.role.change",
        &new_owner,
        None,
        200,
    )
    .await;
    let changes: Vec<(String, String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["resource"]["id"].as_str().unwrap().to_owned(),
                e["old"]["role"].as_str().unwrap().to_owned(),
                e["new"]["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        changes.contains(&(member_id.clone(), "user".into(), "owner".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&(owner_id.clone(), "owner".into(), "admin".into())),
        "{changes:?}"
    );
    let first = &events["items"][0];
    assert_eq!(first["actor"]["kind"], "user");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert!(first["hash"].as_str().unwrap().len() == 64);
}

async fn role_changes_and_locks_end_tokens_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    let admin = app.console_token(ws, "admin@x.example", Role::Admin).await;
    let admin_id = user_id(&app, &admin).await;
    call_ok(&app, "GET", "/api/v1/users", &admin, None, 200).await;

    // Demoted: the token that carries the old role stops working at once.
    call_ok(
        &app,
        "PUT",
        &format!("/api/v1/users/{admin_id}/role"),
        &owner,
        Some(json!({"role": "user"})),
        200,
    )
    .await;
    let r = call(&app, "GET", "/api/v1/users", &admin, None).await;
    assert_problem(r, 401, "session-revoked").await;
    // A new token carries the new role.
    let demoted = app.console_token(ws, "admin@x.example", Role::User).await;
    assert_problem(
        call(&app, "GET", "/api/v1/users", &demoted, None).await,
        403,
        "forbidden",
    )
    .await;
    call_ok(&app, "GET", "/api/v1/users/me", &demoted, None, 200).await;

    // Locked: console tokens and the user's Session API tokens stop working.
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "carol").await;
    let carol = jwt_claims(session.token())["sub"].as_str().unwrap().to_owned();
    session.set("k", "text/plain", "v").await.unwrap();
    let locked = call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{carol}/lock"),
        &owner,
        None,
        200,
    )
    .await;
    assert_eq!(locked["status"], "locked");
    let err = session.get("k").await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{carol}/unlock"),
        &owner,
        None,
        200,
    )
    .await;
    // Unlocking does not revive old tokens: the revision moved on.
    assert_eq!(session.get("k").await.unwrap_err().status(), Some(401));
    let again = app.sign_in(&application, "carol").await;
    assert_eq!(
        &again.get("k").await.unwrap().bytes[..],
        b"v",
        "the data is intact"
    );

    // "End all sessions" ends them.
    call_ok(
        &app,
        "POST",
        &format!("/api/v1/users/{carol}/revoke"),
        &owner,
        None,
        204,
    )
    .await;
    assert_eq!(again.get("k").await.unwrap_err().status(), Some(401));
}

async fn nothing_of_another_workspace_is_visible_or_changeable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.workspace(Plan::pro()).await;
    let b = app.workspace(Plan::pro()).await;
    let owner_a = app.console_token(a, "owner@a.example", Role::Owner).await;
    let owner_b = app.console_token(b, "owner@b.example", Role::Owner).await;
    let app_a = app.application(a, "a-web").await;
    let session = app.sign_in(&app_a, "alice").await;
    session.set("secret", "text/plain", "of A").await.unwrap();
    let alice = jwt_claims(session.token())["sub"].as_str().unwrap().to_owned();
    let invite = call_ok(
        &app,
        "POST",
        "/api/v1/invites",
        &owner_a,
        Some(json!({"email": "x@a.example", "role": "user"})),
        201,
    )
    .await;
    let invite_a = invite["invite"]["id"].as_str().unwrap().to_owned();
    let owner_a_id = user_id(&app, &owner_a).await;

    // B's OWNER, with A's real ids and with guessed ones: always 404, never a change.
    let guessed = uuid::Uuid::now_v7().to_string();
    for id in [app_a.id.to_string(), guessed.clone()] {
        for (method, path, body) in [
            ("GET", format!("/api/v1/applications/{id}"), None),
            (
                "PATCH",
                format!("/api/v1/applications/{id}"),
                Some(json!({"name": "pwned"})),
            ),
            ("DELETE", format!("/api/v1/applications/{id}"), None),
            ("POST", format!("/api/v1/applications/{id}/secret"), None),
            ("GET", format!("/api/v1/users/{alice}/sessions/{id}/secret"), None),
        ] {
            let r = call(&app, method, &path, &owner_b, body).await;
            assert_problem(r, 404, "not-found").await;
        }
    }
    for id in [alice.clone(), owner_a_id.clone(), guessed.clone()] {
        for (method, path, body) in [
            ("GET", format!("/api/v1/users/{id}"), None),
            (
                "PUT",
                format!("/api/v1/users/{id}/role"),
                Some(json!({"role": "admin"})),
            ),
            ("POST", format!("/api/v1/users/{id}/lock"), None),
            ("POST", format!("/api/v1/users/{id}/revoke"), None),
            ("DELETE", format!("/api/v1/users/{id}"), None),
            ("GET", format!("/api/v1/users/{id}/sessions"), None),
        ] {
            let r = call(&app, method, &path, &owner_b, body).await;
            assert_problem(r, 404, "not-found").await;
        }
    }
    for id in [invite_a.clone(), guessed] {
        let r = call(&app, "DELETE", &format!("/api/v1/invites/{id}"), &owner_b, None).await;
        assert_problem(r, 404, "not-found").await;
    }

    // B's lists hold nothing of A.
    let text_of = |v: &serde_json::Value| v.to_string();
    for path in [
        "/api/v1/applications",
        "/api/v1/users",
        "/api/v1/invites",
        "/api/v1/audit/events",
        "/api/v1/audit/api-access",
    ] {
        let listed = text_of(&call_ok(&app, "GET", path, &owner_b, None, 200).await);
        for needle in [
            app_a.id.to_string(),
            alice.clone(),
            owner_a_id.clone(),
            invite_a.clone(),
            "owner@a.example".into(),
        ] {
            assert!(!listed.contains(&needle), "{path} shows {needle} of workspace A");
        }
    }
    let export = call(&app, "GET", "/api/v1/audit/events/export", &owner_b, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!export.contains(&app_a.id.to_string()) && !export.contains(&alice));

    // A is untouched.
    assert_eq!(&session.get("secret").await.unwrap().bytes[..], b"of A");
    let apps = call_ok(&app, "GET", "/api/v1/applications", &owner_a, None, 200).await;
    assert_eq!(apps["items"][0]["name"], "App a-web");
    // The body or query can never pick the workspace.
    let r = call(
        &app,
        "PATCH",
        "/api/v1/workspaces",
        &owner_b,
        Some(json!({"name": "x", "workspace_id": a.to_string()})),
    )
    .await;
    assert_problem(r, 422, "validation-failed").await;
    let r = call(
        &app,
        "GET",
        &format!("/api/v1/users?workspace_id={a}"),
        &owner_b,
        None,
    )
    .await;
    assert_problem(r, 400, "malformed-request").await;
}

async fn applications_round_trip_and_secrets_are_shown_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    let created = call_ok(
        &app,
        "POST",
        "/api/v1/applications",
        &owner,
        Some(json!({"name": "Back office", "allowed_origins": ["https://b.example", "https://a.example"], "session_ttl": 3600})),
        201,
    )
    .await;
    let id = created["application"]["id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sfcs_") && secret.len() > 40);
    assert_eq!(
        created["application"]["allowed_origins"],
        json!(["https://a.example", "https://b.example"])
    );
    assert_eq!(created["application"]["session_ttl"], 3600);
    let public = call_ok(
        &app,
        "POST",
        "/api/v1/applications",
        &owner,
        Some(json!({"name": "SPA", "public": true})),
        201,
    )
    .await;
    assert!(public["client_secret"].is_null());
    let public_id = public["application"]["id"].as_str().unwrap();
    let r = call(
        &app,
        "POST",
        &format!("/api/v1/applications/{public_id}/secret"),
        &owner,
        None,
    )
    .await;
    assert_problem(r, 409, "conflict").await;

    // Reads never show the secret; a rotation returns a new one.
    let read = call_ok(
        &app,
        "GET",
        &format!("/api/v1/applications/{id}"),
        &owner,
        None,
        200,
    )
    .await;
    assert!(!read.to_string().contains(&secret));
    let rotated = call_ok(
        &app,
        "POST",
        &format!("/api/v1/applications/{id}/secret"),
        &owner,
        None,
        200,
    )
    .await;
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    // Neither secret is stored or audited in the clear.
    for s in [secret.as_str(), new_secret] {
        assert!(!app.raw_contains(s.as_bytes()).await);
    }
    let events = call_ok(
        &app,
        "GET",
        "/api/v1/audit/events?action=application.",
        &owner,
        None,
        200,
    )
    .await;
    let text = events.to_string();
    assert!(!text.contains(&secret) && !text.contains(new_secret));
    assert!(text.contains("[redacted]"));

    // Patch: absent fields stay, `trust: null` removes, bad values are refused.
    let patched = call_ok(
        &app,
        "PATCH",
        &format!("/api/v1/applications/{id}"),
        &owner,
        Some(json!({"name": "Back office 2"})),
        200,
    )
    .await;
    assert_eq!(patched["name"], "Back office 2");
    assert_eq!(patched["session_ttl"], 3600);
    let r = call(
        &app,
        "PATCH",
        &format!("/api/v1/applications/{id}"),
        &owner,
        Some(json!({"allowed_origins": ["https://a.example/"]})),
    )
    .await;
    assert_problem(r, 422, "validation-failed").await;
    let r = call(
        &app,
        "PATCH",
        &format!("/api/v1/applications/{id}"),
        &owner,
        Some(json!({"token_ttl": 5})),
    )
    .await;
    assert_problem(r, 422, "validation-failed").await;
    let update = call_ok(
        &app,
        "GET",
        &format!("/api/v1/audit/events?action=application.update&resource={id}"),
        &owner,
        None,
        200,
    )
    .await;
    assert_eq!(update["items"][0]["old"]["name"], "Back office");
    assert_eq!(update["items"][0]["new"]["name"], "Back office 2");

    // Deleting ends the application's sessions and data.
    let trusted = app.application(ws, "deleted-soon").await;
    let session = app.sign_in(&trusted, "dave").await;
    session.set("k", "text/plain", "v").await.unwrap();
    call_ok(
        &app,
        "DELETE",
        &format!("/api/v1/applications/{}", trusted.id),
        &owner,
        None,
        204,
    )
    .await;
    assert_eq!(session.get("k").await.unwrap_err().status(), Some(401));
    let r = call(
        &app,
        "GET",
        &format!("/api/v1/applications/{}", trusted.id),
        &owner,
        None,
    )
    .await;
    assert_problem(r, 404, "not-found").await;
}

async fn admin_vault_reads_are_audited_and_support_never_reads_values(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let admin = app.console_token(ws, "admin@x.example", Role::Admin).await;
    let support = app.support_token(ws, "help@ops.example").await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "erin").await;
    let erin = jwt_claims(session.token())["sub"].as_str().unwrap().to_owned();
    let key = "cart:items";
    session.set(key, "application/json", r#"{"n":3}"#).await.unwrap();

    let list = call_ok(
        &app,
        "GET",
        &format!("/api/v1/users/{erin}/sessions"),
        &admin,
        None,
        200,
    )
    .await;
    assert_eq!(list["items"][0]["key"], key);
    assert_eq!(list["items"][0]["application_id"], application.id.to_string());
    let path = format!("/api/v1/users/{erin}/sessions/{}/{key}", application.id);
    let r = call(&app, "GET", &path, &admin, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"n":3}"#);

    // SUPPORT never reads a value, not even the key list.
    for p in [path.clone(), format!("/api/v1/users/{erin}/sessions")] {
        assert_problem(call(&app, "GET", &p, &support, None).await, 403, "forbidden").await;
    }

    // The read is audited, naming the key, with the admin as actor; the key name is sealed at rest.
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    let events = call_ok(
        &app,
        "GET",
        "/api/v1/audit/events?action=vault.admin.read",
        &owner,
        None,
        200,
    )
    .await;
    let e = &events["items"][0];
    assert_eq!(e["new"]["key"], key);
    assert_eq!(e["resource"]["id"], erin);
    assert_eq!(e["actor"]["id"], user_id(&app, &admin).await);
    assert!(
        !app.raw_contains(key.as_bytes()).await,
        "key names are sealed in the audit log too"
    );
}

async fn support_reads_land_in_the_workspace_audit_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let other = app.workspace(Plan::pro()).await;
    let support = app.support_token(ws, "help@ops.example").await;
    let support_id = user_id(&app, &support).await;
    call_ok(&app, "GET", "/api/v1/workspaces", &support, None, 200).await;
    call_ok(&app, "GET", "/api/v1/applications", &support, None, 200).await;
    call_ok(&app, "GET", "/api/v1/audit/api-access", &support, None, 200).await;
    for (method, path) in [
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/invites"),
        ("PATCH", "/api/v1/workspaces"),
        ("GET", "/api/v1/users/me"),
    ] {
        let body = (method == "PATCH").then(|| json!({"name": "x"}));
        assert_problem(call(&app, method, path, &support, body).await, 403, "forbidden").await;
    }
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    let events = call_ok(
        &app,
        "GET",
        &format!("/api/v1/audit/events?actor={support_id}"),
        &owner,
        None,
        200,
    )
    .await;
    let resources: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "support.read")
        .map(|e| e["resource"]["type"].as_str().unwrap())
        .collect();
    for r in ["workspace", "applications", "api_access_log"] {
        assert!(resources.contains(&r), "{resources:?}");
    }
    // SUPPORT reads the trail without its personal data: old and new values, addresses, user agents.
    let seen = call_ok(
        &app,
        "GET",
        "/api/v1/audit/events?action=token.issue",
        &support,
        None,
        200,
    )
    .await;
    let e = &seen["items"][0];
    assert_eq!(e["action"], "token.issue");
    assert_eq!(e["new"], "[redacted]");
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "zed").await;
    session.set("secret-key-name", "text/plain", "v").await.unwrap();
    app.flush_access_log().await;
    let access = call_ok(&app, "GET", "/api/v1/audit/api-access", &support, None, 200).await;
    let text = access.to_string();
    assert!(
        !text.contains("secret-key-name") && !text.contains("127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("[redacted]"));
    // The token's issuance is in the workspace's log too, and nothing of it in the other workspace.
    let issued = call_ok(
        &app,
        "GET",
        "/api/v1/audit/events?action=token.issue",
        &owner,
        None,
        200,
    )
    .await;
    assert!(issued.to_string().contains(&support_id));
    let other_owner = app.console_token(other, "owner@o.example", Role::Owner).await;
    let there = call_ok(&app, "GET", "/api/v1/audit/events", &other_owner, None, 200).await;
    assert!(!there.to_string().contains(&support_id));
    // A removed operator's tokens stop working at once.
    app.services()
        .delete_support("help@ops.example", &secureflows_core::audit::Actor::operator())
        .await
        .unwrap();
    assert_problem(
        call(&app, "GET", "/api/v1/workspaces", &support, None).await,
        401,
        "session-revoked",
    )
    .await;
}

async fn invitations_are_mailed_single_use_and_revocable(backend: Backend) {
    let smtp = SmtpSink::start().await;
    let port = smtp.port;
    let options = TestOptions {
        configure: Arc::new(move |c| {
            c.smtp.host = Some("127.0.0.1".into());
            c.smtp.port = port;
            c.smtp.tls = "none".into();
            c.smtp.from = "Tuff Flips <no-reply@tuff.example>".into();
        }),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    let email = format!("{}@invitee.example", marker("inv").to_lowercase());
    let created = call_ok(
        &app,
        "POST",
        "/api/v1/invites",
        &owner,
        Some(json!({"email": email, "role": "admin", "expires_in": 3600})),
        201,
    )
    .await;
    assert_eq!(created["delivery"], "sent");
    assert!(
        created.get("invite_url").is_none(),
        "a mailed link is not returned"
    );
    assert_eq!(created["invite"]["state"], "pending");
    let id = created["invite"]["id"].as_str().unwrap().to_owned();

    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.to, vec![email.clone()]);
    assert_eq!(mail.from, "no-reply@tuff.example");
    let text = mail.text();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/invite/accept?token="))
        .unwrap_or_else(|| panic!("no link in {text}"));
    let token = link.split("token=").nth(1).unwrap();
    assert!(token.starts_with("sfinv_") && token.len() > 40);
    // The token is stored only as a hash, the e-mail only sealed.
    assert!(!app.raw_contains(token.as_bytes()).await);
    assert!(!app.raw_contains(email.as_bytes()).await);

    let listed = call_ok(&app, "GET", "/api/v1/invites", &owner, None, 200).await;
    assert_eq!(listed["items"][0]["email"], email);
    assert_eq!(listed["items"][0]["role"], "admin");
    let revoked = call_ok(
        &app,
        "DELETE",
        &format!("/api/v1/invites/{id}"),
        &owner,
        None,
        200,
    )
    .await;
    assert_eq!(revoked["state"], "revoked");
    assert_problem(
        call(&app, "DELETE", &format!("/api/v1/invites/{id}"), &owner, None).await,
        409,
        "conflict",
    )
    .await;
    let bad = call(
        &app,
        "POST",
        "/api/v1/invites",
        &owner,
        Some(json!({"email": "not-an-address", "role": "user"})),
    )
    .await;
    assert_problem(bad, 422, "validation-failed").await;
    let bad = call(
        &app,
        "POST",
        "/api/v1/invites",
        &owner,
        Some(json!({"email": "a@b.example", "role": "user", "expires_in": 1})),
    )
    .await;
    assert_problem(bad, 422, "validation-failed").await;
    let events = call_ok(
        &app,
        "GET",
        "/api/v1/audit/events?action=invite.",
        &owner,
        None,
        200,
    )
    .await;
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["invite.revoke", "invite.create"]);
}

async fn lists_page_with_opaque_cursors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    for i in 0..7 {
        app.console_token(ws, &format!("m{i}@x.example"), Role::User)
            .await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/users?limit=3".to_owned();
    loop {
        let page = call_ok(&app, "GET", &path, &owner, None, 200).await;
        for u in page["items"].as_array().unwrap() {
            seen.push(u["email"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/users?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8);

    let mut actions = 0;
    let mut path = "/api/v1/audit/events?limit=4".to_owned();
    let mut last_seq = i64::MAX;
    loop {
        let page = call_ok(&app, "GET", &path, &owner, None, 200).await;
        for e in page["items"].as_array().unwrap() {
            let seq = e["seq"].as_i64().unwrap();
            assert!(seq < last_seq, "newest first, no repeats");
            last_seq = seq;
            actions += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/audit/events?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(last_seq, 1);
    assert!(
        actions >= 17,
        "workspace.create + 8 × (user.create, token.issue): {actions}"
    );

    for bad in [
        "limit=0",
        "limit=201",
        "cursor=%%%",
        "cursor=dXNlcjp4",
        "since=yesterday",
        "actor=me",
        "unknown=1",
    ] {
        let r = call(&app, "GET", &format!("/api/v1/audit/events?{bad}"), &owner, None).await;
        let status = r.status().as_u16();
        assert!(status == 400 || status == 422, "{bad}: {status}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = call(&app, "GET", "/api/v1/users?cursor=c2VxOjE", &owner, None).await;
    assert_problem(r, 400, "malformed-request").await;
}

async fn the_openapi_description_lists_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: serde_json::Value = app
        .http
        .get(format!("{}/api/v1/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/auth/callback", &["post"][..]),
        ("/api/v1/auth/logout", &["post"]),
        ("/api/v1/sessions", &["get"]),
        ("/api/v1/sessions/set/{key}", &["post"]),
        ("/api/v1/sessions/get/{key}", &["get"]),
        ("/api/v1/sessions/delete/{key}", &["delete"]),
        ("/api/v1/sessions/revoke", &["post"]),
        ("/api/v1/workspaces", &["get", "patch", "post"]),
        ("/api/v1/applications", &["get", "post"]),
        ("/api/v1/applications/{id}", &["get", "patch", "delete"]),
        ("/api/v1/applications/{id}/secret", &["post"]),
        ("/api/v1/invites", &["get", "post"]),
        ("/api/v1/invites/{id}", &["delete"]),
        ("/api/v1/users", &["get"]),
        ("/api/v1/users/me", &["get"]),
        ("/api/v1/users/{id}", &["get", "delete"]),
        ("/api/v1/users/{id}/role", &["put"]),
        ("/api/v1/users/{id}/lock", &["post"]),
        ("/api/v1/users/{id}/unlock", &["post"]),
        ("/api/v1/users/{id}/revoke", &["post"]),
        ("/api/v1/users/{id}/sessions", &["get"]),
        ("/api/v1/users/{id}/sessions/{application_id}/{key}", &["get"]),
        ("/api/v1/audit/events", &["get"]),
        ("/api/v1/audit/events/export", &["get"]),
        ("/api/v1/audit/api-access", &["get"]),
        ("/.well-known/jwks.json", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not described"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} is not described");
        }
    }
    // And every described operation answers something other than 404/405 for its method (the
    // description lists nothing that is not routed).
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            let concrete = path
                .replace("{key}", "k")
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{application_id}", &uuid::Uuid::now_v7().to_string());
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .http
                .request(m, format!("{}{concrete}", app.url))
                .send()
                .await
                .unwrap();
            assert_ne!(r.status(), 405, "{method} {path}");
            if r.status() == 404 {
                let p: secureflows_api_types::Problem = r.json().await.unwrap();
                assert_ne!(p.detail.as_deref(), Some("no such route"), "{method} {path}");
            }
        }
    }
}
