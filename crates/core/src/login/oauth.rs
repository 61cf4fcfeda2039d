//! OAuth 2.0 errors (RFC 6749 §4.1.2.1 for redirects, §5.2 for the token endpoint). The description is
//! fixed text chosen here, never an internal message.

use std::time::Duration;

use crate::{Error, LimitKind};

/// What kind of OAuth error: the `error` code, and (at the HTTP edge only) its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorKind {
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_client`: unknown client or failed client authentication.
    InvalidClient,
    /// `invalid_grant`.
    InvalidGrant,
    /// `unauthorized_client`.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `unsupported_response_type`.
    UnsupportedResponseType,
    /// `invalid_scope`.
    InvalidScope,
    /// `login_required` (`prompt=none` without a signed-in browser).
    LoginRequired,
    /// `interaction_required` (`prompt=none`, but the user must give a second factor).
    InteractionRequired,
    /// `access_denied`.
    AccessDenied,
    /// `temporarily_unavailable` because a limit is reached (try again after `retry_after`).
    Limited,
    /// `temporarily_unavailable`: the service cannot serve now.
    Unavailable,
    /// `server_error`.
    ServerError,
}

impl OAuthErrorKind {
    /// The `error` code (RFC 6749 §4.1.2.1, §5.2; OpenID Connect Core §3.1.2.6).
    pub fn code(self) -> &'static str {
        match self {
            OAuthErrorKind::InvalidRequest => "invalid_request",
            OAuthErrorKind::InvalidClient => "invalid_client",
            OAuthErrorKind::InvalidGrant => "invalid_grant",
            OAuthErrorKind::UnauthorizedClient => "unauthorized_client",
            OAuthErrorKind::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorKind::UnsupportedResponseType => "unsupported_response_type",
            OAuthErrorKind::InvalidScope => "invalid_scope",
            OAuthErrorKind::LoginRequired => "login_required",
            OAuthErrorKind::InteractionRequired => "interaction_required",
            OAuthErrorKind::AccessDenied => "access_denied",
            OAuthErrorKind::Limited | OAuthErrorKind::Unavailable => "temporarily_unavailable",
            OAuthErrorKind::ServerError => "server_error",
        }
    }
}

/// An OAuth error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// What kind of error.
    pub kind: OAuthErrorKind,
    /// `error_description` (safe to show).
    pub description: &'static str,
    /// `Retry-After` for `Limited` and `Unavailable`.
    pub retry_after: Option<Duration>,
    /// For the log only: what went wrong inside (a `ServerError` or `Unavailable`).
    pub cause: Option<String>,
}

impl OAuthError {
    fn new(kind: OAuthErrorKind, description: &'static str) -> Self {
        OAuthError {
            kind,
            description,
            retry_after: None,
            cause: None,
        }
    }

    /// The `error` code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// `invalid_request`.
    pub fn invalid_request(description: &'static str) -> Self {
        Self::new(OAuthErrorKind::InvalidRequest, description)
    }

    /// `invalid_client`: unknown client or failed client authentication.
    pub fn invalid_client() -> Self {
        Self::new(OAuthErrorKind::InvalidClient, "client authentication failed")
    }

    /// `invalid_grant`: the code or refresh token is invalid, expired, revoked, used, or was issued to
    /// another client; or the PKCE verifier does not match.
    pub fn invalid_grant(description: &'static str) -> Self {
        Self::new(OAuthErrorKind::InvalidGrant, description)
    }

    /// `unauthorized_client`.
    pub fn unauthorized_client(description: &'static str) -> Self {
        Self::new(OAuthErrorKind::UnauthorizedClient, description)
    }

    /// `unsupported_grant_type`.
    pub fn unsupported_grant_type() -> Self {
        Self::new(
            OAuthErrorKind::UnsupportedGrantType,
            "grant_type must be authorization_code or refresh_token",
        )
    }

    /// `unsupported_response_type` (redirect).
    pub fn unsupported_response_type() -> Self {
        Self::new(
            OAuthErrorKind::UnsupportedResponseType,
            "response_type must be code",
        )
    }

    /// `invalid_scope` (redirect).
    pub fn invalid_scope(description: &'static str) -> Self {
        Self::new(OAuthErrorKind::InvalidScope, description)
    }

    /// `login_required` (redirect, `prompt=none` without a signed-in browser).
    pub fn login_required() -> Self {
        Self::new(OAuthErrorKind::LoginRequired, "the user is not signed in")
    }

    /// `interaction_required` (redirect, `prompt=none` when the user must give a second factor).
    pub fn interaction_required() -> Self {
        Self::new(
            OAuthErrorKind::InteractionRequired,
            "the user must give a second factor",
        )
    }

    /// `access_denied` (redirect).
    pub fn access_denied(description: &'static str) -> Self {
        Self::new(OAuthErrorKind::AccessDenied, description)
    }

    /// `server_error`.
    pub fn server_error() -> Self {
        Self::new(
            OAuthErrorKind::ServerError,
            "the server could not complete the request",
        )
    }

    /// The JSON body of the token endpoint.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.code(), "error_description": self.description})
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable(why) => OAuthError {
                retry_after: Some(Duration::from_secs(5)),
                cause: Some(format!("service unavailable: {why}")),
                ..OAuthError::new(OAuthErrorKind::Unavailable, "try again shortly")
            },
            Error::Limited { kind, retry_after } => OAuthError {
                retry_after: Some(retry_after),
                ..OAuthError::new(
                    OAuthErrorKind::Limited,
                    match kind {
                        LimitKind::Sessions => "too many concurrent sessions for the plan",
                        LimitKind::Rate | LimitKind::Budget => "too many requests",
                    },
                )
            },
            Error::Forbidden(_) => OAuthError::invalid_grant("the account cannot sign in"),
            Error::Unauthenticated(_) | Error::Expired => OAuthError::invalid_grant("the grant is not valid"),
            Error::Malformed(_) | Error::Invalid(_) => OAuthError::invalid_request("malformed request"),
            Error::NotFound(_) => OAuthError::invalid_grant("the grant is not valid"),
            other => OAuthError {
                cause: Some(format!("{other:?}")),
                ..OAuthError::server_error()
            },
        }
    }
}
