//! OAuth 2.0 errors (RFC 6749 §4.1.2.1 for redirects, §5.2 for the token endpoint). The description is
//! fixed text chosen here, never an internal message.

use std::time::Duration;

use crate::{Error, LimitKind};

/// An OAuth error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The `error` code.
    pub error: &'static str,
    /// `error_description` (safe to show).
    pub description: &'static str,
    /// HTTP status on the token endpoint.
    pub status: u16,
    /// `Retry-After` for 429 and 503.
    pub retry_after: Option<Duration>,
}

impl OAuthError {
    fn new(error: &'static str, description: &'static str, status: u16) -> Self {
        OAuthError {
            error,
            description,
            status,
            retry_after: None,
        }
    }

    /// `invalid_request` (400).
    pub fn invalid_request(description: &'static str) -> Self {
        Self::new("invalid_request", description, 400)
    }

    /// `invalid_client` (401): unknown client or failed client authentication.
    pub fn invalid_client() -> Self {
        Self::new("invalid_client", "client authentication failed", 401)
    }

    /// `invalid_grant` (400): the code or refresh token is invalid, expired, revoked, used, or was
    /// issued to another client; or the PKCE verifier does not match.
    pub fn invalid_grant(description: &'static str) -> Self {
        Self::new("invalid_grant", description, 400)
    }

    /// `unauthorized_client` (400).
    pub fn unauthorized_client(description: &'static str) -> Self {
        Self::new("unauthorized_client", description, 400)
    }

    /// `unsupported_grant_type` (400).
    pub fn unsupported_grant_type() -> Self {
        Self::new(
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
            400,
        )
    }

    /// `unsupported_response_type` (redirect).
    pub fn unsupported_response_type() -> Self {
        Self::new("unsupported_response_type", "response_type must be code", 400)
    }

    /// `invalid_scope` (redirect).
    pub fn invalid_scope(description: &'static str) -> Self {
        Self::new("invalid_scope", description, 400)
    }

    /// `login_required` (redirect, `prompt=none` without a signed-in browser).
    pub fn login_required() -> Self {
        Self::new("login_required", "the user is not signed in", 400)
    }

    /// `access_denied` (redirect).
    pub fn access_denied(description: &'static str) -> Self {
        Self::new("access_denied", description, 400)
    }

    /// `server_error` (500).
    pub fn server_error() -> Self {
        Self::new("server_error", "the server could not complete the request", 500)
    }

    /// The JSON body of the token endpoint.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.error, "error_description": self.description})
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable(_) => OAuthError {
                retry_after: Some(Duration::from_secs(5)),
                ..OAuthError::new("temporarily_unavailable", "try again shortly", 503)
            },
            Error::Limited { kind, retry_after } => OAuthError {
                retry_after: Some(retry_after),
                ..OAuthError::new(
                    "temporarily_unavailable",
                    match kind {
                        LimitKind::Sessions => "too many concurrent sessions for the plan",
                        LimitKind::Rate => "too many requests",
                    },
                    429,
                )
            },
            Error::Forbidden(_) => OAuthError::invalid_grant("the account cannot sign in"),
            Error::Unauthenticated(_) | Error::Expired => OAuthError::invalid_grant("the grant is not valid"),
            Error::Malformed(_) | Error::Invalid(_) => OAuthError::invalid_request("malformed request"),
            Error::NotFound(_) => OAuthError::invalid_grant("the grant is not valid"),
            other => {
                tracing::error!(error = %other, "OAuth request failed");
                OAuthError::server_error()
            }
        }
    }
}
