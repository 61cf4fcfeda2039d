//! The HTTP routers: the Session API (SESSION JWT), the public well-known documents and health.
//! Each router has its own middleware; the envelope wraps them all.

pub mod session;
pub mod wellknown;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::middleware;
use crate::problem::Problem;
use crate::state::AppState;

/// The whole application.
pub fn router(state: AppState) -> Router {
    let session_api = Router::new()
        .route("/api/v1/auth/callback", post(session::callback))
        .route("/api/v1/auth/logout", post(session::logout))
        .route("/api/v1/sessions", get(session::list_values))
        .route("/api/v1/sessions/set/{key}", post(session::set_value))
        .route("/api/v1/sessions/get/{key}", get(session::get_value))
        .route("/api/v1/sessions/delete/{key}", delete(session::delete_value))
        .route("/api/v1/sessions/revoke", post(session::revoke_sessions))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), middleware::session_api));

    let public = Router::new()
        .route("/healthz", get(wellknown::healthz))
        .route("/readyz", get(wellknown::readyz))
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(wellknown::openid_configuration),
        )
        .method_not_allowed_fallback(method_not_allowed);

    Router::new()
        .merge(session_api)
        .merge(public)
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), middleware::envelope))
        .with_state(state)
}

async fn not_found() -> Response {
    Problem::not_found().detail("no such route").into_response()
}

async fn method_not_allowed() -> Response {
    Problem::method_not_allowed().into_response()
}
