//! A new workspace and its OWNER from the browser. The first run: `/console/setup?token=…` (the
//! one-time link `serve` prints while no workspace exists) creates the first workspace, its console
//! client and its OWNER, signs the OWNER's browser in to the workspace's hosted login, and continues
//! into the console through it; the link never works again. With `console.open_signup`,
//! `/console/signup` does the same for anyone (a free-plan workspace), throttled per address.

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use secureflows_core::Error;
use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::setup::{NewOwnedWorkspace, OwnedWorkspace, SetupState};
use secureflows_crypto::SecretString;
use serde::Deserialize;

use super::context::{Browser, CsrfForm, PATH, check_form, open_page, with_cookies};
use super::views::error_lines;
use crate::pages::{PageError, PageResult, password_rules, render, see_other, sign_in_cookies};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/setup.html")]
struct OwnerPage {
    heading: &'static str,
    intro: &'static str,
    action: &'static str,
    csrf: String,
    token: Option<String>,
    workspace_name: String,
    email: String,
    name: String,
    min_length: usize,
    rules: String,
    errors: Vec<String>,
    /// A passkey may be created instead of a password (the first run, on a host WebAuthn allows).
    passkeys: bool,
}

/// Which form: the first run (with its token) or an open sign-up.
enum Kind {
    FirstRun(String),
    SignUp,
}

impl Kind {
    /// What the form's CSRF token is bound to.
    fn binding(&self) -> &str {
        match self {
            Kind::FirstRun(token) => token,
            Kind::SignUp => "signup",
        }
    }
}

#[derive(Deserialize)]
pub(super) struct SetupQuery {
    token: Option<String>,
}

crate::pages::csrf_form!(OwnerForm {
    token: Option<String>,
    #[serde(default)]
    workspace_name: String,
    #[serde(default)]
    email: String,
    name: Option<String>,
    password: Option<SecretString>,
    /// A passkey's answer (the first run with a passkey).
    credential: Option<String>,
});

fn way_on() -> (String, String) {
    (PATH.into(), "Go to the console".into())
}

/// `GET /console/setup?token=…`: the first-run form, while the link works.
pub(super) async fn setup_page(
    State(state): State<AppState>,
    browser: Browser,
    Query(q): Query<SetupQuery>,
) -> PageResult {
    let token = q.token.unwrap_or_default();
    let csrf = open_page(&state, &browser, &token, way_on()).await?;
    match state.services().setup_state(&token).await? {
        SetupState::Open => {}
        SetupState::Unusable => return Err(link_unusable()),
        SetupState::Done => return Err(already_set_up()),
    }
    Ok(owner_form(
        &state,
        &Kind::FirstRun(token),
        csrf,
        &Shown::default(),
        Vec::new(),
        StatusCode::OK,
    ))
}

/// `GET /console/signup` (with `console.open_signup`): a new workspace for anyone.
pub(super) async fn signup_page(State(state): State<AppState>, browser: Browser) -> PageResult {
    let csrf = open_page(&state, &browser, Kind::SignUp.binding(), way_on()).await?;
    signup_open(&state).await?;
    Ok(owner_form(
        &state,
        &Kind::SignUp,
        csrf,
        &Shown::default(),
        Vec::new(),
        StatusCode::OK,
    ))
}

/// `POST /console/setup`: the first run (with a password, or with the answer of a passkey).
pub(super) async fn setup_submit(State(state): State<AppState>, request: Request) -> PageResult {
    let (browser, form) = read_form(&state, request).await?;
    let kind = Kind::FirstRun(form.token.clone().unwrap_or_default());
    if form.credential.as_deref().is_some_and(|c| !c.is_empty()) {
        return passkey_submit(&state, browser, form, kind).await;
    }
    submit(&state, browser, form, kind).await
}

/// The sealed pending passkey setup's cookie.
const PASSKEY_COOKIE: &str = "sf_console_setup_passkey";

