//! Middleware: the request envelope every response passes through (request id, security headers, Host
//! allow-list, body cap, time-out, panic barrier), and the Session API's CORS and access logging.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use crate::access_log::{AccessSlot, Draft};
use crate::failure::Failure;
use crate::problem::Problem;
use crate::request::{PeerAddr, RequestContext, client_ip, next_request_id};
use crate::state::AppState;

/// `Content-Security-Policy` of every response (the API serves no active content).
pub const CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
/// `Content-Security-Policy` of vault values, which are caller-supplied bytes of any type.
pub const CSP_SANDBOX: &str = "default-src 'none'; sandbox; frame-ancestors 'none'";

static HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static DENY: HeaderValue = HeaderValue::from_static("DENY");
static NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static CSP_VALUE: HeaderValue = HeaderValue::from_static(CSP);
static CORP: HeaderValue = HeaderValue::from_static("same-site");

/// The envelope around every request.
pub async fn envelope(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ctx = Arc::new(RequestContext::new(
        next_request_id(),
        req.uri().path().to_owned(),
    ));
    let started = Instant::now();
    let slot = AccessSlot::default();
    req.extensions_mut().insert(slot.clone());
    let log_state = state.clone();
    let timeout = Duration::from_secs(state.config().server.request_timeout_secs.max(1));
    let request_id = HeaderValue::from_str(&ctx.id).ok();
    let http1 = req.version() <= axum::http::Version::HTTP_11;
    let mut response = ctx
        .clone()
        .scope(async move {
            if let Some(problem) = refuse_early(&state, &req) {
                return problem.into_response();
            }
            match tokio::time::timeout(timeout, AssertUnwindSafe(next.run(req)).catch_unwind()).await {
                Ok(Ok(response)) => response,
                Ok(Err(_)) => Problem::from(secureflows_core::Error::internal("a request handler panicked"))
                    .into_response(),
                Err(_) => {
                    Problem::from(secureflows_core::Error::Unavailable("request timed out")).into_response()
                }
            }
        })
        .await;
    // A refused body may be left unread; the connection then cannot carry another request, and
    // saying so keeps clients from reusing it.
    if http1 && response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Failure::log_from(&mut response, &ctx.id);
    let headers = response.headers_mut();
    secure_headers(headers);
    if let Some(id) = request_id {
        headers.insert("x-request-id", id);
    }
    // SECURITY: every Session API call is recorded. Waiting for room in the queue happens here, outside
    // the time-out, so a record is never lost to it.
    let bytes_out = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    let at = log_state.services().clock.now();
    let duration = started.elapsed();
    if let Some(record) = slot.finish(response.status().as_u16(), bytes_out, &ctx.id, duration, at) {
        log_state.access_log().record(record).await;
    }
    response
}

/// Host allow-list, one `Authorization` header at most, and the global body cap, before anything is
/// read.
fn refuse_early(state: &AppState, req: &Request) -> Option<Problem> {
    let hosts = state.public_hosts();
    if !hosts.is_empty() {
        let mut host_headers = req.headers().get_all(header::HOST).iter();
        let host = host_headers
            .next()
            .map(|h| h.to_str().map(str::to_ascii_lowercase));
        let more_hosts = host_headers.next().is_some();
        // An absolute-form target (HTTP/1) or `:authority` (HTTP/2) names a host too; every host the
        // request names must be an allowed one, and they must agree.
        let authority = req.uri().authority().map(|a| a.as_str().to_ascii_lowercase());
        let allowed = match (&host, &authority) {
            (Some(Ok(h)), Some(a)) => h == a && hosts.contains(h),
            (Some(Ok(h)), None) => hosts.contains(h),
            (None, Some(a)) => hosts.contains(a),
            _ => false,
        };
        if more_hosts || !allowed {
            return Some(Problem::misdirected());
        }
    }
    // SECURITY: one credential per request; with two, layers could read different ones.
    if req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Some(Problem::malformed("send one Authorization header"));
    }
    let limit = state.config().server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::parse::<u64>);
    match declared {
        Some(Ok(n)) if n > limit => Some(Problem::request_too_large(limit)),
        Some(Err(_)) => Some(Problem::malformed("invalid Content-Length")),
        _ => None,
    }
}

