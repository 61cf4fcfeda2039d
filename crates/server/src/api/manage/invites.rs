//! `/api/v1/invites`: inviting people into the workspace by e-mail.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::members::{Delivery, InviteView};
use secureflows_core::{Error, InviteId, Role};

use super::{PageQuery, decode_cursor, next_cursor, page_limit};
use crate::extract::{ConsoleAuth, Json, Query};
use crate::problem::ApiResult;
use crate::state::AppState;

fn invite_dto(v: InviteView, now: secureflows_core::Timestamp) -> m::Invite {
    m::Invite {
        id: v.invite.id.to_string(),
        email: v.email,
        role: v.invite.role.as_str().to_owned(),
        state: v.invite.state(now).to_owned(),
        invited_by: v.invite.invited_by.to_string(),
        created_at: v.invite.created_at.rfc3339(),
        expires_at: v.invite.expires_at.rfc3339(),
    }
}

/// Invites someone; the single-use link is e-mailed when a mail server is configured.
#[utoipa::path(post, path = "/api/v1/invites", tag = "invites",
    security(("console" = [])),
    request_body = m::CreateInvite,
    responses(
        (status = 201, description = "Invited (OWNER, ADMIN; only an OWNER invites an OWNER)", body = m::CreatedInvite),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_invite(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Json(body): Json<m::CreateInvite>,
) -> ApiResult<(StatusCode, axum::Json<m::CreatedInvite>)> {
    caller.require_admin()?;
    let role = Role::parse(body.role.as_str())
        .ok_or_else(|| Error::invalid("role", "must be owner, admin or user"))?;
    let services = state.services();
    let created = services
        .create_invite(
            &caller,
            &body.email,
            role,
            body.expires_in.map(Duration::from_secs),
        )
        .await?;
    let (delivery, invite_url) = match created.delivery {
        Delivery::Sent => ("sent", None),
        Delivery::Disabled => ("disabled", Some(created.link.expose().to_owned())),
        Delivery::Failed => ("failed", Some(created.link.expose().to_owned())),
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(m::CreatedInvite {
            invite: invite_dto(created.view, services.clock.now()),
            delivery: delivery.into(),
            invite_url,
        }),
    ))
}

/// The workspace's invitations, oldest first.
#[utoipa::path(get, path = "/api/v1/invites", tag = "invites",
    security(("console" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of invitations (OWNER, ADMIN)", body = m::InviteList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_invites(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<m::InviteList>> {
    caller.require_admin()?;
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor::<InviteId>("invite", c))
        .transpose()?;
    let services = state.services();
    let invites = services.list_invites(&caller, after, limit).await?;
    let next = next_cursor(&invites, limit, "invite", |i| i.invite.id.to_string());
    let now = services.clock.now();
    Ok(axum::Json(m::InviteList {
        items: invites.into_iter().map(|i| invite_dto(i, now)).collect(),
        next_cursor: next,
    }))
}

/// Revokes a pending invitation; its link stops working.
#[utoipa::path(delete, path = "/api/v1/invites/{id}", tag = "invites",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "Invitation id")),
    responses(
        (status = 200, description = "The revoked invitation (OWNER, ADMIN)", body = m::Invite),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_invite(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<m::Invite>> {
    caller.require_admin()?;
    let id: InviteId = id.parse().map_err(|_| Error::NotFound("invite"))?;
    let services = state.services();
    let view = services.revoke_invite(&caller, id).await?;
    Ok(axum::Json(invite_dto(view, services.clock.now())))
}
