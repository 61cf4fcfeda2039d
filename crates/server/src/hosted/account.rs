//! The second-factor step of sign-in, and the signed-in user's account page with TOTP enrolment.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use secureflows_core::login::mfa::FirstFactor;
use secureflows_core::{AuthFailure, Error};
use serde::Deserialize;

use super::pages::{AccountPage, MfaPage, RecoveryCodesPage, TotpSetupPage, error_page, render};
use super::{
    CsrfForm, MFA_COOKIE, PageContext, cookie, form_post, internal, page_context, see_other, set_cookie,
    signed_in,
};
use crate::state::AppState;

#[derive(Deserialize)]
pub(super) struct CodeForm {
    csrf: String,
    code: String,
}

impl CsrfForm for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn mfa_form(ctx: &PageContext, error: Option<String>) -> MfaPage {
    MfaPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{}/mfa", ctx.workspace),
        csrf: ctx.csrf.clone(),
        error,
    }
}

fn sign_in_again(ctx: &PageContext, state: &AppState) -> Response {
    ctx.finish(
        state,
        error_page(
            StatusCode::BAD_REQUEST,
            ctx.brand.clone(),
            "This sign-in has expired or was completed already. Please sign in again.",
        ),
    )
}

/// `GET /w/{ws}/mfa`: asks for the second factor of a pending sign-in.
pub(super) async fn mfa_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let pending = cookie(&headers, MFA_COOKIE).unwrap_or_default();
    match state
        .services()
        .pending_second_factor(ctx.workspace, pending)
        .await
    {
        Ok(true) => ctx.finish(&state, render(StatusCode::OK, &mfa_form(&ctx, None))),
        Ok(false) => sign_in_again(&ctx, &state),
        Err(e) => internal(e),
    }
}

/// `POST /w/{ws}/mfa`: completes the sign-in with a TOTP or recovery code.
pub(super) async fn mfa_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let pending = cookie(request.headers(), MFA_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = match form_post::<CodeForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    match state
        .services()
        .complete_second_factor(ctx.workspace, &pending, &form.code, &actor)
        .await
    {
        Ok(signed) => {
            let flow = signed.flow.map(|f| f.to_string());
            let mut response =
                signed_in(&state, &ctx, flow.as_deref(), &signed.user, signed.step, false).await;
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&state, ctx.workspace, MFA_COOKIE, "", "Strict", Some(0)),
            );
            response
        }
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            let page = mfa_form(
                &ctx,
                Some("The code is not right, was used already, or the account is locked for a while.".into()),
            );
            ctx.finish(&state, render(StatusCode::UNAUTHORIZED, &page))
        }
        Err(Error::NotFound(_)) => sign_in_again(&ctx, &state),
        Err(e) => internal(e),
    }
}

/// Where a pending second-factor step goes: the code page, or the enrolment a workspace requires.
pub(super) fn to_second_factor(state: &AppState, ctx: &PageContext, step: &FirstFactor) -> Response {
    let (pending, page) = match step {
        FirstFactor::SecondFactor(p) => (p, "mfa"),
        FirstFactor::EnrolSecondFactor(p) => (p, "mfa/setup"),
        FirstFactor::SignedIn(_) => return internal(Error::internal("not a pending step")),
    };
    let mut response = see_other(&format!("/w/{}/{page}", ctx.workspace));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            state,
            ctx.workspace,
            MFA_COOKIE,
            pending.expose(),
            "Strict",
            Some(300),
        ),
    );
    ctx.finish(state, response)
}

/// `GET /w/{ws}/mfa/setup`: the workspace requires a second factor this user has not set up yet.
pub(super) async fn required_setup(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let pending = cookie(&headers, MFA_COOKIE).unwrap_or_default();
    match state.services().start_required_totp(ctx.workspace, pending).await {
        Ok(setup) => setup_page(&state, &ctx, &setup, "mfa/setup"),
        Err(Error::NotFound(_)) => sign_in_again(&ctx, &state),
        Err(e) => internal(e),
    }
}

/// `POST /w/{ws}/mfa/setup`: confirms the required enrolment, signs in, shows the recovery codes
/// with the way on.
pub(super) async fn required_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let pending = cookie(request.headers(), MFA_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = match form_post::<CodeForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    match state
        .services()
        .complete_required_totp(ctx.workspace, &pending, &form.code, &actor)
        .await
    {
        Ok((signed, codes)) => {
            let FirstFactor::SignedIn(login) = &signed.step else {
                return internal(Error::internal("not signed in"));
            };
            // With a pending authorization request, the sign-in page continues it (single sign-on).
            let next = match signed.flow {
                Some(flow) => format!("/w/{}/login?flow={flow}", ctx.workspace),
                None => format!("/w/{}/account", ctx.workspace),
            };
            let page = RecoveryCodesPage {
                brand: ctx.brand.clone(),
                codes,
                account_link: next,
            };
            let mut response = render(StatusCode::OK, &page);
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&state, ctx.workspace, MFA_COOKIE, "", "Strict", Some(0)),
            );
            super::finish_sign_in(&state, &ctx, &signed.user, login, false, response).await
        }
        Err(Error::Invalid(_)) => ctx.finish(
            &state,
            error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                ctx.brand.clone(),
                "The code is not right. Check the app's clock and set it up again.",
            ),
        ),
        Err(Error::NotFound(_)) => sign_in_again(&ctx, &state),
        Err(e) => internal(e),
    }
}

