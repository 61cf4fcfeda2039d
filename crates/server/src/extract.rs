//! Extractors. Bad input becomes a problem response here, before any handler runs: a body that is not
//! JSON gets 415, broken JSON 400, JSON of the wrong shape 422, an oversized body 413, a key name
//! outside the grammar 400, and a missing or bad token 401.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use secureflows_core::audit::{Actor, ActorKind};
use secureflows_core::auth::session::SessionCaller;
use secureflows_core::console::ConsoleCaller;
use secureflows_core::vault::VaultKey;
use serde::de::DeserializeOwned;

use crate::access_log::AccessSlot;
use crate::problem::Problem;
use crate::request::{PeerAddr, RequestContext, client_ip};
use crate::state::AppState;

/// How long reading a request body may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a body of at most `limit` bytes. A declared `Content-Length` over the limit is refused before
/// anything is read; a chunked body is cut off as soon as it passes the limit.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    too_large: impl Fn() -> Problem,
) -> Result<Bytes, Problem> {
    if let Some(declared) = headers.get(header::CONTENT_LENGTH) {
        let declared: u64 = declared
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Problem::malformed("invalid Content-Length"))?;
        if declared > limit {
            return Err(too_large());
        }
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(Problem::malformed("the request body was not received in time")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(Problem::malformed("the request body could not be read")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A JSON body (`application/json` or `*+json`), parsed with the default recursion limit.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Problem::unsupported_media_type("application/json"));
        }
        let limit = state.config().server.max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, limit, || Problem::request_too_large(limit)).await?;
        // Every body of our APIs is a JSON object; serde would also accept a struct written as an array.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(Problem::from(secureflows_core::Error::invalid(
                "body",
                "must be a JSON object",
            )));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = deserialize_exact(&mut de)?;
        Ok(Json(value))
    }
}

fn deserialize_exact<T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<T, Problem> {
    let value = T::deserialize(&mut *de).map_err(json_problem)?;
    de.end().map_err(json_problem)?;
    Ok(value)
}

fn json_problem(e: serde_json::Error) -> Problem {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => Problem::from(secureflows_core::Error::Invalid(vec![
            secureflows_core::FieldError {
                field: "body".into(),
                message: data_error_message(&e),
            },
        ])),
        Category::Syntax | Category::Eof | Category::Io => Problem::malformed(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )),
    }
}

/// serde's data errors name the field and the expected type, never the offending value beyond that.
fn data_error_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or("invalid value");
    secureflows_core::access::neutralize(text, 200)
}

/// The bearer token of the `Authorization` header.
fn bearer(parts: &Parts) -> Result<&str, Problem> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| Problem {
        www_authenticate: Some("Bearer"),
        ..Problem::invalid_token()
    })?;
    let value = value.to_str().map_err(|_| Problem::invalid_token())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(Problem::invalid_token)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(Problem::invalid_token());
    }
    Ok(token)
}

/// The `Origin` header, if the request came from a browser context.
pub fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// An authenticated Session API caller (SESSION JWT), with the browser origin checked against the
/// application's allow-list. Identity comes from the token only.
#[derive(Debug, Clone)]
pub struct SessionAuth(pub Arc<SessionCaller>);

impl FromRequestParts<AppState> for SessionAuth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let caller = state.services().authenticate_session(token).await?;
        if let Some(slot) = parts.extensions.get::<AccessSlot>() {
            slot.identify(
                caller.token.workspace,
                caller.application.id,
                Some(caller.token.user),
            );
        }
        state.services().check_origin(&caller, origin(&parts.headers))?;
        Ok(SessionAuth(Arc::new(caller)))
    }
}

/// The `{key}` path segment, checked against the vault key grammar.
#[derive(Debug, Clone)]
pub struct KeyPath(pub VaultKey);

impl FromRequestParts<AppState> for KeyPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::malformed("invalid key: not valid UTF-8 or not a single path segment"))?;
        let key = VaultKey::parse(&raw)?;
        if let Some(slot) = parts.extensions.get::<AccessSlot>() {
            slot.set_key(key.as_str());
        }
        Ok(KeyPath(key))
    }
}

/// Who is making this request, for the audit log: client address (as the trusted proxies allow it to
/// be known), user agent (neutralised) and request id. The kind and id are filled in by authentication.
pub fn request_actor(parts: &Parts, state: &AppState) -> Actor {
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0);
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| secureflows_core::access::neutralize(ua, 256));
    Actor {
        kind: ActorKind::System,
        id: None,
        client_ip: Some(client_ip(
            peer,
            &parts.headers,
            &state.config().server.trusted_proxies,
        )),
        user_agent,
        request_id: RequestContext::current().map(|c| c.id.clone()),
    }
}

/// The request's actor (for Session API calls that write audit events).
#[derive(Debug, Clone)]
pub struct RequestActor(pub Actor);

impl FromRequestParts<AppState> for RequestActor {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(RequestActor(request_actor(parts, state)))
    }
}

/// An authenticated management caller (USER JWT). Identity and workspace come from the token only.
#[derive(Debug, Clone)]
pub struct ConsoleAuth(pub Arc<ConsoleCaller>);

impl FromRequestParts<AppState> for ConsoleAuth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let actor = request_actor(parts, state);
        let caller = state.services().authenticate_console(token, actor).await?;
        Ok(ConsoleAuth(Arc::new(caller)))
    }
}

/// Query parameters, with unknown or malformed ones refused with 400.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(e) => {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Err(Problem::malformed(format!(
                    "invalid query: {}",
                    secureflows_core::access::neutralize(text, 200)
                )))
            }
        }
    }
}
