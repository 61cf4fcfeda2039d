//! Billing webhooks over real HTTP: Stripe (an application's end-user tiers) and Paddle (workspace
//! plans). Signatures are computed here with RustCrypto's HMAC, independently of the server's. Covered:
//! a bad, missing or foreign signature; a stale timestamp and a replay; a duplicate event id; events
//! out of order (event time wins); a forged checkout reference and another application's; a payload
//! naming another user or workspace once the subscription is linked; cancellation; the audit trail;
//! and the per-source rate limit.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use secureflows_core::{Plan, Role};
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{assert_problem, call, call_ok, jwt_claims};

backend_tests!(
    stripe_events_set_tiers_through_a_signed_reference,
    stripe_signatures_timestamps_and_duplicates,
    stripe_references_cannot_be_forged_or_moved,
    paddle_events_set_workspace_plans,
    webhooks_are_rate_limited_per_source,
);

const STRIPE_SECRET: &str = "whsec_test_0123456789abcdef";
const PADDLE_SECRET: &str = "pdl_ntfset_test_0123456789abcdef";

fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now(app: &TestApp) -> i64 {
    app.services().clock.now().secs()
}

async fn stripe(app: &TestApp, client_id: &str, body: &str, signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/api/v1/webhooks/stripe/{client_id}", app.url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.unwrap()
}

/// A Stripe delivery signed now.
async fn send_stripe(app: &TestApp, client_id: &str, event: &Value) -> reqwest::Response {
    let body = event.to_string();
    let t = now(app);
    let signature = format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, &format!("{t}.{body}")));
    stripe(app, client_id, &body, Some(signature)).await
}

async fn outcome(response: reqwest::Response) -> (String, Value) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    (body["outcome"].as_str().unwrap().to_owned(), body)
}

fn subscription_event(
    id: &str,
    kind: &str,
    created: i64,
    sub: &str,
    status: &str,
    price: &str,
    reference: Option<&str>,
) -> Value {
    let mut metadata = json!({});
    if let Some(r) = reference {
        metadata["secureflows_ref"] = json!(r);
    }
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": created,
        "data": {"object": {
            "id": sub,
            "object": "subscription",
            "customer": "cus_alice",
            "status": status,
            "metadata": metadata,
            "items": {"object": "list", "data": [{"price": {"id": price, "lookup_key": null}}]}
        }}
    })
}

struct Shop {
    app: TestApp,
    owner: String,
    application: secureflows_core::Application,
}

/// An application selling Tuff Flips tiers through Stripe, with its webhook secret set.
async fn shop(backend: Backend, options: TestOptions) -> Shop {
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "flips").await;
    let owner = app.console_token(ws, "owner@flips.example", Role::Owner).await;
    let path = format!("/api/v1/applications/{}", application.id);
    let tiers = json!({
        "tiers": [
            {"name": "free", "requests_per_hour": 100},
            {"name": "solo", "requests_per_hour": 1000, "prices": ["price_solo"]},
            {"name": "pro", "requests_per_hour": 10000, "prices": ["price_pro", "pro_monthly"]}
        ],
        "default_tier": "free"
    });
    call_ok(&app, "PATCH", &path, &owner, Some(tiers), 200).await;
    let secret = json!({"webhook_secret": STRIPE_SECRET});
    call_ok(
        &app,
        "PUT",
        &format!("{path}/billing/stripe"),
        &owner,
        Some(secret),
        204,
    )
    .await;
    Shop {
        app,
        owner,
        application,
    }
}

