//! What every hosted-login page handler starts from: its workspace and browser (`PageContext`), the
//! cookies the pages set, and form posts checked for CSRF and Origin.

use axum::Form;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use secureflows_core::audit::Actor;
use secureflows_core::{BrowserSession, Error, User, WorkspaceId};
use serde::Deserialize;

use super::views::Brand;
use crate::extract::request_actor;
pub(super) use crate::pages::see_other;
use crate::pages::{Frame, PageError, PageResult};
use crate::request::RequestContext;
use crate::state::AppState;

pub(super) use crate::pages::{CSRF_COOKIE, SSO_COOKIE, cookie};
/// A long-lived random id of the browser, so that a sign-in from a new one can be reported.
pub(super) const DEVICE_COOKIE: &str = "sf_device";
const DEVICE_COOKIE_AGE: u64 = 400 * 24 * 3600;
/// The pending second-factor step of a sign-in (five minutes).
pub(super) const MFA_COOKIE: &str = "sf_mfa";
/// The browser that asked for a verification-first sign-up (its link finishes only there).
pub(super) const SIGNUP_COOKIE: &str = "sf_signup";
pub(super) const SIGNUP_COOKIE_AGE: u64 = 30 * 60;

/// Everything a page handler needs about its workspace and browser.
pub(super) struct PageContext {
    pub workspace: WorkspaceId,
    pub brand: Brand,
    /// The browser had no CSRF cookie: one is set on the response (`pages::frame_cookie`), and no
    /// form post is accepted in this request.
    pub new_csrf_cookie: bool,
    pub csrf: String,
    /// The signed-in browser, if its sign-in meets the user's factors and the workspace's policy.
    pub sso: Option<(BrowserSession, User)>,
    /// A signed-in browser whose sign-in no longer does (a second factor added since, or required
    /// now): it is not signed in until it steps up.
    pub weak_sso: Option<(BrowserSession, User)>,
    pub device: Option<String>,
    pub magic_links: bool,
    pub passkeys: bool,
    pub providers: Vec<secureflows_core::IdentityProvider>,
    pub policy: secureflows_core::login::LoginPolicy,
}

/// A cookie of the workspace's pages (`HttpOnly`, `Secure` under https).
pub(super) fn set_cookie(
    state: &AppState,
    workspace: WorkspaceId,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    crate::pages::set_cookie(
        state,
        &format!("/w/{workspace}/"),
        name,
        value,
        same_site,
        max_age,
    )
}

/// The cookie that keeps a browser's id.
pub(super) fn device_cookie(state: &AppState, ctx: &PageContext, device: &str) -> HeaderValue {
    set_cookie(
        state,
        ctx.workspace,
        DEVICE_COOKIE,
        device,
        "Lax",
        Some(DEVICE_COOKIE_AGE),
    )
}

/// This browser's id (`sf_device`), and whether it is new (its cookie still to be set).
pub(super) fn browser_id(ctx: &PageContext) -> Result<(String, bool), Error> {
    match &ctx.device {
        Some(d) => Ok((d.clone(), false)),
        None => Ok((secureflows_crypto::random_token("")?, true)),
    }
}

/// `path` continuing a flow.
pub(super) fn with_flow(path: &str, flow: Option<&str>) -> String {
    match flow {
        Some(f) => format!("{path}?flow={f}"),
        None => path.to_owned(),
    }
}

/// The pairs of a query string, in order, repeated names kept.
pub(super) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A page's `?flow=` parameter.
#[derive(Debug, Deserialize)]
pub(super) struct FlowQuery {
    pub flow: Option<String>,
}

/// The browser's CSRF cookie, or a new one and its `Set-Cookie` value.
fn csrf_cookie(
    state: &AppState,
    workspace: WorkspaceId,
    headers: &HeaderMap,
) -> PageResult<(String, Option<(&'static str, HeaderValue)>)> {
    if let Some(c) = cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 43) {
        return Ok((c.to_owned(), None));
    }
    let fresh = secureflows_crypto::random_token("")?;
    let value = set_cookie(state, workspace, CSRF_COOKIE, &fresh, "Strict", None);
    Ok((fresh, Some((CSRF_COOKIE, value))))
}

