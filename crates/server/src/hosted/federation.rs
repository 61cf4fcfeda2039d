//! "Continue with ..." on the sign-in page: `GET /w/{ws}/upstream/{provider}` sends the browser to the
//! provider (authorization code with PKCE) and sets the `sf_upstream` cookie (sealed state, nonce and
//! verifier; SameSite=Lax, because the provider's redirect back is a cross-site top-level GET);
//! `GET /w/{ws}/upstream/callback` finishes the sign-in and continues the application's request.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use secureflows_core::login::federation::{
    UpstreamCallback, UpstreamFailure, UpstreamOutcome, UpstreamStart,
};
use secureflows_core::{Error, ProviderId};
use serde::Deserialize;

use super::account::{Notice, account_post, account_view};
use super::pages::{MessagePage, error_page, render};
use super::{
    CsrfForm, FlowQuery, PageContext, cookie, internal, page_context, recently_signed_in, see_other,
    set_cookie, signed_in,
};
use crate::extract::request_actor;
use crate::state::AppState;

const UPSTREAM_COOKIE: &str = "sf_upstream";
const UPSTREAM_AGE: u64 = 600;

/// Sends the browser to the provider with the pending sign-in in its cookie.
fn to_provider(state: &AppState, ctx: &PageContext, started: &UpstreamStart) -> Response {
    let mut response = see_other(&started.authorization_url);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            state,
            ctx.workspace,
            UPSTREAM_COOKIE,
            started.cookie.expose(),
            "Lax",
            Some(UPSTREAM_AGE),
        ),
    );
    ctx.finish(state, response)
}

fn clear(state: &AppState, ctx: &PageContext, mut response: Response) -> Response {
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, ctx.workspace, UPSTREAM_COOKIE, "", "Lax", Some(0)),
    );
    response
}

