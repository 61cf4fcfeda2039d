//! `/api/v1/users`: a workspace's members, their roles and status, and administrators' audited reads
//! of their vault values.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::members::Member;
use secureflows_core::vault::VaultKey;
use secureflows_core::{ApplicationId, Error, Role, UserId};

use super::{PageQuery, decode_cursor, next_cursor, page_limit};
use crate::extract::{ConsoleAuth, Json, Query};
use crate::problem::ApiResult;
use crate::state::AppState;

pub(crate) fn user_dto(m: Member) -> m::User {
    m::User {
        id: m.user.id.to_string(),
        email: m.email,
        role: m.user.role.as_str().to_owned(),
        status: m.user.status.as_str().to_owned(),
        created_at: m.user.created_at.rfc3339(),
        updated_at: m.user.updated_at.rfc3339(),
    }
}

pub(crate) fn parse_user(id: &str) -> Result<UserId, Error> {
    id.parse().map_err(|_| Error::NotFound("user"))
}

/// The workspace's users, oldest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    security(("console" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users (OWNER, ADMIN)", body = m::UserList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<m::UserList>> {
    caller.require_admin()?;
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor::<UserId>("user", c))
        .transpose()?;
    let members = state.services().list_members(&caller, after, limit).await?;
    let next = next_cursor(&members, limit, "user", |m| m.user.id.to_string());
    Ok(axum::Json(m::UserList {
        items: members.into_iter().map(user_dto).collect(),
        next_cursor: next,
    }))
}

/// The caller's own profile (any member).
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    security(("console" = [])),
    responses(
        (status = 200, description = "The caller (OWNER, ADMIN, USER)", body = m::User),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn me(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
) -> ApiResult<axum::Json<m::User>> {
    if caller.is_support() {
        return Err(Error::Forbidden(secureflows_core::ForbiddenReason::Role).into());
    }
    let member = state.services().get_member(&caller, caller.token.user).await?;
    Ok(axum::Json(user_dto(member)))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 200, description = "The user (OWNER, ADMIN; anyone for themselves)", body = m::User),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_user(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<m::User>> {
    let id = match id.parse::<UserId>() {
        Ok(id) => id,
        Err(_) => {
            caller.require_admin()?;
            return Err(Error::NotFound("user").into());
        }
    };
    let member = state.services().get_member(&caller, id).await?;
    Ok(axum::Json(user_dto(member)))
}

/// Changes a user's role. Only an OWNER gives or takes away OWNER; the last OWNER cannot be demoted.
#[utoipa::path(put, path = "/api/v1/users/{id}/role", tag = "users",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id")),
    request_body = m::ChangeRole,
    responses(
        (status = 200, description = "The changed user (OWNER, ADMIN)", body = m::User),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_role(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
    Json(body): Json<m::ChangeRole>,
) -> ApiResult<axum::Json<m::User>> {
    caller.require_admin()?;
    let role = Role::parse(body.role.as_str())
        .ok_or_else(|| Error::invalid("role", "must be owner, admin or user"))?;
    let member = state
        .services()
        .set_member_role(&caller, parse_user(&id)?, role)
        .await?;
    Ok(axum::Json(user_dto(member)))
}

async fn set_locked(
    state: &AppState,
    caller: &ConsoleAuth,
    id: &str,
    locked: bool,
) -> ApiResult<axum::Json<m::User>> {
    caller.0.require_admin()?;
    let member = state
        .services()
        .set_member_locked(&caller.0, parse_user(id)?, locked)
        .await?;
    Ok(axum::Json(user_dto(member)))
}

/// Locks a user: every session of theirs ends at once and they cannot sign in.
#[utoipa::path(post, path = "/api/v1/users/{id}/lock", tag = "users",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 200, description = "The locked user (OWNER, ADMIN)", body = m::User),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn lock_user(
    State(state): State<AppState>,
    caller: ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<m::User>> {
    set_locked(&state, &caller, &id, true).await
}

/// Unlocks a user.
#[utoipa::path(post, path = "/api/v1/users/{id}/unlock", tag = "users",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 200, description = "The unlocked user (OWNER, ADMIN)", body = m::User),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn unlock_user(
    State(state): State<AppState>,
    caller: ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<m::User>> {
    set_locked(&state, &caller, &id, false).await
}

/// Ends every login session of a user (raises their token revision).
#[utoipa::path(post, path = "/api/v1/users/{id}/revoke", tag = "users",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 204, description = "Every session ended (OWNER, ADMIN)"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_user(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state
        .services()
        .end_member_sessions(&caller, parse_user(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a user with their identities, sessions and vault values.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 204, description = "Deleted (OWNER, ADMIN)"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_user(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.services().delete_member(&caller, parse_user(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's vault keys in every application (metadata; audited).
#[utoipa::path(get, path = "/api/v1/users/{id}/sessions", tag = "users",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 200, description = "The user's keys (OWNER, ADMIN; never SUPPORT)", body = m::UserValueList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_user_values(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<m::UserValueList>> {
    caller.require_admin()?;
    let values = state
        .services()
        .admin_list_values(&caller, parse_user(&id)?)
        .await?;
    Ok(axum::Json(m::UserValueList {
        items: values
            .into_iter()
            .map(|(app, v)| m::UserValue {
                application_id: app.to_string(),
                key: v.key,
                size: v.size,
                created_at: v.created_at.rfc3339(),
                updated_at: v.updated_at.rfc3339(),
                expires_at: v.expires_at.rfc3339(),
            })
            .collect(),
    }))
}

/// One of a user's vault values, decrypted in the API layer, exactly as stored (audited, naming the key).
#[utoipa::path(get, path = "/api/v1/users/{id}/sessions/{application_id}/{key}", tag = "users",
    security(("console" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "User id"),
        ("application_id" = String, Path, format = Uuid, description = "Application id"),
        ("key" = String, Path, pattern = "^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description = "Key name"),
    ),
    responses(
        (status = 200, description = "The value with its content type (OWNER, ADMIN; never SUPPORT)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_user_value(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path((id, application, key)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let user = parse_user(&id)?;
    let application: ApplicationId = application.parse().map_err(|_| Error::NotFound("application"))?;
    let key = VaultKey::parse(&key)?;
    let value = state
        .services()
        .admin_get_value(&caller, user, application, &key)
        .await?;
    Ok(crate::api::session::value_response(value))
}
