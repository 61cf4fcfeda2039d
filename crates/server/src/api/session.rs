//! Session API handlers (`/api/v1/...`, SESSION JWT). Each one: extract, authorize, call one service,
//! map to a DTO. Identity comes from the token only.

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_api_types as dto;
use secureflows_core::vault::{self, SetResult, ValueMeta};
use secureflows_core::{ApplicationId, Error};

use crate::access_log::AccessSlot;
use crate::extract::{Json, KeyPath, SessionAuth, origin, read_body};
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
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let slot = req.extensions().get::<AccessSlot>().cloned();
    let Json(body) = <Json<dto::CallbackRequest> as FromRequest<AppState>>::from_request(req, &state).await?;
    let client_id = body
        .client_id
        .as_deref()
        .map(|c| {
            c.parse::<ApplicationId>()
                .map_err(|_| Error::invalid("client_id", "not a client id"))
        })
        .transpose()?;
    let signed_in = state
        .services()
        .exchange_id_token(&body.id_token, client_id, origin(&headers))
        .await?;
    if let Some(slot) = slot {
        slot.identify(signed_in.workspace, signed_in.application, Some(signed_in.user));
    }
    let response = dto::CallbackResponse {
        session_token: signed_in.token.token,
        expires_in: signed_in.token.expires_in.as_secs(),
        token_type: "Bearer".into(),
    };
    Ok(axum::Json(response).into_response())
}

/// `POST /api/v1/auth/logout`: ends the caller's login session. Any SESSION JWT.
pub async fn logout(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
) -> ApiResult<StatusCode> {
    state.services().logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/sessions/revoke`: signs the user out everywhere. Any SESSION JWT.
pub async fn revoke_sessions(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
) -> ApiResult<StatusCode> {
    state.services().revoke_sessions(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/sessions`: the caller's keys with sizes and times. Any SESSION JWT.
pub async fn list_values(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
) -> ApiResult<axum::Json<dto::ValueList>> {
    let values = state.services().list_values(&caller).await?;
    Ok(axum::Json(dto::ValueList {
        keys: values.into_iter().map(meta).collect(),
    }))
}

/// `POST /api/v1/sessions/set/{key}`: stores the body, with its content type, under the key.
/// 201 for a new key, 200 for a replaced value. Any SESSION JWT.
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
pub async fn get_value(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
    KeyPath(key): KeyPath,
) -> ApiResult<Response> {
    let value = state.services().get_value(&caller, &key).await?;
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
    Ok(response)
}

/// `DELETE /api/v1/sessions/delete/{key}`: removes the value. 204, or 404 if there was none.
pub async fn delete_value(
    State(state): State<AppState>,
    SessionAuth(caller): SessionAuth,
    KeyPath(key): KeyPath,
) -> ApiResult<StatusCode> {
    state.services().delete_value(&caller, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
