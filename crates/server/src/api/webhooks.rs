//! Billing webhooks: `POST /api/v1/webhooks/paddle` and `POST /api/v1/webhooks/stripe/{client_id}`.
//! No token: the signature over the raw body is the authentication. 50 requests per minute per client
//! address (`billing.webhooks_per_minute`).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use secureflows_api_types as dto;
use secureflows_core::billing::WebhookOutcome;
use secureflows_core::{ApplicationId, Error, LimitKind};

use crate::extract::{RequestActor, read_body};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

/// The largest webhook body taken (Stripe and Paddle events are a few KiB).
const MAX_WEBHOOK_BYTES: u64 = 256 * 1024;

fn result(outcome: WebhookOutcome) -> axum::Json<dto::WebhookResult> {
    let (outcome, detail) = match outcome {
        WebhookOutcome::Applied(what) => ("applied", Some(what)),
        WebhookOutcome::Duplicate => ("duplicate", Some("the event id was handled before".to_owned())),
        WebhookOutcome::Stale => (
            "stale",
            Some("a newer event of the same subscription was applied".to_owned()),
        ),
        WebhookOutcome::Ignored(why) => ("ignored", Some(why.to_owned())),
    };
    axum::Json(dto::WebhookResult {
        outcome: outcome.to_owned(),
        detail,
    })
}

/// The source's budget, then the raw body and the signature header (absent: empty, which fails the
/// signature check like any other bad header).
async fn take(
    state: &AppState,
    client_ip: Option<&str>,
    req: Request<Body>,
    name: &str,
) -> Result<(String, bytes::Bytes), Problem> {
    if let Err(retry_after) = state
        .webhook_limits()
        .check(client_ip.unwrap_or_default().to_owned())
    {
        return Err(Error::Limited {
            kind: LimitKind::Rate,
            retry_after,
        }
        .into());
    }
    let (parts, body) = req.into_parts();
    let signature = signature(&parts.headers, name);
    let body = read_body(&parts.headers, body, MAX_WEBHOOK_BYTES, || {
        Problem::request_too_large(MAX_WEBHOOK_BYTES)
    })
    .await?;
    Ok((signature, body))
}

fn signature(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Paddle Billing notifications for workspace plans.
#[utoipa::path(post, path = "/api/v1/webhooks/paddle", tag = "billing",
    params(("Paddle-Signature" = String, Header, description = "ts=<unix>;h1=<hex HMAC-SHA-256 of ts:body>")),
    request_body(content = String, content_type = "application/json", description = "A Paddle notification"),
    responses(
        (status = 200, description = "Verified and handled (or a duplicate, stale or ignored event)", body = dto::WebhookResult),
        (status = "4XX", description = "Problem: webhook-signature-invalid, webhook-stale, malformed-request, rate-limited",
            body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn paddle(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
    req: Request<Body>,
) -> ApiResult<axum::Json<dto::WebhookResult>> {
    let (signature, body) = take(&state, actor.client_ip.as_deref(), req, "paddle-signature").await?;
    let outcome = state.services().paddle_webhook(&signature, &body, &actor).await?;
    Ok(result(outcome))
}

/// Stripe events for one application's end-user tiers.
#[utoipa::path(post, path = "/api/v1/webhooks/stripe/{client_id}", tag = "billing",
    params(
        ("client_id" = String, Path, format = Uuid, description = "The application's client id"),
        ("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA-256 of t.body>"),
    ),
    request_body(content = String, content_type = "application/json", description = "A Stripe event"),
    responses(
        (status = 200, description = "Verified and handled (or a duplicate, stale or ignored event)", body = dto::WebhookResult),
        (status = "4XX", description = "Problem: webhook-signature-invalid, webhook-stale, malformed-request, rate-limited",
            body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn stripe(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
    Path(client_id): Path<String>,
    req: Request<Body>,
) -> ApiResult<axum::Json<dto::WebhookResult>> {
    let (signature, body) = take(&state, actor.client_ip.as_deref(), req, "stripe-signature").await?;
    // An id that cannot exist fails like a wrong secret: the endpoint says nothing about applications.
    let application: ApplicationId = client_id
        .parse()
        .map_err(|_| Error::Webhook(secureflows_core::billing::WebhookFailure::SignatureInvalid))?;
    let outcome = state
        .services()
        .stripe_webhook(application, &signature, &body, &actor)
        .await?;
    Ok(result(outcome))
}