async fn reference(app: &TestApp, session_token: &str) -> String {
    let response = app
        .http
        .post(format!("{}/api/v1/billing/checkout-reference", app.url))
        .bearer_auth(session_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let reference = body["reference"].as_str().unwrap().to_owned();
    assert!(
        reference.starts_with("sfr1.") && reference.len() <= 200,
        "{reference}"
    );
    reference
}

async fn tier_of(s: &Shop, token: &str) -> Value {
    let user = jwt_claims(token)["sub"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/applications/{}/users/{user}/tier", s.application.id);
    call_ok(&s.app, "GET", &path, &s.owner, None, 200).await
}

async fn stripe_events_set_tiers_through_a_signed_reference(backend: Backend) {
    let s = shop(backend, TestOptions::default()).await;
    let client_id = s.application.id.to_string();
    let alice = s.app.sign_in(&s.application, "alice").await;
    let r = reference(&s.app, alice.token()).await;
    let t0 = now(&s.app);

    // The first event with the reference links the subscription and sets the tier of its price.
    let created = subscription_event(
        "evt_1",
        "customer.subscription.created",
        t0,
        "sub_1",
        "active",
        "price_solo",
        Some(&r),
    );
    let (o, body) = outcome(send_stripe(&s.app, &client_id, &created).await).await;
    assert_eq!(o, "applied", "{body}");
    let tier = tier_of(&s, alice.token()).await;
    assert_eq!(
        (tier["tier"]["name"].as_str(), tier["source"].as_str()),
        (Some("solo"), Some("stripe"))
    );
    // It applies on the very next request, with the same token.
    let response = s
        .app
        .http
        .get(format!("{}/api/v1/sessions", s.app.url))
        .bearer_auth(alice.token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"user-hourly\";q=1000;w=3600"
    );

    // A later event matched by the subscription id alone (no reference); a lookup key works too.
    let mut upgraded = subscription_event(
        "evt_2",
        "customer.subscription.updated",
        t0 + 100,
        "sub_1",
        "active",
        "x",
        None,
    );
    upgraded["data"]["object"]["items"]["data"][0]["price"] =
        json!({"id": "price_new", "lookup_key": "pro_monthly"});
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &upgraded).await).await.0,
        "applied"
    );
    assert_eq!(tier_of(&s, alice.token()).await["tier"]["name"], "pro");

    // An older event delivered late changes nothing.
    let late = subscription_event(
        "evt_0",
        "customer.subscription.updated",
        t0 + 50,
        "sub_1",
        "active",
        "price_solo",
        None,
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &late).await).await.0,
        "stale"
    );
    assert_eq!(tier_of(&s, alice.token()).await["tier"]["name"], "pro");

    // An event type we do not act on, and a price no tier lists, change nothing.
    let other = json!({"id": "evt_3", "type": "invoice.paid", "created": t0 + 110, "data": {"object": {"id": "in_1"}}});
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &other).await).await.0,
        "ignored"
    );
    let unknown_price = subscription_event(
        "evt_4",
        "customer.subscription.updated",
        t0 + 120,
        "sub_1",
        "active",
        "price_gold",
        None,
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &unknown_price).await)
            .await
            .0,
        "applied"
    );
    assert_eq!(tier_of(&s, alice.token()).await["tier"]["name"], "pro");

    // Cancellation puts the user back on the default tier.
    let deleted = subscription_event(
        "evt_5",
        "customer.subscription.deleted",
        t0 + 200,
        "sub_1",
        "canceled",
        "price_pro",
        None,
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &deleted).await).await.0,
        "applied"
    );
    let tier = tier_of(&s, alice.token()).await;
    assert_eq!(
        (tier["tier"]["name"].as_str(), tier["is_default"].as_bool()),
        (Some("free"), Some(true))
    );

    // Every change is audited with its event id.
    let events = call_ok(
        &s.app,
        "GET",
        "/api/v1/audit/events?action=user.tier.change",
        &s.owner,
        None,
        200,
    )
    .await;
    let ids: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["new"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_5", "evt_2", "evt_1"]);
    let links = call_ok(
        &s.app,
        "GET",
        "/api/v1/audit/events?action=billing.link",
        &s.owner,
        None,
        200,
    )
    .await;
    assert_eq!(links["items"][0]["new"]["event_id"], "evt_1");
    assert_eq!(links["items"][0]["actor"]["kind"], "system");
}

