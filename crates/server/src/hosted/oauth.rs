//! The OAuth 2.0 / OpenID Connect endpoints of a workspace's issuer: discovery, token, user info,
//! revocation (RFC 7009) and introspection (RFC 7662). Errors are in the OAuth format (RFC 6749 §5.2,
//! RFC 6750 §3), not problem+json.

use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secureflows_core::login::oauth::{OAuthError, OAuthErrorKind};
use secureflows_core::login::oidc::{ClientCredentials, TokenGrant, TokenRequest};
use secureflows_core::{Application, WorkspaceId};
use secureflows_crypto::SecretString;
use serde::Deserialize;

use crate::extract::request_actor;
use crate::failure::{Failure, Level};
use crate::state::AppState;

/// An OAuth error as the token, revocation and introspection endpoints answer it (RFC 6749 §5.2):
/// the status follows the error's kind here, at the HTTP edge.
#[derive(Debug)]
pub struct OAuthReply {
    error: OAuthError,
    /// The client authenticated with HTTP Basic: a 401 names the scheme (RFC 6749 §5.2).
    basic: bool,
}

impl From<OAuthError> for OAuthReply {
    fn from(error: OAuthError) -> OAuthReply {
        OAuthReply { error, basic: false }
    }
}

/// The status of an OAuth error at the token, revocation and introspection endpoints.
pub fn oauth_status(kind: OAuthErrorKind) -> StatusCode {
    match kind {
        OAuthErrorKind::InvalidClient => StatusCode::UNAUTHORIZED,
        OAuthErrorKind::Limited => StatusCode::TOO_MANY_REQUESTS,
        OAuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        OAuthErrorKind::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for OAuthReply {
    fn into_response(self) -> Response {
        let e = self.error;
        let status = oauth_status(e.kind);
        let mut response = (status, axum::Json(e.body())).into_response();
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED && self.basic {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"secureflows\""),
            );
        }
        if let Some(retry) = e.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry.as_secs().max(1)));
        }
        if let Some(cause) = e.cause {
            let level = if e.kind == OAuthErrorKind::Unavailable {
                Level::Warn
            } else {
                Level::Error
            };
            Failure::new(level, cause).attach(&mut response);
        }
        response
    }
}

/// The OAuth endpoints' results.
pub type OAuthResult<T = Response> = Result<T, OAuthReply>;

fn workspace_of(path: &str) -> OAuthResult<WorkspaceId> {
    path.parse()
        .map_err(|_| OAuthError::invalid_request("unknown issuer").into())
}

/// A form body, or `invalid_request`.
async fn form<T: serde::de::DeserializeOwned + Send>(state: &AppState, request: Request) -> OAuthResult<T> {
    match <Form<T> as axum::extract::FromRequest<AppState>>::from_request(request, state).await {
        Ok(Form(form)) => Ok(form),
        Err(_) => {
            Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded").into())
        }
    }
}

/// `GET /w/{ws}/.well-known/openid-configuration`: OpenID Provider metadata.
pub async fn discovery(State(state): State<AppState>, Path(workspace): Path<String>) -> Response {
    let Ok(ws) = workspace.parse::<WorkspaceId>() else {
        return crate::problem::Problem::not_found().into_response();
    };
    match state.services().get_workspace(ws).await {
        Ok(_) => {}
        Err(e) => return crate::problem::Problem::from(e).into_response(),
    }
    let doc = provider_metadata(&state, ws);
    let mut response = axum::Json(doc).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The OpenID Provider metadata of a workspace's issuer (OpenID Connect Discovery 1.0 §3).
fn provider_metadata(state: &AppState, ws: WorkspaceId) -> serde_json::Value {
    let issuer = state.services().issuer_of(ws);
    let alg = state.config().signing_algorithm().as_str();
    serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "jwks_uri": format!("{}/.well-known/jwks.json", state.issuer()),
        // Where this issuer's applications call the Session API (secureflows-js reads it).
        "secureflows_session_api": format!("{}/api/v1", state.issuer()),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "scopes_supported": ["openid", "email", "profile", "offline_access"],
        "claims_supported": [
            "sub", "iss", "aud", "azp", "exp", "iat", "nbf", "auth_time", "nonce", "amr", "sid", "at_hash",
            "email", "email_verified", "name",
        ],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
        "prompt_values_supported": ["none", "login", "consent", "select_account", "create"],
    })
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1, form-encoded parts) or the form body.
fn credentials(
    headers: &HeaderMap,
    form_id: Option<String>,
    form_secret: Option<String>,
) -> Result<(ClientCredentials, bool), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if let Some(encoded) = basic {
        if form_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(OAuthError::invalid_client)?;
        let (id, secret) = decoded.split_once(':').ok_or_else(OAuthError::invalid_client)?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let id = decode(id);
        if form_id.as_deref().is_some_and(|f| f != id) {
            return Err(OAuthError::invalid_client());
        }
        return Ok((
            ClientCredentials {
                client_id: Some(id),
                client_secret: Some(SecretString::new(decode(secret))),
            },
            true,
        ));
    }
    Ok((
        ClientCredentials {
            client_id: form_id,
            client_secret: form_secret.map(SecretString::new),
        },
        false,
    ))
}

