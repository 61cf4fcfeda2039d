//! The hosted login over HTTP: the pages a workspace's users sign in on, and the OpenID Connect
//! endpoints of the workspace's issuer `{public_url}/w/{workspace}`.
//!
//! Browser state is two cookies scoped to the workspace's path: `sf_sso` (the single sign-on session;
//! HttpOnly, SameSite=Lax so that an application's top-level redirect to `authorize` carries it, Secure
//! when the public URL is https) and `sf_csrf` (SameSite=Strict). Every form carries the CSRF token
//! derived from `sf_csrf`, and a POST whose `Origin` is another site is refused.

mod account;
pub mod devices;
mod federation;
mod links;
pub mod oauth;
pub mod pages;
mod passkeys;

use std::num::NonZeroU32;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secureflows_core::audit::Actor;
use secureflows_core::login::hosted::SignUp;
use secureflows_core::login::mfa::FirstFactor;
use secureflows_core::login::oidc::{AuthorizeError, AuthorizeParams, redirect_to};
use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::login::signup::SignUpStart;
use secureflows_core::{AuthFailure, BrowserSession, EmailAddress, Error, FlowId, User, WorkspaceId};
use secureflows_crypto::SecretString;
use serde::Deserialize;

use self::pages::{Brand, LoginPage, MessagePage, SignupPage, error_page, render};
use crate::extract::request_actor;
use crate::state::AppState;

const SSO_COOKIE: &str = "sf_sso";
const CSRF_COOKIE: &str = "sf_csrf";
/// A long-lived random id of the browser, so that a sign-in from a new one can be reported.
const DEVICE_COOKIE: &str = "sf_device";
const DEVICE_COOKIE_AGE: u64 = 400 * 24 * 3600;
/// The pending second-factor step of a sign-in (five minutes).
const MFA_COOKIE: &str = "sf_mfa";
/// The browser that asked for a verification-first sign-up (its link finishes only there).
const SIGNUP_COOKIE: &str = "sf_signup";
const SIGNUP_COOKIE_AGE: u64 = 30 * 60;

/// Sign-in throttles: per account and per client address.
#[derive(Debug)]
pub struct SignInLimits {
    accounts: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<String>,
}

impl SignInLimits {
    /// `per_minute` attempts per account and per client address.
    pub fn new(per_minute: u32) -> SignInLimits {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN));
        SignInLimits {
            accounts: RateLimiter::keyed(quota),
            addresses: RateLimiter::keyed(quota),
        }
    }

    /// Takes one attempt for a client address alone; `Some(retry_after)` if it is used up.
    pub fn check_address(&self, address: String) -> Option<Duration> {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        let result = self
            .addresses
            .check_key(&address)
            .err()
            .map(|n| n.wait_time_from(now).max(Duration::from_secs(1)));
        if self.addresses.len() > 100_000 {
            self.addresses.retain_recent();
        }
        result
    }

    /// Takes one attempt for both keys; `Err(retry_after)` if either is used up.
    fn check(&self, account: String, address: String) -> Result<(), Duration> {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        for (limiter, key) in [(&self.addresses, address), (&self.accounts, account)] {
            if let Err(not_until) = limiter.check_key(&key) {
                return Err(not_until.wait_time_from(now).max(Duration::from_secs(1)));
            }
            if limiter.len() > 100_000 {
                limiter.retain_recent();
            }
        }
        Ok(())
    }
}

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
        .route("/w/{workspace}/authorize", get(authorize))
        .route("/w/{workspace}/brand.css", get(pages::brand_stylesheet))
        .route("/w/{workspace}/login", get(login_page).post(login_submit))
        .route("/w/{workspace}/login/continue", post(login_continue))
        .route("/w/{workspace}/signup", get(signup_page).post(signup_submit))
        .route(
            "/w/{workspace}/signup/confirm",
            get(links::signup_confirm_page).post(links::signup_confirm),
        )
        .route("/w/{workspace}/logout", get(logout).post(logout_confirm))
        .route(
            "/w/{workspace}/mfa",
            get(account::mfa_page).post(account::mfa_submit),
        )
        .route(
            "/w/{workspace}/mfa/setup",
            get(account::required_setup).post(account::required_confirm),
        )
        .route("/w/{workspace}/account", get(account::account_page))
        .route("/w/{workspace}/account/export", get(account::export))
        .route(
            "/w/{workspace}/invite/accept",
            get(links::invite_page).post(links::invite_accept),
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
            get(links::forgot_page).post(links::forgot_request),
        )
        .route(
            "/w/{workspace}/reset",
            get(links::reset_page).post(links::reset_submit),
        )
        .route(
            "/w/{workspace}/verify",
            get(links::verify_page).post(links::verify_confirm),
        )
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

