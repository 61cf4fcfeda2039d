//! What every console page starts from: the browser's request (headers, actor), its console session
//! in the workspace (a `ConsoleCaller`, exactly as the management API authenticates one), the page
//! frame (nav, CSRF token), and form posts checked for CSRF, Origin and Fetch Metadata.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use secureflows_core::audit::Actor;
use secureflows_core::console::ConsoleCaller;
use secureflows_core::{Error, ForbiddenReason, WorkspaceId};

use crate::extract::request_actor;
use crate::pages::{Brand, Frame, PageError, PageResult, cookie, set_cookie};
use crate::request::RequestContext;
use crate::state::AppState;

/// The console's cookies live under this path.
pub(super) const PATH: &str = "/console";
/// A browser's console session in one workspace: `sf_console_{workspace}` holds its random secret.
const SESSION_PREFIX: &str = "sf_console_";
/// The CSRF cookie of the console's forms.
const CSRF_COOKIE: &str = "sf_console_csrf";
/// A sign-in on its way through the hosted login (state, PKCE verifier, where to return).
pub(super) const PENDING_COOKIE: &str = "sf_console_pending";

/// Middleware of the console's routes: a browser that reached the console under another host name
/// than the server's public URL (`localhost` for `127.0.0.1`) is sent to the same page under the
/// public one, before any cookie is set: cookies, the forms' Origin check and the sign-in's redirect
/// URI all belong to the public host.
pub(super) async fn public_host(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let public = url::Url::parse(state.issuer()).ok();
    let wanted = public.as_ref().and_then(|u| {
        let host = u.host_str()?;
        Some(match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        })
    });
    let asked = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    match (wanted, asked) {
        (Some(wanted), Some(asked)) if wanted.to_ascii_lowercase() != asked => {
            if request.method() == axum::http::Method::GET || request.method() == axum::http::Method::HEAD {
                let path = request.uri().path_and_query().map_or("/console", |p| p.as_str());
                crate::pages::see_other(&format!("{}{path}", state.issuer().trim_end_matches('/')))
            } else {
                use axum::response::IntoResponse;
                PageError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "Open the console at its own address",
                    "This server's console lives at its public address; the form was sent to another one.",
                )
                .way_on(
                    format!("{}{PATH}", state.issuer().trim_end_matches('/')),
                    "Go to the console",
                )
                .into_response()
            }
        }
        _ => next.run(request).await,
    }
}

/// The request as a browser sent it: headers and who acts.
pub(super) struct Browser {
    pub headers: HeaderMap,
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Browser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Browser {
            headers: parts.headers.clone(),
            actor: request_actor(parts, state),
        })
    }
}

impl Browser {
    /// The browser's CSRF cookie, if it has a well-formed one.
    fn csrf_cookie(&self) -> Option<&str> {
        cookie(&self.headers, CSRF_COOKIE).filter(|c| c.len() == 43)
    }

    /// The secret of this browser's console session in `workspace`, if it has one.
    pub fn session_secret(&self, workspace: WorkspaceId) -> Option<&str> {
        cookie(&self.headers, &session_cookie_name(workspace)).filter(|c| c.len() == 43)
    }

    /// The workspaces this browser holds console session cookies for.
    pub fn session_workspaces(&self) -> Vec<WorkspaceId> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter_map(|(k, _)| k.strip_prefix(SESSION_PREFIX)?.parse().ok())
            .take(20)
            .collect()
    }
}

/// The name of the session cookie of `workspace`.
pub(super) fn session_cookie_name(workspace: WorkspaceId) -> String {
    format!("{SESSION_PREFIX}{workspace}")
}

/// The `Set-Cookie` of a console session (ends with the session, at most 12 hours).
pub(super) fn session_cookie(state: &AppState, workspace: WorkspaceId, secret: &str) -> HeaderValue {
    let age = secureflows_core::console_session::CONSOLE_SESSION_TTL.as_secs();
    set_cookie(
        state,
        PATH,
        &session_cookie_name(workspace),
        secret,
        "Strict",
        Some(age),
    )
}

/// The `Set-Cookie` that removes a console session's cookie.
pub(super) fn clear_session_cookie(state: &AppState, workspace: WorkspaceId) -> HeaderValue {
    set_cookie(
        state,
        PATH,
        &session_cookie_name(workspace),
        "",
        "Strict",
        Some(0),
    )
}

/// The browser's CSRF cookie, or a new one and its `Set-Cookie` (then no form post of this request
/// is accepted).
fn csrf_cookie(state: &AppState, browser: &Browser) -> PageResult<(String, Option<HeaderValue>)> {
    match browser.csrf_cookie() {
        Some(c) => Ok((c.to_owned(), None)),
        None => {
            let fresh = secureflows_crypto::random_token("")?;
            let set = set_cookie(state, PATH, CSRF_COOKIE, &fresh, "Strict", None);
            Ok((fresh, Some(set)))
        }
    }
}

/// A page outside any workspace's console (the start page, the first run): frames its error pages
/// with `way_on` and gives the CSRF token of its forms, bound to `binding`.
pub(super) async fn open_page(
    state: &AppState,
    browser: &Browser,
    binding: &str,
    way_on: (String, String),
) -> PageResult<String> {
    let (cookie_value, new_cookie) = csrf_cookie(state, browser)?;
    frame(way_on, new_cookie);
    Ok(state.services().console_csrf(&cookie_value, binding).await?)
}

