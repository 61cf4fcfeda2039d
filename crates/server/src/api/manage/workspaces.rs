//! `/api/v1/workspaces`: the caller's own workspace, and new workspaces.

use axum::extract::State;
use axum::http::StatusCode;
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::Workspace;
use secureflows_core::auth::token::IssuedToken;
use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::login::{LoginPolicy, MfaRequirement, SignupMode};

use crate::extract::{ConsoleAuth, Json};
use crate::problem::ApiResult;
use crate::state::AppState;

pub(crate) fn workspace_dto(w: &Workspace) -> m::Workspace {
    m::Workspace {
        id: w.id.to_string(),
        name: w.name.clone(),
        plan: w.plan.as_str().to_owned(),
        login_policy: m::LoginPolicy {
            password_policy: match w.login_policy.password {
                PasswordPolicy::Nist => m::PasswordPolicyName::Nist,
                PasswordPolicy::Strict => m::PasswordPolicyName::Strict,
            },
            mfa_required: match w.login_policy.mfa {
                MfaRequirement::Off => m::MfaRequired::Off,
                MfaRequirement::Admins => m::MfaRequired::Admins,
                MfaRequirement::All => m::MfaRequired::All,
            },
            signup: Some(match w.login_policy.signup {
                SignupMode::Immediate => m::SignupModeName::Immediate,
                SignupMode::VerifyFirst => m::SignupModeName::VerifyFirst,
            }),
        },
        branding: m::Branding {
            color: w.branding.color.clone(),
            logo_url: w.branding.logo_url.clone(),
        },
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
    // Checked before any change: a request that may not change the policy changes nothing.
    if body.login_policy.is_some() && caller.role() != secureflows_core::Role::Owner {
        return Err(secureflows_core::Error::Forbidden(secureflows_core::ForbiddenReason::Role).into());
    }
    let services = state.services();
    let mut workspace = match body.name {
        Some(name) => services.rename_workspace(&caller, &name).await?,
        None => services.get_workspace(caller.workspace_id()).await?,
    };
    if let Some(policy) = body.login_policy {
        let policy = login_policy(policy, workspace.login_policy.signup);
        workspace = services.set_login_policy(&caller, policy).await?;
    }
    if let Some(branding) = body.branding {
        let branding = secureflows_core::login::Branding {
            color: branding.color,
            logo_url: branding.logo_url,
        };
        workspace = services.set_branding(&caller, branding).await?;
    }
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

/// The login policy a request sets; an absent sign-up mode stays `signup`.
fn login_policy(policy: m::LoginPolicy, signup: SignupMode) -> LoginPolicy {
    LoginPolicy {
        password: match policy.password_policy {
            m::PasswordPolicyName::Nist => PasswordPolicy::Nist,
            m::PasswordPolicyName::Strict => PasswordPolicy::Strict,
        },
        mfa: match policy.mfa_required {
            m::MfaRequired::Off => MfaRequirement::Off,
            m::MfaRequired::Admins => MfaRequirement::Admins,
            m::MfaRequired::All => MfaRequirement::All,
        },
        signup: match policy.signup {
            Some(m::SignupModeName::Immediate) => SignupMode::Immediate,
            Some(m::SignupModeName::VerifyFirst) => SignupMode::VerifyFirst,
            None => signup,
        },
    }
}

/// A signed reference for the caller's workspace (OWNER), for the operator's Paddle checkout
/// (`custom_data.secureflows_ref`), so that Paddle's webhooks link the subscription to this workspace.
#[utoipa::path(post, path = "/api/v1/workspaces/billing/checkout-reference", tag = "workspaces",
    security(("console" = [])),
    responses(
        (status = 200, description = "The reference (OWNER)", body = dto::CheckoutReference),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkout_reference(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
) -> ApiResult<axum::Json<dto::CheckoutReference>> {
    let (reference, expires) = state.services().workspace_checkout_reference(&caller)?;
    Ok(axum::Json(dto::CheckoutReference {
        reference,
        expires_at: expires.rfc3339(),
    }))
}
