//! The sign-in page (`/w/{ws}/login`): e-mail and password, `prompt=select_account`, and what every
//! way of signing in ends with (`signed_in`, `finish_sign_in`).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use secureflows_core::login::hosted::BrowserLogin;
use secureflows_core::login::mfa::FirstFactor;
use secureflows_core::{AuthFailure, Error, FlowId, LoginFlow, User};
use secureflows_crypto::SecretString;

use super::authorize::{continue_flow, step_up};
use super::context::{
    FlowQuery, PageContext, browser_id, csrf_form, device_cookie, form_post, page_context, see_other,
    with_flow,
};
use super::mfa::to_second_factor;
use super::views::{LoginPage, render};
use crate::extract::Query;
use crate::pages::{PageResult, try_again_in, with_retry_after};
use crate::state::AppState;
use crate::throttle::Attempt;

csrf_form!(ContinueForm { flow: String });
csrf_form!(LoginForm {
    flow: Option<String>,
    email: String,
    password: String,
});

/// `GET /w/{ws}/login`.
pub(super) async fn login_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<FlowQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let pending = find_flow(&state, &ctx, q.flow.as_deref()).await?;
    if let Some(flow) = &pending {
        let services = state.services();
        let satisfied = |s: &(secureflows_core::BrowserSession, User)| {
            services.session_satisfies(&flow.request, &s.0) && !flow.request.select_account
        };
        // A signed-in browser continues the request, unless it asks for a fresh sign-in or a choice.
        if let Some((browser, _)) = ctx.sso.as_ref().filter(|s| satisfied(s)) {
            return continue_flow(&state, &ctx, q.flow.as_deref(), browser).await;
        }
        if ctx.weak_sso.as_ref().is_some_and(satisfied) {
            return step_up(&state, &ctx, Some(flow.id)).await;
        }
    }
    let mut page = login_form(&ctx, q.flow.clone(), String::new(), None);
    page.continue_as = continue_as(&state, &ctx, pending.as_ref()).await?;
    Ok(render(StatusCode::OK, &page))
}

/// The pending flow a page continues, if its id names one of the workspace's.
async fn find_flow(state: &AppState, ctx: &PageContext, flow: Option<&str>) -> PageResult<Option<LoginFlow>> {
    let Some(id) = flow.and_then(|f| f.parse::<FlowId>().ok()) else {
        return Ok(None);
    };
    Ok(state
        .services()
        .find_flow(ctx.workspace, id)
        .await?
        .map(|(flow, _)| flow))
}

/// `prompt=select_account` in a signed-in browser: its account, and the form that continues as it.
async fn continue_as(
    state: &AppState,
    ctx: &PageContext,
    pending: Option<&LoginFlow>,
) -> PageResult<Option<(String, String)>> {
    let (Some(flow), Some((browser, user))) = (pending, &ctx.sso) else {
        return Ok(None);
    };
    let services = state.services();
    if !flow.request.select_account || !services.session_satisfies(&flow.request, browser) {
        return Ok(None);
    }
    let keys = services.keys.workspace_keys(ctx.workspace, false).await?;
    let account = services
        .user_email(&keys, user)
        .unwrap_or_else(|| "your account".into());
    Ok(Some((account, format!("/w/{}/login/continue", ctx.workspace))))
}

/// `POST /w/{ws}/login/continue`: `prompt=select_account` answered with the signed-in account.
pub(super) async fn login_continue(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, _) = form_post::<ContinueForm>(&state, &workspace, request).await?;
    let flow = find_flow(&state, &ctx, Some(&form.flow)).await?;
    match (&ctx.sso, flow) {
        (Some((browser, _)), Some(flow)) if state.services().session_satisfies(&flow.request, browser) => {
            continue_flow(&state, &ctx, Some(&form.flow), browser).await
        }
        _ => Ok(see_other(&ctx.login_link(Some(&form.flow)))),
    }
}

