//! `/api/v1/applications/{id}/users/{user_id}/tier`: the tier an end user is on in one application.

use axum::extract::{Path, State};
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::UserId;
use secureflows_core::limits::UserTier;
use secureflows_core::tier::TierSource;

use super::applications::{parse_id, tier_dto};
use super::users::parse_user;
use crate::extract::{ConsoleAuth, Json};
use crate::problem::ApiResult;
use crate::state::AppState;

fn user_tier_dto(user: UserId, t: UserTier) -> m::UserTier {
    m::UserTier {
        application: t.application.to_string(),
        user: user.to_string(),
        tier: t.tier.as_ref().map(tier_dto),
        is_default: t.is_default,
        source: t.assignment.as_ref().map(|a| a.source.as_str().to_owned()),
        updated_at: t.assignment.as_ref().map(|a| a.updated_at.rfc3339()),
    }
}

/// The tier an end user is on in one application.
#[utoipa::path(get, path = "/api/v1/applications/{id}/users/{user_id}/tier", tag = "applications",
    security(("console" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "Application id"),
        ("user_id" = String, Path, format = Uuid, description = "User id"),
    ),
    responses(
        (status = 200, description = "The user's tier (OWNER, ADMIN)", body = m::UserTier),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_user_tier(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<m::UserTier>> {
    let user = parse_user(&user_id)?;
    let tier = state.services().user_tier(&caller, parse_id(&id)?, user).await?;
    Ok(axum::Json(user_tier_dto(user, tier)))
}

/// Puts an end user on one of the application's tiers (`null`: back on the default tier). Takes effect
/// on the user's next request, on every node; audited.
#[utoipa::path(put, path = "/api/v1/applications/{id}/users/{user_id}/tier", tag = "applications",
    security(("console" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "Application id"),
        ("user_id" = String, Path, format = Uuid, description = "User id"),
    ),
    request_body = m::SetUserTier,
    responses(
        (status = 200, description = "The user's tier now (OWNER, ADMIN)", body = m::UserTier),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_user_tier(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path((id, user_id)): Path<(String, String)>,
    Json(body): Json<m::SetUserTier>,
) -> ApiResult<axum::Json<m::UserTier>> {
    let user = parse_user(&user_id)?;
    let tier = state
        .services()
        .set_user_tier(
            &caller,
            parse_id(&id)?,
            user,
            body.tier.as_deref(),
            TierSource::Api,
        )
        .await?;
    Ok(axum::Json(user_tier_dto(user, tier)))
}

/// Sets the application's Stripe webhook signing secret (write only; stored sealed). Stripe's events
/// then go to `/api/v1/webhooks/stripe/{id}`.
#[utoipa::path(put, path = "/api/v1/applications/{id}/billing/stripe", tag = "applications",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "Application id")),
    request_body = m::StripeSecret,
    responses(
        (status = 204, description = "Set (OWNER, ADMIN)"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_stripe_secret(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
    Json(body): Json<m::StripeSecret>,
) -> ApiResult<axum::http::StatusCode> {
    state
        .services()
        .set_stripe_secret(&caller, parse_id(&id)?, &body.webhook_secret)
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
