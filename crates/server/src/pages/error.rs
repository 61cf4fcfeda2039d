//! The one error type of page handlers. A page that fails says what happened in the person's words,
//! offers a way on, and shows a reference (the request id) that support can find in the log; the
//! details go to the log only, once, through the envelope (`failure`).

use std::borrow::Cow;
use std::time::Duration;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_core::{Error, ForbiddenReason};

use super::{Brand, render};
use crate::failure::{Failure, Level};
use crate::request::RequestContext;

/// Page handlers' results.
pub type PageResult<T = Response> = Result<T, PageError>;

/// What a request's error pages are framed with once its workspace is known: the workspace's brand
/// and the way on it offers (its sign-in page). Set once per request (`RequestContext::frame`).
#[derive(Debug, Clone)]
pub struct Frame {
    /// The workspace's brand.
    pub brand: Brand,
    /// The link an error page offers when the error names none: (href, label).
    pub way_on: (String, String),
    /// A cookie the request's page sets whatever it answers (a new CSRF cookie), unless the response
    /// sets one of that name itself (a sign-in rotates it): (name, `Set-Cookie` value).
    pub new_cookie: Option<(&'static str, HeaderValue)>,
}

/// A page that says what went wrong.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    heading: &'static str,
    message: Cow<'static, str>,
    way_on: Option<(String, String)>,
    retry_after: Option<Duration>,
    failure: Option<Failure>,
    /// Not an error page but a redirect: the page asked for is elsewhere (the sign-in page, for a
    /// browser that is not signed in).
    location: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    brand: Brand,
    heading: &'a str,
    message: &'a str,
    link: Option<(String, String)>,
    reference: Option<String>,
}

impl PageError {
    /// An error page: its status, heading and text (the person's words).
    pub fn new(
        status: StatusCode,
        heading: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> PageError {
        PageError {
            status,
            heading,
            message: message.into(),
            way_on: None,
            retry_after: None,
            failure: None,
            location: None,
        }
    }

    /// A `303 See Other` to `location` instead of a page (an account page asked for by a browser that
    /// is not signed in goes to the sign-in page).
    pub fn see_other(location: String) -> PageError {
        PageError {
            location: Some(location),
            ..PageError::new(StatusCode::SEE_OTHER, "", "")
        }
    }

    /// The link the page offers instead of the request's default (its workspace's sign-in page).
    #[must_use]
    pub fn way_on(mut self, href: impl Into<String>, label: impl Into<String>) -> PageError {
        self.way_on = Some((href.into(), label.into()));
        self
    }

    /// What the log keeps of it (the person never sees it).
    #[must_use]
    pub fn log(mut self, level: Level, what: impl Into<String>) -> PageError {
        self.failure = Some(Failure::new(level, what));
        self
    }

    /// A page that does not exist (an unknown workspace or flow).
    pub fn no_such_page() -> PageError {
        PageError::new(
            StatusCode::NOT_FOUND,
            "There is no such page",
            "Check the address, or go back to the application that sent you here and start again from there.",
        )
    }

    /// A form that failed its CSRF or Origin check.
    pub fn stale_form() -> PageError {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "It was open for too long or did not come from this site. Go back, reload the page and try again.",
        )
    }

