//! The first run: `/console/setup?token=…` (the one-time link `serve` prints while no workspace
//! exists) creates the first workspace, its console client and its OWNER, signs the OWNER's browser in
//! to the workspace's hosted login, and continues into the console through it. The link never works
//! again.

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use secureflows_core::Error;
use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::setup::{FirstRun, SetupState};
use secureflows_crypto::SecretString;
use serde::Deserialize;

use super::context::{Browser, CsrfForm, PATH, check_form, open_page, with_cookies};
use super::views::{SetupPage, error_lines};
use crate::pages::{PageError, PageResult, password_rules, render, see_other, sign_in_cookies};
use crate::state::AppState;

#[derive(Deserialize)]
pub(super) struct SetupQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SetupForm {
    csrf: String,
    token: String,
    workspace_name: String,
    email: String,
    name: Option<String>,
    password: SecretString,
}

impl CsrfForm for SetupForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `GET /console/setup?token=…`: the first-run form, while the link works.
pub(super) async fn setup_page(
    State(state): State<AppState>,
    browser: Browser,
    Query(q): Query<SetupQuery>,
) -> PageResult {
    let token = q.token.unwrap_or_default();
    let csrf = open_page(
        &state,
        &browser,
        &token,
        (PATH.into(), "Go to the console".into()),
    )
    .await?;
    usable(&state, &token).await?;
    Ok(setup_form(csrf, token, "", "", "", Vec::new(), StatusCode::OK))
}

/// `POST /console/setup`: creates the workspace and its OWNER, and signs the OWNER in.
pub(super) async fn setup_submit(State(state): State<AppState>, request: Request) -> PageResult {
    let (mut parts, body) = request.into_parts();
    let Ok(browser) =
        <Browser as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state).await;
    let request = Request::from_parts(parts, body);
    let Ok(axum::Form(form)) =
        <axum::Form<SetupForm> as axum::extract::FromRequest<AppState>>::from_request(request, &state).await
    else {
        return Err(PageError::incomplete_form());
    };
    let csrf = open_page(
        &state,
        &browser,
        &form.token,
        (PATH.into(), "Go to the console".into()),
    )
    .await?;
    check_form(&state, &browser, &form.token, form.csrf()).await?;
    let (token, workspace_name, email, name) = (
        form.token.clone(),
        form.workspace_name.clone(),
        form.email.clone(),
        form.name.clone().unwrap_or_default(),
    );
    let run = FirstRun {
        token: SecretString::new(form.token),
        workspace_name: form.workspace_name,
        email: form.email,
        name: form.name,
        password: form.password,
    };
    let done = match state.services().first_run(run, &browser.actor).await {
        Ok(done) => done,
        Err(Error::Invalid(errors)) => {
            let lines = error_lines(&errors, field_label);
            return Ok(setup_form(
                csrf,
                token,
                &workspace_name,
                &email,
                &name,
                lines,
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
        Err(Error::Conflict("setup-token")) => return Err(link_unusable()),
        Err(Error::Conflict("setup-done")) => return Err(already_set_up()),
        Err(e) => return Err(e.into()),
    };
    // The link is spent: its copy in the data directory goes too.
    let _ = std::fs::remove_file(state.config().storage.data_dir.join(crate::app::SETUP_LINK_FILE));
    let workspace = done.workspace.id;
    let response = see_other(&format!("{PATH}/w/{workspace}/signin"));
    Ok(with_cookies(
        response,
        sign_in_cookies(&state, workspace, &done.login)?,
    ))
}

async fn usable(state: &AppState, token: &str) -> PageResult<()> {
    match state.services().setup_state(token).await? {
        SetupState::Open => Ok(()),
        SetupState::Unusable => Err(link_unusable()),
        SetupState::Done => Err(already_set_up()),
    }
}

fn setup_form(
    csrf: String,
    token: String,
    workspace_name: &str,
    email: &str,
    name: &str,
    errors: Vec<String>,
    status: StatusCode,
) -> axum::response::Response {
    let policy = PasswordPolicy::default();
    let mut response = render(
        status,
        &SetupPage {
            csrf,
            token,
            workspace_name: workspace_name.into(),
            email: email.into(),
            name: name.into(),
            min_length: policy.min_length(),
            rules: password_rules(policy),
            errors,
        },
    );
    // The page's address holds the token: it is never sent on as a referrer.
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
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
