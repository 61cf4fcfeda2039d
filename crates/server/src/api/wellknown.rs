//! Public documents and health: the JWKS that verifies every token, liveness and readiness. The
//! OpenID configuration is each workspace's (`/w/{workspace}/.well-known/openid-configuration`): tokens
//! carry their workspace's issuer, and the instance URL is no issuer.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use secureflows_api_types::Health;

use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

/// `GET /healthz`: the process is up. Public.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok".into() })
}

/// `GET /readyz`: database and key ring reachable, migrations current, a signing key loaded. Public.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = secureflows_api_types::Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Health>> {
    let stores = &state.services().stores;
    stores.health.check_ready().await?;
    stores.keyring.check_ready().await?;
    if state.services().tokens.jwks()["keys"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        return Err(Problem::from(secureflows_core::Error::Unavailable(
            "no signing key",
        )));
    }
    Ok(axum::Json(Health {
        status: "ready".into(),
    }))
}

/// `GET /.well-known/jwks.json`: the public keys that verify our tokens (current and recently retired).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "JWK Set (RFC 7517)", content_type = "application/jwk-set+json", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.services().tokens.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    // Public keys: any browser application may fetch them.
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}