/// Frames this request's error pages with the workspace's brand and sign-in page, and carries a new
/// CSRF cookie onto whatever the page answers (`pages::frame_cookie`).
fn frame_errors(workspace: WorkspaceId, brand: &Brand, new_cookie: Option<(&'static str, HeaderValue)>) {
    if let Some(request) = RequestContext::current() {
        let _ = request.frame.set(Frame {
            brand: brand.clone(),
            way_on: (format!("/w/{workspace}/login"), "Go to the sign-in page".into()),
            new_cookie,
        });
    }
}

/// The context of a page of `workspace`. Frames the request's error pages with the workspace's brand
/// and sign-in link.
pub(super) async fn page_context(
    state: &AppState,
    workspace: &str,
    headers: &HeaderMap,
) -> PageResult<PageContext> {
    let workspace: WorkspaceId = workspace.parse().map_err(|_| PageError::no_such_page())?;
    let services = state.services();
    let found = match services.get_workspace(workspace).await {
        Err(Error::NotFound(_)) => return Err(PageError::no_such_page()),
        found => found?,
    };
    let brand = Brand::of(&found);
    let (csrf_cookie, new_cookie) = csrf_cookie(state, workspace, headers)?;
    let new_csrf_cookie = new_cookie.is_some();
    frame_errors(workspace, &brand, new_cookie);
    let signed_in = match cookie(headers, SSO_COOKIE) {
        Some(c) => services.browser_session(workspace, c).await?,
        None => None,
    };
    let csrf = services
        .csrf_token(workspace, &csrf_cookie, signed_in.as_ref().map(|(s, _)| s.id))
        .await?;
    let (sso, weak_sso) = match signed_in {
        // SECURITY: a session from before the user's second factor (or the workspace's rule) is not a
        // sign-in that meets them: it steps up before anything is done with it.
        Some(found) if services.session_meets_factors(&found.0, &found.1).await? => (Some(found), None),
        Some(found) => (None, Some(found)),
        None => (None, None),
    };
    Ok(PageContext {
        workspace,
        brand,
        new_csrf_cookie,
        csrf,
        sso,
        weak_sso,
        device: cookie(headers, DEVICE_COOKIE)
            .filter(|c| c.len() == 43)
            .map(str::to_owned),
        magic_links: services.mailer.enabled(),
        passkeys: services.passkeys_available(),
        providers: services.sign_in_providers(workspace).await?,
        policy: found.login_policy,
    })
}

impl PageContext {
    /// The sign-in page, continuing `flow`.
    pub fn login_link(&self, flow: Option<&str>) -> String {
        with_flow(&format!("/w/{}/login", self.workspace), flow)
    }

    /// The sign-up page, continuing `flow`.
    pub fn signup_link(&self, flow: Option<&str>) -> String {
        with_flow(&format!("/w/{}/signup", self.workspace), flow)
    }

    /// A form post is ours: the CSRF token matches this browser's cookie and the Origin, if sent, is
    /// ours.
    fn check_form(&self, state: &AppState, headers: &HeaderMap, token: &str) -> PageResult<()> {
        let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(origin) => {
                url::Url::parse(state.issuer()).is_ok_and(|u| u.origin().ascii_serialization() == origin)
            }
        };
        if self.new_csrf_cookie
            || !origin_ok
            || !secureflows_crypto::constant_time_eq(token.as_bytes(), self.csrf.as_bytes())
        {
            return Err(PageError::stale_form());
        }
        Ok(())
    }
}

pub(super) use crate::pages::CsrfForm;

/// Reads a page's form post: the page context, the form (CSRF and Origin checked) and the request's
/// actor.
pub(super) async fn form_post<T: CsrfForm>(
    state: &AppState,
    workspace: &str,
    request: Request,
) -> PageResult<(PageContext, T, Actor)> {
    let (parts, body) = request.into_parts();
    let ctx = page_context(state, workspace, &parts.headers).await?;
    let actor = request_actor(&parts, state);
    let headers = parts.headers.clone();
    let request = Request::from_parts(parts, body);
    let Ok(Form(form)) =
        <Form<T> as axum::extract::FromRequest<AppState>>::from_request(request, state).await
    else {
        return Err(PageError::incomplete_form());
    };
    ctx.check_form(state, &headers, form.csrf())?;
    Ok((ctx, form, actor))
}

pub(super) use crate::pages::csrf_form;
