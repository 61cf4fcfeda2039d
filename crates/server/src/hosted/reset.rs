//! A forgotten password: the request for a link (`/w/{ws}/forgot`) and the new-password form it opens
//! (`/w/{ws}/reset`).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use secureflows_core::Error;
use secureflows_crypto::SecretString;

use super::context::{FlowQuery, PageContext, csrf_form, form_post, page_context};
use super::links::{
    EmailForm, TokenQuery, after_answer, check_your_mail, mail_available, or_unusable_link, throttle,
};
use super::login::signed_in;
use super::views::{EmailFormPage, ResetPage, render};
use crate::extract::Query;
use crate::pages::password_rules;
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

csrf_form!(ResetForm {
    token: String,
    password: String,
});

/// `GET /w/{ws}/forgot`: asks for the address to send a reset link to.
pub(super) async fn forgot_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<FlowQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    mail_available(&ctx)?;
    let page = EmailFormPage {
        brand: ctx.brand.clone(),
        heading: "Forgot your password?".into(),
        message: "Enter your e-mail address and we will send you a link to choose a new password.".into(),
        action: format!("/w/{}/forgot", ctx.workspace),
        csrf: ctx.csrf.clone(),
        flow: q.flow,
        button_label: "Send the link".into(),
    };
    Ok(render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/forgot`: mails a reset link.
pub(super) async fn forgot_request(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<EmailForm>(&state, &workspace, request).await?;
    mail_available(&ctx)?;
    throttle(&state, &ctx, &form.email, actor.client_ip.as_deref())?;
    let (services, workspace, email) = (state.services_arc(), ctx.workspace, form.email);
    // SECURITY: answered first, as for magic links.
    after_answer("a password-reset link", async move {
        services.send_password_reset(workspace, &email).await
    });
    Ok(check_your_mail(&ctx))
}

fn reset_form(ctx: &PageContext, token: String, errors: Vec<String>) -> ResetPage {
    let policy = ctx.policy.password;
    ResetPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{}/reset", ctx.workspace),
        csrf: ctx.csrf.clone(),
        token,
        errors,
        min_length: policy.min_length(),
        rules: password_rules(policy),
    }
}

/// `GET /w/{ws}/reset?token=…`: the new-password form.
pub(super) async fn reset_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let token = q.token.ok_or_else(PageError::unusable_link)?;
    Ok(render(StatusCode::OK, &reset_form(&ctx, token, Vec::new())))
}

/// `POST /w/{ws}/reset`: sets the password, ends the user's other sessions, signs this browser in.
pub(super) async fn reset_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<ResetForm>(&state, &workspace, request).await?;
    let password = SecretString::new(form.password);
    match state
        .services()
        .reset_password(ctx.workspace, &form.token, &password, &actor)
        .await
    {
        Ok(signed) => signed_in(&state, &ctx, None, &signed.user, signed.step, false).await,
        Err(Error::Invalid(errors)) => {
            let messages = errors.into_iter().map(|e| e.message).collect();
            Ok(render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &reset_form(&ctx, form.token, messages),
            ))
        }
        Err(e) => Err(or_unusable_link(e)),
    }
}