fn setup_page(
    state: &AppState,
    ctx: &PageContext,
    setup: &secureflows_core::login::mfa::TotpSetup,
    action: &str,
) -> Response {
    let Some(qr) = qr_data_uri(setup.otpauth_uri.expose()) else {
        return internal(Error::internal("the QR code could not be drawn"));
    };
    let page = TotpSetupPage {
        brand: ctx.brand.clone(),
        qr_data_uri: qr,
        secret: setup.secret_base32.expose().to_owned(),
        action: format!("/w/{}/{action}", ctx.workspace),
        csrf: ctx.csrf.clone(),
        error: None,
    };
    ctx.finish(state, render(StatusCode::OK, &page))
}

/// The signed-in user, or the way to the sign-in page.
fn signed_in_user(ctx: &PageContext) -> Result<&secureflows_core::User, Response> {
    match &ctx.sso {
        Some((_, user)) => Ok(user),
        None => Err(see_other(&format!("/w/{}/login", ctx.workspace))),
    }
}

/// `GET /w/{ws}/account`: the account security page.
pub(super) async fn account_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = match signed_in_user(&ctx) {
        Ok(u) => u,
        Err(r) => return ctx.finish(&state, r),
    };
    account_view(&state, &ctx, user).await
}

async fn account_view(state: &AppState, ctx: &PageContext, user: &secureflows_core::User) -> Response {
    let services = state.services();
    let status = match services.mfa_status(user).await {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let verified = match services.stores.login.email_verified(ctx.workspace, user.id).await {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let email = match services.keys.workspace_keys(ctx.workspace, false).await {
        Ok(keys) => services.user_email(&keys, user).unwrap_or_default(),
        Err(e) => return internal(e),
    };
    let page = AccountPage {
        brand: ctx.brand.clone(),
        email,
        verified,
        totp: status.totp,
        recovery_left: status.recovery_codes_left,
        csrf: ctx.csrf.clone(),
        disable_action: format!("/w/{}/account/totp/disable", ctx.workspace),
        setup_link: format!("/w/{}/account/totp", ctx.workspace),
        logout_link: format!("/w/{}/logout", ctx.workspace),
    };
    ctx.finish(state, render(StatusCode::OK, &page))
}

fn qr_data_uri(content: &str) -> Option<String> {
    let code = qrcode::QrCode::new(content.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

/// `GET /w/{ws}/account/totp`: a new key, its QR code, and the confirmation form.
pub(super) async fn totp_setup(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ctx = match page_context(&state, &workspace, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = match signed_in_user(&ctx) {
        Ok(u) => u,
        Err(r) => return ctx.finish(&state, r),
    };
    let setup = match state.services().start_totp(user).await {
        Ok(s) => s,
        Err(Error::Conflict(_)) => {
            return ctx.finish(&state, see_other(&format!("/w/{}/account", ctx.workspace)));
        }
        Err(e) => return internal(e),
    };
    setup_page(&state, &ctx, &setup, "account/totp")
}

/// `POST /w/{ws}/account/totp`: confirms the key with a code; shows the recovery codes once.
pub(super) async fn totp_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<CodeForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let user = match signed_in_user(&ctx) {
        Ok(u) => u.clone(),
        Err(r) => return ctx.finish(&state, r),
    };
    match state.services().confirm_totp(&user, &form.code, &actor).await {
        Ok(codes) => {
            let page = RecoveryCodesPage {
                brand: ctx.brand.clone(),
                codes,
                account_link: format!("/w/{}/account", ctx.workspace),
            };
            ctx.finish(&state, render(StatusCode::OK, &page))
        }
        Err(Error::Invalid(_)) => ctx.finish(
            &state,
            error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                ctx.brand.clone(),
                "The code is not right. Check the app's clock and set it up again.",
            ),
        ),
        Err(Error::Conflict(_) | Error::NotFound(_)) => {
            ctx.finish(&state, see_other(&format!("/w/{}/account", ctx.workspace)))
        }
        Err(e) => internal(e),
    }
}

/// `POST /w/{ws}/account/totp/disable`: turns TOTP off with a current or recovery code.
pub(super) async fn totp_disable(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor) = match form_post::<CodeForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let user = match signed_in_user(&ctx) {
        Ok(u) => u.clone(),
        Err(r) => return ctx.finish(&state, r),
    };
    match state.services().disable_totp(&user, &form.code, &actor).await {
        Ok(()) => account_view(&state, &ctx, &user).await,
        Err(Error::Invalid(_)) => ctx.finish(
            &state,
            error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                ctx.brand.clone(),
                "The code is not right.",
            ),
        ),
        Err(e) => internal(e),
    }
}
