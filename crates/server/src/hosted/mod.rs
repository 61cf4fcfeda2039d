//! The hosted login: the pages a workspace's users sign in, sign up, recover and manage their
//! account with, and the OpenID provider endpoints its applications call. This module is the router
//! only; each flow has its own file, and what every page shares lives in `context` and `crate::pages`.

mod account;
mod authorize;
mod context;
pub mod devices;
mod federation;
mod invite;
mod links;
mod login;
mod logout;
mod mfa;
pub mod oauth;
mod passkeys;
mod reset;
mod signup;
pub mod views;

use axum::Router;
use axum::routing::{get, post};

use crate::pages;
use crate::state::AppState;

/// The hosted login's routes.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/assets/login.css", get(pages::stylesheet))
        .route("/assets/strength.js", get(pages::strength_script))
        .route("/assets/confirm.js", get(pages::confirm_script))
        .route("/assets/passkey.js", get(pages::passkey_script))
        .route("/w/{workspace}/passkey/options", post(passkeys::options))
        .route("/w/{workspace}/upstream/callback", get(federation::callback))
        .route("/w/{workspace}/upstream/{provider}", get(federation::start))
        .route("/w/{workspace}/account/upstream", post(federation::link_start))
        .route("/w/{workspace}/passkey/sign-in", post(passkeys::sign_in))
        .route("/w/{workspace}/mfa/passkey", post(passkeys::second_factor))
        .route("/w/{workspace}/mfa/setup/passkey", post(passkeys::enrol))
        .route("/w/{workspace}/account/passkeys", post(passkeys::register))
        .route("/w/{workspace}/account/passkeys/remove", post(passkeys::remove))
        .route("/w/{workspace}/authorize", get(authorize::authorize))
        .route("/w/{workspace}/brand.css", get(views::brand_stylesheet))
        .route(
            "/w/{workspace}/login",
            get(login::login_page).post(login::login_submit),
        )
        .route("/w/{workspace}/login/continue", post(login::login_continue))
        .route(
            "/w/{workspace}/signup",
            get(signup::signup_page).post(signup::signup_submit),
        )
        .route(
            "/w/{workspace}/signup/confirm",
            get(signup::signup_confirm_page).post(signup::signup_confirm),
        )
        .route(
            "/w/{workspace}/logout",
            get(logout::logout).post(logout::logout_confirm),
        )
        .route("/w/{workspace}/mfa", get(mfa::mfa_page).post(mfa::mfa_submit))
        .route(
            "/w/{workspace}/mfa/setup",
            get(mfa::required_setup).post(mfa::required_confirm),
        )
        .route("/w/{workspace}/account", get(account::account_page))
        .route("/w/{workspace}/account/export", get(account::export))
        .route(
            "/w/{workspace}/invite/accept",
            get(invite::invite_page).post(invite::invite_accept),
        )
        .route("/w/{workspace}/account/sessions/end", post(account::end_session))
        .route(
            "/w/{workspace}/account/sessions/end-others",
            post(account::end_others),
        )
        .route("/w/{workspace}/account/password", post(account::change_password))
        .route(
            "/w/{workspace}/account/totp",
            get(account::totp_setup).post(account::totp_confirm),
        )
        .route("/w/{workspace}/account/totp/disable", post(account::totp_disable))
        .route(
            "/w/{workspace}/magic",
            get(links::magic_page).post(links::magic_request),
        )
        .route("/w/{workspace}/magic/confirm", post(links::magic_confirm))
        .route(
            "/w/{workspace}/forgot",
            get(reset::forgot_page).post(reset::forgot_request),
        )
        .route(
            "/w/{workspace}/reset",
            get(reset::reset_page).post(reset::reset_submit),
        )
        .route(
            "/w/{workspace}/verify",
            get(links::verify_page).post(links::verify_confirm),
        )
        .route_layer(axum::middleware::from_fn(pages::frame_cookie))
        .merge(oidc_endpoints(state))
}

/// The issuer's endpoints that browser applications call with `fetch` (CORS, see
/// `middleware::oidc_cors`).
fn oidc_endpoints(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/w/{workspace}/.well-known/openid-configuration",
            get(oauth::discovery),
        )
        .route("/w/{workspace}/token", post(oauth::token))
        .route(
            "/w/{workspace}/userinfo",
            get(oauth::userinfo).post(oauth::userinfo),
        )
        .route("/w/{workspace}/revoke", post(oauth::revoke))
        .route("/w/{workspace}/introspect", post(oauth::introspect))
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::middleware::oidc_cors,
        ))
}
