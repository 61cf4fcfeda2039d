//! Session API handlers (`/api/v1/...`, SESSION JWT). Each one: extract, authorize, call one service,
//! map to a DTO. Identity comes from the token only.

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_api_types as dto;
use secureflows_core::auth::callback::{CallbackFailure, CallbackRequest};
use secureflows_core::auth::token::IssuedToken;
use secureflows_core::login::oauth::{OAuthError, OAuthErrorKind};
use secureflows_core::vault::{self, SetResult, ValueMeta};
use secureflows_core::{ApplicationId, Error, limits};
use std::num::NonZeroU32;

use crate::access_log::AccessSlot;
use crate::budget::ChargeSlot;
use crate::extract::{Json, KeyPath, RequestActor, SessionAuth, UnmeteredSessionAuth, origin, read_body};
use crate::middleware::CSP_SANDBOX;
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

fn meta(m: ValueMeta) -> dto::ValueMeta {
    dto::ValueMeta {
        key: m.key,
        size: m.size,
        created_at: m.created_at.rfc3339(),
        updated_at: m.updated_at.rfc3339(),
        expires_at: m.expires_at.rfc3339(),
    }
}

/// `POST /api/v1/auth/callback`: exchanges an upstream ID token for a SESSION JWT. Public.
#[utoipa::path(post, path = "/api/v1/auth/callback", tag = "session",
    request_body = dto::CallbackRequest,
    responses(
        (status = 200, description = "Signed in", body = dto::CallbackResponse),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn callback(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let slot = req.extensions().get::<AccessSlot>().cloned();
    let Json(body) = <Json<dto::CallbackRequest> as FromRequest<AppState>>::from_request(req, &state).await?;
    let secret = body
        .client_secret
        .clone()
        .map(secureflows_crypto::SecretString::new);
    let request = callback_request(&body, secret.as_ref(), &headers);
    let grant = state
        .services()
        .session_callback(request, actor)
        .await
        .map_err(callback_problem)?;
    if let Some(slot) = slot {
        slot.identify(grant.workspace, grant.application, Some(grant.user));
    }
    Ok(axum::Json(signed_in_body(
        grant.access_token,
        grant.refresh_token,
        grant.id_token,
    ))
    .into_response())
}

/// What the callback's body asks for.
fn callback_request<'a>(
    body: &'a dto::CallbackRequest,
    secret: Option<&'a secureflows_crypto::SecretString>,
    headers: &'a HeaderMap,
) -> CallbackRequest<'a> {
    CallbackRequest {
        id_token: body.id_token.as_deref(),
        code: body.code.as_deref(),
        client_id: body.client_id.as_deref(),
        client_secret: secret,
        code_verifier: body.code_verifier.as_deref(),
        redirect_uri: body.redirect_uri.as_deref(),
        origin: origin(headers),
    }
}

/// A refused callback as a problem.
fn callback_problem(failure: CallbackFailure) -> Problem {
    match failure {
        CallbackFailure::Refused(e) => Problem::from(e),
        CallbackFailure::Code(e) => oauth_problem(e),
    }
}

/// The body of a sign-in's answer.
fn signed_in_body(
    token: IssuedToken,
    refresh_token: Option<String>,
    id_token: Option<String>,
) -> dto::CallbackResponse {
    dto::CallbackResponse {
        session_token: token.token,
        expires_in: token.expires_in.as_secs(),
        token_type: "Bearer".into(),
        refresh_token,
        id_token,
    }
}