/// Everything a page handler needs about its workspace and browser.
struct PageContext {
    workspace: WorkspaceId,
    brand: Brand,
    csrf_cookie: String,
    new_csrf_cookie: bool,
    csrf: String,
    /// The signed-in browser, if its sign-in meets the user's factors and the workspace's policy.
    sso: Option<(BrowserSession, User)>,
    /// A signed-in browser whose sign-in no longer does (a second factor added since, or required
    /// now): it is not signed in until it steps up.
    weak_sso: Option<(BrowserSession, User)>,
    device: Option<String>,
    magic_links: bool,
    passkeys: bool,
    providers: Vec<secureflows_core::IdentityProvider>,
    policy: secureflows_core::login::LoginPolicy,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure_flag(state: &AppState) -> &'static str {
    if state.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(
    state: &AppState,
    workspace: WorkspaceId,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    let text = format!(
        "{name}={value}; Path=/w/{workspace}/; HttpOnly; SameSite={same_site}{}{age}",
        secure_flag(state)
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Changing how one signs in (passkeys, linked providers) needs a sign-in at most this old: a stolen
/// session cookie alone must not plant an attacker's way in or remove the owner's.
const RECENT_SIGN_IN: Duration = Duration::from_secs(15 * 60);

fn recently_signed_in(state: &AppState, session: &BrowserSession) -> bool {
    state.services().clock.now().since(session.auth_time) <= RECENT_SIGN_IN
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn page_context(
    state: &AppState,
    workspace: &str,
    headers: &HeaderMap,
) -> Result<PageContext, Response> {
    let unknown = || {
        error_page(
            StatusCode::NOT_FOUND,
            Brand::new("secureFlows"),
            "There is no such sign-in page.",
        )
    };
    let workspace: WorkspaceId = workspace.parse().map_err(|_| unknown())?;
    let services = state.services();
    let found = match services.get_workspace(workspace).await {
        Ok(found) => found,
        Err(Error::NotFound(_)) => return Err(unknown()),
        Err(e) => return Err(internal(e)),
    };
    let brand = Brand::of(&found);
    let (csrf_cookie, new_csrf_cookie) = match cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 43) {
        Some(c) => (c.to_owned(), false),
        None => match secureflows_crypto::random_token("") {
            Ok(c) => (c, true),
            Err(_) => {
                return Err(error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    brand,
                    "Please try again.",
                ));
            }
        },
    };
    let signed_in = match cookie(headers, SSO_COOKIE) {
        Some(c) => services.browser_session(workspace, c).await.map_err(internal)?,
        None => None,
    };
    let csrf = services
        .csrf_token(workspace, &csrf_cookie, signed_in.as_ref().map(|(s, _)| s.id))
        .await
        .map_err(internal)?;
    let (sso, weak_sso) = match signed_in {
        Some((session, user)) => {
            // SECURITY: a session from before the user's second factor (or the workspace's rule) is
            // not a sign-in that meets them: it steps up before anything is done with it.
            if services
                .session_meets_factors(&session, &user)
                .await
                .map_err(internal)?
            {
                (Some((session, user)), None)
            } else {
                (None, Some((session, user)))
            }
        }
        None => (None, None),
    };
    Ok(PageContext {
        workspace,
        brand,
        csrf_cookie,
        new_csrf_cookie,
        csrf,
        sso,
        weak_sso,
        device: cookie(headers, DEVICE_COOKIE)
            .filter(|c| c.len() == 43)
            .map(str::to_owned),
        magic_links: services.mailer.enabled(),
        passkeys: services.passkeys_available(),
        providers: services.sign_in_providers(workspace).await.map_err(internal)?,
        policy: found.login_policy,
    })
}

fn internal(e: Error) -> Response {
    let busy = matches!(e, Error::Unavailable(_));
    if busy {
        tracing::warn!(error = %e, "hosted login request could not be served now");
    } else {
        tracing::error!(error = %e, "hosted login request failed");
    }
    let mut response = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        Brand::new("secureFlows"),
        "The sign-in service could not complete this request. Please try again.",
    );
    if busy {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

impl PageContext {
    /// Attaches a new CSRF cookie if this browser had none.
    fn finish(&self, state: &AppState, mut response: Response) -> Response {
        if self.new_csrf_cookie {
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    state,
                    self.workspace,
                    CSRF_COOKIE,
                    &self.csrf_cookie,
                    "Strict",
                    None,
                ),
            );
        }
        response
    }

    fn login_link(&self, flow: Option<&str>) -> String {
        with_flow(&format!("/w/{}/login", self.workspace), flow)
    }

    fn signup_link(&self, flow: Option<&str>) -> String {
        with_flow(&format!("/w/{}/signup", self.workspace), flow)
    }

    /// A form post is ours: the CSRF token matches this browser's cookie and the Origin, if sent, is
    /// ours.
    fn check_form(&self, state: &AppState, headers: &HeaderMap, token: &str) -> Result<(), Response> {
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
            return Err(self.finish(
                state,
                error_page(
                    StatusCode::FORBIDDEN,
                    self.brand.clone(),
                    "This form expired or did not come from this site. Go back, reload the page and try again.",
                ),
            ));
        }
        Ok(())
    }
}

