//! Public documents and health: JWKS, OpenID discovery of our issuer, liveness and readiness.

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
    response
}

/// `GET /.well-known/openid-configuration`: where back ends find our keys (RFC 8414 metadata subset).
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "operations",
    responses((status = 200, description = "Issuer metadata", body = Object)))]
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    let issuer = state.issuer();
    let doc = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": [state.config().signing_algorithm().as_str()],
    });
    let mut response = axum::Json(doc).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
