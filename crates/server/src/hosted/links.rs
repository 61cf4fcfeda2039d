//! Pages for e-mailed links: magic sign-in, forgotten password and reset, e-mail verification.
//!
//! Opening a link shows a page with a button; only the button's (CSRF-protected) POST spends the link,
//! so a mail scanner that fetches links spends nothing. Requests for links answer the same whether or
//! not the address has an account, and are throttled like sign-ins.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use secureflows_core::Error;
use secureflows_crypto::SecretString;
use serde::Deserialize;

use super::pages::{ConfirmLinkPage, EmailFormPage, InvitePage, ResetPage, error_page, message, render};
use super::{CsrfForm, FlowQuery, PageContext, form_post, internal, page_context, password_rules, signed_in};
use crate::state::AppState;
use secureflows_core::members::InviteView;

#[derive(Debug, Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct EmailForm {
    csrf: String,
    flow: Option<String>,
    email: String,
}

impl CsrfForm for EmailForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    csrf: String,
    token: String,
}

impl CsrfForm for TokenForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(super) struct ResetForm {
    csrf: String,
    token: String,
    password: String,
}

impl CsrfForm for ResetForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// How long after answering a link request its work (look-up, link, mail) starts, so that the work
/// never competes with the answer it must not influence.
const AFTER_ANSWER: std::time::Duration = std::time::Duration::from_millis(100);

fn bad_link(ctx: &PageContext, state: &AppState) -> Response {
    ctx.finish(
        state,
        error_page(
            StatusCode::BAD_REQUEST,
            ctx.brand.clone(),
            "This link is not valid: it was used already, has expired, or was copied incompletely. Ask for a new one.",
        ),
    )
}

/// Throttles link requests like sign-ins (per address asked for and per client address); `Some` is
/// the 429 page.
fn throttled(state: &AppState, ctx: &PageContext, email: &str, address: String) -> Option<Response> {
    let account = format!(
        "{}:{}",
        ctx.workspace,
        secureflows_core::EmailAddress::throttle_key(email)
    );
    let retry = state.sign_in_limits().check(account, address).err()?;
    let mut response = message(
        StatusCode::TOO_MANY_REQUESTS,
        ctx.brand.clone(),
        "Too many attempts",
        &format!("Try again in {} seconds.", retry.as_secs().max(1)),
    );
    if let Ok(v) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(ctx.finish(state, response))
}

fn check_your_mail(ctx: &PageContext, state: &AppState) -> Response {
    ctx.finish(
        state,
        message(
            StatusCode::OK,
            ctx.brand.clone(),
            "Check your e-mail",
            "If an account uses this address, we have sent it a link. It works once, for 15 minutes.",
        ),
    )
}

fn no_mail(ctx: &PageContext, state: &AppState) -> Response {
    ctx.finish(
        state,
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            ctx.brand.clone(),
            "E-mail is not available",
            "This sign-in service cannot send e-mail. Sign in with your password, or ask the administrator.",
        ),
    )
}

