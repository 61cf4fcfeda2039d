//! Pages for e-mailed links: what they share, magic sign-in links and e-mail verification.
//! Password resets (`reset`), invitations (`invite`) and verification-first sign-ups (`signup`) use
//! the same pieces.
//!
//! Opening a link shows a page with a button; only the button's (CSRF-protected) POST spends the link,
//! so a mail scanner that fetches links spends nothing. Requests for links answer the same whether or
//! not the address has an account, and are throttled like sign-ins.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use secureflows_core::Error;
use serde::Deserialize;

use super::context::{PageContext, browser_id, csrf_form, device_cookie, form_post, page_context};
use super::login::signed_in;
use super::views::{ConfirmLinkPage, message, render};
use crate::extract::Query;
use crate::pages::{PageError, PageResult};
use crate::state::AppState;
use crate::throttle::Attempt;

#[derive(Debug, Deserialize)]
pub(super) struct TokenQuery {
    pub token: Option<String>,
}

csrf_form!(EmailForm {
    flow: Option<String>,
    email: String,
});
csrf_form!(TokenForm { token: String });

/// How long after answering a link request its work (look-up, link, mail) starts, so that the work
/// never competes with the answer it must not influence.
const AFTER_ANSWER: Duration = Duration::from_millis(100);

/// Does a link request's work (look-up, link, mail) once its answer is on its way.
///
/// SECURITY: a link request is answered before the address is even looked up, so that neither the
/// answer nor its timing tells whether the address has an account.
pub(super) fn after_answer<F>(what: &'static str, work: F)
where
    F: Future<Output = secureflows_core::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        tokio::time::sleep(AFTER_ANSWER).await;
        if let Err(e) = work.await {
            tracing::warn!(error = %e, "{what} could not be sent");
        }
    });
}

/// A link that is unknown, spent or expired.
pub(super) fn or_unusable_link(e: Error) -> PageError {
    match e {
        Error::NotFound(_) => PageError::unusable_link(),
        e => e.into(),
    }
}

/// Throttles link requests like sign-ins (per address asked for and per client address).
pub(super) fn throttle(
    state: &AppState,
    ctx: &PageContext,
    email: &str,
    client: Option<&str>,
) -> PageResult<()> {
    let limits = state.sign_in_limits();
    limits
        .check_email(ctx.workspace, Attempt::SignIn, email, client)
        .map_err(PageError::throttled)
}

/// Links cannot be mailed from here (no mail transport): the way on is the password.
pub(super) fn mail_available(ctx: &PageContext) -> PageResult<()> {
    if ctx.magic_links {
        return Ok(());
    }
    Err(PageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "E-mail is not available",
        "This sign-in service cannot send e-mail. Sign in with your password, or ask the administrator.",
    ))
}

/// The answer to a link request, the same whether or not the address has an account.
pub(super) fn check_your_mail(ctx: &PageContext) -> Response {
    message(
        StatusCode::OK,
        ctx.brand.clone(),
        "Check your e-mail",
        "If an account uses this address, we have sent it a link. It works once, for 15 minutes.",
    )
}

/// What a link's confirmation page says and does.
pub(super) struct Confirm {
    pub heading: &'static str,
    pub text: &'static str,
    /// The form's path under the workspace.
    pub action: &'static str,
    pub button_id: &'static str,
    pub button_label: &'static str,
}

/// The page a link opens: its button spends the link.
pub(super) fn confirm_page(ctx: &PageContext, token: Option<String>, c: Confirm) -> PageResult {
    let token = token.ok_or_else(PageError::unusable_link)?;
    let page = ConfirmLinkPage {
        brand: ctx.brand.clone(),
        heading: c.heading.into(),
        message: c.text.into(),
        action: format!("/w/{}/{}", ctx.workspace, c.action),
        csrf: ctx.csrf.clone(),
        token,
        button_id: c.button_id.into(),
        button_label: c.button_label.into(),
    };
    Ok(render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/magic`: mails a sign-in link.
pub(super) async fn magic_request(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<EmailForm>(&state, &workspace, request).await?;
    mail_available(&ctx)?;
    throttle(&state, &ctx, &form.email, actor.client_ip.as_deref())?;
    let flow = form.flow.as_deref().and_then(|f| f.parse().ok());
    // The link continues the request only in this browser: it is named by its browser id.
    let (device, new_device) = browser_id(&ctx)?;
    let (services, workspace, email, browser) =
        (state.services_arc(), ctx.workspace, form.email, device.clone());
    after_answer("a magic link", async move {
        services.send_magic_link(workspace, &email, flow, &browser).await
    });
    let mut response = check_your_mail(&ctx);
    if new_device {
        response
            .headers_mut()
            .append(header::SET_COOKIE, device_cookie(&state, &ctx, &device));
    }
    Ok(response)
}

/// `GET /w/{ws}/magic?token=…`: the button that signs in.
pub(super) async fn magic_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let confirm = Confirm {
        heading: "Sign in",
        text: "Continue to sign in with the link we sent you.",
        action: "magic/confirm",
        button_id: "confirm-magic-link",
        button_label: "Sign in",
    };
    confirm_page(&ctx, q.token, confirm)
}

/// `POST /w/{ws}/magic/confirm`: spends the link and signs the browser in.
pub(super) async fn magic_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<TokenForm>(&state, &workspace, request).await?;
    let signed = state
        .services()
        .redeem_magic_link(ctx.workspace, &form.token, ctx.device.as_deref(), &actor)
        .await
        .map_err(or_unusable_link)?;
    let flow = signed.flow.map(|f| f.to_string());
    signed_in(&state, &ctx, flow.as_deref(), &signed.user, signed.step, false).await
}

/// `GET /w/{ws}/verify?token=…`: the button that confirms the address.
pub(super) async fn verify_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let confirm = Confirm {
        heading: "Confirm your e-mail address",
        text: "Confirm that this e-mail address is yours.",
        action: "verify",
        button_id: "confirm-email",
        button_label: "Confirm",
    };
    confirm_page(&ctx, q.token, confirm)
}

/// `POST /w/{ws}/verify`: spends the link and marks the address verified.
pub(super) async fn verify_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<TokenForm>(&state, &workspace, request).await?;
    let services = state.services();
    services
        .verify_email(ctx.workspace, &form.token, &actor)
        .await
        .map_err(or_unusable_link)?;
    let (heading, text) = (
        "E-mail address confirmed",
        "Thank you: your e-mail address is confirmed.",
    );
    Ok(message(StatusCode::OK, ctx.brand.clone(), heading, text))
}
