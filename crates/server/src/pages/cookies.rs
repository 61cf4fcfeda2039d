//! The cookies of the pages: reading them, writing them (`HttpOnly`; `Secure` when the public URL is
//! https), and the hosted login's single sign-on cookies, which the console's first run sets too.

use axum::http::{HeaderMap, HeaderValue, header};
use secureflows_core::WorkspaceId;
use secureflows_core::login::hosted::BrowserLogin;

use crate::state::AppState;

/// The hosted login's single sign-on cookie (path `/w/{workspace}/`).
pub const SSO_COOKIE: &str = "sf_sso";
/// The hosted login's CSRF cookie (path `/w/{workspace}/`).
pub const CSRF_COOKIE: &str = "sf_csrf";

/// Reads a cookie of the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure` under https, for `path`; `max_age` zero deletes it.
pub fn set_cookie(
    state: &AppState,
    path: &str,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    let secure = if state.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let text = format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}{secure}{age}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The cookies of a browser that just signed in to a workspace's hosted login: its single sign-on
/// cookie, and a new CSRF cookie (so a value someone planted before is worth nothing after).
pub fn sign_in_cookies(
    state: &AppState,
    workspace: WorkspaceId,
    login: &BrowserLogin,
) -> Result<[HeaderValue; 2], secureflows_crypto::CryptoError> {
    let path = format!("/w/{workspace}/");
    let ttl = state.services().settings.login.browser_session_ttl.as_secs();
    let csrf = secureflows_crypto::random_token("")?;
    Ok([
        set_cookie(state, &path, SSO_COOKIE, login.cookie.expose(), "Lax", Some(ttl)),
        set_cookie(state, &path, CSRF_COOKIE, &csrf, "Strict", None),
    ])
}
