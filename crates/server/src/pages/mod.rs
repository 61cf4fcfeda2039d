//! What every page of the server shares (the hosted login now, the console next): the page CSP,
//! the workspace's brand, rendering, static assets, message pages and the page error type.

mod cookies;
mod error;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub use self::cookies::{CSRF_COOKIE, SSO_COOKIE, cookie, set_cookie, sign_in_cookies};
pub use self::error::{Frame, PageError, PageResult};
use crate::request::RequestContext;

/// Middleware of every page router: sets the cookie the request's page frame asks for (a browser's
/// first CSRF cookie) on whatever the page answers, unless the response sets that cookie itself.
pub async fn frame_cookie(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let context = RequestContext::current();
    let mut response = next.run(request).await;
    let Some((name, value)) = context.and_then(|c| c.frame.get().and_then(|f| f.new_cookie.clone())) else {
        return response;
    };
    let sets_its_own = response.headers().get_all(header::SET_COOKIE).iter().any(|v| {
        v.as_bytes()
            .strip_prefix(name.as_bytes())
            .is_some_and(|rest| rest.starts_with(b"="))
    });
    if !sets_its_own {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// A form that carries the CSRF token (hosted login and console alike).
pub trait CsrfForm: serde::de::DeserializeOwned + Send {
    /// The token the page put in the form.
    fn csrf(&self) -> &str;
}

/// A form of CSRF token and the given fields, deserialized from a post.
macro_rules! csrf_form {
    ($name:ident $({ $($(#[$meta:meta])* $field:ident : $ty:ty),* $(,)? })?) => {
        #[derive(serde::Deserialize)]
        pub(super) struct $name {
            pub csrf: String,
            $($($(#[$meta])* pub $field: $ty,)*)?
        }

        impl $crate::pages::CsrfForm for $name {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    };
}
pub(crate) use csrf_form;

/// Pages may load our own style sheet and script, nothing else; no framing.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                            img-src 'self' data: https:; \
                            base-uri 'none'; frame-ancestors 'none'";

/// The workspace's branding.
#[derive(Debug, Clone)]
pub struct Brand {
    /// Display name.
    pub name: String,
    /// First letter, for the mark.
    pub initial: String,
    /// Logo URL (https).
    pub logo_url: Option<String>,
    /// The workspace's style sheet (its accent colour), if it has one.
    pub stylesheet: Option<String>,
}

impl Brand {
    /// Branding from a workspace name only.
    pub fn new(name: &str) -> Brand {
        Brand {
            name: name.to_owned(),
            initial: name
                .chars()
                .next()
                .map(|c| c.to_uppercase().to_string())
                .unwrap_or_default(),
            logo_url: None,
            stylesheet: None,
        }
    }

    /// A workspace's branding.
    pub fn of(workspace: &secureflows_core::Workspace) -> Brand {
        Brand {
            logo_url: workspace.branding.logo_url.clone(),
            stylesheet: workspace
                .branding
                .color
                .as_ref()
                .map(|_| format!("/w/{}/brand.css", workspace.id)),
            ..Brand::new(&workspace.name)
        }
    }
}

/// A message with an optional link.
#[derive(Template, Debug)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub brand: Brand,
    pub heading: String,
    pub message: String,
    pub link: Option<(String, String)>,
}

/// Renders a page with its status and the page CSP.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A message page.
pub fn message(status: StatusCode, brand: Brand, heading: &str, text: &str) -> Response {
    render(
        status,
        &MessagePage {
            brand,
            heading: heading.into(),
            message: text.into(),
            link: None,
        },
    )
}

/// A `303 See Other` to `location`.
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// What a throttled form says.
pub fn try_again_in(retry: std::time::Duration) -> String {
    format!(
        "Too many attempts. Try again in {} seconds.",
        retry.as_secs().max(1)
    )
}

/// Adds `Retry-After` (whole seconds, at least one) to a page that refuses for now.
pub fn with_retry_after(mut response: Response, retry: std::time::Duration) -> Response {
    let secs = retry.as_secs().max(1);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The password policy in words, under the password field.
pub fn password_rules(policy: secureflows_core::login::password::PasswordPolicy) -> String {
    match policy {
        secureflows_core::login::password::PasswordPolicy::Nist => format!(
            "At least {} characters. Long passphrases are best; passwords known from data breaches are refused.",
            policy.min_length()
        ),
        secureflows_core::login::password::PasswordPolicy::Strict => format!(
            "At least {} characters, with an upper-case letter, a lower-case letter, a digit and a symbol.",
            policy.min_length()
        ),
    }
}

/// Static assets of the pages.
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../assets/login.css"))
}

/// The console's style sheet.
pub async fn console_stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/console.css"),
    )
}

/// Passkey ceremonies (WebAuthn) for the sign-in, second-factor and account pages.
pub async fn passkey_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/passkey.js"),
    )
}

/// Confirmation of destructive actions (`data-confirm`).
pub async fn confirm_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/confirm.js"),
    )
}

/// The strength meter.
pub async fn strength_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/strength.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
