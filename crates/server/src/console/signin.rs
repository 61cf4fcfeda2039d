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
use askama::Template;
use secureflows_core::console_session::state_workspace;

use crate::pages::{PageError, PageResult, cookie, render, see_other, set_cookie};
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
    // Lax: the hosted login's answer is a top-level navigation back to the callback. One per
    // workspace, so that sign-ins to two workspaces in two tabs do not overwrite each other.
    let pending = set_cookie(
        &state,
        PATH,
        &pending_cookie(workspace),
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
    let Some(workspace) = q.state.as_deref().and_then(state_workspace) else {
        return Err(sign_in_lost());
    };
    let name = pending_cookie(workspace);
    let clear_pending = set_cookie(&state, PATH, &name, "", "Lax", Some(0));
    let (Some(pending), Some(code), Some(st)) = (cookie(&browser.headers, &name), q.code, q.state) else {
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
    // A sign-in replaces this browser's earlier console session in the workspace.
    if let Some(old) = browser.session_secret(signed.workspace) {
        state
            .services()
            .end_console_session(signed.workspace, old, &browser.actor)
            .await?;
    }
    let cookies = [
        clear_pending,
        session_cookie(&state, signed.workspace, signed.secret.expose()),
    ];
    // A page, not a redirect: a sign-in that began on another site (a link in an e-mail) is a
    // cross-site navigation, in which the browser withholds the SameSite=Strict session cookie; this
    // page's own navigation is same-site, so the console sees the session at once.
    let page = render(
        StatusCode::OK,
        &ContinuePage {
            next: signed.return_to,
        },
    );
    Ok(with_cookies(page, cookies))
}

#[derive(Template)]
#[template(path = "console/continue.html")]
struct ContinuePage {
    next: String,
}

/// The pending sign-in's cookie of `workspace`.
fn pending_cookie(workspace: WorkspaceId) -> String {
    format!("{PENDING_COOKIE}_{workspace}")
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
    if let Some(secret) = browser.session_secret(ws) {
        state
            .services()
            .end_console_session(ws, secret, &browser.actor)
            .await?;
    }
    Ok(with_cookies(see_other(PATH), [clear_session_cookie(&state, ws)]))
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
