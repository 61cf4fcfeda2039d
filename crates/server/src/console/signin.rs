//! Signing in to a workspace's console through its hosted login (authorization code + PKCE, the code
//! exchanged in process), and signing out.

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use secureflows_core::{Error, ForbiddenReason, WorkspaceId};
use serde::Deserialize;

use super::context::{
    Browser, PATH, PENDING_COOKIE, PlainForm, clear_session_cookie, console_form, not_an_administrator,
    open_page, session_cookie, with_cookies,
};
use crate::pages::{PageError, PageResult, cookie, see_other, set_cookie};
use crate::state::AppState;

#[derive(Deserialize)]
pub(super) struct SignInQuery {
    return_to: Option<String>,
}

/// `GET /console/w/{workspace}/signin`: to the workspace's hosted login, to come back signed in.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
    Query(q): Query<SignInQuery>,
) -> PageResult {
    open_page(
        &state,
        &browser,
        "signin",
        (PATH.into(), "Go to the console".into()),
    )
    .await?;
    let workspace: WorkspaceId = workspace.parse().map_err(|_| PageError::no_such_page())?;
    let started = match state
        .services()
        .start_console_sign_in(workspace, q.return_to.as_deref().unwrap_or_default())
        .await
    {
        Err(Error::NotFound(_)) => return Err(PageError::no_such_page()),
        started => started?,
    };
    let age = secureflows_core::console_session::CONSOLE_SIGN_IN_TTL.as_secs();
    // Lax: the hosted login's answer is a top-level navigation back to the callback.
    let pending = set_cookie(
        &state,
        PATH,
        PENDING_COOKIE,
        started.pending.expose(),
        "Lax",
        Some(age),
    );
    Ok(with_cookies(see_other(&started.authorize_url), [pending]))
}

#[derive(Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /console/callback`: the hosted login's answer; a console session for an OWNER or ADMIN.
pub(super) async fn callback(
    State(state): State<AppState>,
    browser: Browser,
    Query(q): Query<CallbackQuery>,
) -> PageResult {
    open_page(
        &state,
        &browser,
        "callback",
        (PATH.into(), "Go to the console".into()),
    )
    .await?;
    let clear_pending = set_cookie(&state, PATH, PENDING_COOKIE, "", "Lax", Some(0));
    let (Some(pending), Some(code), Some(st)) = (cookie(&browser.headers, PENDING_COOKIE), q.code, q.state)
    else {
        return Err(if q.error.is_some() {
            sign_in_cancelled()
        } else {
            sign_in_lost()
        });
    };
    let signed = match state
        .services()
        .finish_console_sign_in(pending, &code, &st, &browser.actor)
        .await
    {
        Ok(signed) => signed,
        Err(Error::Unauthenticated(_)) => return Err(sign_in_lost()),
        Err(Error::Forbidden(ForbiddenReason::Role)) => return Err(not_an_administrator()),
        Err(e) => return Err(e.into()),
    };
    let cookies = [
        clear_pending,
        session_cookie(&state, signed.workspace, signed.secret.expose()),
    ];
    Ok(with_cookies(see_other(&signed.return_to), cookies))
}

/// `POST /console/w/{workspace}/signout`: ends this browser's console session in the workspace.
pub(super) async fn sign_out(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("{PATH}/w/{workspace}");
    let (console, _form, browser): (_, PlainForm, _) =
        console_form(&state, &workspace, &here, request).await?;
    let ws = console.workspace();
    let mut next = None;
    if let Some(secret) = browser.session_secret(ws) {
        next = state.services().end_console_session(ws, secret).await?;
    }
    // On to the hosted login's sign-out, which comes back to the console's start page.
    let next = next.unwrap_or_else(|| PATH.to_owned());
    Ok(with_cookies(see_other(&next), [clear_session_cookie(&state, ws)]))
}

fn sign_in_lost() -> PageError {
    PageError::new(
        StatusCode::BAD_REQUEST,
        "The sign-in could not be finished",
        "It took too long, was started in another browser, or was already used. Start again from the console.",
    )
    .way_on(PATH, "Go to the console")
}

fn sign_in_cancelled() -> PageError {
    PageError::new(
        StatusCode::BAD_REQUEST,
        "The sign-in was not completed",
        "The sign-in page did not sign you in. Start again from the console.",
    )
    .way_on(PATH, "Go to the console")
}
