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

use std::num::NonZeroU32;

use crate::access_log::AccessSlot;
use crate::budget::ChargeSlot;
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
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        json_problem(e.into_inner(), &path)
    })?;
    de.end().map_err(|e| json_problem(e, "."))?;
    Ok(value)
}

fn json_problem(e: serde_json::Error, path: &str) -> Problem {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let (field, message) = describe_data_error(&e, path);
            Problem::from(secureflows_core::Error::Invalid(vec![
                secureflows_core::FieldError { field, message },
            ]))
        }
        Category::Syntax | Category::Eof | Category::Io => Problem::malformed(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )),
    }
}

/// A data error in the API's words: the field (a dotted path; `body` for the whole body) and what it
/// must be. serde's own wording (`invalid type: string "x", expected u64`) names Rust types and
/// repeats the value; neither reaches the client.
fn describe_data_error(e: &serde_json::Error, path: &str) -> (String, String) {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or_default();
    let field = |name: Option<&str>| {
        let base = if path == "." || path.is_empty() { "" } else { path };
        // The path of an unknown field already ends with its name.
        let name = name
            .filter(|n| base != *n && !base.ends_with(&format!(".{n}")))
            .map(|n| secureflows_core::access::neutralize(n, 64));
        match (base, name) {
            ("", None) => "body".to_owned(),
            ("", Some(n)) => n,
            (b, None) => b.to_owned(),
            (b, Some(n)) => format!("{b}.{n}"),
        }
    };
    let quoted = |t: &str| t.split('`').nth(1).map(str::to_owned);
    if let Some(rest) = text.strip_prefix("missing field ") {
        return (field(quoted(rest).as_deref()), "is required".to_owned());
    }
    if let Some(rest) = text.strip_prefix("unknown field ") {
        return (
            field(quoted(rest).as_deref()),
            "is not a field of this request".to_owned(),
        );
    }
    if let Some(rest) = text.strip_prefix("duplicate field ") {
        return (
            field(quoted(rest).as_deref()),
            "is given more than once".to_owned(),
        );
    }
    if let Some(rest) = text.strip_prefix("unknown variant ") {
        let choices: Vec<&str> = rest
            .split_once("expected ")
            .map(|(_, e)| e.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let message = if choices.is_empty() {
            "is not one of the accepted values".to_owned()
        } else {
            format!("must be one of: {}", choices.join(", "))
        };
        return (field(None), message);
    }
    let serde_wording = ["invalid type", "invalid value", "invalid length"]
        .iter()
        .any(|p| text.starts_with(p));
    if !serde_wording {
        // Our own deserializers' messages are already in the API's words.
        return (field(None), secureflows_core::access::neutralize(text, 200));
    }
    let expected = text
        .rsplit_once("expected ")
        .map(|(_, e)| e.trim())
        .unwrap_or_default();
    let message = if text.starts_with("invalid length") {
        "has the wrong number of items".to_owned()
    } else {
        format!("must be {}", expected_in_words(expected))
    };
    (field(None), message)
}

/// serde's "expected …" in the API's words.
fn expected_in_words(expected: &str) -> String {
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "a character" => "a string",
        "a sequence" => "a list",
        "a map" | "a JSON object" => "an object",
        "unit" => "null",
        other if other.starts_with("struct ") || other.starts_with("a map") => "an object",
        other if other.starts_with("a sequence") || other.starts_with("an array") => "a list",
        other if other.starts_with("a string") || other.starts_with("a valid") => {
            "a string in the documented format"
        }
        _ => "of the documented type",
    };
    words.to_owned()
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

    /// Authenticates and charges the call to the user's and the workspace's hourly budgets.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let UnmeteredSessionAuth(caller) = UnmeteredSessionAuth::from_request_parts(parts, state).await?;
        let charge = state.services().charge_session(&caller, NonZeroU32::MIN).await?;
        ChargeSlot::record(parts.extensions.get::<ChargeSlot>(), charge)?;
        Ok(SessionAuth(caller))
    }
}

/// A Session API caller authenticated like [`SessionAuth`] but not charged to the hourly budgets:
/// signing out and revoking must always work, and `limits/consume` charges its own cost.
#[derive(Debug, Clone)]
pub struct UnmeteredSessionAuth(pub Arc<SessionCaller>);

impl FromRequestParts<AppState> for UnmeteredSessionAuth {
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
        Ok(UnmeteredSessionAuth(Arc::new(caller)))
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
        let charge = state.services().charge_workspace(&caller.workspace);
        ChargeSlot::record(parts.extensions.get::<ChargeSlot>(), charge)?;
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