fn confirm_page(
    ctx: &PageContext,
    state: &AppState,
    token: Option<String>,
    (heading, text, action, button_id, button_label): (&str, &str, &str, &str, &str),
) -> Response {
    let Some(token) = token else {
        return bad_link(ctx, state);
    };
    let page = ConfirmLinkPage {
        brand: ctx.brand.clone(),
        heading: heading.into(),
        message: text.into(),
        action: format!("/w/{}/{action}", ctx.workspace),
        csrf: ctx.csrf.clone(),
        token,
        button_id: button_id.into(),
        button_label: button_label.into(),
    };
    ctx.finish(state, render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/magic`: mails a sign-in link.
pub(super) async fn magic_request(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<EmailForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    if !ctx.magic_links {
        return no_mail(&ctx, &state);
    }
    if let Some(r) = throttled(
        &state,
        &ctx,
        &form.email,
        actor.client_ip.clone().unwrap_or_default(),
    ) {
        return r;
    }
    let flow = form.flow.as_deref().and_then(|f| f.parse().ok());
    // The link continues the request only in this browser: it is named by its browser id.
    let (device, new_device) = match super::browser_id(&ctx) {
        Ok(found) => found,
        Err(e) => return internal(e),
    };
    let (services, workspace, email) = (state.services_arc(), ctx.workspace, form.email);
    let browser = device.clone();
    // SECURITY: answered before the address is even looked up: the look-up, the link and the mail
    // happen after (once the answer is on its way), so neither the answer nor its timing tells whether
    // the address has an account.
    tokio::spawn(async move {
        tokio::time::sleep(AFTER_ANSWER).await;
        if let Err(e) = services.send_magic_link(workspace, &email, flow, &browser).await {
            tracing::warn!(error = %e, "a magic link could not be sent");
        }
    });
    let mut response = check_your_mail(&ctx, &state);
    if new_device {
        response
            .headers_mut()
            .append(header::SET_COOKIE, super::device_cookie(&state, &ctx, &device));
    }
    response
}

/// `GET /w/{ws}/magic?token=…`: the button that signs in.
pub(super) async fn magic_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    confirm_page(
        &ctx,
        &state,
        q.token,
        (
            "Sign in",
            "Continue to sign in with the link we sent you.",
            "magic/confirm",
            "confirm-magic-link",
            "Sign in",
        ),
    )
}

/// `POST /w/{ws}/magic/confirm`: spends the link and signs the browser in.
pub(super) async fn magic_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<TokenForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    match state
        .services()
        .redeem_magic_link(ctx.workspace, &form.token, ctx.device.as_deref(), &actor)
        .await
    {
        Ok(signed) => {
            let flow = signed.flow.map(|f| f.to_string());
            signed_in(&state, &ctx, flow.as_deref(), &signed.user, signed.step, false).await
        }
        Err(Error::NotFound(_)) => bad_link(&ctx, &state),
        Err(e) => internal(e),
    }
}

/// `GET /w/{ws}/forgot`: asks for the address to send a reset link to.
pub(super) async fn forgot_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<FlowQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !ctx.magic_links {
        return no_mail(&ctx, &state);
    }
    let page = EmailFormPage {
        brand: ctx.brand.clone(),
        heading: "Forgot your password?".into(),
        message: "Enter your e-mail address and we will send you a link to choose a new password.".into(),
        action: format!("/w/{}/forgot", ctx.workspace),
        csrf: ctx.csrf.clone(),
        flow: q.flow,
        button_label: "Send the link".into(),
    };
    ctx.finish(&state, render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/forgot`: mails a reset link.
pub(super) async fn forgot_request(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<EmailForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    if !ctx.magic_links {
        return no_mail(&ctx, &state);
    }
    if let Some(r) = throttled(
        &state,
        &ctx,
        &form.email,
        actor.client_ip.clone().unwrap_or_default(),
    ) {
        return r;
    }
    let (services, workspace, email) = (state.services_arc(), ctx.workspace, form.email);
    // SECURITY: answered first, as for magic links.
    tokio::spawn(async move {
        tokio::time::sleep(AFTER_ANSWER).await;
        if let Err(e) = services.send_password_reset(workspace, &email).await {
            tracing::warn!(error = %e, "a password-reset link could not be sent");
        }
    });
    check_your_mail(&ctx, &state)
}

fn reset_form(ctx: &PageContext, token: String, errors: Vec<String>) -> ResetPage {
    let policy = ctx.policy.password;
    ResetPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{}/reset", ctx.workspace),
        csrf: ctx.csrf.clone(),
        token,
        errors,
        min_length: policy.min_length(),
        rules: password_rules(policy),
    }
}

/// `GET /w/{ws}/reset?token=…`: the new-password form.
pub(super) async fn reset_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(token) = q.token else {
        return bad_link(&ctx, &state);
    };
    let page = reset_form(&ctx, token, Vec::new());
    ctx.finish(&state, render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/reset`: sets the password, ends the user's other sessions, signs this browser in.
pub(super) async fn reset_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<ResetForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let password = SecretString::new(form.password);
    match state
        .services()
        .reset_password(ctx.workspace, &form.token, &password, &actor)
        .await
    {
        Ok(signed) => signed_in(&state, &ctx, None, &signed.user, signed.step, false).await,
        Err(Error::Invalid(errors)) => {
            let messages = errors.into_iter().map(|e| e.message).collect();
            let page = reset_form(&ctx, form.token, messages);
            ctx.finish(&state, render(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(Error::NotFound(_)) => bad_link(&ctx, &state),
        Err(e) => internal(e),
    }
}

/// `GET /w/{ws}/verify?token=…`: the button that confirms the address.
pub(super) async fn verify_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    confirm_page(
        &ctx,
        &state,
        q.token,
        (
            "Confirm your e-mail address",
            "Confirm that this e-mail address is yours.",
            "verify",
            "confirm-email",
            "Confirm",
        ),
    )
}

/// `POST /w/{ws}/verify`: spends the link and marks the address verified.
pub(super) async fn verify_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<TokenForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    match state
        .services()
        .verify_email(ctx.workspace, &form.token, &actor)
        .await
    {
        Ok(()) => ctx.finish(
            &state,
            message(
                StatusCode::OK,
                ctx.brand.clone(),
                "E-mail address confirmed",
                "Thank you: your e-mail address is confirmed.",
            ),
        ),
        Err(Error::NotFound(_)) => bad_link(&ctx, &state),
        Err(e) => internal(e),
    }
}

fn invite_form(ctx: &PageContext, view: &InviteView, token: String, errors: Vec<String>) -> InvitePage {
    let policy = ctx.policy.password;
    InvitePage {
        brand: ctx.brand.clone(),
        role: view.invite.role.as_str(),
        email: view.email.clone(),
        errors,
        action: format!("/w/{}/invite/accept", ctx.workspace),
        csrf: ctx.csrf.clone(),
        token,
        min_length: policy.min_length(),
        rules: password_rules(policy),
    }
}

/// `GET /w/{ws}/invite/accept?token=…`: the invitation and a password form.
pub(super) async fn invite_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(token) = q.token else {
        return bad_link(&ctx, &state);
    };
    match state.services().invite_by_link(ctx.workspace, &token).await {
        Ok(view) => {
            let page = invite_form(&ctx, &view, token, Vec::new());
            ctx.finish(&state, render(StatusCode::OK, &page))
        }
        Err(Error::NotFound(_)) => bad_link(&ctx, &state),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(super) struct InviteForm {
    csrf: String,
    token: String,
    password: String,
}

impl CsrfForm for InviteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/invite/accept`: becomes a member and signs in.
pub(super) async fn invite_accept(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<InviteForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let services = state.services();
    let password = SecretString::new(form.password);
    match services
        .accept_invite(ctx.workspace, &form.token, &password, &actor)
        .await
    {
        Ok((user, step)) => signed_in(&state, &ctx, None, &user, step, true).await,
        Err(Error::Invalid(errors)) => match services.invite_by_link(ctx.workspace, &form.token).await {
            Ok(view) => {
                let messages = errors.into_iter().map(|e| e.message).collect();
                let page = invite_form(&ctx, &view, form.token, messages);
                ctx.finish(&state, render(StatusCode::UNPROCESSABLE_ENTITY, &page))
            }
            Err(_) => bad_link(&ctx, &state),
        },
        Err(Error::Conflict(_)) => ctx.finish(
            &state,
            message(
                StatusCode::CONFLICT,
                ctx.brand.clone(),
                "You already have an account",
                "This address already has an account here: sign in with it instead.",
            ),
        ),
        Err(Error::NotFound(_)) => bad_link(&ctx, &state),
        Err(e) => internal(e),
    }
}

/// `GET /w/{ws}/signup/confirm?token=`: the page a verification-first sign-up's link opens (a button,
/// so that a mail scanner fetching the link creates nothing).
pub(super) async fn signup_confirm_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    confirm_page(
        &ctx,
        &state,
        q.token,
        (
            "Finish creating your account",
            "Create the account you asked for. This works only in the browser where you filled in the sign-up form.",
            "signup/confirm",
            "confirm-signup",
            "Create my account",
        ),
    )
}

/// `POST /w/{ws}/signup/confirm`: spends the link, creates the account and signs the browser in.
pub(super) async fn signup_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let browser = super::cookie(request.headers(), super::SIGNUP_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = match form_post::<TokenForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let done = state
        .services()
        .confirm_sign_up(ctx.workspace, &form.token, &browser, &actor)
        .await;
    let response = match done {
        Ok((user, step, flow)) => {
            let flow = flow.map(|f| f.to_string());
            signed_in(&state, &ctx, flow.as_deref(), &user, step, true).await
        }
        Err(Error::NotFound(_)) => bad_link(&ctx, &state),
        Err(Error::Conflict(_)) => {
            let page = super::pages::MessagePage {
                brand: ctx.brand.clone(),
                heading: "You already have an account".into(),
                message: "An account with this e-mail address exists already. Sign in instead.".into(),
                link: Some((format!("/w/{}/login", ctx.workspace), "Sign in".into())),
            };
            ctx.finish(&state, render(StatusCode::CONFLICT, &page))
        }
        Err(e) => internal(e),
    };
    let mut response = response;
    response.headers_mut().append(
        axum::http::header::SET_COOKIE,
        super::set_cookie(&state, ctx.workspace, super::SIGNUP_COOKIE, "", "Strict", Some(0)),
    );
    response
}
