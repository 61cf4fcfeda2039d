//! Plans as data and end-user tiers: the plan catalogue with a plan of the operator's own, application
//! tiers set through the management API, hourly budgets per tier (GCRA) with `RateLimit-Policy` and
//! `RateLimit` header fields under a manual clock, `limits/consume`, tier changes taking effect on the
//! next request, the workspace's own hourly budget, plan quotas on applications and members, and a
//! downgrade that keeps every value readable.

use std::sync::Arc;
use std::time::Duration;

use secureflows_core::audit::Actor;
use secureflows_core::{Plan, Role};
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};
use serde_json::{Value, json};

use crate::support::{assert_problem, call, call_ok, jwt_claims};

backend_tests!(
    tiers_are_set_through_the_management_api_and_checked,
    the_default_tier_budget_refills_smoothly_with_headers,
    a_tier_change_takes_effect_on_the_next_request,
    consume_charges_the_same_budget,
    parallel_requests_never_overdraw_a_budget,
    the_workspace_plan_budget_counts_management_calls,
    a_catalogued_plan_sets_quotas_on_applications_and_members,
    a_downgrade_keeps_every_value_readable,
    another_workspace_cannot_touch_a_users_tier,
);

/// The Tuff Flips tiers (seed 003, section 4).
fn tuff_flips() -> Value {
    json!({
        "tiers": [
            {"name": "free", "requests_per_hour": 100},
            {"name": "solo", "requests_per_hour": 1000, "features": ["portfolio"]},
            {"name": "pro", "requests_per_hour": 10000, "features": ["portfolio", "bulk_export"]},
            {"name": "team", "requests_per_hour": 10000, "features": ["portfolio", "bulk_export", "team"]}
        ],
        "default_tier": "free"
    })
}

struct Setup {
    app: TestApp,
    owner: String,
    application: secureflows_core::Application,
}

/// A workspace with an application on the Tuff Flips tiers, and its OWNER's console token.
async fn setup(backend: Backend, options: TestOptions) -> Setup {
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "flips").await;
    let owner = app.console_token(ws, "owner@flips.example", Role::Owner).await;
    call_ok(
        &app,
        "PATCH",
        &format!("/api/v1/applications/{}", application.id),
        &owner,
        Some(tuff_flips()),
        200,
    )
    .await;
    Setup {
        app,
        owner,
        application,
    }
}