async fn stripe_signatures_timestamps_and_duplicates(backend: Backend) {
    let s = shop(backend, TestOptions::default()).await;
    let client_id = s.application.id.to_string();
    let alice = s.app.sign_in(&s.application, "alice").await;
    let r = reference(&s.app, alice.token()).await;
    let t = now(&s.app);
    let event = subscription_event(
        "evt_1",
        "customer.subscription.created",
        t,
        "sub_1",
        "active",
        "price_pro",
        Some(&r),
    );
    let body = event.to_string();
    let good = format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, &format!("{t}.{body}")));

    // Refused, each with the same problem, and nothing changes.
    let tampered = body.replace("price_pro", "price_solo");
    let foreign = format!(
        "t={t},v1={}",
        hmac_hex("whsec_another_secret_000", &format!("{t}.{body}"))
    );
    let missing_v1 = format!("t={t}");
    let cases: Vec<(String, &str, Option<String>)> = vec![
        (client_id.clone(), &tampered, Some(good.clone())),
        (client_id.clone(), &body, Some(foreign)),
        (client_id.clone(), &body, Some(missing_v1)),
        (client_id.clone(), &body, Some("garbage".into())),
        (client_id.clone(), &body, None),
        (uuid::Uuid::now_v7().to_string(), &body, Some(good.clone())),
        ("not-a-client".into(), &body, Some(good.clone())),
    ];
    for (id, body, signature) in cases {
        let response = stripe(&s.app, &id, body, signature.clone()).await;
        assert_problem(response, 400, "webhook-signature-invalid").await;
    }
    assert_eq!(tier_of(&s, alice.token()).await["tier"]["name"], "free");

    // The genuine delivery works once; a redelivery of the same event id changes nothing more.
    assert_eq!(
        outcome(stripe(&s.app, &client_id, &body, Some(good.clone())).await)
            .await
            .0,
        "applied"
    );
    assert_eq!(
        outcome(stripe(&s.app, &client_id, &body, Some(good.clone())).await)
            .await
            .0,
        "duplicate"
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &event).await).await.0,
        "duplicate"
    );

    // A captured request replayed more than five minutes later is stale, as is one from the future.
    s.app.advance(Duration::from_secs(301));
    assert_problem(
        stripe(&s.app, &client_id, &body, Some(good)).await,
        400,
        "webhook-stale",
    )
    .await;
    let ahead = now(&s.app) + 400;
    let future = format!(
        "t={ahead},v1={}",
        hmac_hex(STRIPE_SECRET, &format!("{ahead}.{body}"))
    );
    assert_problem(
        stripe(&s.app, &client_id, &body, Some(future)).await,
        400,
        "webhook-stale",
    )
    .await;

    // Signed but not an event: a clear 400, nothing recorded.
    for bad in ["not json", "{\"id\": \"evt_9\"}", "[]"] {
        let t = now(&s.app);
        let sig = format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, &format!("{t}.{bad}")));
        assert_problem(
            stripe(&s.app, &client_id, bad, Some(sig)).await,
            400,
            "malformed-request",
        )
        .await;
    }
    // A huge body is refused before it is read whole.
    let huge = "x".repeat(300 * 1024);
    let response = stripe(&s.app, &client_id, &huge, Some("t=1,v1=00".into())).await;
    assert_eq!(response.status(), 413);
}