/// `GET /w/{ws}/upstream/{provider}`: starts a sign-in with an upstream provider.
pub(super) async fn start(
    State(state): State<AppState>,
    Path((workspace, provider)): Path<(String, String)>,
    crate::extract::Query(q): crate::extract::Query<FlowQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let unknown = || {
        ctx.finish(
            &state,
            error_page(
                StatusCode::NOT_FOUND,
                ctx.brand.clone(),
                "This sign-in option does not exist.",
            ),
        )
    };
    let Ok(provider) = provider.parse::<ProviderId>() else {
        return unknown();
    };
    let flow = q.flow.as_deref().and_then(|f| f.parse().ok());
    match state
        .services()
        .start_upstream_login(ctx.workspace, provider, flow)
        .await
    {
        Ok(started) => to_provider(&state, &ctx, &started),
        Err(Error::NotFound(_)) => unknown(),
        Err(Error::Unavailable(what)) => {
            tracing::warn!(reason = what, "an upstream provider could not be reached");
            ctx.finish(
                &state,
                error_page(
                    StatusCode::BAD_GATEWAY,
                    ctx.brand.clone(),
                    "The sign-in provider could not be reached. Please try again later, or sign in another way.",
                ),
            )
        }
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
}

/// `GET /w/{ws}/upstream/callback`: the provider's redirect back.
pub(super) async fn callback(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    crate::extract::Query(q): crate::extract::Query<CallbackQuery>,
    parts: axum::http::request::Parts,
) -> Response {
    let ctx = match page_context(&state, &workspace, &parts.headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let actor = request_actor(&parts, &state);
    // Each callback makes a request to the provider's token endpoint: throttled like sign-ins.
    if let Some(retry) = state
        .sign_in_limits()
        .check_address(actor.client_ip.clone().unwrap_or_default())
    {
        let page = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            ctx.brand.clone(),
            &format!(
                "Too many sign-in attempts. Try again in {} seconds.",
                retry.as_secs().max(1)
            ),
        );
        return ctx.finish(&state, page);
    }
    let pending = cookie(&parts.headers, UPSTREAM_COOKIE).unwrap_or_default();
    let finished = state
        .services()
        .finish_upstream_login(
            ctx.workspace,
            UpstreamCallback {
                cookie: pending,
                state: q.state.as_deref().unwrap_or_default(),
                code: q.code.as_deref(),
                iss: q.iss.as_deref(),
            },
            ctx.sso.as_ref().map(|(_, user)| user),
            &actor,
        )
        .await;
    let refuse = |status: StatusCode, message: &str| {
        let page = MessagePage {
            brand: ctx.brand.clone(),
            heading: "Not signed in".into(),
            message: message.to_owned(),
            link: Some((format!("/w/{}/login", ctx.workspace), "Back to sign-in".into())),
        };
        ctx.finish(&state, render(status, &page))
    };
    let response = match finished {
        Ok(UpstreamOutcome::SignedIn(done)) => {
            let flow = done.flow.map(|f| f.to_string());
            signed_in(
                &state,
                &ctx,
                flow.as_deref(),
                &done.user,
                done.step,
                done.new_account,
            )
            .await
        }
        Ok(UpstreamOutcome::Linked { .. }) => match &ctx.sso {
            Some((session, user)) => {
                let done = Notice::Done("The provider account is linked: you can now sign in with it.");
                account_view(&state, &ctx, session, user, done).await
            }
            None => internal(Error::internal("a link without a signed-in browser")),
        },
        Err(UpstreamFailure::Expired) => refuse(
            StatusCode::BAD_REQUEST,
            "This sign-in expired or was started in another browser. Please start again.",
        ),
        Err(UpstreamFailure::Provider) => refuse(
            StatusCode::UNAUTHORIZED,
            "The sign-in provider did not confirm who you are.",
        ),
        Err(UpstreamFailure::ExistingAccount) => refuse(
            StatusCode::CONFLICT,
            "An account with this e-mail address exists already, and it cannot be joined to this provider \
             automatically. Sign in with your password, a passkey or an e-mailed link instead.",
        ),
        Err(UpstreamFailure::IdentityTaken) => refuse(
            StatusCode::CONFLICT,
            "That account at the sign-in provider is already linked to another member.",
        ),
        Err(UpstreamFailure::Locked) => refuse(StatusCode::FORBIDDEN, "This account cannot sign in."),
        Err(UpstreamFailure::Other(Error::Unavailable(what))) => {
            tracing::warn!(reason = what, "an upstream provider could not be reached");
            refuse(
                StatusCode::BAD_GATEWAY,
                "The sign-in provider could not be reached. Please try again later.",
            )
        }
        Err(UpstreamFailure::Other(e)) => internal(e),
    };
    clear(&state, &ctx, response)
}

#[derive(Deserialize)]
pub(super) struct LinkForm {
    csrf: String,
    provider: String,
}

impl CsrfForm for LinkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/account/upstream`: links a provider identity to the signed-in user (after a sign-in
/// at the provider in this browser).
pub(super) async fn link_start(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, _, session, user) = match account_post::<LinkForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    if !recently_signed_in(&state, &session) {
        let refused = Notice::Refused(
            StatusCode::FORBIDDEN,
            "For your security, sign out and sign in again before linking a sign-in provider.",
        );
        return account_view(&state, &ctx, &session, &user, refused).await;
    }
    let Ok(provider) = form.provider.parse::<ProviderId>() else {
        let refused = Notice::Refused(StatusCode::NOT_FOUND, "There is no such sign-in provider.");
        return account_view(&state, &ctx, &session, &user, refused).await;
    };
    match state.services().start_upstream_link(&user, provider).await {
        Ok(started) => to_provider(&state, &ctx, &started),
        Err(Error::NotFound(_)) => {
            let refused = Notice::Refused(StatusCode::NOT_FOUND, "There is no such sign-in provider.");
            account_view(&state, &ctx, &session, &user, refused).await
        }
        Err(Error::Unavailable(what)) => {
            tracing::warn!(reason = what, "an upstream provider could not be reached");
            let refused = Notice::Refused(
                StatusCode::BAD_GATEWAY,
                "The sign-in provider could not be reached. Please try again later.",
            );
            account_view(&state, &ctx, &session, &user, refused).await
        }
        Err(e) => internal(e),
    }
}
