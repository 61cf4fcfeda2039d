//! The only mapping from errors to HTTP: RFC 9457 `application/problem+json` with a stable `type` URI
//! per problem (documented in `docs/problems/`). Internal details never reach the body; they go to the
//! log with the request id.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_core::billing::WebhookFailure;
use secureflows_core::{AuthFailure, Error, FieldError, ForbiddenReason, LimitKind, Quota};
use serde::Serialize;

use crate::failure::Failure;
use crate::request::RequestContext;

/// Prefix of every problem type URI.
pub const TYPE_PREFIX: &str = "urn:secureflows:problem:";

/// Every problem slug the server can send; each has a page in `docs/problems/`.
pub const ALL_SLUGS: &[&str] = &[
    "malformed-request",
    "validation-failed",
    "unsupported-media-type",
    "request-too-large",
    "value-too-large",
    "misdirected-request",
    "invalid-token",
    "session-revoked",
    "credential-replayed",
    "invalid-credentials",
    "token-expired",
    "wrong-token-kind",
    "forbidden",
    "origin-not-allowed",
    "quota-exceeded",
    "account-locked",
    "second-factor-required",
    "too-many-sessions",
    "rate-limited",
    "webhook-signature-invalid",
    "webhook-stale",
    "not-found",
    "method-not-allowed",
    "conflict",
    "last-owner",
    "account-exists",
    "service-unavailable",
    "internal-error",
];

/// A problem response.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable slug (`type` is the prefix plus this).
    pub slug: &'static str,
    /// Short, stable summary.
    pub title: &'static str,
    /// Explanation for this occurrence; safe to show.
    pub detail: Option<String>,
    /// Field errors (422).
    pub errors: Vec<FieldError>,
    /// `Retry-After` seconds (429, 503).
    pub retry_after: Option<Duration>,
    /// `WWW-Authenticate` value (401).
    pub www_authenticate: Option<&'static str>,
    /// Extra `Allow` header (405).
    pub allow: Option<&'static str>,
    /// What the log must know (the envelope logs it once).
    pub failure: Option<Failure>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    /// A problem with no detail.
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Problem {
            status,
            slug,
            title,
            detail: None,
            errors: Vec::new(),
            retry_after: None,
            www_authenticate: None,
            allow: None,
            failure: None,
        }
    }

    /// Adds a detail.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// 404 for unknown routes and invisible resources.
    pub fn not_found() -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
        )
    }

    /// 400.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "malformed-request", "Malformed request").detail(detail)
    }

    /// 415.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .detail(format!("the body must be {expected}"))
    }

    /// 413 for a body over the global cap.
    pub fn request_too_large(limit: u64) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request-too-large",
            "Request body too large",
        )
        .detail(format!("request bodies are limited to {limit} bytes"))
    }

    /// 421 for a Host that is not configured.
    pub fn misdirected() -> Self {
        Problem::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected-request",
            "Misdirected request",
        )
        .detail("this server does not serve the requested host")
    }

    /// 401 for a missing or bad bearer token.
    pub fn invalid_token() -> Self {
        Problem::from(Error::invalid_token())
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug)
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        let failure = Failure::of(&e);
        Problem {
            failure,
            ..Problem::of(e)
        }
    }
}

