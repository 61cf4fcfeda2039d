//! `/api/v1/workspaces`: the caller's own workspace, and new workspaces.

use axum::extract::State;
use axum::http::StatusCode;
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::Workspace;
use secureflows_core::auth::token::IssuedToken;

use crate::extract::{ConsoleAuth, Json};
use crate::problem::ApiResult;
use crate::state::AppState;

pub(crate) fn workspace_dto(w: &Workspace) -> m::Workspace {
    m::Workspace {
        id: w.id.to_string(),
        name: w.name.clone(),
        plan: w.plan.as_str().to_owned(),
        created_at: w.created_at.rfc3339(),
        updated_at: w.updated_at.rfc3339(),
    }
}

pub(crate) fn token_dto(t: IssuedToken) -> m::ConsoleToken {
    m::ConsoleToken {
        token: t.token,
        expires_in: t.expires_in.as_secs(),
        token_type: "Bearer".into(),
    }
}

/// The caller's workspace.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    security(("console" = [])),
    responses(
        (status = 200, description = "The caller's workspace (OWNER, ADMIN, SUPPORT)", body = m::Workspace),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_workspace(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
) -> ApiResult<axum::Json<m::Workspace>> {
    caller.require_metadata_reader()?;
    let services = state.services();
    let workspace = services.get_workspace(caller.workspace_id()).await?;
    services
        .audit_support_read(&caller, "workspace", workspace.id.to_string())
        .await?;
    Ok(axum::Json(workspace_dto(&workspace)))
}

/// Renames the caller's workspace.
#[utoipa::path(patch, path = "/api/v1/workspaces", tag = "workspaces",
    security(("console" = [])),
    request_body = m::UpdateWorkspace,
    responses(
        (status = 200, description = "The changed workspace (OWNER, ADMIN)", body = m::Workspace),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_workspace(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Json(body): Json<m::UpdateWorkspace>,
) -> ApiResult<axum::Json<m::Workspace>> {
    caller.require_admin()?;
    let services = state.services();
    let workspace = match body.name {
        Some(name) => services.rename_workspace(&caller, &name).await?,
        None => services.get_workspace(caller.workspace_id()).await?,
    };
    Ok(axum::Json(workspace_dto(&workspace)))
}

/// Creates a new workspace on the free plan whose first OWNER is the caller (by e-mail), and returns
/// a console token for it.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces",
    security(("console" = [])),
    request_body = m::CreateWorkspace,
    responses(
        (status = 201, description = "Created (OWNER of any workspace)", body = m::CreatedWorkspace),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_workspace(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Json(body): Json<m::CreateWorkspace>,
) -> ApiResult<(StatusCode, axum::Json<m::CreatedWorkspace>)> {
    let (workspace, token) = state
        .services()
        .create_owned_workspace(&caller, &body.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(m::CreatedWorkspace {
            workspace: workspace_dto(&workspace),
            owner_token: token_dto(token),
        }),
    ))
}
