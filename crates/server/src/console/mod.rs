//! The web console at `/console`: a workspace is set up and run from the browser. The first run
//! (`setup`) creates the first workspace from a one-time link; afterwards members sign in through
//! their workspace's hosted login (`signin`), and OWNERs and ADMINs manage the workspace, each area
//! on its own page and in its own file. Every change calls the same core service as the management
//! API, with the console member as the actor. This module is the router only.

mod applications;
mod audit;
mod context;
mod keys;
mod members;
mod overview;
mod plan;
mod settings;
mod setup;
mod signin;
mod start;
mod tiers;
mod users;
mod views;

use axum::Router;
use axum::routing::{get, post};

use crate::pages;
use crate::state::AppState;

/// The console's routes.
pub fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/console", get(start::start))
        .route("/console/open", get(start::open))
        .route("/console/setup", get(setup::setup_page).post(setup::setup_submit))
        .route("/console/setup/passkey/options", post(setup::passkey_options))
        .route(
            "/console/signup",
            get(setup::signup_page).post(setup::signup_submit),
        )
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
            "/console/w/{workspace}/applications/{id}/tiers",
            post(tiers::save_tiers),
        )
        .route(
            "/console/w/{workspace}/applications/{id}/stripe",
            post(tiers::save_stripe),
        )
        .route(
            "/console/w/{workspace}/users/{id}/tier",
            post(tiers::set_user_tier),
        )
        .route(
            "/console/w/{workspace}/plan/reference",
            post(tiers::checkout_reference),
        )
        .route(
            "/console/w/{workspace}/applications/{id}/secret",
            get(applications::confirm_rotate).post(applications::rotate),
        )
        .route(
            "/console/w/{workspace}/applications/{id}/delete",
            get(applications::confirm_delete).post(applications::delete),
        )
        .route("/console/w/{workspace}/members", get(members::members))
        .route("/console/w/{workspace}/members/invites", post(members::invite))
        .route(
            "/console/w/{workspace}/members/invites/{id}/resend",
            post(members::resend),
        )
        .route(
            "/console/w/{workspace}/members/invites/{id}/revoke",
            get(members::confirm_revoke).post(members::revoke),
        )
        .route(
            "/console/w/{workspace}/users",
            get(users::list).post(users::search),
        )
        .route("/console/w/{workspace}/users/{id}", get(users::show))
        .route("/console/w/{workspace}/users/{id}/unlock", post(users::unlock))
        .route("/console/w/{workspace}/users/{id}/role", post(users::change_role))
        .route(
            "/console/w/{workspace}/users/{id}/values/{application}/{key}",
            post(users::read_value),
        )
        .route(
            "/console/w/{workspace}/users/{id}/{action}",
            get(users::confirm_drastic).post(users::drastic),
        )
        .route(
            "/console/w/{workspace}/audit",
            get(audit::audit).post(audit::filter),
        )
        .route("/console/w/{workspace}/audit/verify", post(audit::verify))
        .route("/console/w/{workspace}/audit/export", get(audit::export))
        .route(
            "/console/w/{workspace}/access",
            get(audit::access).post(audit::filter),
        )
        .route("/console/w/{workspace}/settings", get(settings::settings))
        .route("/console/w/{workspace}/settings/name", post(settings::rename))
        .route(
            "/console/w/{workspace}/settings/branding",
            post(settings::branding),
        )
        .route("/console/w/{workspace}/settings/policy", post(settings::policy))
        .route(
            "/console/w/{workspace}/settings/providers",
            post(settings::add_provider),
        )
        .route(
            "/console/w/{workspace}/settings/providers/{id}/remove",
            get(settings::confirm_remove).post(settings::remove_provider),
        )
        .route("/console/w/{workspace}/plan", get(plan::plan))
        .route("/console/w/{workspace}/keys", get(keys::keys))
        .route(
            "/console/w/{workspace}/keys/rotate",
            get(keys::confirm_rotate).post(keys::rotate),
        )
        .route("/console/{*rest}", get(start::no_such_page))
        .route_layer(axum::middleware::from_fn(pages::frame_cookie))
        .route_layer(axum::middleware::from_fn_with_state(state, context::public_host));
    Router::new()
        .route("/", get(start::root))
        .route("/assets/console.css", get(pages::console_stylesheet))
        .merge(pages)
}
