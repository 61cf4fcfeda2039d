//! The authorization endpoint (`GET /w/{ws}/authorize`) and where a signed-in browser goes next: the
//! decisions are core's (`Services::authorize`); this module carries them out.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use secureflows_core::login::oidc::{AuthorizeOutcome, Browser};
use secureflows_core::{BrowserSession, FlowId};

use super::context::{PageContext, page_context, see_other};
use super::mfa::to_second_factor;
use super::views::{MessagePage, render};
use crate::failure::Level;
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

/// `GET /w/{ws}/authorize`: the OpenID Connect authorization endpoint.
pub(super) async fn authorize(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let browser = Browser {
        signed_in: ctx.sso.as_ref().map(|(s, _)| s),
        needs_step_up: ctx.weak_sso.as_ref().map(|(s, _)| s),
    };
    let outcome = state
        .services()
        .authorize(ctx.workspace, query.as_deref(), browser)
        .await?;
    match outcome {
        AuthorizeOutcome::Redirect(url) => Ok(see_other(&url)),
        AuthorizeOutcome::Unusable(reason) => Err(unusable_sign_in_link(&ctx, reason)),
        AuthorizeOutcome::SignIn(flow) => Ok(see_other(&ctx.login_link(Some(&flow.to_string())))),
        AuthorizeOutcome::SignUp(flow) => Ok(see_other(&ctx.signup_link(Some(&flow.to_string())))),
        AuthorizeOutcome::StepUp(flow) => step_up(&state, &ctx, Some(flow)).await,
    }
}

/// An authorization request that cannot be answered with a redirect (its application or redirect
/// URI is unknown, or it is malformed): the reason is for the developer, in the log; the person gets
/// what happened in their words and a way on (the link cannot be trusted to lead back to the
/// application).
fn unusable_sign_in_link(ctx: &PageContext, reason: &'static str) -> PageError {
    PageError::new(
        StatusCode::BAD_REQUEST,
        "This sign-in link does not work",
        "The application that sent you here asked to sign you in in a way this sign-in page does not \
         recognise: its link is incomplete or out of date. Go back to the application and try again, or \
         sign in to your account here.",
    )
    .way_on(ctx.login_link(None), "Sign in to your account")
    .log(
        Level::Info,
        format!("an authorization request was refused without a redirect: {reason}"),
    )
}

/// Asks a browser whose sign-in no longer meets the user's factors (`PageContext::weak_sso`) for the
/// second factor it needs now; completing it signs the browser in again and continues `flow`.
pub(super) async fn step_up(state: &AppState, ctx: &PageContext, flow: Option<FlowId>) -> PageResult {
    let Some((session, user)) = &ctx.weak_sso else {
        return Ok(see_other(&ctx.login_link(None)));
    };
    let step = state.services().step_up(session, user, flow).await?;
    to_second_factor(state, ctx, &step)
}

/// Where a signed-in browser goes next: back to the application of its flow, or a confirmation page.
pub(super) async fn continue_flow(
    state: &AppState,
    ctx: &PageContext,
    flow: Option<&str>,
    browser: &BrowserSession,
) -> PageResult {
    let services = state.services();
    let found = match flow.and_then(|f| f.parse::<FlowId>().ok()) {
        Some(id) => services.find_flow(ctx.workspace, id).await?,
        None => None,
    };
    let Some((flow, app)) = found else {
        let page = MessagePage {
            brand: ctx.brand.clone(),
            heading: "You are signed in".into(),
            message: "You can close this page and return to the application.".into(),
            link: Some((format!("/w/{}/account", ctx.workspace), "Your account".into())),
        };
        return Ok(render(StatusCode::OK, &page));
    };
    let url = services
        .complete_authorization(&app, &flow.request, browser)
        .await?;
    services.forget_flow(ctx.workspace, flow.id).await;
    Ok(see_other(&url))
}