async fn get(app: &TestApp, token: &str, key: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/api/v1/sessions/get/{key}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn subject(token: &str) -> String {
    jwt_claims(token)["sub"].as_str().unwrap().to_owned()
}

async fn tiers_are_set_through_the_management_api_and_checked(backend: Backend) {
    let s = setup(backend, TestOptions::default()).await;
    let path = format!("/api/v1/applications/{}", s.application.id);
    let shown = call_ok(&s.app, "GET", &path, &s.owner, None, 200).await;
    assert_eq!(shown["default_tier"], "free");
    assert_eq!(
        shown["tiers"][1],
        json!({"name": "solo", "requests_per_hour": 1000, "features": ["portfolio"]})
    );

    // Every rule is checked, field by field, and nothing changes.
    let response = call(
        &s.app,
        "PATCH",
        &path,
        &s.owner,
        Some(json!({
            "tiers": [{"name": "Free"}, {"name": "solo", "requests_per_hour": 0}, {"name": "solo"}],
            "default_tier": "gold"
        })),
    )
    .await;
    let problem = assert_problem(response, 422, "validation-failed").await;
    let fields: Vec<String> = problem.errors.iter().map(|e| e.field.clone()).collect();
    assert_eq!(
        fields,
        [
            "tiers[0].name",
            "tiers[1].requests_per_hour",
            "tiers[2].name",
            "default_tier"
        ]
    );
    let response = call(
        &s.app,
        "PATCH",
        &path,
        &s.owner,
        Some(json!({"tiers": [{"name": "x", "limit": 5}]})),
    )
    .await;
    assert_eq!(response.status(), 422, "unknown fields are refused");
    assert_eq!(
        call_ok(&s.app, "GET", &path, &s.owner, None, 200).await["tiers"],
        shown["tiers"]
    );

    // A user starts on the default tier; the tier is put and read back; audited with old and new.
    let session = s.app.sign_in(&s.application, "alice").await;
    let user = subject(session.token());
    let tier_path = format!("{path}/users/{user}/tier");
    let start = call_ok(&s.app, "GET", &tier_path, &s.owner, None, 200).await;
    assert_eq!(
        (start["tier"]["name"].as_str(), start["is_default"].as_bool()),
        (Some("free"), Some(true))
    );
    assert_eq!(start["source"], Value::Null);
    assert_eq!(
        jwt_claims(session.token())["tier"],
        "free",
        "informational, at issuance"
    );
    let set = call_ok(
        &s.app,
        "PUT",
        &tier_path,
        &s.owner,
        Some(json!({"tier": "pro"})),
        200,
    )
    .await;
    assert_eq!(
        (set["tier"]["name"].as_str(), set["is_default"].as_bool()),
        (Some("pro"), Some(false))
    );
    assert_eq!(set["source"], "api");
    let response = call(&s.app, "PUT", &tier_path, &s.owner, Some(json!({"tier": "gold"}))).await;
    assert_problem(response, 422, "validation-failed").await;
    let renewed = s.app.sign_in(&s.application, "alice").await;
    assert_eq!(jwt_claims(renewed.token())["tier"], "pro");
    let events = call_ok(
        &s.app,
        "GET",
        "/api/v1/audit/events?action=user.tier.change",
        &s.owner,
        None,
        200,
    )
    .await;
    let event = &events["items"][0];
    assert_eq!(event["old"]["tier"], "free", "{events}");
    assert_eq!(event["new"]["tier"], "pro");
    assert_eq!(event["new"]["source"], "api");

    // Back on the default tier with null; a tier removed from the application falls back to it too.
    let back = call_ok(
        &s.app,
        "PUT",
        &tier_path,
        &s.owner,
        Some(json!({"tier": null})),
        200,
    )
    .await;
    assert_eq!(
        (back["tier"]["name"].as_str(), back["is_default"].as_bool()),
        (Some("free"), Some(true))
    );
    call_ok(
        &s.app,
        "PUT",
        &tier_path,
        &s.owner,
        Some(json!({"tier": "team"})),
        200,
    )
    .await;
    let mut fewer = tuff_flips();
    fewer["tiers"].as_array_mut().unwrap().truncate(3);
    call_ok(&s.app, "PATCH", &path, &s.owner, Some(fewer), 200).await;
    let fallback = call_ok(&s.app, "GET", &tier_path, &s.owner, None, 200).await;
    assert_eq!(
        (
            fallback["tier"]["name"].as_str(),
            fallback["is_default"].as_bool()
        ),
        (Some("free"), Some(true))
    );

    // An unknown user or application is 404; a USER may not read tiers.
    let nobody = format!("{path}/users/{}/tier", uuid::Uuid::now_v7());
    assert_problem(
        call(&s.app, "GET", &nobody, &s.owner, None).await,
        404,
        "not-found",
    )
    .await;
    let member = s
        .app
        .console_token(s.application.workspace_id, "user@flips.example", Role::User)
        .await;
    assert_eq!(call(&s.app, "GET", &tier_path, &member, None).await.status(), 403);
}

async fn the_default_tier_budget_refills_smoothly_with_headers(backend: Backend) {
    let s = setup(backend, TestOptions::default()).await;
    let session = s.app.sign_in(&s.application, "alice").await;
    for i in 0..100u32 {
        let response = get(&s.app, session.token(), "none").await;
        assert_eq!(response.status(), 404, "request {i}");
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"user-hourly\";q=100;w=3600"
        );
        let expected = format!("\"user-hourly\";r={};t={}", 99 - i, 36 * (i + 1));
        assert_eq!(header(&response, "ratelimit"), expected, "request {i}");
    }
    let refused = get(&s.app, session.token(), "none").await;
    assert_eq!(header(&refused, "retry-after"), "36");
    assert_eq!(header(&refused, "ratelimit"), "\"user-hourly\";r=0;t=36");
    assert_problem(refused, 429, "rate-limited").await;
    // Signing out is never refused for want of budget.
    let other = s.app.sign_in(&s.application, "alice").await;

    // 36 seconds give one request back — not a new hour's worth at a window boundary.
    s.app.advance(Duration::from_secs(36));
    assert_eq!(get(&s.app, session.token(), "none").await.status(), 404);
    assert_eq!(get(&s.app, session.token(), "none").await.status(), 429);
    // Another user of the same application has a budget of their own.
    let bob = s.app.sign_in(&s.application, "bob").await;
    assert_eq!(get(&s.app, bob.token(), "none").await.status(), 404);
    other.logout().await.unwrap();
    session.revoke().await.unwrap();
}

