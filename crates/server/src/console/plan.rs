//! Plan and usage: every limit of the workspace's plan beside what is in use.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::context::{Browser, console};
use super::views::Shell;
use crate::pages::{PageResult, render};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/plan.html")]
struct PlanPage {
    shell: Shell,
    plan: String,
    display_name: String,
    features: String,
    owner: bool,
    reference: Option<(String, String)>,
    rows: Vec<(&'static str, String, String)>,
}

/// Bytes in words.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// An optional limit in words.
fn limit(value: Option<u32>) -> String {
    value.map_or_else(|| "no limit".to_owned(), |n| n.to_string())
}

/// `GET …/plan` (OWNER, ADMIN).
pub(super) async fn plan(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/plan"),
    )
    .await?;
    plan_page(&state, c, None).await
}

/// The plan page, with a checkout reference just created (and its expiry) when there is one.
pub(super) async fn plan_page(
    state: &AppState,
    c: super::context::Console,
    reference: Option<(String, String)>,
) -> PageResult {
    let u = state.services().plan_usage(&c.caller).await?;
    let l = &u.limits;
    let per_user = || "per user, checked on each write".to_owned();
    let rows = vec![
        (
            "Active sessions in the workspace",
            l.max_sessions_per_workspace.to_string(),
            u.sessions.to_string(),
        ),
        (
            "Active sessions per user",
            l.max_sessions_per_user.to_string(),
            per_user(),
        ),
        (
            "Vault keys per user and application",
            l.max_keys_per_user.to_string(),
            per_user(),
        ),
        (
            "Largest vault value",
            size(l.max_value_bytes),
            "checked on each write".into(),
        ),
        (
            "Second factor for everyone",
            if l.require_mfa {
                "required"
            } else {
                "as the workspace's policy says"
            }
            .into(),
            "—".into(),
        ),
        (
            "API requests per hour, whole workspace",
            limit(l.api_requests_per_hour),
            "counted per node, refilled smoothly".into(),
        ),
        (
            "Applications",
            limit(l.max_applications),
            u.applications.to_string(),
        ),
        ("Owners and admins", limit(l.max_members), u.members.to_string()),
    ];
    Ok(render(
        StatusCode::OK,
        &PlanPage {
            plan: u.plan.as_str().to_owned(),
            display_name: l.display_name.clone(),
            features: if l.features.is_empty() {
                "none".to_owned()
            } else {
                l.features.join(", ")
            },
            rows,
            owner: c.caller.role() == secureflows_core::Role::Owner,
            reference,
            shell: c.shell,
        },
    ))
}
