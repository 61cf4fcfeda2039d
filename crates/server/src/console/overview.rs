//! The workspace's overview: where to start, and the endpoints its applications use.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::context::{Browser, console};
use super::views::Shell;
use crate::pages::{PageResult, render};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    shell: Shell,
    plan: String,
    applications: usize,
    workspace_id: String,
    issuer: String,
    login_url: String,
    api_base: String,
}

/// `GET /console/w/{workspace}` (OWNER, ADMIN).
pub(super) async fn overview(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}");
    let c = console(&state, &workspace, &browser, &here).await?;
    let services = state.services();
    let apps = services.workspace_applications(&c.caller).await?;
    let issuer = services.issuer_of(c.workspace());
    Ok(render(
        StatusCode::OK,
        &OverviewPage {
            plan: c.caller.workspace.plan.as_str().to_owned(),
            // The console's own client is not the workspace's application.
            applications: apps.iter().filter(|a| !services.is_own_console_client(a)).count(),
            workspace_id: c.workspace().to_string(),
            login_url: format!("{issuer}/login"),
            issuer,
            api_base: state.issuer().trim_end_matches('/').to_owned(),
            shell: c.shell,
        },
    ))
}
