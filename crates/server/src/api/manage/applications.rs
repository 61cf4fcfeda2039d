//! `/api/v1/applications`: registering and configuring a workspace's applications.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::workspace::{ApplicationPatch, NewApplication};
use secureflows_core::{Application, ApplicationId, ApplicationKind, Error, Tier, UpstreamTrust};

use super::{PageQuery, decode_cursor, next_cursor, page_limit};
use crate::extract::{ConsoleAuth, Json, Query};
use crate::problem::ApiResult;
use crate::state::AppState;

pub(crate) fn application_dto(a: &Application) -> m::Application {
    m::Application {
        id: a.id.to_string(),
        name: a.name.clone(),
        kind: kind_dto(a.kind),
        public: a.is_public(),
        allowed_origins: a.allowed_origins.clone(),
        redirect_uris: a.redirect_uris.clone(),
        post_logout_uris: a.post_logout_uris.clone(),
        allow_anonymous: a.allow_anonymous,
        console: a.console,
        trust: a.trust.as_ref().map(|t| m::Trust {
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
            second_factor_amr: t.second_factor_amr.clone(),
            second_factor_acr: t.second_factor_acr.clone(),
        }),
        session_ttl: a.data_ttl.as_secs(),
        token_ttl: a.token_ttl.as_secs(),
        tiers: a.tiers.iter().map(tier_dto).collect(),
        default_tier: a.default_tier.clone(),
        created_at: a.created_at.rfc3339(),
        updated_at: a.updated_at.rfc3339(),
    }
}

pub(crate) fn tier_dto(t: &Tier) -> m::Tier {
    m::Tier {
        name: t.name.clone(),
        requests_per_hour: t.requests_per_hour,
        features: t.features.clone(),
        prices: t.prices.clone(),
    }
}

fn tier(t: m::Tier) -> Tier {
    Tier {
        name: t.name,
        requests_per_hour: t.requests_per_hour,
        features: t.features,
        prices: t.prices,
    }
}

fn trust(t: m::Trust) -> UpstreamTrust {
    UpstreamTrust {
        issuer: t.issuer,
        audience: t.audience,
        second_factor_amr: t.second_factor_amr,
        second_factor_acr: t.second_factor_acr,
    }
}

fn kind_dto(kind: ApplicationKind) -> m::ApplicationKind {
    match kind {
        ApplicationKind::Browser => m::ApplicationKind::Browser,
        ApplicationKind::Native => m::ApplicationKind::Native,
        ApplicationKind::Server => m::ApplicationKind::Server,
    }
}

fn kind_of(kind: m::ApplicationKind) -> ApplicationKind {
    match kind {
        m::ApplicationKind::Browser => ApplicationKind::Browser,
        m::ApplicationKind::Native => ApplicationKind::Native,
        m::ApplicationKind::Server => ApplicationKind::Server,
    }
}

pub(crate) fn parse_id(id: &str) -> Result<ApplicationId, Error> {
    // An id that cannot exist is "not found", like any id of another workspace.
    id.parse().map_err(|_| Error::NotFound("application"))
}

/// Registers an application.
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications",
    security(("console" = [])),
    request_body = m::CreateApplication,
    responses(
        (status = 201, description = "Registered (OWNER, ADMIN); a confidential client's secret is shown once", body = m::CreatedApplication),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_application(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Json(body): Json<m::CreateApplication>,
) -> ApiResult<(StatusCode, axum::Json<m::CreatedApplication>)> {
    let (app, secret) = state
        .services()
        .register_application(&caller, new_application(body))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(m::CreatedApplication {
            application: application_dto(&app),
            client_secret: secret.map(|s| s.expose().to_owned()),
        }),
    ))
}