async fn client(
    state: &AppState,
    workspace: WorkspaceId,
    headers: &HeaderMap,
    id: Option<String>,
    secret: Option<String>,
) -> OAuthResult<Application> {
    let (creds, basic) = credentials(headers, id, secret)?;
    let found = state
        .services()
        .authenticate_client(Some(workspace), &creds)
        .await;
    found.map_err(|error| OAuthReply { error, basic })
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The token response body (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
pub fn token_body(grant: &TokenGrant) -> serde_json::Value {
    let mut body = serde_json::json!({
        "access_token": grant.access_token.token,
        "token_type": "Bearer",
        "expires_in": grant.access_token.expires_in.as_secs(),
        "scope": grant.scope,
    });
    if let Some(id) = &grant.id_token {
        body["id_token"] = id.clone().into();
    }
    if let Some(r) = &grant.refresh_token {
        body["refresh_token"] = r.clone().into();
    }
    body
}

/// `POST /w/{ws}/token`.
pub async fn token(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> OAuthResult {
    let workspace = workspace_of(&workspace)?;
    let (parts, body) = request.into_parts();
    let actor = request_actor(&parts, &state);
    let form: TokenForm = form(&state, Request::from_parts(parts, body)).await?;
    let app = client(
        &state,
        workspace,
        &headers,
        form.client_id.clone(),
        form.client_secret.clone(),
    )
    .await?;
    let request = TokenRequest {
        grant_type: form.grant_type.as_deref(),
        code: form.code.as_deref(),
        redirect_uri: form.redirect_uri.as_deref(),
        code_verifier: form.code_verifier.as_deref(),
        refresh_token: form.refresh_token.as_deref(),
    };
    let grant = state.services().token(&app, request, &actor).await?;
    let mut response = axum::Json(token_body(&grant)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn bearer_error(status: StatusCode, error: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer error=\"{error}\"")) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// `GET|POST /w/{ws}/userinfo` with the access token (SESSION JWT) as bearer.
pub async fn userinfo(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(workspace) = workspace.parse::<WorkspaceId>() else {
        return bearer_error(StatusCode::UNAUTHORIZED, "invalid_token");
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return bearer_error(StatusCode::UNAUTHORIZED, "invalid_request");
    };
    let services = state.services();
    let caller = match services.authenticate_session(token.trim()).await {
        Ok(c) if c.token.workspace == workspace => c,
        Ok(_) | Err(_) => return bearer_error(StatusCode::UNAUTHORIZED, "invalid_token"),
    };
    match services.userinfo(workspace, caller.token.user).await {
        Ok(claims) => axum::Json(claims).into_response(),
        Err(_) => bearer_error(StatusCode::UNAUTHORIZED, "invalid_token"),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenParam {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The authenticated client and the `token` parameter of a revocation or introspection request.
async fn client_and_token(
    state: &AppState,
    workspace: &str,
    headers: &HeaderMap,
    request: Request,
) -> OAuthResult<(Application, String)> {
    let workspace = workspace_of(workspace)?;
    let form: TokenParam = form(state, request).await?;
    let app = client(state, workspace, headers, form.client_id, form.client_secret).await?;
    let token = form
        .token
        .ok_or(OAuthError::invalid_request("token is required"))?;
    Ok((app, token))
}

/// `POST /w/{ws}/revoke` (RFC 7009).
pub async fn revoke(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> OAuthResult {
    let (app, token) = client_and_token(&state, &workspace, &headers, request).await?;
    state.services().revoke_token(&app, &token).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /w/{ws}/introspect` (RFC 7662), confidential clients only.
pub async fn introspect(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> OAuthResult {
    let (app, token) = client_and_token(&state, &workspace, &headers, request).await?;
    let body = state.services().introspect(&app, &token).await?;
    Ok(axum::Json(body).into_response())
}