/// The security headers of the Tuff Flips document on every response, errors included.
pub fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    headers.insert(header::X_FRAME_OPTIONS, DENY.clone());
    // The hosted login's pages use `same-origin`: with `no-referrer` a browser sends `Origin: null`
    // on their form posts, and the origin check needs the real one.
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert_with(|| NO_REFERRER.clone());
    headers.insert("cross-origin-resource-policy", CORP.clone());
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert_with(|| CSP_VALUE.clone());
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert_with(|| NO_STORE.clone());
}

static ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, DELETE");
static ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("authorization, content-type");
static EXPOSE_HEADERS: HeaderValue =
    HeaderValue::from_static("ratelimit, ratelimit-policy, retry-after, www-authenticate, x-request-id");
static MAX_AGE: HeaderValue = HeaderValue::from_static("600");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");

static OIDC_ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST");
static ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");

/// CORS of a workspace issuer's endpoints, so that browser applications can use the provider with a
/// standard library: its discovery document answers any origin (it is public); its token, user-info,
/// revocation and introspection endpoints answer the origins its applications allow — echoed, never
/// reflected, never with credentials (browser applications send tokens, not cookies). Preflights
/// (`OPTIONS`) are answered here.
pub async fn oidc_cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let public = req.uri().path().ends_with("/.well-known/openid-configuration");
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = match (public, origin.as_ref().and_then(|o| o.to_str().ok())) {
        (true, _) => Some(ANY_ORIGIN.clone()),
        (false, None) => None,
        (false, Some(o)) => {
            let workspace = req
                .uri()
                .path()
                .strip_prefix("/w/")
                .and_then(|rest| rest.split('/').next())
                .and_then(|w| w.parse::<secureflows_core::WorkspaceId>().ok());
            match workspace {
                Some(ws) => state
                    .services()
                    .origin_allowed_in(ws, o)
                    .await
                    .unwrap_or(false)
                    .then(|| origin.clone())
                    .flatten(),
                None => None,
            }
        }
    };
    if req.method() == Method::OPTIONS {
        let mut response = match &allowed {
            Some(o) if req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) => {
                let mut r = axum::http::StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, OIDC_ALLOW_METHODS.clone());
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS.clone());
                h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE.clone());
                r
            }
            _ => Problem::from(secureflows_core::Error::Forbidden(
                secureflows_core::ForbiddenReason::OriginNotAllowed,
            ))
            .into_response(),
        };
        response.headers_mut().append(header::VARY, VARY_ORIGIN.clone());
        return response;
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if let Some(o) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS.clone());
    }
    h.append(header::VARY, VARY_ORIGIN.clone());
    response
}

/// The Session API's CORS and access log. CORS answers only origins some application allows (the
/// extractor then requires the token's own application to allow it); the origin is echoed only when
/// allowed, never reflected, and credentials are never allowed (tokens travel in `Authorization`).
pub async fn session_api(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed_origin = match origin.as_ref().and_then(|o| o.to_str().ok()) {
        Some(o) => state
            .services()
            .origin_allowed_anywhere(o)
            .await
            .unwrap_or(false)
            .then(|| origin.clone())
            .flatten(),
        None => None,
    };
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let mut response = match &allowed_origin {
            Some(o) => {
                let mut r = axum::http::StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS.clone());
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS.clone());
                h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE.clone());
                r
            }
            None => Problem::from(secureflows_core::Error::Forbidden(
                secureflows_core::ForbiddenReason::OriginNotAllowed,
            ))
            .into_response(),
        };
        response.headers_mut().append(header::VARY, VARY_ORIGIN.clone());
        return response;
    }

    // The call's access-log record is opened here and finished and written by the envelope, outside
    // the request time-out, so that a call that times out is recorded too (as a 503).
    if let Some(slot) = req.extensions().get::<AccessSlot>() {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(&v.as_bytes()[..v.len().min(1024)]).into_owned())
            .unwrap_or_default();
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        let declared_in = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        slot.open(Draft {
            method: req.method().as_str().to_owned(),
            route,
            client_ip: client_ip(peer, req.headers(), &state.config().server.trusted_proxies),
            user_agent,
            declared_in,
        });
    }

    let mut response = next.run(req).await;

    let h = response.headers_mut();
    if let Some(o) = allowed_origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS.clone());
    }
    h.append(header::VARY, VARY_ORIGIN.clone());

    response
}