    /// A form post that lacks fields.
    pub fn incomplete_form() -> PageError {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "The form was incomplete",
            "Some of its fields did not arrive. Go back, reload the page and try again.",
        )
    }

    /// A link (reset, magic, invitation, verification) that is unknown, used or expired.
    pub fn unusable_link() -> PageError {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "This link does not work",
            "It was used already, has expired, or was copied incompletely. Ask for a new one.",
        )
    }

    /// Too many attempts from this address or for this account: try again after `retry`.
    pub fn throttled(retry: Duration) -> PageError {
        let secs = retry.as_secs().max(1);
        PageError {
            retry_after: Some(retry),
            ..PageError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!("Try again in {secs} seconds."),
            )
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> PageError {
        use StatusCode as S;
        let failure = Failure::of(&e);
        let page = match e {
            Error::NotFound(_) => PageError::new(
                S::NOT_FOUND,
                "Not found",
                "What this page refers to does not exist or is no longer available.",
            ),
            Error::Conflict(_) => PageError::new(
                S::CONFLICT,
                "This cannot be done",
                "It conflicts with something that already exists. Go back, reload the page and try again.",
            ),
            // Webhooks are never pages; a page that somehow gets one says what any bad request says.
            Error::Malformed(_) | Error::Webhook(_) => PageError::new(
                S::BAD_REQUEST,
                "This request is incomplete",
                "Something was missing from what your browser sent. Go back, reload the page and try again.",
            ),
            Error::Invalid(_) => PageError::new(
                S::UNPROCESSABLE_ENTITY,
                "Please check what you entered",
                "Some of what you entered is not acceptable. Go back and try again.",
            ),
            Error::Unauthenticated(_) => PageError::new(
                S::UNAUTHORIZED,
                "Please sign in again",
                "Your sign-in is not valid any more.",
            ),
            Error::Expired => PageError::new(S::GONE, "This page has expired", "Sign in again to go on."),
            Error::Forbidden(ForbiddenReason::AccountLocked) => PageError::new(
                S::FORBIDDEN,
                "This account is locked",
                "Ask the administrator of this service to unlock it.",
            ),
            Error::Forbidden(ForbiddenReason::QuotaExceeded(quota)) => PageError::new(
                S::FORBIDDEN,
                "The plan's limit is reached",
                match quota {
                    secureflows_core::Quota::Members => {
                        "This workspace has as many owners and admins as its plan allows. Ask one of its owners \
                         to make room or move to a larger plan, then try again."
                    }
                    secureflows_core::Quota::Applications => {
                        "This workspace has as many applications as its plan allows. Delete one or move to a \
                         larger plan."
                    }
                    secureflows_core::Quota::Keys => "The plan's number of stored values is used up.",
                },
            ),
            Error::Forbidden(_) => {
                PageError::new(S::FORBIDDEN, "Not allowed", "You are not allowed to do this.")
            }
            Error::TooLarge { .. } => PageError::new(
                S::PAYLOAD_TOO_LARGE,
                "Too much data",
                "What you sent is larger than this service accepts.",
            ),
            Error::Limited { retry_after, .. } => PageError {
                retry_after: Some(retry_after),
                ..PageError::new(
                    S::TOO_MANY_REQUESTS,
                    "Too many attempts",
                    "Wait a minute, then try again.",
                )
            },
            Error::Unavailable(_) => PageError {
                retry_after: Some(Duration::from_secs(5)),
                ..PageError::new(
                    S::SERVICE_UNAVAILABLE,
                    "The service is busy",
                    "It could not complete this request just now. Please try again in a few seconds.",
                )
            },
            Error::Integrity(_) | Error::Internal(_) => PageError::new(
                S::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side",
                "This request could not be completed. Please try again; if it keeps happening, give the \
                 reference below to the support of the application that sent you here.",
            ),
        };
        PageError { failure, ..page }
    }
}

impl From<secureflows_crypto::CryptoError> for PageError {
    fn from(e: secureflows_crypto::CryptoError) -> PageError {
        PageError::from(Error::from(e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let Some(location) = self.location {
            return super::see_other(&location);
        }
        let ctx = RequestContext::current();
        let frame = ctx.as_ref().and_then(|c| c.frame.get().cloned());
        let (brand, default_way_on) = match frame {
            Some(f) => (f.brand, Some(f.way_on)),
            None => (Brand::new("secureFlows"), None),
        };
        let page = ErrorPage {
            brand,
            heading: self.heading,
            message: &self.message,
            link: self.way_on.or(default_way_on),
            reference: ctx.map(|c| c.id.clone()),
        };
        let mut response = render(self.status, &page);
        if let Some(after) = self.retry_after {
            response = super::with_retry_after(response, after);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(failure) = self.failure {
            failure.attach(&mut response);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_internal_error_is_a_page_in_the_persons_words_with_a_reference_and_a_way_on() {
        let ctx = std::sync::Arc::new(RequestContext::new("abc-1".into(), "/w/x/login".into()));
        let _ = ctx.frame.set(Frame {
            brand: Brand::new("Acme"),
            way_on: ("/w/x/login".into(), "Go to sign-in".into()),
            new_cookie: None,
        });
        let response = ctx
            .scope(async {
                PageError::from(Error::internal(std::io::Error::other("disk /secret/path failed")))
                    .into_response()
            })
            .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let failure = response.extensions().get::<Failure>().cloned();
        assert_eq!(
            failure.map(|f| f.level()),
            Some(Level::Error),
            "the log learns what happened"
        );
        let html = body(response).await;
        assert!(html.contains("Something went wrong on our side"), "{html}");
        assert!(html.contains("abc-1"), "the reference is shown");
        assert!(html.contains("href=\"/w/x/login\""), "a way on");
        assert!(html.contains("Acme"), "the workspace's brand");
        assert!(!html.contains("secret"), "no detail reaches the page");
    }

    #[tokio::test]
    async fn every_domain_error_has_a_page_status() {
        let cases = [
            (Error::NotFound("user"), 404),
            (Error::Conflict("x"), 409),
            (Error::Malformed("x".into()), 400),
            (Error::invalid("f", "m"), 422),
            (Error::invalid_token(), 401),
            (Error::Expired, 410),
            (Error::Forbidden(ForbiddenReason::AccountLocked), 403),
            (Error::TooLarge { limit: 1 }, 413),
            (
                Error::Limited {
                    kind: secureflows_core::LimitKind::Rate,
                    retry_after: Duration::from_secs(3),
                },
                429,
            ),
            (Error::Unavailable("db"), 503),
            (Error::Integrity("row"), 500),
        ];
        for (e, status) in cases {
            let response = PageError::from(e).into_response();
            assert_eq!(response.status().as_u16(), status);
            let html = body(response).await;
            assert!(html.contains("<h1"), "{status} is a page");
        }
    }
}