/// A form that carries the CSRF token.
trait CsrfForm: serde::de::DeserializeOwned + Send {
    fn csrf(&self) -> &str;
}

/// Reads a page's form post: the page context, the form (CSRF and Origin checked) and the request's
/// actor. Errors are pages.
async fn form_post<T: CsrfForm>(
    state: &AppState,
    workspace: &str,
    request: axum::extract::Request,
) -> Result<(PageContext, T, Actor), Response> {
    let (parts, body) = request.into_parts();
    let ctx = page_context(state, workspace, &parts.headers).await?;
    let actor = request_actor(&parts, state);
    let headers = parts.headers.clone();
    let request = axum::extract::Request::from_parts(parts, body);
    let Ok(Form(form)) =
        <Form<T> as axum::extract::FromRequest<AppState>>::from_request(request, state).await
    else {
        let page = error_page(
            StatusCode::BAD_REQUEST,
            ctx.brand.clone(),
            "The form was incomplete.",
        );
        return Err(ctx.finish(state, page));
    };
    ctx.check_form(state, &headers, form.csrf())?;
    Ok((ctx, form, actor))
}

fn with_flow(path: &str, flow: Option<&str>) -> String {
    match flow {
        Some(f) => format!("{path}?flow={f}"),
        None => path.to_owned(),
    }
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `GET /w/{ws}/authorize`: the OpenID Connect authorization endpoint.
async fn authorize(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let pairs = query_pairs(query.as_deref());
    let mut seen = std::collections::HashSet::new();
    if pairs.iter().any(|(k, _)| !seen.insert(k.as_str())) {
        return ctx.finish(&state, unusable_sign_in_link(&ctx, "a parameter is repeated"));
    }
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let params = AuthorizeParams {
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        response_type: get("response_type"),
        scope: get("scope"),
        state: get("state"),
        nonce: get("nonce"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        prompt: get("prompt"),
        max_age: get("max_age"),
        response_mode: get("response_mode"),
        request_object: get("request").is_some() || get("request_uri").is_some(),
        upgrade: get("upgrade"),
    };
    let services = state.services();
    let valid = match services.validate_authorize(ctx.workspace, params).await {
        Ok(v) => v,
        Err(AuthorizeError::NoRedirect(reason)) => {
            return ctx.finish(&state, unusable_sign_in_link(&ctx, reason));
        }
        Err(AuthorizeError::Redirect {
            redirect_uri,
            state: st,
            error,
        }) => {
            return see_other(&error_redirect(
                &state,
                ctx.workspace,
                &redirect_uri,
                st.as_deref(),
                error.error,
                error.description,
            ));
        }
    };
    // A signed-in browser comes straight back, unless the request asks for a fresh sign-in
    // (`prompt=login`, a `max_age` its sign-in is older than) or for the account to be chosen.
    let asks_the_user = valid.request.select_account || valid.request.create_account;
    if let Some((browser, _)) = &ctx.sso
        && services.session_satisfies(&valid.request, browser)
        && !asks_the_user
    {
        return match services
            .complete_authorization(&valid.application, &valid.request, browser)
            .await
        {
            Ok(url) => see_other(&url),
            Err(e) => internal(e),
        };
    }
    if let Some((weak, _)) = &ctx.weak_sso
        && services.session_satisfies(&valid.request, weak)
        && !asks_the_user
    {
        // Signed in, but not with the second factor the user has (or must have) now.
        if valid.no_prompt {
            return see_other(&error_redirect(
                &state,
                ctx.workspace,
                &valid.request.redirect_uri,
                valid.request.state.as_deref(),
                "interaction_required",
                "the user must give a second factor",
            ));
        }
        return match services.start_flow(&valid).await {
            Ok(flow) => step_up(&state, &ctx, Some(flow.id)).await,
            Err(e) => internal(e),
        };
    }
    if valid.no_prompt {
        return see_other(&error_redirect(
            &state,
            ctx.workspace,
            &valid.request.redirect_uri,
            valid.request.state.as_deref(),
            "login_required",
            "the user is not signed in",
        ));
    }
    match services.start_flow(&valid).await {
        // An anonymous visitor upgrading, or `prompt=create`, signs up; everyone else starts at the
        // sign-in page.
        Ok(flow) if valid.request.upgrade_user.is_some() || valid.request.create_account => {
            ctx.finish(&state, see_other(&ctx.signup_link(Some(&flow.id.to_string()))))
        }
        Ok(flow) => ctx.finish(&state, see_other(&ctx.login_link(Some(&flow.id.to_string())))),
        Err(e) => internal(e),
    }
}

/// Asks a browser whose sign-in no longer meets the user's factors (`PageContext::weak_sso`) for the
/// second factor it needs now; completing it signs the browser in again and continues `flow`.
async fn step_up(state: &AppState, ctx: &PageContext, flow: Option<FlowId>) -> Response {
    let Some((session, user)) = &ctx.weak_sso else {
        return ctx.finish(state, see_other(&ctx.login_link(None)));
    };
    match state.services().step_up(session, user, flow).await {
        Ok(step) => account::to_second_factor(state, ctx, &step),
        Err(e) => internal(e),
    }
}

fn error_redirect(
    state: &AppState,
    workspace: WorkspaceId,
    redirect_uri: &str,
    st: Option<&str>,
    error: &str,
    description: &str,
) -> String {
    let issuer = state.services().issuer_of(workspace);
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = st {
        params.push(("state", s));
    }
    params.push(("iss", &issuer));
    redirect_to(redirect_uri, &params)
}

#[derive(Debug, Deserialize)]
struct FlowQuery {
    flow: Option<String>,
}

/// Where a signed-in browser goes next: back to the application of its flow, or a confirmation page.
async fn continue_flow(
    state: &AppState,
    ctx: &PageContext,
    flow: Option<&str>,
    browser: &BrowserSession,
) -> Response {
    let services = state.services();
    let found = match flow.and_then(|f| f.parse::<FlowId>().ok()) {
        Some(id) => match services.find_flow(ctx.workspace, id).await {
            Ok(found) => found,
            Err(e) => return internal(e),
        },
        None => None,
    };
    let Some((flow, app)) = found else {
        return render(
            StatusCode::OK,
            &MessagePage {
                brand: ctx.brand.clone(),
                heading: "You are signed in".into(),
                message: "You can close this page and return to the application.".into(),
                link: Some((format!("/w/{}/account", ctx.workspace), "Your account".into())),
            },
        );
    };
    match services
        .complete_authorization(&app, &flow.request, browser)
        .await
    {
        Ok(url) => {
            if let Err(e) = services.stores.login.delete_flow(ctx.workspace, flow.id).await {
                tracing::warn!(error = %e, "removing a completed flow failed");
            }
            see_other(&url)
        }
        Err(e) => internal(e),
    }
}

/// `GET /w/{ws}/login`.
async fn login_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<FlowQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let pending = match q.flow.as_deref().and_then(|f| f.parse::<FlowId>().ok()) {
        Some(id) => match state.services().find_flow(ctx.workspace, id).await {
            Ok(found) => found.map(|(flow, _)| flow),
            Err(e) => return internal(e),
        },
        None => None,
    };
    if let Some(flow) = &pending {
        let services = state.services();
        // A signed-in browser continues the request, unless it asks for a fresh sign-in or a choice.
        if let Some((browser, _)) = &ctx.sso
            && services.session_satisfies(&flow.request, browser)
            && !flow.request.select_account
        {
            let response = continue_flow(&state, &ctx, q.flow.as_deref(), browser).await;
            return ctx.finish(&state, response);
        }
        if let Some((weak, _)) = &ctx.weak_sso
            && services.session_satisfies(&flow.request, weak)
            && !flow.request.select_account
        {
            return step_up(&state, &ctx, Some(flow.id)).await;
        }
    }
    let mut page = login_form(&ctx, q.flow.clone(), String::new(), None);
    if let (Some(flow), Some((browser, user))) = (&pending, &ctx.sso)
        && flow.request.select_account
        && state.services().session_satisfies(&flow.request, browser)
    {
        let account = match state.services().keys.workspace_keys(ctx.workspace, false).await {
            Ok(keys) => state
                .services()
                .user_email(&keys, user)
                .unwrap_or_else(|| "your account".into()),
            Err(e) => return internal(e),
        };
        page.continue_as = Some((account, format!("/w/{}/login/continue", ctx.workspace)));
    }
    ctx.finish(&state, render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
struct ContinueForm {
    csrf: String,
    flow: String,
}

impl CsrfForm for ContinueForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/login/continue`: `prompt=select_account` answered with the signed-in account.
async fn login_continue(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, _) = match form_post::<ContinueForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let found = match form.flow.parse::<FlowId>() {
        Ok(id) => match state.services().find_flow(ctx.workspace, id).await {
            Ok(found) => found,
            Err(e) => return internal(e),
        },
        Err(_) => None,
    };
    match (&ctx.sso, found) {
        (Some((browser, _)), Some((flow, _)))
            if state.services().session_satisfies(&flow.request, browser) =>
        {
            let response = continue_flow(&state, &ctx, Some(&form.flow), browser).await;
            ctx.finish(&state, response)
        }
        _ => ctx.finish(&state, see_other(&ctx.login_link(Some(&form.flow)))),
    }
}

fn login_form(ctx: &PageContext, flow: Option<String>, email: String, error: Option<String>) -> LoginPage {
    LoginPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{}/login", ctx.workspace),
        csrf: ctx.csrf.clone(),
        signup_link: ctx.signup_link(flow.as_deref()),
        forgot_link: with_flow(&format!("/w/{}/forgot", ctx.workspace), flow.as_deref()),
        magic_action: format!("/w/{}/magic", ctx.workspace),
        magic_links: ctx.magic_links,
        passkeys: ctx.passkeys,
        providers: ctx
            .providers
            .iter()
            .map(|p| {
                (
                    with_flow(
                        &format!("/w/{}/upstream/{}", ctx.workspace, p.id),
                        flow.as_deref(),
                    ),
                    p.name.clone(),
                )
            })
            .collect(),
        passkey_action: format!("/w/{}/passkey/sign-in", ctx.workspace),
        options_action: format!("/w/{}/passkey/options", ctx.workspace),
        continue_as: None,
        flow,
        email,
        error,
    }
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    flow: Option<String>,
    email: String,
    password: String,
}

impl CsrfForm for LoginForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/login`.
async fn login_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<LoginForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let email = form.email.trim().to_owned();
    let account = format!("{}:{}", ctx.workspace, EmailAddress::throttle_key(&email));
    let address = actor.client_ip.clone().unwrap_or_default();
    if let Err(retry) = state.sign_in_limits().check(account, address) {
        let page = login_form(
            &ctx,
            form.flow,
            email,
            Some(format!(
                "Too many sign-in attempts. Try again in {} seconds.",
                retry.as_secs().max(1)
            )),
        );
        let mut response = render(StatusCode::TOO_MANY_REQUESTS, &page);
        if let Ok(v) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return ctx.finish(&state, response);
    }
    let password = SecretString::new(form.password);
    let flow = form.flow.as_deref().and_then(|f| f.parse().ok());
    match state
        .services()
        .password_sign_in(ctx.workspace, &email, &password, flow, &actor)
        .await
    {
        Ok((user, step)) => signed_in(&state, &ctx, form.flow.as_deref(), &user, step, false).await,
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            let page = login_form(&ctx, form.flow, email, Some(
                "The e-mail address or password is not right, or the account is locked for a while after too many attempts.".into(),
            ));
            ctx.finish(&state, render(StatusCode::UNAUTHORIZED, &page))
        }
        Err(e) => internal(e),
    }
}

/// A browser just signed in: set the single sign-on cookie, note the device (a new one is reported to
/// the user by e-mail, except for a brand-new account), and continue the flow.
async fn signed_in(
    state: &AppState,
    ctx: &PageContext,
    flow: Option<&str>,
    user: &User,
    step: FirstFactor,
    new_account: bool,
) -> Response {
    let login = match step {
        FirstFactor::SignedIn(login) => login,
        pending => return account::to_second_factor(state, ctx, &pending),
    };
    let response = continue_flow(state, ctx, flow, &login.session).await;
    finish_sign_in(state, ctx, user, &login, new_account, response).await
}

/// An authorization request that cannot be answered with a redirect (its application or redirect
/// URI is unknown, or it is malformed): the reason is for the developer, in the log; the person gets
/// what happened in their words and a way on (the link cannot be trusted to lead back to the
/// application).
fn unusable_sign_in_link(ctx: &PageContext, reason: &'static str) -> Response {
    tracing::info!(workspace = %ctx.workspace, reason, "an authorization request was refused without a redirect");
    let page = MessagePage {
        brand: ctx.brand.clone(),
        heading: "This sign-in link does not work".into(),
        message: "The application that sent you here asked to sign you in in a way this sign-in page does not \
                  recognise: its link is incomplete or out of date. Go back to the application and try again, \
                  or sign in to your account here."
            .into(),
        link: Some((
            format!("/w/{}/login", ctx.workspace),
            "Sign in to your account".into(),
        )),
    };
    render(StatusCode::BAD_REQUEST, &page)
}

/// Puts a new browser session on a response: the single sign-on cookie, and the device cookie of a
/// browser seen for the first time (a new one is reported to the user by e-mail, except for a
/// brand-new account).
async fn finish_sign_in(
    state: &AppState,
    ctx: &PageContext,
    user: &User,
    login: &secureflows_core::login::hosted::BrowserLogin,
    new_account: bool,
    mut response: Response,
) -> Response {
    let services = state.services();
    let (device, new_cookie) = match browser_id(ctx) {
        Ok(found) => found,
        Err(e) => return internal(e),
    };
    if let Err(e) = services.note_device(user, &device, !new_account).await {
        tracing::warn!(error = %e, "recording the sign-in device failed");
    }
    // SECURITY: a new CSRF cookie at every sign-in (and tokens bound to the browser session), so a
    // cookie value someone planted before it is worth nothing after.
    let csrf = match secureflows_crypto::random_token("") {
        Ok(c) => c,
        Err(e) => return internal(e.into()),
    };
    let ttl = services.settings.login.browser_session_ttl.as_secs();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            state,
            ctx.workspace,
            SSO_COOKIE,
            login.cookie.expose(),
            "Lax",
            Some(ttl),
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(state, ctx.workspace, CSRF_COOKIE, &csrf, "Strict", None),
    );
    if new_cookie {
        h.append(header::SET_COOKIE, device_cookie(state, ctx, &device));
    }
    response
}

