//! The sign-up page (`/w/{ws}/signup`): at once, or verification first (the link finishes in
//! `links::signup_confirm`).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use secureflows_core::Error;
use secureflows_core::login::hosted::SignUp;
use secureflows_core::login::signup::SignUpStart;
use secureflows_crypto::SecretString;

use axum::response::{IntoResponse, Response};

use super::context::{
    FlowQuery, PageContext, SIGNUP_COOKIE, SIGNUP_COOKIE_AGE, cookie, csrf_form, form_post, page_context,
    set_cookie,
};
use super::links::{Confirm, TokenForm, TokenQuery, confirm_page, or_unusable_link};
use super::login::signed_in;
use super::views::{MessagePage, SignupPage, render};
use crate::extract::Query;
use crate::pages::{PageError, PageResult, try_again_in, with_retry_after};
use crate::state::AppState;
use crate::throttle::Attempt;

csrf_form!(SignupForm {
    flow: Option<String>,
    email: String,
    #[serde(default)]
    name: String,
    password: String,
});

impl SignupForm {
    /// The sign-up the form asks for.
    fn sign_up(&self) -> SignUp {
        SignUp {
            email: self.email.clone(),
            password: SecretString::new(self.password.clone()),
            name: Some(self.name.clone()),
        }
    }
}

/// `GET /w/{ws}/signup`.
pub(super) async fn signup_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<FlowQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let page = signup_form(&ctx, q.flow, String::new(), String::new(), Vec::new());
    Ok(render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/signup`.
pub(super) async fn signup_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<SignupForm>(&state, &workspace, request).await?;
    let again = |status, errors| {
        let (flow, email, name) = (form.flow.clone(), form.email.clone(), form.name.clone());
        Ok(render(status, &signup_form(&ctx, flow, email, name, errors)))
    };
    let client = actor.client_ip.as_deref();
    if let Err(retry) =
        state
            .sign_in_limits()
            .check_email(ctx.workspace, Attempt::SignUp, &form.email, client)
    {
        return again(StatusCode::TOO_MANY_REQUESTS, vec![try_again_in(retry)])
            .map(|r| with_retry_after(r, retry));
    }
    let flow = form.flow.as_deref().and_then(|f| f.parse().ok());
    let started = state
        .services()
        .start_sign_up(ctx.workspace, form.sign_up(), flow, &actor);
    match started.await {
        Ok(SignUpStart::SignedUp(done)) => {
            let (user, step) = *done;
            signed_in(&state, &ctx, form.flow.as_deref(), &user, step, true).await
        }
        Ok(SignUpStart::CheckEmail(secret)) => Ok(check_email_to_finish(&state, &ctx, &secret)),
        Err(Error::Invalid(errors)) => again(StatusCode::UNPROCESSABLE_ENTITY, field_messages(errors)),
        Err(Error::Conflict(_)) => {
            let taken = "An account with this e-mail address already exists. Sign in instead.";
            again(StatusCode::CONFLICT, vec![taken.into()])
        }
        Err(e) => Err(e.into()),
    }
}

/// A verification-first sign-up: the link was mailed, and this browser (its `sf_signup` cookie) is
/// the one that may finish.
fn check_email_to_finish(state: &AppState, ctx: &PageContext, secret: &SecretString) -> Response {
    let page = MessagePage {
        brand: ctx.brand.clone(),
        heading: "Check your e-mail".into(),
        message:
            "We sent a message to the address you gave. Open its link in this browser to finish; it works \
                  for 30 minutes."
                .into(),
        link: None,
    };
    let mut response = render(StatusCode::OK, &page);
    let cookie = set_cookie(
        state,
        ctx.workspace,
        SIGNUP_COOKIE,
        secret.expose(),
        "Strict",
        Some(SIGNUP_COOKIE_AGE),
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// Field errors in words, each with its field's label.
fn field_messages(errors: Vec<secureflows_core::FieldError>) -> Vec<String> {
    errors
        .into_iter()
        .map(|e| format!("{}: {}", field_label(&e.field), e.message))
        .collect()
}

/// The sign-up form of `ctx`'s workspace.
fn signup_form(
    ctx: &PageContext,
    flow: Option<String>,
    email: String,
    name: String,
    errors: Vec<String>,
) -> SignupPage {
    let policy = ctx.policy.password;
    SignupPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{}/signup", ctx.workspace),
        csrf: ctx.csrf.clone(),
        login_link: ctx.login_link(flow.as_deref()),
        flow,
        email,
        name,
        errors,
        min_length: policy.min_length(),
        rules: crate::pages::password_rules(policy),
    }
}

fn field_label(field: &str) -> &'static str {
    match field {
        "email" => "E-mail address",
        "password" => "Password",
        _ => "Form",
    }
}

/// A sign-up or invitation for an address that has an account already: the way on is signing in.
pub(super) fn already_an_account(ctx: &PageContext) -> PageError {
    PageError::new(
        StatusCode::CONFLICT,
        "You already have an account",
        "An account with this e-mail address exists already. Sign in with it instead.",
    )
    .way_on(ctx.login_link(None), "Sign in")
}

/// `GET /w/{ws}/signup/confirm?token=`: the page a verification-first sign-up's link opens (a button,
/// so that a mail scanner fetching the link creates nothing).
pub(super) async fn signup_confirm_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let confirm = Confirm {
        heading: "Finish creating your account",
        text: "Create the account you asked for. This works only in the browser where you filled in the sign-up \
               form.",
        action: "signup/confirm",
        button_id: "confirm-signup",
        button_label: "Create my account",
    };
    confirm_page(&ctx, q.token, confirm)
}

/// `POST /w/{ws}/signup/confirm`: spends the link, creates the account and signs the browser in. The
/// browser's sign-up cookie ends whatever the outcome.
pub(super) async fn signup_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> Response {
    let browser = cookie(request.headers(), SIGNUP_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let confirmed = async {
        let (ctx, form, actor) = form_post::<TokenForm>(&state, &workspace, request).await?;
        match state
            .services()
            .confirm_sign_up(ctx.workspace, &form.token, &browser, &actor)
            .await
        {
            Ok((user, step, flow)) => {
                let flow = flow.map(|f| f.to_string());
                signed_in(&state, &ctx, flow.as_deref(), &user, step, true).await
            }
            Err(Error::Conflict(_)) => Err(already_an_account(&ctx)),
            Err(e) => Err(or_unusable_link(e)),
        }
    };
    let mut response = confirmed.await.into_response();
    if let Ok(workspace) = workspace.parse() {
        let expired = set_cookie(&state, workspace, SIGNUP_COOKIE, "", "Strict", Some(0));
        response.headers_mut().append(header::SET_COOKIE, expired);
    }
    response
}
