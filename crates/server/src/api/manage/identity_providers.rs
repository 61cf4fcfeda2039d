//! `/api/v1/identity-providers`: the upstream OpenID Connect providers ("Continue with ...") of the
//! workspace's hosted login.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::login::federation::NewProvider;
use secureflows_core::{Error, IdentityProvider, ProviderId, ProviderKind, Services};
use secureflows_crypto::SecretString;

use crate::extract::{ConsoleAuth, Json};
use crate::problem::ApiResult;
use crate::state::AppState;

fn provider_dto(services: &Services, p: IdentityProvider) -> m::IdentityProvider {
    m::IdentityProvider {
        id: p.id.to_string(),
        kind: match p.kind {
            ProviderKind::Google => m::ProviderKind::Google,
            ProviderKind::Oidc => m::ProviderKind::Oidc,
        },
        name: p.name,
        issuer: p.issuer,
        client_id: p.client_id,
        confidential: p.client_secret_sealed.is_some(),
        redirect_uri: services.upstream_redirect_uri(p.workspace_id),
        created_at: p.created_at.rfc3339(),
    }
}

/// Adds an identity provider; the answer names the redirect URI to register at the provider.
#[utoipa::path(post, path = "/api/v1/identity-providers", tag = "identity-providers",
    security(("console" = [])),
    request_body = m::CreateIdentityProvider,
    responses(
        (status = 201, description = "Added (OWNER, ADMIN)", body = m::IdentityProvider),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_identity_provider(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Json(body): Json<m::CreateIdentityProvider>,
) -> ApiResult<(StatusCode, axum::Json<m::IdentityProvider>)> {
    let services = state.services();
    let new = NewProvider {
        kind: match body.kind {
            m::ProviderKind::Google => ProviderKind::Google,
            m::ProviderKind::Oidc => ProviderKind::Oidc,
        },
        name: body.name,
        issuer: body.issuer,
        client_id: body.client_id,
        client_secret: body.client_secret.map(SecretString::new),
    };
    let provider = services.add_identity_provider(&caller, new).await?;
    Ok((StatusCode::CREATED, axum::Json(provider_dto(services, provider))))
}

/// The workspace's identity providers, oldest first.
#[utoipa::path(get, path = "/api/v1/identity-providers", tag = "identity-providers",
    security(("console" = [])),
    responses(
        (status = 200, description = "Identity providers (OWNER, ADMIN)", body = m::IdentityProviderList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_identity_providers(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
) -> ApiResult<axum::Json<m::IdentityProviderList>> {
    let services = state.services();
    let items = services.list_identity_providers(&caller).await?;
    Ok(axum::Json(m::IdentityProviderList {
        items: items.into_iter().map(|p| provider_dto(services, p)).collect(),
    }))
}

/// Removes an identity provider. Users who signed in with it keep their accounts and other ways in.
#[utoipa::path(delete, path = "/api/v1/identity-providers/{id}", tag = "identity-providers",
    security(("console" = [])),
    params(("id" = String, Path, format = Uuid, description = "Identity provider id")),
    responses(
        (status = 204, description = "Removed (OWNER, ADMIN)"),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_identity_provider(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let id: ProviderId = id.parse().map_err(|_| Error::NotFound("identity provider"))?;
    state.services().remove_identity_provider(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