/// The workspace's applications, oldest first.
#[utoipa::path(get, path = "/api/v1/applications", tag = "applications",
    security(("console" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of applications (OWNER, ADMIN, SUPPORT)", body = m::ApplicationList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_applications(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<m::ApplicationList>> {
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor::<ApplicationId>("application", c))
        .transpose()?;
    let apps = state.services().workspace_applications(&caller).await?;
    let page = page_of(apps, after, limit);
    let next = next_cursor(&page, limit, "application", |a| a.id.to_string());
    Ok(axum::Json(m::ApplicationList {
        items: page.iter().map(application_dto).collect(),
        next_cursor: next,
    }))
}

/// One application.
#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "applications",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "Application id")),
    responses(
        (status = 200, description = "The application (OWNER, ADMIN, SUPPORT)", body = m::Application),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_application(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<m::Application>> {
    let app = state
        .services()
        .workspace_application(&caller, parse_id(&id)?)
        .await?;
    Ok(axum::Json(application_dto(&app)))
}

/// Changes an application's settings.
#[utoipa::path(patch, path = "/api/v1/applications/{id}", tag = "applications",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "Application id")),
    request_body = m::UpdateApplication,
    responses(
        (status = 200, description = "The changed application (OWNER, ADMIN)", body = m::Application),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_application(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
    Json(body): Json<m::UpdateApplication>,
) -> ApiResult<axum::Json<m::Application>> {
    caller.require_admin()?;
    let patch = ApplicationPatch {
        name: body.name,
        allowed_origins: body.allowed_origins,
        redirect_uris: body.redirect_uris,
        post_logout_uris: body.post_logout_uris,
        allow_anonymous: body.allow_anonymous,
        trust: body.trust.map(|t| t.map(trust)),
        data_ttl: body.session_ttl.map(Duration::from_secs),
        token_ttl: body.token_ttl.map(Duration::from_secs),
        tiers: body.tiers.map(|tiers| tiers.into_iter().map(tier).collect()),
        default_tier: body.default_tier,
    };
    let app = state
        .services()
        .update_application(&caller, parse_id(&id)?, patch)
        .await?;
    Ok(axum::Json(application_dto(&app)))
}

/// Deletes an application with its login sessions and vault values.
#[utoipa::path(delete, path = "/api/v1/applications/{id}", tag = "applications",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "Application id")),
    responses(
        (status = 204, description = "Deleted (OWNER, ADMIN)"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_application(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state
        .services()
        .delete_application(&caller, parse_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a confidential application's client secret; the old one stops working at once.
#[utoipa::path(post, path = "/api/v1/applications/{id}/secret", tag = "applications",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "Application id")),
    responses(
        (status = 200, description = "The new secret, shown once (OWNER, ADMIN)", body = m::ClientSecret),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<m::ClientSecret>> {
    caller.require_admin()?;
    let secret = state
        .services()
        .rotate_application_secret(&caller, parse_id(&id)?)
        .await?;
    Ok(axum::Json(m::ClientSecret {
        client_secret: secret.expose().to_owned(),
    }))
}

/// The application a registration asks for.
fn new_application(body: m::CreateApplication) -> NewApplication {
    NewApplication {
        name: body.name,
        trust: body.trust.map(trust),
        allowed_origins: body.allowed_origins,
        data_ttl: body.session_ttl.map(Duration::from_secs),
        token_ttl: body.token_ttl.map(Duration::from_secs),
        kind: body.kind.map(kind_of),
        public: body.public,
        redirect_uris: body.redirect_uris,
        post_logout_uris: body.post_logout_uris,
        allow_anonymous: body.allow_anonymous,
        console: body.console,
        tiers: body.tiers.into_iter().map(tier).collect(),
        default_tier: body.default_tier,
    }
}

/// A page of applications after `after`: ids are time-ordered, and a workspace has few applications,
/// so they are paged here.
fn page_of(mut apps: Vec<Application>, after: Option<ApplicationId>, limit: u32) -> Vec<Application> {
    apps.sort_by_key(|a| a.id);
    apps.into_iter()
        .filter(|a| after.is_none_or(|after| a.id > after))
        .take(limit as usize)
        .collect()
}
