//! Accepting an invitation (`/w/{ws}/invite/accept`): the invited member chooses a password and is
//! signed in.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use secureflows_core::Error;
use secureflows_core::members::InviteView;
use secureflows_crypto::SecretString;

use super::context::{PageContext, csrf_form, form_post, page_context};
use super::links::{TokenQuery, or_unusable_link};
use super::login::signed_in;
use super::signup::already_an_account;
use super::views::{InvitePage, render};
use crate::extract::Query;
use crate::pages::password_rules;
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

csrf_form!(InviteForm {
    token: String,
    password: String,
});

fn invite_form(ctx: &PageContext, view: &InviteView, token: String, errors: Vec<String>) -> InvitePage {
    let policy = ctx.policy.password;
    InvitePage {
        brand: ctx.brand.clone(),
        role: view.invite.role.as_str(),
        email: view.email.clone(),
        errors,
        action: format!("/w/{}/invite/accept", ctx.workspace),
        csrf: ctx.csrf.clone(),
        token,
        min_length: policy.min_length(),
        rules: password_rules(policy),
    }
}

/// `GET /w/{ws}/invite/accept?token=…`: the invitation and a password form.
pub(super) async fn invite_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let token = q.token.ok_or_else(PageError::unusable_link)?;
    let view = state
        .services()
        .invite_by_link(ctx.workspace, &token)
        .await
        .map_err(or_unusable_link)?;
    Ok(render(
        StatusCode::OK,
        &invite_form(&ctx, &view, token, Vec::new()),
    ))
}

/// `POST /w/{ws}/invite/accept`: becomes a member and signs in.
pub(super) async fn invite_accept(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<InviteForm>(&state, &workspace, request).await?;
    let services = state.services();
    let password = SecretString::new(form.password);
    match services
        .accept_invite(ctx.workspace, &form.token, &password, &actor)
        .await
    {
        Ok((user, step)) => signed_in(&state, &ctx, None, &user, step, true).await,
        Err(Error::Invalid(errors)) => {
            let view = services
                .invite_by_link(ctx.workspace, &form.token)
                .await
                .map_err(|_| PageError::unusable_link())?;
            let messages = errors.into_iter().map(|e| e.message).collect();
            Ok(render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &invite_form(&ctx, &view, form.token, messages),
            ))
        }
        Err(Error::Conflict(_)) => Err(already_an_account(&ctx)),
        Err(e) => Err(or_unusable_link(e)),
    }
}