/// This browser's id (`sf_device`), and whether it is new (its cookie still to be set).
fn browser_id(ctx: &PageContext) -> Result<(String, bool), Error> {
    match &ctx.device {
        Some(d) => Ok((d.clone(), false)),
        None => Ok((secureflows_crypto::random_token("")?, true)),
    }
}

/// The cookie that keeps a browser's id.
fn device_cookie(state: &AppState, ctx: &PageContext, device: &str) -> HeaderValue {
    set_cookie(
        state,
        ctx.workspace,
        DEVICE_COOKIE,
        device,
        "Lax",
        Some(DEVICE_COOKIE_AGE),
    )
}

fn signup_form(
    ctx: &PageContext,
    flow: Option<String>,
    email: String,
    name: String,
    errors: Vec<String>,
) -> SignupPage {
    let policy = ctx.policy.password;
    SignupPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{}/signup", ctx.workspace),
        csrf: ctx.csrf.clone(),
        login_link: ctx.login_link(flow.as_deref()),
        flow,
        email,
        name,
        errors,
        min_length: policy.min_length(),
        rules: password_rules(policy),
    }
}

/// The password policy in words, under the password field.
fn password_rules(policy: PasswordPolicy) -> String {
    match policy {
        PasswordPolicy::Nist => format!(
            "At least {} characters. Long passphrases are best; passwords known from data breaches are refused.",
            policy.min_length()
        ),
        PasswordPolicy::Strict => format!(
            "At least {} characters, with an upper-case letter, a lower-case letter, a digit and a symbol.",
            policy.min_length()
        ),
    }
}