/// The sign-in form of `ctx`'s workspace.
pub(super) fn login_form(
    ctx: &PageContext,
    flow: Option<String>,
    email: String,
    error: Option<String>,
) -> LoginPage {
    let ws = ctx.workspace;
    LoginPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{ws}/login"),
        csrf: ctx.csrf.clone(),
        signup_link: ctx.signup_link(flow.as_deref()),
        forgot_link: with_flow(&format!("/w/{ws}/forgot"), flow.as_deref()),
        magic_action: format!("/w/{ws}/magic"),
        magic_links: ctx.magic_links,
        passkeys: ctx.passkeys,
        providers: ctx
            .providers
            .iter()
            .map(|p| {
                (
                    with_flow(&format!("/w/{ws}/upstream/{}", p.id), flow.as_deref()),
                    p.name.clone(),
                )
            })
            .collect(),
        passkey_action: format!("/w/{ws}/passkey/sign-in"),
        options_action: format!("/w/{ws}/passkey/options"),
        continue_as: None,
        flow,
        email,
        error,
    }
}

/// A refused password, in words that do not tell an unknown address, a wrong password and a locked
/// account apart.
const NOT_RIGHT: &str = "The e-mail address or password is not right, or the account is locked for a while after \
                         too many attempts.";

/// `POST /w/{ws}/login`.
pub(super) async fn login_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<LoginForm>(&state, &workspace, request).await?;
    let email = form.email.trim().to_owned();
    let client = actor.client_ip.as_deref();
    if let Err(retry) = state
        .sign_in_limits()
        .check_email(ctx.workspace, Attempt::SignIn, &email, client)
    {
        let page = login_form(&ctx, form.flow, email, Some(try_again_in(retry)));
        return Ok(with_retry_after(
            render(StatusCode::TOO_MANY_REQUESTS, &page),
            retry,
        ));
    }
    let password = SecretString::new(form.password.clone());
    let flow = form.flow.as_deref().and_then(|f| f.parse().ok());
    let signed = state
        .services()
        .password_sign_in(ctx.workspace, &email, &password, flow, &actor)
        .await;
    match signed {
        Ok((user, step)) => signed_in(&state, &ctx, form.flow.as_deref(), &user, step, false).await,
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            let page = login_form(&ctx, form.flow, email, Some(NOT_RIGHT.into()));
            Ok(render(StatusCode::UNAUTHORIZED, &page))
        }
        Err(e) => Err(e.into()),
    }
}

/// A browser just signed in: set the single sign-on cookie, note the device (a new one is reported to
/// the user by e-mail, except for a brand-new account), and continue the flow.
pub(super) async fn signed_in(
    state: &AppState,
    ctx: &PageContext,
    flow: Option<&str>,
    user: &User,
    step: FirstFactor,
    new_account: bool,
) -> PageResult {
    let login = match step {
        FirstFactor::SignedIn(login) => login,
        pending => return to_second_factor(state, ctx, &pending),
    };
    let response = continue_flow(state, ctx, flow, &login.session).await?;
    finish_sign_in(state, ctx, user, &login, new_account, response).await
}

/// Puts a new browser session on a response: the single sign-on cookie, and the device cookie of a
/// browser seen for the first time (a new one is reported to the user by e-mail, except for a
/// brand-new account).
pub(super) async fn finish_sign_in(
    state: &AppState,
    ctx: &PageContext,
    user: &User,
    login: &BrowserLogin,
    new_account: bool,
    mut response: Response,
) -> PageResult {
    let services = state.services();
    let (device, new_cookie) = browser_id(ctx)?;
    if let Err(e) = services.note_device(user, &device, !new_account).await {
        tracing::warn!(error = %e, "recording the sign-in device failed");
    }
    // SECURITY: a new CSRF cookie at every sign-in (and tokens bound to the browser session), so a
    // cookie value someone planted before it is worth nothing after.
    let h = response.headers_mut();
    for value in crate::pages::sign_in_cookies(state, ctx.workspace, login)? {
        h.append(header::SET_COOKIE, value);
    }
    if new_cookie {
        h.append(header::SET_COOKIE, device_cookie(state, ctx, &device));
    }
    Ok(response)
}