/// `POST /api/v1/auth/anonymous`: an anonymous (ANON) session for an application that allows them.
#[utoipa::path(post, path = "/api/v1/auth/anonymous", tag = "session",
    request_body = dto::AnonymousRequest,
    responses(
        (status = 200, description = "A new anonymous user's session", body = dto::CallbackResponse),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn anonymous(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
    req: Request,
) -> ApiResult<Response> {
    let slot = req.extensions().get::<AccessSlot>().cloned();
    let Json(body) =
        <Json<dto::AnonymousRequest> as FromRequest<AppState>>::from_request(req, &state).await?;
    let client_id = body
        .client_id
        .parse::<ApplicationId>()
        .map_err(|_| Error::invalid("client_id", "not a client id"))?;
    if let Some(retry) = state
        .sign_in_limits()
        .check_address(actor.client_ip.clone().unwrap_or_default())
    {
        return Err(Problem::from(Error::Limited {
            kind: secureflows_core::LimitKind::Rate,
            retry_after: retry,
        }));
    }
    let signed_in = state.services().start_anonymous(client_id, &actor).await?;
    if let Some(slot) = slot {
        slot.identify(signed_in.workspace, signed_in.application, Some(signed_in.user));
    }
    Ok(axum::Json(signed_in_body(signed_in.token, None, None)).into_response())
}

/// `POST /api/v1/auth/upgrade`: an upgrade ticket for the caller's anonymous session, to pass to the
/// issuer's `authorize` as `upgrade`: signing up in that flow keeps this user and its vault. ANON
/// callers only.
#[utoipa::path(post, path = "/api/v1/auth/upgrade", tag = "session",
    security(("session" = [])),
    responses(
        (status = 200, description = "The ticket (single use, 15 minutes)", body = dto::UpgradeTicket),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn upgrade(
    State(state): State<AppState>,
    UnmeteredSessionAuth(caller): UnmeteredSessionAuth,
) -> ApiResult<axum::Json<dto::UpgradeTicket>> {
    let (ticket, ttl) = state.services().upgrade_ticket(&caller).await?;
    Ok(axum::Json(dto::UpgradeTicket {
        upgrade: ticket.expose().to_owned(),
        expires_in: ttl.as_secs(),
    }))
}

/// The callback answers in problem+json: an unusable code or verifier is 401 `invalid-token`, a failed
/// client authentication 401, a full session table 429.
fn oauth_problem(e: OAuthError) -> Problem {
    match e.kind {
        OAuthErrorKind::Limited => Problem::from(Error::Limited {
            kind: secureflows_core::LimitKind::Sessions,
            retry_after: e.retry_after.unwrap_or(std::time::Duration::from_secs(1)),
        }),
        OAuthErrorKind::Unavailable => Problem::from(Error::Unavailable("sign-in")),
        OAuthErrorKind::InvalidRequest => Problem::from(Error::Malformed(e.description.to_owned())),
        OAuthErrorKind::ServerError => Problem::from(Error::internal(e.cause.unwrap_or_default())),
        _ => Problem::from(Error::invalid_token()),
    }
}

/// `GET /api/v1/auth/logout?client_id=…&post_logout_redirect_uri=…&state=…`: the browser sign-out by
/// top-level redirect. Sends the browser to the client's workspace issuer's logout endpoint, which ends
/// the single sign-on session and the sessions opened from it (vault data stays), then returns to the
/// registered URI.
#[utoipa::path(get, path = "/api/v1/auth/logout", tag = "session",
    params(
        ("client_id" = String, Query, description = "The application's client id"),
        ("post_logout_redirect_uri" = Option<String>, Query, description = "A registered post-logout URI"),
        ("state" = Option<String>, Query, description = "Returned to the post-logout URI"),
        ("id_token_hint" = Option<String>, Query, description = "An ID token of the signed-in user (skips the confirmation)"),
    ),
    responses(
        (status = 303, description = "To the issuer's logout endpoint"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn browser_logout(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult<Response> {
    let query = query.unwrap_or_default();
    let client_id = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| Error::Malformed("client_id is required".into()))?;
    let id: ApplicationId = client_id
        .parse()
        .map_err(|_| Error::invalid("client_id", "not a client id"))?;
    let app = state
        .services()
        .stores
        .applications
        .find_application(id)
        .await?
        .ok_or(Error::NotFound("application"))?;
    let location = format!("/w/{}/logout?{query}", app.workspace_id);
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|_| Error::Malformed("invalid query".into()))?,
    );
    Ok(response)
}

/// `POST /api/v1/auth/logout`: ends the caller's login session. Any SESSION JWT.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "session",
    security(("session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    UnmeteredSessionAuth(caller): UnmeteredSessionAuth,
    RequestActor(actor): RequestActor,
) -> ApiResult<StatusCode> {
    state.services().logout(&caller, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/sessions/revoke`: signs the user out everywhere. Any SESSION JWT.
#[utoipa::path(post, path = "/api/v1/sessions/revoke", tag = "session",
    security(("session" = [])),
    responses(
        (status = 204, description = "Every session of the user ended"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    UnmeteredSessionAuth(caller): UnmeteredSessionAuth,
    RequestActor(actor): RequestActor,
) -> ApiResult<StatusCode> {
    state.services().revoke_sessions(&caller, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/sessions`: the caller's keys with sizes and times. Any SESSION JWT.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "session",
    security(("session" = [])),
    responses(
        (status = 200, description = "The caller's keys", body = dto::ValueList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_values(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
) -> ApiResult<axum::Json<dto::ValueList>> {
    let values = state.services().list_values(&caller).await?;
    Ok(axum::Json(dto::ValueList {
        keys: values
            .into_iter()
            .map(|v| dto::ListedValue {
                unreadable: v.key.is_none(),
                key: v.key,
                size: v.size,
                created_at: v.created_at.rfc3339(),
                updated_at: v.updated_at.rfc3339(),
                expires_at: v.expires_at.rfc3339(),
            })
            .collect(),
    }))
}

/// `POST /api/v1/sessions/set/{key}`: stores the body, with its content type, under the key.
/// 201 for a new key, 200 for a replaced value. Any SESSION JWT.
#[utoipa::path(post, path = "/api/v1/sessions/set/{key}", tag = "session",
    security(("session" = [])),
    params(("key" = String, Path, pattern = "^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description = "Key name: 1 to 128 of A-Z a-z 0-9 . _ - :")),
    request_body(content = Vec<u8>, content_type = "*/*", description = "Any JSON or bytes; the content type is kept"),
    responses(
        (status = 201, description = "Stored under a new key", body = dto::ValueMeta),
        (status = 200, description = "Replaced", body = dto::ValueMeta),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_value(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
    KeyPath(key): KeyPath,
    headers: HeaderMap,
    req: Request<Body>,
) -> ApiResult<Response> {
    let slot = req.extensions().get::<AccessSlot>().cloned();
    let content_type =
        vault::parse_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))?;
    let limit = state
        .services()
        .value_limit(&caller)
        .min(state.config().server.max_body_bytes);
    let plan_limit = state.services().value_limit(&caller);
    let too_large = || {
        if limit < plan_limit {
            Problem::request_too_large(limit)
        } else {
            Problem::from(Error::TooLarge { limit: plan_limit })
        }
    };
    let bytes = read_body(&headers, req.into_body(), limit, too_large).await?;
    if let Some(slot) = slot {
        slot.set_bytes_in(bytes.len() as u64);
    }
    let (value, result) = state
        .services()
        .set_value(&caller, &key, &content_type, &bytes)
        .await?;
    let status = match result {
        SetResult::Created => StatusCode::CREATED,
        SetResult::Replaced => StatusCode::OK,
    };
    Ok((status, axum::Json(meta(value))).into_response())
}

/// `GET /api/v1/sessions/get/{key}`: the value exactly as stored, with its content type. Any SESSION JWT.
#[utoipa::path(get, path = "/api/v1/sessions/get/{key}", tag = "session",
    security(("session" = [])),
    params(("key" = String, Path, pattern = "^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description = "Key name")),
    responses(
        (status = 200, description = "The value with its content type", content_type = "*/*", body = Vec<u8>),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_value(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
    KeyPath(key): KeyPath,
) -> ApiResult<Response> {
    let value = state.services().get_value(&caller, &key).await?;
    Ok(value_response(value))
}

/// A stored value exactly as stored, with its content type, sandboxed and as an attachment so that a
/// browser never renders it in our origin.
pub(crate) fn value_response(value: vault::StoredValue) -> Response {
    let content_type = HeaderValue::from_str(&value.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static(vault::DEFAULT_CONTENT_TYPE));
    let mut response = (StatusCode::OK, value.bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_SANDBOX),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    if let Ok(v) = HeaderValue::from_str(&value.meta.updated_at.rfc3339()) {
        h.insert("x-updated-at", v);
    }
    response
}

/// `DELETE /api/v1/sessions/delete/{key}`: removes the value. 204, or 404 if there was none.
#[utoipa::path(delete, path = "/api/v1/sessions/delete/{key}", tag = "session",
    security(("session" = [])),
    params(("key" = String, Path, pattern = "^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description = "Key name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_value(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
    KeyPath(key): KeyPath,
) -> ApiResult<StatusCode> {
    state.services().delete_value(&caller, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/limits/consume` `{cost?}`: charges a back end's own call (or `cost` of them) to the
/// caller's hourly budgets, the same ones the Session API counts against. The subject comes from the
/// SESSION JWT only. Over a budget: 429 `rate-limited` with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/limits/consume", tag = "session",
    security(("session" = [])),
    request_body(content = Option<dto::ConsumeRequest>, description = "Optional; an empty body charges 1"),
    responses(
        (status = 200, description = "Charged", body = dto::ConsumeResult,
            headers(("RateLimit-Policy" = String), ("RateLimit" = String))),
        (status = 429, description = "A budget is used up", body = dto::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64), ("RateLimit-Policy" = String), ("RateLimit" = String))),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn consume(
    State(state): State<AppState>,
    UnmeteredSessionAuth(caller): UnmeteredSessionAuth,
    req: Request<Body>,
) -> ApiResult<axum::Json<dto::ConsumeResult>> {
    let slot = req.extensions().get::<ChargeSlot>().cloned();
    // No body at all charges one; a body must be JSON.
    let request = if req.headers().contains_key(header::CONTENT_TYPE) {
        let Json(request) = Json::<dto::ConsumeRequest>::from_request(req, &state).await?;
        request
    } else {
        let (parts, body) = req.into_parts();
        read_body(&parts.headers, body, 0, || {
            Problem::unsupported_media_type("application/json")
        })
        .await?;
        dto::ConsumeRequest::default()
    };
    let cost = match request.cost {
        None => NonZeroU32::MIN,
        Some(n) => NonZeroU32::new(n)
            .filter(|n| n.get() <= limits::MAX_COST)
            .ok_or_else(|| Error::invalid("cost", "must be between 1 and 1000"))?,
    };
    let tier = state
        .services()
        .tier_of(&caller.application, caller.token.user)
        .await?;
    let charge = state.services().charge_session(&caller, cost).await?;
    let charge = ChargeSlot::record(slot.as_ref(), charge)?;
    Ok(axum::Json(dto::ConsumeResult {
        charged: cost.get(),
        tier: tier.map(|t| t.name),
        budgets: charge
            .budgets
            .iter()
            .map(|b| dto::BudgetState {
                policy: b.policy.to_owned(),
                limit: b.limit,
                remaining: b.remaining,
                reset: b
                    .reset
                    .as_secs()
                    .saturating_add(u64::from(b.reset.subsec_nanos() > 0)),
            })
            .collect(),
    }))
}

/// `POST /api/v1/billing/checkout-reference`: a signed reference for the calling end user (SESSION JWT,
/// not a guest), for the application's Stripe checkout (`client_reference_id` and
/// `subscription_data.metadata.secureflows_ref`), so that its webhooks link the subscription to this
/// user. The subject comes from the token only.
#[utoipa::path(post, path = "/api/v1/billing/checkout-reference", tag = "session",
    security(("session" = [])),
    responses(
        (status = 200, description = "The reference", body = dto::CheckoutReference),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkout_reference(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
) -> ApiResult<axum::Json<dto::CheckoutReference>> {
    let (reference, expires) = state.services().user_checkout_reference(&caller)?;
    Ok(axum::Json(dto::CheckoutReference {
        reference,
        expires_at: expires.rfc3339(),
    }))
}