/// `GET /w/{ws}/signup`.
async fn signup_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<FlowQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let page = signup_form(&ctx, q.flow, String::new(), String::new(), Vec::new());
    ctx.finish(&state, render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
struct SignupForm {
    csrf: String,
    flow: Option<String>,
    email: String,
    #[serde(default)]
    name: String,
    password: String,
}

impl CsrfForm for SignupForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/signup`.
async fn signup_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<SignupForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let address = actor.client_ip.clone().unwrap_or_default();
    if let Err(retry) = state.sign_in_limits().check(
        format!(
            "{}:signup:{}",
            ctx.workspace,
            EmailAddress::throttle_key(&form.email)
        ),
        address,
    ) {
        let page = signup_form(
            &ctx,
            form.flow,
            form.email,
            form.name,
            vec![format!(
                "Too many attempts. Try again in {} seconds.",
                retry.as_secs().max(1)
            )],
        );
        return ctx.finish(&state, render(StatusCode::TOO_MANY_REQUESTS, &page));
    }
    let sign_up = SignUp {
        email: form.email.clone(),
        password: SecretString::new(form.password),
        name: Some(form.name.clone()),
    };
    match state
        .services()
        .start_sign_up(
            ctx.workspace,
            sign_up,
            form.flow.as_deref().and_then(|f| f.parse().ok()),
            &actor,
        )
        .await
    {
        Ok(SignUpStart::SignedUp(done)) => {
            let (user, step) = *done;
            signed_in(&state, &ctx, form.flow.as_deref(), &user, step, true).await
        }
        Ok(SignUpStart::CheckEmail(secret)) => {
            let page = MessagePage {
                brand: ctx.brand.clone(),
                heading: "Check your e-mail".into(),
                message: "We sent a message to the address you gave. Open its link in this browser to \
                          finish; it works for 30 minutes."
                    .into(),
                link: None,
            };
            let mut response = render(StatusCode::OK, &page);
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    &state,
                    ctx.workspace,
                    SIGNUP_COOKIE,
                    secret.expose(),
                    "Strict",
                    Some(SIGNUP_COOKIE_AGE),
                ),
            );
            ctx.finish(&state, response)
        }
        Err(Error::Invalid(errors)) => {
            let messages = errors
                .into_iter()
                .map(|e| format!("{}: {}", field_label(&e.field), e.message))
                .collect();
            let page = signup_form(&ctx, form.flow, form.email, form.name, messages);
            ctx.finish(&state, render(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(Error::Conflict(_)) => {
            let page = signup_form(
                &ctx,
                form.flow,
                form.email,
                form.name,
                vec!["An account with this e-mail address already exists. Sign in instead.".into()],
            );
            ctx.finish(&state, render(StatusCode::CONFLICT, &page))
        }
        Err(e) => internal(e),
    }
}

fn field_label(field: &str) -> &'static str {
    match field {
        "email" => "E-mail address",
        "password" => "Password",
        _ => "Form",
    }
}

#[derive(Debug, Deserialize, Default)]
struct LogoutQuery {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    client_id: Option<String>,
    state: Option<String>,
}

/// `GET /w/{ws}/logout`: RP-initiated logout. With a valid `id_token_hint` for the signed-in user the
/// browser is signed out at once; otherwise the user confirms (a form with CSRF protection), so that no
/// other site can sign a user out. `post_logout_redirect_uri` must be registered exactly.
async fn logout(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    RawQuery(query): RawQuery,
    parts: axum::http::request::Parts,
) -> Response {
    let ctx = match page_context(&state, &workspace, &parts.headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = LogoutQuery::parse(query.as_deref());
    let target = match logout_target(&state, &ctx, &q).await {
        Ok(t) => t,
        Err(r) => return ctx.finish(&state, r),
    };
    let hinted_user = q
        .id_token_hint
        .as_deref()
        .and_then(|h| state.services().tokens.verify_id_token_hint(h).ok())
        .and_then(|claims| claims.get("sub").and_then(|s| s.as_str()).map(str::to_owned));
    let matches = match (ctx.sso.as_ref().or(ctx.weak_sso.as_ref()), &hinted_user) {
        (Some((_, user)), Some(sub)) => user.id.to_string() == *sub,
        (None, _) => true,
        _ => false,
    };
    if !matches {
        return ctx.finish(&state, confirm_page(&ctx, &q));
    }
    finish_logout(&state, &ctx, &request_actor(&parts, &state), target).await
}

impl LogoutQuery {
    /// The logout parameters of a query string; others are ignored.
    fn parse(query: Option<&str>) -> LogoutQuery {
        let mut q = LogoutQuery::default();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "id_token_hint" => q.id_token_hint = Some(v),
                "post_logout_redirect_uri" => q.post_logout_redirect_uri = Some(v),
                "client_id" => q.client_id = Some(v),
                "state" => q.state = Some(v),
                _ => {}
            }
        }
        q
    }
}

/// Where to go after logout: a registered post-logout URI of the client (with `state`), or nowhere.
async fn logout_target(
    state: &AppState,
    ctx: &PageContext,
    q: &LogoutQuery,
) -> Result<Option<String>, Response> {
    let Some(uri) = &q.post_logout_redirect_uri else {
        return Ok(None);
    };
    let client = q.client_id.clone().or_else(|| {
        q.id_token_hint
            .as_deref()
            .and_then(|h| state.services().tokens.verify_id_token_hint(h).ok())
            .and_then(|c| c.get("aud").and_then(|a| a.as_str()).map(str::to_owned))
    });
    let refuse = || {
        error_page(
            StatusCode::BAD_REQUEST,
            ctx.brand.clone(),
            "The address to return to after signing out is not registered for this application.",
        )
    };
    let Some(app_id) = client.and_then(|c| c.parse().ok()) else {
        return Err(refuse());
    };
    let app = match state
        .services()
        .stores
        .applications
        .find_application(app_id)
        .await
    {
        Ok(app) => app.filter(|a| a.workspace_id == ctx.workspace),
        Err(e) => return Err(internal(e)),
    };
    match app {
        Some(app) if app.post_logout_uris.iter().any(|u| u == uri) => {
            let params: Vec<(&str, &str)> =
                q.state.as_deref().map(|s| vec![("state", s)]).unwrap_or_default();
            Ok(Some(redirect_to(uri, &params)))
        }
        _ => Err(refuse()),
    }
}

fn confirm_page(ctx: &PageContext, q: &LogoutQuery) -> Response {
    #[derive(askama::Template, Debug)]
    #[template(
        source = r#"{% extends "base.html" %}{% block title %}Sign out{% endblock %}{% block content %}
<h1 id="heading">Sign out?</h1>
<p>Do you want to sign out of {{ brand.name }} on this browser?</p>
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% if let Some(v) = client_id %}<input type="hidden" name="client_id" value="{{ v }}">{% endif %}
{% if let Some(v) = post_logout_redirect_uri %}<input type="hidden" name="post_logout_redirect_uri" value="{{ v }}">{% endif %}
{% if let Some(v) = st %}<input type="hidden" name="state" value="{{ v }}">{% endif %}
<button type="submit" id="confirm-logout">Sign out</button>
</form>{% endblock %}"#,
        ext = "html"
    )]
    struct ConfirmPage {
        brand: Brand,
        action: String,
        csrf: String,
        client_id: Option<String>,
        post_logout_redirect_uri: Option<String>,
        st: Option<String>,
    }
    render(
        StatusCode::OK,
        &ConfirmPage {
            brand: ctx.brand.clone(),
            action: format!("/w/{}/logout", ctx.workspace),
            csrf: ctx.csrf.clone(),
            client_id: q.client_id.clone(),
            post_logout_redirect_uri: q.post_logout_redirect_uri.clone(),
            st: q.state.clone(),
        },
    )
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

impl CsrfForm for LogoutForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/logout`: the confirmed sign-out.
async fn logout_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<LogoutForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let q = LogoutQuery {
        id_token_hint: None,
        post_logout_redirect_uri: form.post_logout_redirect_uri,
        client_id: form.client_id,
        state: form.state,
    };
    let target = match logout_target(&state, &ctx, &q).await {
        Ok(t) => t,
        Err(r) => return ctx.finish(&state, r),
    };
    finish_logout(&state, &ctx, &actor, target).await
}

async fn finish_logout(
    state: &AppState,
    ctx: &PageContext,
    actor: &Actor,
    target: Option<String>,
) -> Response {
    if let Some((browser, _)) = ctx.sso.as_ref().or(ctx.weak_sso.as_ref())
        && let Err(e) = state.services().end_browser_session(browser, actor).await
    {
        return internal(e);
    }
    let mut response = match target {
        Some(url) => see_other(&url),
        None => render(
            StatusCode::OK,
            &MessagePage {
                brand: ctx.brand.clone(),
                heading: "You are signed out".into(),
                message: "You have been signed out on this browser.".into(),
                link: None,
            },
        ),
    };
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, ctx.workspace, SSO_COOKIE, "", "Lax", Some(0)),
    );
    ctx.finish(state, response)
}
