//! The one place the routers meet: the JSON APIs (`api`) and the pages (`hosted`, `console`) are
//! siblings that never import each other; they are composed here at start-up, inside the
//! envelope every request passes through.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::state::AppState;

/// The whole application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::api::router(state.clone()))
        .merge(crate::hosted::router(state.clone()))
        .merge(crate::console::router(state.clone()))
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), crate::middleware::envelope))
        .with_state(state)
}

async fn not_found() -> Response {
    Problem::not_found().detail("no such route").into_response()
}