impl Problem {
    fn of(e: Error) -> Problem {
        use StatusCode as S;
        match e {
            Error::NotFound(what) => Problem::not_found().detail(format!("{what} not found")),
            Error::Conflict("last-owner") => Problem::new(S::CONFLICT, "last-owner", "Last owner")
                .detail("the workspace must keep at least one active owner"),
            Error::Conflict("account-exists") => {
                Problem::new(S::CONFLICT, "account-exists", "Account exists").detail(
                    "another member of the workspace has this e-mail address; an application's ID token is \
                     never joined to it: sign in through the hosted login, which links providers to accounts",
                )
            }
            Error::Conflict(what) => Problem::new(S::CONFLICT, "conflict", "Conflict").detail(what),
            Error::Malformed(detail) => Problem::malformed(detail),
            Error::Invalid(errors) => Problem {
                errors,
                ..Problem::new(S::UNPROCESSABLE_ENTITY, "validation-failed", "Validation failed")
                    .detail("the request is well-formed but some fields are not acceptable")
            },
            Error::Unauthenticated(failure) => {
                let (slug, title, detail) = match failure {
                    AuthFailure::InvalidToken => (
                        "invalid-token",
                        "Invalid token",
                        "the credential is missing, malformed or not valid here",
                    ),
                    AuthFailure::SessionRevoked => (
                        "session-revoked",
                        "Session revoked",
                        "the session has ended; sign in again",
                    ),
                    AuthFailure::Replayed => (
                        "credential-replayed",
                        "Credential already used",
                        "this credential can be used only once",
                    ),
                    AuthFailure::InvalidCredentials => (
                        "invalid-credentials",
                        "Sign-in failed",
                        "the e-mail address or password is not right, or the account is locked for a while",
                    ),
                };
                Problem {
                    www_authenticate: Some("Bearer error=\"invalid_token\""),
                    ..Problem::new(S::UNAUTHORIZED, slug, title).detail(detail)
                }
            }
            Error::Expired => Problem::new(S::GONE, "token-expired", "Token expired")
                .detail("the session token has expired; the data is intact, sign in again to renew access"),
            Error::Forbidden(reason) => {
                let (slug, title, detail) = match reason {
                    ForbiddenReason::WrongTokenKind => (
                        "wrong-token-kind",
                        "Wrong token kind",
                        "this API does not accept this kind of token",
                    ),
                    ForbiddenReason::Role => {
                        ("forbidden", "Forbidden", "the role does not allow this operation")
                    }
                    ForbiddenReason::GuestsNotAllowed => (
                        "forbidden",
                        "Forbidden",
                        "this application does not allow anonymous (guest) sessions",
                    ),
                    ForbiddenReason::OriginNotAllowed => (
                        "origin-not-allowed",
                        "Origin not allowed",
                        "this origin is not allowed for the application",
                    ),
                    ForbiddenReason::QuotaExceeded(quota) => (
                        "quota-exceeded",
                        "Quota exceeded",
                        match quota {
                            Quota::Keys => "the plan's number of keys per user is used up",
                            Quota::Applications => "the plan's number of applications is used up",
                            Quota::Members => "the plan's number of owners and admins is used up",
                        },
                    ),
                    ForbiddenReason::AccountLocked => {
                        ("account-locked", "Account locked", "the account is locked")
                    }
                    ForbiddenReason::SecondFactorRequired => (
                        "second-factor-required",
                        "Second factor required",
                        "this account signs in with a second factor that the credential did not give: send \
                         the user through the workspace's hosted login ({issuer}/authorize)",
                    ),
                };
                Problem::new(S::FORBIDDEN, slug, title).detail(detail)
            }
            Error::TooLarge { limit } => {
                Problem::new(S::PAYLOAD_TOO_LARGE, "value-too-large", "Value too large")
                    .detail(format!("the plan allows values of at most {limit} bytes"))
            }
            Error::Limited { kind, retry_after } => {
                let (slug, title, detail) = match kind {
                    LimitKind::Sessions => (
                        "too-many-sessions",
                        "Too many sessions",
                        "the plan's number of concurrent sessions is reached",
                    ),
                    LimitKind::Rate => (
                        "rate-limited",
                        "Too many requests",
                        "the request rate limit is reached",
                    ),
                    LimitKind::Budget => (
                        "rate-limited",
                        "Too many requests",
                        "an hourly request budget is used up (the RateLimit field names it); Retry-After says \
                         when the request fits",
                    ),
                };
                Problem {
                    retry_after: Some(retry_after),
                    ..Problem::new(S::TOO_MANY_REQUESTS, slug, title).detail(detail)
                }
            }
            Error::Webhook(failure) => match failure {
                WebhookFailure::SignatureInvalid => Problem::new(
                    S::BAD_REQUEST,
                    "webhook-signature-invalid",
                    "Webhook signature invalid",
                )
                .detail(
                    "the signature header is missing or malformed, or no signature in it matches the body \
                         under this endpoint's signing secret",
                ),
                WebhookFailure::Stale => {
                    Problem::new(S::BAD_REQUEST, "webhook-stale", "Webhook timestamp out of range")
                        .detail("the signed timestamp is more than 5 minutes from the server's clock")
                }
            },
            Error::Unavailable(_) => Problem {
                retry_after: Some(Duration::from_secs(5)),
                ..Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "service-unavailable",
                    "Service unavailable",
                )
                .detail("the service is temporarily unavailable; try again shortly")
            },
            // SECURITY: an integrity failure (tampering or a moved row) is logged as a security event
            // (`Failure::of`); the caller learns nothing more than of any internal error.
            Error::Integrity(_) | Error::Internal(_) => internal(),
        }
    }
}

fn internal() -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
    )
    .detail("an unexpected error occurred; it has been logged")
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let ctx = RequestContext::current();
        let body = Body {
            type_: self.type_uri(),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail.as_deref(),
            instance: ctx.as_ref().map(|c| c.path.as_str()),
            request_id: ctx.as_ref().map(|c| c.id.as_str()),
            errors: &self.errors,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(value) = self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(failure) = self.failure {
            failure.attach(&mut response);
        }
        response
    }
}

/// Handler results: any domain error becomes a problem.
pub type ApiResult<T> = Result<T, Problem>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_type_is_documented_and_every_page_is_a_problem_type() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/problems");
        for slug in ALL_SLUGS {
            let page = std::fs::read_to_string(dir.join(format!("{slug}.md"))).unwrap();
            assert!(page.contains(&format!("{TYPE_PREFIX}{slug}")), "{slug}");
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name != "README.md" {
                assert!(
                    ALL_SLUGS.contains(&name.trim_end_matches(".md")),
                    "{name} documents no problem type"
                );
            }
        }
    }

    #[test]
    fn every_domain_error_has_its_status() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::NotFound("value"), 404, "not-found"),
            (Error::Malformed("x".into()), 400, "malformed-request"),
            (Error::invalid("f", "m"), 422, "validation-failed"),
            (Error::invalid_token(), 401, "invalid-token"),
            (
                Error::Unauthenticated(AuthFailure::SessionRevoked),
                401,
                "session-revoked",
            ),
            (Error::Expired, 410, "token-expired"),
            (
                Error::Forbidden(ForbiddenReason::WrongTokenKind),
                403,
                "wrong-token-kind",
            ),
            (Error::TooLarge { limit: 1 }, 413, "value-too-large"),
            (
                Error::Limited {
                    kind: LimitKind::Sessions,
                    retry_after: Duration::from_secs(3),
                },
                429,
                "too-many-sessions",
            ),
            (Error::Conflict("account-exists"), 409, "account-exists"),
            (Error::Unavailable("db"), 503, "service-unavailable"),
            (Error::Integrity("x"), 500, "internal-error"),
            (
                Error::internal(std::io::Error::other("secret detail")),
                500,
                "internal-error",
            ),
        ];
        for (e, status, slug) in cases {
            let p = Problem::from(e);
            assert!(ALL_SLUGS.contains(&p.slug), "{slug} is listed");
            assert_eq!(p.status.as_u16(), status);
            assert_eq!(p.slug, slug);
            assert!(!p.detail.unwrap_or_default().contains("secret"));
        }
    }
}