async fn stripe_references_cannot_be_forged_or_moved(backend: Backend) {
    let mut s = shop(backend, TestOptions::default()).await;
    let client_id = s.application.id.to_string();
    let alice = s.app.sign_in(&s.application, "alice").await;
    let bob = s.app.sign_in(&s.application, "bob").await;
    let alice_ref = reference(&s.app, alice.token()).await;
    let bob_ref = reference(&s.app, bob.token()).await;
    let t0 = now(&s.app);

    // A reference with one byte of its MAC changed, or made up, links nothing.
    let mut forged = alice_ref.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for (i, r) in [forged.as_str(), "sfr1.AAAA.AAAA", "anything"].iter().enumerate() {
        let e = subscription_event(
            &format!("evt_f{i}"),
            "customer.subscription.created",
            t0,
            "sub_x",
            "active",
            "price_pro",
            Some(r),
        );
        assert_eq!(
            outcome(send_stripe(&s.app, &client_id, &e).await).await.0,
            "ignored"
        );
    }
    assert_eq!(tier_of(&s, alice.token()).await["tier"]["name"], "free");

    // A genuine reference of another workspace's application is not this application's.
    let other_ws = s.app.workspace(Plan::pro()).await;
    let other_app = s.app.application(other_ws, "other").await;
    let carol = s.app.sign_in(&other_app, "carol").await;
    let carol_ref = reference(&s.app, carol.token()).await;
    let e = subscription_event(
        "evt_c",
        "customer.subscription.created",
        t0,
        "sub_c",
        "active",
        "price_pro",
        Some(&carol_ref),
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &e).await).await.0,
        "ignored"
    );

    // Linked to alice; a later event naming bob in its metadata still changes alice's tier only.
    let e = subscription_event(
        "evt_a",
        "customer.subscription.created",
        t0,
        "sub_a",
        "active",
        "price_solo",
        Some(&alice_ref),
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &e).await).await.0,
        "applied"
    );
    let e = subscription_event(
        "evt_b",
        "customer.subscription.updated",
        t0 + 10,
        "sub_a",
        "active",
        "price_pro",
        Some(&bob_ref),
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &e).await).await.0,
        "applied"
    );
    assert_eq!(tier_of(&s, alice.token()).await["tier"]["name"], "pro");
    assert_eq!(tier_of(&s, bob.token()).await["tier"]["name"], "free");

    // A reference is checked at the event's own time: an event after it expired links nothing.
    let late = t0 + 8 * 24 * 3600;
    s.app.advance(Duration::from_secs(8 * 24 * 3600));
    s.owner = s
        .app
        .console_token(s.application.workspace_id, "owner@flips.example", Role::Owner)
        .await;
    let e = subscription_event(
        "evt_late",
        "customer.subscription.created",
        late,
        "sub_late",
        "active",
        "price_pro",
        Some(&bob_ref),
    );
    assert_eq!(
        outcome(send_stripe(&s.app, &client_id, &e).await).await.0,
        "ignored"
    );
    assert_eq!(tier_of(&s, bob.token()).await["tier"]["name"], "free");

    // Guests get no reference; the secret endpoint is the workspace's own.
    let other_owner = s
        .app
        .console_token(other_ws, "owner@other.example", Role::Owner)
        .await;
    let path = format!("/api/v1/applications/{}/billing/stripe", s.application.id);
    let response = call(
        &s.app,
        "PUT",
        &path,
        &other_owner,
        Some(json!({"webhook_secret": "whsec_0123456789abcdef"})),
    )
    .await;
    assert_problem(response, 404, "not-found").await;
    let response = call(
        &s.app,
        "PUT",
        &path,
        &s.owner,
        Some(json!({"webhook_secret": "short"})),
    )
    .await;
    assert_problem(response, 422, "validation-failed").await;
}

fn paddle_event(
    id: &str,
    kind: &str,
    at: i64,
    sub: &str,
    status: &str,
    price: &str,
    reference: Option<&str>,
) -> Value {
    let occurred = secureflows_core::Timestamp::from_secs(at).rfc3339();
    let mut custom = json!(null);
    if let Some(r) = reference {
        custom = json!({"secureflows_ref": r});
    }
    json!({
        "event_id": id,
        "event_type": kind,
        "occurred_at": occurred,
        "notification_id": format!("ntf_{id}"),
        "data": {
            "id": sub,
            "status": status,
            "customer_id": "ctm_1",
            "items": [{"price": {"id": price}, "quantity": 1}],
            "custom_data": custom
        }
    })
}

