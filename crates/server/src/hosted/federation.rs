//! "Continue with ..." on the sign-in page: `GET /w/{ws}/upstream/{provider}` sends the browser to the
//! provider (authorization code with PKCE) and sets the `sf_upstream` cookie (sealed state, nonce and
//! verifier; SameSite=Lax, because the provider's redirect back is a cross-site top-level GET);
//! `GET /w/{ws}/upstream/callback` finishes the sign-in and continues the application's request. The
//! decisions are core's (`UpstreamOutcome`, `UpstreamFailure`).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_core::login::federation::{
    UpstreamCallback, UpstreamFailure, UpstreamOutcome, UpstreamStart,
};
use secureflows_core::{Error, ProviderId};
use serde::Deserialize;

use super::account::{Notice, SignedIn, account_post};
use super::context::{FlowQuery, PageContext, cookie, csrf_form, page_context, see_other, set_cookie};
use super::login::signed_in;
use crate::extract::{Query, request_actor};
use crate::failure::Level;
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

const UPSTREAM_COOKIE: &str = "sf_upstream";
const UPSTREAM_AGE: u64 = 600;

csrf_form!(LinkForm { provider: String });

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
}

/// Sends the browser to the provider with the pending sign-in in its cookie.
fn to_provider(state: &AppState, ctx: &PageContext, started: &UpstreamStart) -> Response {
    let mut response = see_other(&started.authorization_url);
    let cookie = set_cookie(
        state,
        ctx.workspace,
        UPSTREAM_COOKIE,
        started.cookie.expose(),
        "Lax",
        Some(UPSTREAM_AGE),
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// The provider could not be reached (its discovery or token endpoint).
fn provider_away(what: &'static str) -> PageError {
    PageError::new(
        StatusCode::BAD_GATEWAY,
        "The sign-in provider could not be reached",
        "Please try again later, or sign in another way.",
    )
    .log(
        Level::Warn,
        format!("an upstream provider could not be reached: {what}"),
    )
}

/// `GET /w/{ws}/upstream/{provider}`: starts a sign-in with an upstream provider.
pub(super) async fn start(
    State(state): State<AppState>,
    Path((workspace, provider)): Path<(String, String)>,
    Query(q): Query<FlowQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let unknown = || {
        PageError::new(
            StatusCode::NOT_FOUND,
            "No such sign-in option",
            "Choose another way to sign in.",
        )
    };
    let provider = provider.parse::<ProviderId>().map_err(|_| unknown())?;
    let flow = q.flow.as_deref().and_then(|f| f.parse().ok());
    match state
        .services()
        .start_upstream_login(ctx.workspace, provider, flow)
        .await
    {
        Ok(started) => Ok(to_provider(&state, &ctx, &started)),
        Err(Error::NotFound(_)) => Err(unknown()),
        Err(Error::Unavailable(what)) => Err(provider_away(what)),
        Err(e) => Err(e.into()),
    }
}

/// `GET /w/{ws}/upstream/callback`: the provider's redirect back. The pending sign-in's cookie ends
/// whatever the outcome.
pub(super) async fn callback(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<CallbackQuery>,
    parts: axum::http::request::Parts,
) -> Response {
    let mut response = finish_callback(&state, &workspace, q, &parts)
        .await
        .into_response();
    if let Ok(workspace) = workspace.parse() {
        let expired = set_cookie(&state, workspace, UPSTREAM_COOKIE, "", "Lax", Some(0));
        response.headers_mut().append(header::SET_COOKIE, expired);
    }
    response
}

async fn finish_callback(
    state: &AppState,
    workspace: &str,
    q: CallbackQuery,
    parts: &axum::http::request::Parts,
) -> PageResult {
    let ctx = page_context(state, workspace, &parts.headers).await?;
    let actor = request_actor(parts, state);
    // Each callback makes a request to the provider's token endpoint: throttled like sign-ins.
    if let Some(retry) = state
        .sign_in_limits()
        .check_address(actor.client_ip.clone().unwrap_or_default())
    {
        return Err(PageError::throttled(retry));
    }
    let signed_in_user = ctx.sso.as_ref().map(|(_, user)| user);
    let callback = UpstreamCallback {
        cookie: cookie(&parts.headers, UPSTREAM_COOKIE).unwrap_or_default(),
        state: q.state.as_deref().unwrap_or_default(),
        code: q.code.as_deref(),
        iss: q.iss.as_deref(),
    };
    let finished = state
        .services()
        .finish_upstream_login(ctx.workspace, callback, signed_in_user, &actor);
    match finished.await {
        Ok(UpstreamOutcome::SignedIn(done)) => {
            let flow = done.flow.map(|f| f.to_string());
            signed_in(
                state,
                &ctx,
                flow.as_deref(),
                &done.user,
                done.step,
                done.new_account,
            )
            .await
        }
        Ok(UpstreamOutcome::Linked { .. }) => {
            let done = Notice::Done("The provider account is linked: you can now sign in with it.");
            SignedIn::of(ctx)?.view(state, done).await
        }
        Err(failure) => Err(not_signed_in(failure)),
    }
}

/// Why the provider's answer did not sign anyone in, in the person's words.
fn not_signed_in(failure: UpstreamFailure) -> PageError {
    let (status, message) = match failure {
        UpstreamFailure::Expired => (
            StatusCode::BAD_REQUEST,
            "This sign-in expired or was started in another browser. Please start again.",
        ),
        UpstreamFailure::Provider => (
            StatusCode::UNAUTHORIZED,
            "The sign-in provider did not confirm who you are.",
        ),
        UpstreamFailure::ExistingAccount => (
            StatusCode::CONFLICT,
            "An account with this e-mail address exists already, and it cannot be joined to this provider \
             automatically. Sign in with your password, a passkey or an e-mailed link instead.",
        ),
        UpstreamFailure::IdentityTaken => (
            StatusCode::CONFLICT,
            "That account at the sign-in provider is already linked to another member.",
        ),
        UpstreamFailure::Locked => (StatusCode::FORBIDDEN, "This account cannot sign in."),
        UpstreamFailure::Other(Error::Unavailable(what)) => return provider_away(what),
        UpstreamFailure::Other(e) => return e.into(),
    };
    PageError::new(status, "Not signed in", message)
}

/// `POST /w/{ws}/account/upstream`: links a provider identity to the signed-in user (after a sign-in
/// at the provider in this browser).
pub(super) async fn link_start(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (me, form, _) = account_post::<LinkForm>(&state, &workspace, request).await?;
    let no_such = Notice::Refused(StatusCode::NOT_FOUND, "There is no such sign-in provider.");
    let notice = match form.provider.parse::<ProviderId>() {
        _ if !me.recent(&state) => Notice::Refused(
            StatusCode::FORBIDDEN,
            "For your security, sign out and sign in again before linking a sign-in provider.",
        ),
        Err(_) => no_such,
        Ok(provider) => match state.services().start_upstream_link(&me.user, provider).await {
            Ok(started) => return Ok(to_provider(&state, &me.ctx, &started)),
            Err(Error::NotFound(_)) => no_such,
            Err(Error::Unavailable(_)) => Notice::Refused(
                StatusCode::BAD_GATEWAY,
                "The sign-in provider could not be reached. Please try again later.",
            ),
            Err(e) => return Err(e.into()),
        },
    };
    me.view(&state, notice).await
}