/// Frames this request's error pages as the console's, with a way on.
fn frame(way_on: (String, String), new_cookie: Option<HeaderValue>) {
    if let Some(request) = RequestContext::current() {
        let _ = request.frame.set(Frame {
            brand: Brand::new("secureFlows console"),
            way_on,
            new_cookie: new_cookie.map(|v| (CSRF_COOKIE, v)),
        });
    }
}

/// A form post is this site's: the CSRF token matches the browser's cookie and binding, the Origin
/// (when sent) is ours, and Fetch Metadata (when sent) says same-origin.
pub(super) async fn check_form(
    state: &AppState,
    browser: &Browser,
    binding: &str,
    token: &str,
) -> PageResult<()> {
    let h = &browser.headers;
    let origin_ok = match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            url::Url::parse(state.issuer()).is_ok_and(|u| u.origin().ascii_serialization() == origin)
        }
    };
    let site_ok = match h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(site) => site == "same-origin",
    };
    let Some(cookie) = browser.csrf_cookie() else {
        return Err(PageError::stale_form());
    };
    let expected = state.services().console_csrf(cookie, binding).await?;
    if !origin_ok || !site_ok || !secureflows_crypto::constant_time_eq(token.as_bytes(), expected.as_bytes())
    {
        return Err(PageError::stale_form());
    }
    Ok(())
}

/// A signed-in console page of a workspace.
pub(super) struct Console {
    pub caller: ConsoleCaller,
    pub shell: super::views::Shell,
    /// The session's secret (forms are bound to it).
    secret: String,
}

impl Console {
    /// The workspace.
    pub fn workspace(&self) -> WorkspaceId {
        self.caller.workspace_id()
    }

    /// A path under this workspace's console.
    pub fn path(&self, rest: &str) -> String {
        format!("{PATH}/w/{}{rest}", self.workspace())
    }
}

/// The console of `workspace` for this browser, on the page `here` (its path, to return to after a
/// sign-in). A browser without a session there is sent to sign in; a member who is no longer an
/// OWNER or ADMIN is refused.
pub(super) async fn console(
    state: &AppState,
    workspace: &str,
    browser: &Browser,
    here: &str,
) -> PageResult<Console> {
    let workspace: WorkspaceId = workspace.parse().map_err(|_| PageError::no_such_page())?;
    let home = format!("{PATH}/w/{workspace}");
    let (csrf_cookie_value, new_cookie) = csrf_cookie(state, browser)?;
    frame((home.clone(), "Go to the console".into()), new_cookie);
    let sign_in = || {
        PageError::see_other(format!(
            "{home}/signin?return_to={}",
            url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
        ))
    };
    let Some(secret) = browser.session_secret(workspace) else {
        return Err(sign_in());
    };
    let services = state.services();
    // In a task of its own: a refresh that rotated the token is stored even if the browser gives up
    // on the request meanwhile (a rotated token presented again later would end the session).
    let task = {
        let services = state.services_arc();
        let (secret, actor) = (secret.to_owned(), browser.actor.clone());
        tokio::spawn(async move { services.console_caller(workspace, &secret, actor).await })
    };
    let caller = match task.await.map_err(Error::internal)? {
        Ok(caller) => caller,
        Err(Error::Unauthenticated(_)) | Err(Error::NotFound(_)) => return Err(sign_in()),
        Err(Error::Forbidden(ForbiddenReason::Role)) => return Err(not_an_administrator()),
        Err(e) => return Err(e.into()),
    };
    let csrf = services.console_csrf(&csrf_cookie_value, secret).await?;
    let me = services.get_member(&caller, caller.token.user).await?;
    let shell = super::views::Shell::of(&caller, me.email.unwrap_or_default(), csrf, here);
    Ok(Console {
        caller,
        shell,
        secret: secret.to_owned(),
    })
}

/// A console form post: the console (signed in), the form (CSRF, Origin and Fetch Metadata checked).
pub(super) async fn console_form<T: CsrfForm>(
    state: &AppState,
    workspace: &str,
    here: &str,
    request: Request,
) -> PageResult<(Console, T, Browser)> {
    let (mut parts, body) = request.into_parts();
    let Ok(browser) = Browser::from_request_parts(&mut parts, state).await;
    let console = console(state, workspace, &browser, here).await?;
    let request = Request::from_parts(parts, body);
    let Ok(axum::Form(form)) =
        <axum::Form<T> as axum::extract::FromRequest<AppState>>::from_request(request, state).await
    else {
        return Err(PageError::incomplete_form());
    };
    check_form(state, &browser, &console.secret, form.csrf()).await?;
    Ok((console, form, browser))
}

pub(super) use crate::pages::CsrfForm;

/// An id from a page's path: one that cannot exist is "no such page", like another workspace's.
pub(super) fn path_id<T: std::str::FromStr>(id: &str) -> PageResult<T> {
    id.parse().map_err(|_| PageError::no_such_page())
}

/// The page for a member who is not an OWNER or ADMIN of the workspace.
pub(super) fn not_an_administrator() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "The console is for administrators",
        "Your account in this workspace is not an owner's or an administrator's. Ask an owner of the \
         workspace to change your role, or sign in with another account.",
    )
    .way_on(PATH, "Go to the console's start page")
}

/// Adds `Set-Cookie` values to a response.
pub(super) fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

crate::pages::csrf_form!(ConfirmForm { confirm: String });

impl ConfirmForm {
    /// The person pressed a confirmation page's button (not some other form's).
    pub fn confirmed(&self) -> PageResult<()> {
        if self.confirm == "yes" {
            Ok(())
        } else {
            Err(PageError::incomplete_form())
        }
    }
}

// A form that carries only its CSRF token.
crate::pages::csrf_form!(PlainForm);