/// `POST /console/setup/passkey/options`: checks the link and the form, and starts the OWNER's
/// passkey registration; answers the options as JSON (passkey.js), or `{"error"}`.
pub(super) async fn passkey_options(State(state): State<AppState>, request: Request) -> Response {
    use axum::response::IntoResponse;
    let json_error = |status: StatusCode, message: String| {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    let Ok((browser, form)) = read_form(&state, request).await else {
        return json_error(StatusCode::BAD_REQUEST, "The form was incomplete.".into());
    };
    let token = form.token.clone().unwrap_or_default();
    if check_form(&state, &browser, &token, form.csrf()).await.is_err() {
        return json_error(
            StatusCode::FORBIDDEN,
            "This form has expired: reload the page.".into(),
        );
    }
    let new = NewOwnedWorkspace {
        workspace_name: form.workspace_name,
        email: form.email,
        name: form.name,
        password: SecretString::default(),
    };
    match state
        .services()
        .start_first_run_passkey(&SecretString::new(token), new)
        .await
    {
        Ok(started) => {
            let cookie = crate::pages::set_cookie(
                &state,
                "/console/setup",
                PASSKEY_COOKIE,
                started.pending.expose(),
                "Strict",
                Some(300),
            );
            with_cookies(axum::Json(started.options).into_response(), [cookie])
        }
        Err(Error::Invalid(errors)) => json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            error_lines(&errors, field_label).join(" "),
        ),
        Err(Error::Conflict(_)) => {
            json_error(StatusCode::GONE, "This setup link does not work any more.".into())
        }
        Err(e) => {
            let page = PageError::from(e).into_response();
            json_error(
                page.status(),
                "The passkey could not be started; please try again.".into(),
            )
        }
    }
}

#[derive(Template)]
#[template(path = "console/recovery.html")]
struct RecoveryPage {
    codes: Vec<String>,
    next: String,
}