async fn a_tier_change_takes_effect_on_the_next_request(backend: Backend) {
    let s = setup(backend, TestOptions::default()).await;
    let session = s.app.sign_in(&s.application, "alice").await;
    let user = subject(session.token());
    let tier_path = format!("/api/v1/applications/{}/users/{user}/tier", s.application.id);
    for _ in 0..100 {
        get(&s.app, session.token(), "k").await;
    }
    assert_eq!(get(&s.app, session.token(), "k").await.status(), 429);
    call_ok(
        &s.app,
        "PUT",
        &tier_path,
        &s.owner,
        Some(json!({"tier": "solo"})),
        200,
    )
    .await;
    let response = get(&s.app, session.token(), "k").await;
    assert_eq!(
        response.status(),
        404,
        "the upgrade applies at once, with the same token"
    );
    assert_eq!(
        header(&response, "ratelimit-policy"),
        "\"user-hourly\";q=1000;w=3600"
    );
    // A downgrade applies at once as well.
    call_ok(
        &s.app,
        "PUT",
        &tier_path,
        &s.owner,
        Some(json!({"tier": null})),
        200,
    )
    .await;
    assert_eq!(get(&s.app, session.token(), "k").await.status(), 429);
}

async fn consume(app: &TestApp, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/api/v1/limits/consume", app.url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn consume_charges_the_same_budget(backend: Backend) {
    let s = setup(backend, TestOptions::default()).await;
    let session = s.app.sign_in(&s.application, "alice").await;
    let response = consume(&s.app, session.token(), None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["charged"], 1);
    assert_eq!(body["tier"], "free");
    assert_eq!(
        body["budgets"][0],
        json!({"policy": "user-hourly", "limit": 100, "remaining": 99, "reset": 36})
    );
    let response = consume(&s.app, session.token(), Some(json!({"cost": 49}))).await;
    assert_eq!(header(&response, "ratelimit"), "\"user-hourly\";r=50;t=1800");
    // The Session API draws on the same budget.
    assert_eq!(
        header(&get(&s.app, session.token(), "k").await, "ratelimit"),
        "\"user-hourly\";r=49;t=1836"
    );
    for (body, status) in [
        (json!({"cost": 0}), 422),
        (json!({"cost": 1001}), 422),
        (json!({"cost": -1}), 422),
        (json!({"cost": "5"}), 422),
        (json!({"user": "someone-else"}), 422),
    ] {
        assert_eq!(
            consume(&s.app, session.token(), Some(body.clone()))
                .await
                .status(),
            status,
            "{body}"
        );
    }
    let text = s
        .app
        .http
        .post(format!("{}/api/v1/limits/consume", s.app.url))
        .bearer_auth(session.token())
        .body("cost=5")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    // A cost the budget cannot cover now is refused whole, with the wait until it can.
    let refused = consume(&s.app, session.token(), Some(json!({"cost": 60}))).await;
    assert_eq!(header(&refused, "retry-after"), "396");
    assert_problem(refused, 429, "rate-limited").await;
    assert_eq!(
        consume(&s.app, session.token(), Some(json!({"cost": 49})))
            .await
            .status(),
        200
    );
    // Without a token, or with a USER JWT, nothing is charged.
    let anonymous = s
        .app
        .http
        .post(format!("{}/api/v1/limits/consume", s.app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(consume(&s.app, &s.owner, None).await.status(), 403);
}

async fn parallel_requests_never_overdraw_a_budget(backend: Backend) {
    let s = setup(backend, TestOptions::default()).await;
    let session = s.app.sign_in(&s.application, "alice").await;
    consume(&s.app, session.token(), Some(json!({"cost": 80}))).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (http, url, token) = (s.app.http.clone(), s.app.url.clone(), session.token().to_owned());
        tasks.push(tokio::spawn(async move {
            http.get(format!("{url}/api/v1/sessions"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30, "{statuses:?}");
}

async fn the_workspace_plan_budget_counts_management_calls(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| c.plans.edit("base", |l| l.api_requests_per_hour = Some(4))),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::base()).await;
    let other_ws = app.workspace(Plan::base()).await;
    let owner = app.console_token(ws, "owner@base.example", Role::Owner).await;
    let other = app
        .console_token(other_ws, "owner@other.example", Role::Owner)
        .await;
    for i in 0..4u32 {
        let response = call(&app, "GET", "/api/v1/workspaces", &owner, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"workspace-hourly\";q=4;w=3600"
        );
        assert!(header(&response, "ratelimit").starts_with(&format!("\"workspace-hourly\";r={};", 3 - i)));
    }
    let refused = call(&app, "GET", "/api/v1/workspaces", &owner, None).await;
    assert_eq!(header(&refused, "retry-after"), "900");
    assert_problem(refused, 429, "rate-limited").await;
    // Another workspace has its own budget; the Session API of this one shares it.
    assert_eq!(
        call(&app, "GET", "/api/v1/workspaces", &other, None)
            .await
            .status(),
        200
    );
    let application = app.application(other_ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    let response = get(&app, session.token(), "k").await;
    assert_eq!(header(&response, "ratelimit"), "\"workspace-hourly\";r=2;t=1800");
}

async fn a_catalogued_plan_sets_quotas_on_applications_and_members(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| {
            let gold: secureflows_core::PlanCatalogue = serde_json::from_value(json!({
                "gold": {"display_name": "Gold", "max_value_bytes": 1000, "max_sessions_per_workspace": 10,
                         "max_sessions_per_user": 2, "max_keys_per_user": 5, "max_applications": 1,
                         "max_members": 2, "features": ["sso"]}
            }))
            .unwrap();
            c.plans = gold;
        }),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let services = app.services();
    let gold = services.plans.find("gold").unwrap();
    assert!(services.plans.find("platinum").is_none());
    let ws = app.workspace(gold.clone()).await;
    let err = services
        .set_plan(ws, Plan::parse("platinum").unwrap(), &Actor::operator())
        .await
        .unwrap_err();
    assert!(matches!(err, secureflows_core::Error::Invalid(_)), "{err:?}");
    assert_eq!(services.get_workspace(ws).await.unwrap().plan, gold);

    let owner = app.console_token(ws, "owner@gold.example", Role::Owner).await;
    let shown = call_ok(&app, "GET", "/api/v1/workspaces", &owner, None, 200).await;
    assert_eq!(shown["plan"], "gold");
    let create = |name: &str| json!({"name": name, "kind": "browser"});
    call_ok(
        &app,
        "POST",
        "/api/v1/applications",
        &owner,
        Some(create("one")),
        201,
    )
    .await;
    let response = call(&app, "POST", "/api/v1/applications", &owner, Some(create("two"))).await;
    let problem = assert_problem(response, 403, "quota-exceeded").await;
    assert!(problem.detail.unwrap().contains("applications"));

    // Two members at most: the OWNER and one ADMIN. A pending invitation does not count until it is
    // accepted, and its acceptance is refused once the room is taken.
    let invited = call_ok(
        &app,
        "POST",
        "/api/v1/invites",
        &owner,
        Some(json!({"email": "admin@gold.example", "role": "admin"})),
        201,
    )
    .await;
    assert_eq!(invited["invite"]["state"], "pending");
    // Without SMTP on a loopback address, the invitation is in the data directory's outbox.
    let token = std::fs::read_dir(app.data_dir.join("outbox"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .flat_map(|text| text.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find_map(|w| w.split("/invite/accept?token=").nth(1).map(str::to_owned))
        .unwrap();
    app.console_token(ws, "second@gold.example", Role::Admin).await;
    let password = secureflows_crypto::SecretString::new("a gold admin passphrase 7".to_owned());
    let refused = services
        .accept_invite(ws, &token, &password, &Actor::operator())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            secureflows_core::Error::Forbidden(secureflows_core::ForbiddenReason::QuotaExceeded(
                secureflows_core::Quota::Members
            ))
        ),
        "{refused:?}"
    );
    let response = call(
        &app,
        "POST",
        "/api/v1/invites",
        &owner,
        Some(json!({"email": "third@gold.example", "role": "admin"})),
    )
    .await;
    let problem = assert_problem(response, 403, "quota-exceeded").await;
    assert!(problem.detail.unwrap().contains("owners and admins"));
    // Inviting a USER is not limited by the member quota.
    call_ok(
        &app,
        "POST",
        "/api/v1/invites",
        &owner,
        Some(json!({"email": "user@gold.example", "role": "user"})),
        201,
    )
    .await;
}

async fn a_downgrade_keeps_every_value_readable(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| c.plans.edit("free", |l| l.max_keys_per_user = 3)),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let session = app.sign_in(&application, "alice").await;
    for k in ["a", "b", "c", "d", "e"] {
        session.set(k, "text/plain", format!("value {k}")).await.unwrap();
    }
    app.services()
        .set_plan(ws, Plan::free(), &Actor::operator())
        .await
        .unwrap();
    // Over the new key limit: every value stays readable and writable, and no new key is taken.
    for k in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            session.get(k).await.unwrap().bytes,
            format!("value {k}").into_bytes()
        );
    }
    session.set("a", "text/plain", "still writable").await.unwrap();
    let err = session.set("f", "text/plain", "new").await.unwrap_err();
    assert_eq!((err.status(), err.slug()), (Some(403), Some("quota-exceeded")));
    assert_eq!(session.list().await.unwrap().keys.len(), 5);
    // Under the limit again, a new key fits.
    for k in ["b", "c", "d"] {
        session.delete(k).await.unwrap();
    }
    session.set("f", "text/plain", "new").await.unwrap();
}

async fn another_workspace_cannot_touch_a_users_tier(backend: Backend) {
    let s = setup(backend, TestOptions::default()).await;
    let session = s.app.sign_in(&s.application, "alice").await;
    let user = subject(session.token());
    let other_ws = s.app.workspace(Plan::pro()).await;
    let other_owner = s
        .app
        .console_token(other_ws, "owner@other.example", Role::Owner)
        .await;
    let path = format!("/api/v1/applications/{}/users/{user}/tier", s.application.id);
    for (method, body) in [("GET", None), ("PUT", Some(json!({"tier": "team"})))] {
        let response = call(&s.app, method, &path, &other_owner, body).await;
        assert_problem(response, 404, "not-found").await;
    }
    // Their own application with the same tiers, and our user's id: still not found.
    let theirs = s.app.application(other_ws, "theirs").await;
    call_ok(
        &s.app,
        "PATCH",
        &format!("/api/v1/applications/{}", theirs.id),
        &other_owner,
        Some(tuff_flips()),
        200,
    )
    .await;
    let crossed = format!("/api/v1/applications/{}/users/{user}/tier", theirs.id);
    let response = call(
        &s.app,
        "PUT",
        &crossed,
        &other_owner,
        Some(json!({"tier": "team"})),
    )
    .await;
    assert_problem(response, 404, "not-found").await;
    let mine = call_ok(&s.app, "GET", &path, &s.owner, None, 200).await;
    assert_eq!(mine["tier"]["name"], "free");
}