async fn send_paddle(app: &TestApp, event: &Value) -> reqwest::Response {
    let body = event.to_string();
    let ts = now(app);
    let signature = format!("ts={ts};h1={}", hmac_hex(PADDLE_SECRET, &format!("{ts}:{body}")));
    app.http
        .post(format!("{}/api/v1/webhooks/paddle", app.url))
        .header("content-type", "application/json")
        .header("paddle-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn plan_of(app: &TestApp, ws: secureflows_core::WorkspaceId) -> Plan {
    app.services().get_workspace(ws).await.unwrap().plan
}

async fn paddle_events_set_workspace_plans(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| {
            c.billing.paddle_webhook_secret =
                Some(secureflows_crypto::SecretString::new(PADDLE_SECRET.to_owned()));
            c.billing.paddle_prices.insert("pri_base".into(), "base".into());
            c.billing.paddle_prices.insert("pri_pro".into(), "pro".into());
        }),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::free()).await;
    let other = app.workspace(Plan::free()).await;
    let owner = app.console_token(ws, "owner@a.example", Role::Owner).await;
    let other_owner = app.console_token(other, "owner@b.example", Role::Owner).await;
    let admin = app.console_token(ws, "admin@a.example", Role::Admin).await;
    let path = "/api/v1/workspaces/billing/checkout-reference";
    assert_eq!(
        call(&app, "POST", path, &admin, None).await.status(),
        403,
        "OWNERs only"
    );
    let r = call_ok(&app, "POST", path, &owner, None, 200).await["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_ref = call_ok(&app, "POST", path, &other_owner, None, 200).await["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let t0 = now(&app);

    let e = paddle_event(
        "evt_1",
        "subscription.created",
        t0,
        "sub_01",
        "active",
        "pri_base",
        Some(&r),
    );
    assert_eq!(outcome(send_paddle(&app, &e).await).await.0, "applied");
    assert_eq!(plan_of(&app, ws).await, Plan::base());
    // Later events match by subscription id; custom data naming another workspace changes nothing there.
    let e = paddle_event(
        "evt_2",
        "subscription.updated",
        t0 + 60,
        "sub_01",
        "active",
        "pri_pro",
        Some(&other_ref),
    );
    assert_eq!(outcome(send_paddle(&app, &e).await).await.0, "applied");
    assert_eq!(
        (plan_of(&app, ws).await, plan_of(&app, other).await),
        (Plan::pro(), Plan::free())
    );
    // Out of order, duplicate, then canceled.
    let e = paddle_event(
        "evt_0",
        "subscription.updated",
        t0 + 30,
        "sub_01",
        "active",
        "pri_base",
        None,
    );
    assert_eq!(outcome(send_paddle(&app, &e).await).await.0, "stale");
    assert_eq!(outcome(send_paddle(&app, &e).await).await.0, "duplicate");
    let e = paddle_event(
        "evt_3",
        "subscription.canceled",
        t0 + 90,
        "sub_01",
        "canceled",
        "pri_pro",
        None,
    );
    assert_eq!(outcome(send_paddle(&app, &e).await).await.0, "applied");
    assert_eq!(plan_of(&app, ws).await, Plan::free());
    let events = call_ok(
        &app,
        "GET",
        "/api/v1/audit/events?action=workspace.plan.change",
        &owner,
        None,
        200,
    )
    .await;
    let ids: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["new"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_3", "evt_2", "evt_1"]);

    // Paddle's signature format, checked: h1 over `ts:body`, not Stripe's `t.body`.
    let body = paddle_event(
        "evt_9",
        "subscription.updated",
        t0 + 95,
        "sub_01",
        "active",
        "pri_pro",
        None,
    )
    .to_string();
    let ts = now(&app);
    for signature in [
        format!("ts={ts};h1={}", hmac_hex(PADDLE_SECRET, &format!("{ts}.{body}"))),
        format!("t={ts},v1={}", hmac_hex(PADDLE_SECRET, &format!("{ts}.{body}"))),
        String::new(),
    ] {
        let response = app
            .http
            .post(format!("{}/api/v1/webhooks/paddle", app.url))
            .header("paddle-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "webhook-signature-invalid").await;
    }
    assert_eq!(plan_of(&app, ws).await, Plan::free());
}

async fn webhooks_are_rate_limited_per_source(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| c.billing.webhooks_per_minute = 3),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    // Paddle is not configured here: every delivery is refused, and counted.
    for _ in 0..3 {
        let response = app
            .http
            .post(format!("{}/api/v1/webhooks/paddle", app.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "webhook-signature-invalid").await;
    }
    let response = app
        .http
        .post(format!(
            "{}/api/v1/webhooks/stripe/{}",
            app.url,
            uuid::Uuid::now_v7()
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 429, "rate-limited").await;
}
