//! A typed Rust client for the secureFlows Session API, for tests, tooling and Rust back ends.
//!
//! Errors carry the HTTP status and the server's RFC 9457 problem, so callers can act on the stable
//! problem `type` (e.g. re-authenticate on `token-expired`).

// A client library: it builds the HTTP client it is a wrapper of.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use secureflows_api_types::{CallbackRequest, CallbackResponse, Problem, ValueList, ValueMeta};

/// An error answer from the server, or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {}", problem.as_ref().map_or("no problem body", |p| p.title.as_str()))]
    Api {
        /// Status.
        status: u16,
        /// The problem body, if it was one.
        problem: Option<Problem>,
        /// `Retry-After` seconds, if sent.
        retry_after: Option<u64>,
    },
    /// The request did not complete.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ClientError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport(_) => None,
        }
    }

    /// The problem slug (e.g. `token-expired`), if the server sent a problem.
    pub fn slug(&self) -> Option<&str> {
        match self {
            ClientError::Api { problem: Some(p), .. } => Some(p.slug()),
            _ => None,
        }
    }
}

/// A client of one secureFlows server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let problem = response.json::<Problem>().await.ok();
    Err(ClientError::Api {
        status: status.as_u16(),
        problem,
        retry_after,
    })
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Self {
        Client::with_http(reqwest::Client::new(), base)
    }

    /// A client using a configured `reqwest::Client`.
    pub fn with_http(http: reqwest::Client, base: impl Into<String>) -> Self {
        Client {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/auth/callback` with an upstream ID token.
    pub async fn sign_in_with_id_token(
        &self,
        id_token: &str,
        client_id: Option<&str>,
    ) -> Result<CallbackResponse, ClientError> {
        let body = CallbackRequest {
            id_token: Some(id_token.to_owned()),
            client_id: client_id.map(str::to_owned),
            ..CallbackRequest::default()
        };
        let response = self
            .http
            .post(format!("{}/api/v1/auth/callback", self.base))
            .json(&body)
            .send()
            .await?;
        Ok(check(response).await?.json().await?)
    }

    /// The Session API as the holder of `token`.
    pub fn session(&self, token: impl Into<String>) -> Session {
        Session {
            client: self.clone(),
            token: token.into(),
        }
    }
}

/// The Session API for one session token.
#[derive(Debug, Clone)]
pub struct Session {
    client: Client,
    token: String,
}

/// A value as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Content type as stored.
    pub content_type: String,
    /// Bytes as stored.
    pub bytes: Bytes,
}

impl Session {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .http
            .request(method, format!("{}{path}", self.client.base))
            .bearer_auth(&self.token)
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `POST /sessions/set/{key}`. Returns whether the key was created, and its metadata.
    pub async fn set(
        &self,
        key: &str,
        content_type: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<(bool, ValueMeta), ClientError> {
        let response = self
            .request(Method::POST, &format!("/api/v1/sessions/set/{key}"))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes.into())
            .send()
            .await?;
        let response = check(response).await?;
        let created = response.status() == StatusCode::CREATED;
        Ok((created, response.json().await?))
    }

    /// `GET /sessions/get/{key}`.
    pub async fn get(&self, key: &str) -> Result<Value, ClientError> {
        let response = check(
            self.request(Method::GET, &format!("/api/v1/sessions/get/{key}"))
                .send()
                .await?,
        )
        .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Value {
            content_type,
            bytes: response.bytes().await?,
        })
    }

    /// `GET /sessions`.
    pub async fn list(&self) -> Result<ValueList, ClientError> {
        Ok(check(self.request(Method::GET, "/api/v1/sessions").send().await?)
            .await?
            .json()
            .await?)
    }

    /// `DELETE /sessions/delete/{key}`.
    pub async fn delete(&self, key: &str) -> Result<(), ClientError> {
        check(
            self.request(Method::DELETE, &format!("/api/v1/sessions/delete/{key}"))
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// `POST /sessions/revoke`: sign out everywhere.
    pub async fn revoke(&self) -> Result<(), ClientError> {
        check(
            self.request(Method::POST, "/api/v1/sessions/revoke")
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// `POST /auth/logout`: end this session.
    pub async fn logout(&self) -> Result<(), ClientError> {
        check(self.request(Method::POST, "/api/v1/auth/logout").send().await?).await?;
        Ok(())
    }
}
