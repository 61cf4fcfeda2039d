//! The web console at `/console`: a workspace is set up and run from the browser. The first run
//! (`setup`) creates the first workspace from a one-time link; afterwards members sign in through
//! their workspace's hosted login (`signin`), and OWNERs and ADMINs manage the workspace, each area
//! on its own page and in its own file. Every change calls the same core service as the management
//! API, with the console member as the actor. This module is the router only.

mod applications;
mod context;
mod overview;
mod setup;
mod signin;
mod start;
mod views;

use axum::Router;
use axum::routing::{get, post};

use crate::pages;
use crate::state::AppState;

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(start::root))
        .route("/assets/console.css", get(pages::console_stylesheet))
        .route("/console", get(start::start))
        .route("/console/open", get(start::open))
        .route("/console/setup", get(setup::setup_page).post(setup::setup_submit))
        .route("/console/callback", get(signin::callback))
        .route("/console/w/{workspace}/signin", get(signin::sign_in))
        .route("/console/w/{workspace}/signout", post(signin::sign_out))
        .route("/console/w/{workspace}", get(overview::overview))
        .route(
            "/console/w/{workspace}/applications",
            get(applications::list).post(applications::create),
        )
        .route(
            "/console/w/{workspace}/applications/new",
            get(applications::new_form),
        )
        .route(
            "/console/w/{workspace}/applications/{id}",
            get(applications::show).post(applications::update),
        )
        .route(
            "/console/w/{workspace}/applications/{id}/secret",
            get(applications::confirm_rotate).post(applications::rotate),
        )
        .route(
            "/console/w/{workspace}/applications/{id}/delete",
            get(applications::confirm_delete).post(applications::delete),
        )
        .route_layer(axum::middleware::from_fn(pages::frame_cookie))
}
