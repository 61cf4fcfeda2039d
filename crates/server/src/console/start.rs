//! The server's root and the console's start page: a browser asking for `/` goes to the console;
//! the console lists the workspaces this browser is signed in to (or says how to finish the setup),
//! and opens another by its id.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_core::WorkspaceId;
use serde::Deserialize;

use super::context::{Browser, PATH, open_page};
use super::views::StartPage;
use crate::pages::{PageError, PageResult, render, see_other};
use crate::problem::Problem;
use crate::state::AppState;

/// `GET /`: a browser (asking for HTML) is sent to the console; an API client keeps problem+json.
pub(super) async fn root(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/html")));
    if wants_html {
        see_other(PATH)
    } else {
        Problem::not_found().detail("no such route").into_response()
    }
}

/// `GET /console`: the workspaces this browser's console is signed in to; with a single workspace
/// on the server, straight to it; before the first run, how to finish the setup.
pub(super) async fn start(State(state): State<AppState>, browser: Browser) -> PageResult {
    open_page(
        &state,
        &browser,
        "start",
        (PATH.into(), "Go to the console".into()),
    )
    .await?;
    let services = state.services();
    if !services.stores.workspaces.any_workspace().await? {
        return Ok(start_page(&state, true, Vec::new()));
    }
    let mut workspaces = Vec::new();
    for id in browser.session_workspaces() {
        if let Ok(w) = services.get_workspace(id).await {
            workspaces.push((format!("{PATH}/w/{id}"), w.name));
        }
    }
    // With open sign-up the start page offers a new workspace; otherwise a server with one workspace
    // opens it.
    if workspaces.is_empty()
        && !state.config().console.open_signup
        && let Some(only) = services.stores.workspaces.sole_workspace().await?
    {
        return Ok(see_other(&format!("{PATH}/w/{only}")));
    }
    Ok(start_page(&state, false, workspaces))
}

fn start_page(state: &AppState, setup_pending: bool, workspaces: Vec<(String, String)>) -> Response {
    render(
        StatusCode::OK,
        &StartPage {
            setup_pending,
            workspaces,
            open_signup: state.config().console.open_signup,
        },
    )
}

#[derive(Deserialize)]
pub(super) struct OpenQuery {
    workspace: Option<String>,
}

/// `GET /console/open?workspace=ID`: the console of a workspace named by its id.
pub(super) async fn open(Query(q): Query<OpenQuery>) -> PageResult {
    let id: WorkspaceId = q
        .workspace
        .as_deref()
        .map(str::trim)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                "That is not a workspace id",
                "A workspace id looks like 0190f1d2-8a4b-7c3e-9f00-123456789abc. Copy it from the address of the \
                 workspace's sign-in page.",
            )
            .way_on(PATH, "Try again")
        })?;
    Ok(see_other(&format!("{PATH}/w/{id}")))
}

/// Any other address under `/console`: a page, not a JSON answer.
pub(super) async fn no_such_page(State(state): State<AppState>, browser: Browser) -> PageResult {
    open_page(
        &state,
        &browser,
        "start",
        (PATH.into(), "Go to the console".into()),
    )
    .await?;
    Err(PageError::no_such_page().way_on(PATH, "Go to the console"))
}