/// The first run with a passkey: the browser's answer verified against its pending setup; the
/// recovery codes shown once, then on into the console.
async fn passkey_submit(state: &AppState, browser: Browser, form: OwnerForm, kind: Kind) -> PageResult {
    let csrf = open_page(state, &browser, kind.binding(), way_on()).await?;
    check_form(state, &browser, kind.binding(), form.csrf()).await?;
    let Kind::FirstRun(token) = &kind else {
        return Err(PageError::incomplete_form());
    };
    let answer: serde_json::Value = form
        .credential
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(PageError::incomplete_form)?;
    let pending = crate::pages::cookie(&browser.headers, PASSKEY_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let shown = Shown {
        workspace_name: form.workspace_name.clone(),
        email: form.email.clone(),
        name: form.name.clone().unwrap_or_default(),
    };
    let token = SecretString::new(token.clone());
    let done = match state
        .services()
        .first_run_with_passkey(&token, &pending, &answer, &browser.actor)
        .await
    {
        Ok(done) => done,
        Err(Error::Invalid(errors)) => {
            let lines = error_lines(&errors, field_label);
            return Ok(owner_form(
                state,
                &kind,
                csrf,
                &shown,
                lines,
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
        Err(Error::Conflict("setup-done")) => return Err(already_set_up()),
        Err(Error::Conflict(_)) => return Err(link_unusable()),
        Err(e) => return Err(e.into()),
    };
    let _ = std::fs::remove_file(state.config().storage.data_dir.join(crate::app::SETUP_LINK_FILE));
    let workspace = done.workspace.id;
    let page = render(
        StatusCode::OK,
        &RecoveryPage {
            codes: done.recovery_codes.unwrap_or_default(),
            next: format!("{PATH}/w/{workspace}/signin"),
        },
    );
    let clear = crate::pages::set_cookie(state, "/console/setup", PASSKEY_COOKIE, "", "Strict", Some(0));
    let mut cookies = sign_in_cookies(state, workspace, &done.login)?.to_vec();
    cookies.push(clear);
    Ok(with_cookies(page, cookies))
}

/// `POST /console/signup` (with `console.open_signup`).
pub(super) async fn signup_submit(State(state): State<AppState>, request: Request) -> PageResult {
    let (browser, form) = read_form(&state, request).await?;
    signup_open(&state).await?;
    if let Some(retry) = state
        .sign_in_limits()
        .check_address(browser.actor.client_ip.clone().unwrap_or_default())
    {
        return Err(PageError::throttled(retry));
    }
    submit(&state, browser, form, Kind::SignUp).await
}

async fn read_form(state: &AppState, request: Request) -> PageResult<(Browser, OwnerForm)> {
    let (mut parts, body) = request.into_parts();
    let Ok(browser) =
        <Browser as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await;
    let request = Request::from_parts(parts, body);
    match <axum::Form<OwnerForm> as axum::extract::FromRequest<AppState>>::from_request(request, state).await
    {
        Ok(axum::Form(form)) => Ok((browser, form)),
        Err(_) => Err(PageError::incomplete_form()),
    }
}

/// Creates the workspace and its OWNER, signs the OWNER's browser in to the hosted login and
/// continues into the console through it; a form that breaks a rule is shown again.
async fn submit(state: &AppState, browser: Browser, form: OwnerForm, kind: Kind) -> PageResult {
    let csrf = open_page(state, &browser, kind.binding(), way_on()).await?;
    check_form(state, &browser, kind.binding(), form.csrf()).await?;
    // What a form that breaks a rule shows again (never the password).
    let shown = Shown {
        workspace_name: form.workspace_name.clone(),
        email: form.email.clone(),
        name: form.name.clone().unwrap_or_default(),
    };
    let new = NewOwnedWorkspace {
        workspace_name: form.workspace_name,
        email: form.email,
        name: form.name,
        password: form.password.unwrap_or_default(),
    };
    let services = state.services();
    let made = match &kind {
        Kind::FirstRun(token) => {
            let token = SecretString::new(token.clone());
            services.first_run(&token, new, &browser.actor).await
        }
        Kind::SignUp => services.sign_up_workspace(new, &browser.actor).await,
    };
    let done: OwnedWorkspace = match made {
        Ok(done) => done,
        Err(Error::Invalid(errors)) => {
            let lines = error_lines(&errors, field_label);
            return Ok(owner_form(
                state,
                &kind,
                csrf,
                &shown,
                lines,
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
        Err(Error::Conflict("setup-token")) => return Err(link_unusable()),
        Err(Error::Conflict("setup-done")) => return Err(already_set_up()),
        Err(e) => return Err(e.into()),
    };
    if let Kind::FirstRun(_) = kind {
        // The link is spent: its copy in the data directory goes too.
        let _ = std::fs::remove_file(state.config().storage.data_dir.join(crate::app::SETUP_LINK_FILE));
    }
    let workspace = done.workspace.id;
    let response = see_other(&format!("{PATH}/w/{workspace}/signin"));
    Ok(with_cookies(
        response,
        sign_in_cookies(state, workspace, &done.login)?,
    ))
}

/// What the form shows back.
#[derive(Default)]
struct Shown {
    workspace_name: String,
    email: String,
    name: String,
}

fn owner_form(
    state: &AppState,
    kind: &Kind,
    csrf: String,
    entered: &Shown,
    errors: Vec<String>,
    status: StatusCode,
) -> Response {
    let policy = PasswordPolicy::default();
    let (heading, intro, action, token) = match kind {
        Kind::FirstRun(token) => (
            "Set up secureFlows",
            "Create your first workspace and its owner account. You will be signed in to its console.",
            "/console/setup",
            Some(token.clone()),
        ),
        Kind::SignUp => (
            "Create a workspace",
            "A workspace holds your applications and their users. You will be its owner, signed in to its \
             console.",
            "/console/signup",
            None,
        ),
    };
    let mut response = render(
        status,
        &OwnerPage {
            heading,
            intro,
            action,
            csrf,
            token,
            workspace_name: entered.workspace_name.clone(),
            email: entered.email.clone(),
            name: entered.name.clone(),
            min_length: policy.min_length(),
            rules: password_rules(policy),
            errors,
            passkeys: matches!(kind, Kind::FirstRun(_)) && state.services().passkeys_available(),
        },
    );
    // The first run's address holds its token: it is never sent to another site as a referrer (this
    // site still sees the form's Origin, which `no-referrer` would make `null`).
    response
        .headers_mut()
        .insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

fn field_label(field: &str) -> &'static str {
    match field {
        "workspace_name" => "Workspace name",
        "email" => "E-mail address",
        "name" => "Your name",
        "password" => "Password",
        _ => "Form",
    }
}

fn link_unusable() -> PageError {
    PageError::new(
        StatusCode::GONE,
        "This setup link does not work",
        "It was used already, has expired (links work for 24 hours), or was copied incompletely. On the server, \
         run `secureflows setup link` for a new one.",
    )
    .way_on(PATH, "Go to the console")
}

fn already_set_up() -> PageError {
    PageError::new(
        StatusCode::GONE,
        "secureFlows is set up already",
        "A workspace exists, so setup links no longer work. Sign in to the console with your account.",
    )
    .way_on(PATH, "Go to the console")
}

/// Open sign-up is configured, and the first run is done (a sign-up never takes the operator's first
/// workspace, or kills the setup link).
async fn signup_open(state: &AppState) -> PageResult<()> {
    if !state.config().console.open_signup {
        return Err(signup_closed());
    }
    if !state.services().stores.workspaces.any_workspace().await? {
        return Err(PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secureFlows is not set up yet",
            "New workspaces can be created once its operator has finished the setup. Try again later.",
        )
        .way_on(PATH, "Go to the console"));
    }
    Ok(())
}

fn signup_closed() -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "New workspaces are not open to everyone here",
        "Ask an owner of an existing workspace on this server to create one for you.",
    )
    .way_on(PATH, "Go to the console")
}
