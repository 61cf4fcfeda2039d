//! The second-factor step of a sign-in (`/w/{ws}/mfa`) and the enrolment a workspace requires
//! (`/w/{ws}/mfa/setup`); the pending step is the `sf_mfa` cookie.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use secureflows_core::login::links::LinkSignIn;
use secureflows_core::login::mfa::{FirstFactor, MfaStatus, TotpSetup};
use secureflows_core::{AuthFailure, Error};

use super::context::{
    MFA_COOKIE, PageContext, cookie, csrf_form, form_post, page_context, see_other, set_cookie,
};
use super::login::{finish_sign_in, signed_in};
use super::views::{MfaPage, RecoveryCodesPage, TotpSetupPage, render};
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

csrf_form!(CodeForm { code: String });

/// A wrong code at a TOTP enrolment: the same key and QR code again (the app keeps working), with the
/// message.
pub(super) const WRONG_SETUP_CODE: &str = "That code is not right. Check that your phone's clock is set \
                                           automatically, then enter the code the app shows now.";

/// The second-factor page, offering the factors the user has.
pub(super) fn mfa_form(ctx: &PageContext, factors: Option<MfaStatus>, error: Option<String>) -> MfaPage {
    let factors = factors.unwrap_or(MfaStatus {
        totp: true,
        recovery_codes_left: 0,
        passkeys: 0,
    });
    MfaPage {
        brand: ctx.brand.clone(),
        action: format!("/w/{}/mfa", ctx.workspace),
        passkey_action: format!("/w/{}/mfa/passkey", ctx.workspace),
        options_action: format!("/w/{}/passkey/options", ctx.workspace),
        csrf: ctx.csrf.clone(),
        totp: factors.totp,
        passkey: factors.passkeys > 0,
        error,
    }
}

/// Ends the pending second-factor step's cookie.
pub(super) fn clear_mfa_cookie(state: &AppState, ctx: &PageContext, mut response: Response) -> Response {
    let expired = set_cookie(state, ctx.workspace, MFA_COOKIE, "", "Strict", Some(0));
    response.headers_mut().append(header::SET_COOKIE, expired);
    response
}

/// A pending step that is gone (expired, or completed in another tab).
pub(super) fn sign_in_again() -> PageError {
    PageError::new(
        StatusCode::BAD_REQUEST,
        "This sign-in has expired",
        "It took too long or was completed already. Please sign in again.",
    )
}

/// Turns a gone pending step (`NotFound`) into `sign_in_again`.
pub(super) fn or_sign_in_again(e: Error) -> PageError {
    match e {
        Error::NotFound(_) => sign_in_again(),
        e => e.into(),
    }
}

/// `GET /w/{ws}/mfa`: asks for the second factor of a pending sign-in.
pub(super) async fn mfa_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let pending = cookie(&headers, MFA_COOKIE).unwrap_or_default();
    let factors = state
        .services()
        .pending_second_factor(ctx.workspace, pending)
        .await?;
    let factors = factors.ok_or_else(sign_in_again)?;
    Ok(render(StatusCode::OK, &mfa_form(&ctx, Some(factors), None)))
}

/// `POST /w/{ws}/mfa`: completes the sign-in with a TOTP or recovery code.
pub(super) async fn mfa_submit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let pending = cookie(request.headers(), MFA_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = form_post::<CodeForm>(&state, &workspace, request).await?;
    let given = state
        .services()
        .complete_second_factor(ctx.workspace, &pending, &form.code, &actor)
        .await;
    let refused = "The code is not right, was used already, or the account is locked for a while.";
    second_factor_given(&state, &ctx, &pending, given, refused).await
}

/// A second factor given for a pending sign-in: signed in (the step's cookie ends), refused (the page
/// again, saying `refused`), or the step gone (sign in again).
pub(super) async fn second_factor_given(
    state: &AppState,
    ctx: &PageContext,
    pending: &str,
    given: secureflows_core::Result<LinkSignIn>,
    refused: &str,
) -> PageResult {
    match given {
        Ok(signed) => {
            let flow = signed.flow.map(|f| f.to_string());
            let response = signed_in(state, ctx, flow.as_deref(), &signed.user, signed.step, false).await?;
            Ok(clear_mfa_cookie(state, ctx, response))
        }
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            let factors = state
                .services()
                .pending_second_factor(ctx.workspace, pending)
                .await
                .ok()
                .flatten();
            Ok(render(
                StatusCode::UNAUTHORIZED,
                &mfa_form(ctx, factors, Some(refused.into())),
            ))
        }
        Err(e) => Err(or_sign_in_again(e)),
    }
}

/// Where a pending second-factor step goes: the code page, or the enrolment a workspace requires.
pub(super) fn to_second_factor(state: &AppState, ctx: &PageContext, step: &FirstFactor) -> PageResult {
    let (pending, page) = match step {
        FirstFactor::SecondFactor(p) => (p, "mfa"),
        FirstFactor::EnrolSecondFactor(p) => (p, "mfa/setup"),
        FirstFactor::SignedIn(_) => return Err(Error::internal("not a pending step").into()),
    };
    let mut response = see_other(&format!("/w/{}/{page}", ctx.workspace));
    let cookie = set_cookie(
        state,
        ctx.workspace,
        MFA_COOKIE,
        pending.expose(),
        "Strict",
        Some(300),
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `GET /w/{ws}/mfa/setup`: the workspace requires a second factor this user has not set up yet.
pub(super) async fn required_setup(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    let pending = cookie(&headers, MFA_COOKIE).unwrap_or_default();
    let setup = state
        .services()
        .start_required_totp(ctx.workspace, pending)
        .await
        .map_err(or_sign_in_again)?;
    setup_page(&state, &ctx, &setup, "mfa/setup", None)
}

/// `POST /w/{ws}/mfa/setup`: confirms the required enrolment, signs in, shows the recovery codes
/// with the way on.
pub(super) async fn required_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let pending = cookie(request.headers(), MFA_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = form_post::<CodeForm>(&state, &workspace, request).await?;
    let services = state.services();
    match services
        .complete_required_totp(ctx.workspace, &pending, &form.code, &actor)
        .await
    {
        Ok((signed, codes)) => enrolled(&state, &ctx, signed, codes, None).await,
        Err(Error::Invalid(_)) => {
            let setup = services
                .start_required_totp(ctx.workspace, &pending)
                .await
                .map_err(or_sign_in_again)?;
            setup_page(&state, &ctx, &setup, "mfa/setup", Some(WRONG_SETUP_CODE))
        }
        Err(e) => Err(or_sign_in_again(e)),
    }
}

/// A required second factor was just enrolled: the browser is signed in and sees its recovery codes
/// once, with the way on (the application's request, if any, else the account page).
pub(super) async fn enrolled(
    state: &AppState,
    ctx: &PageContext,
    signed: LinkSignIn,
    codes: Vec<String>,
    notice: Option<String>,
) -> PageResult {
    let FirstFactor::SignedIn(login) = &signed.step else {
        return Err(Error::internal("not signed in").into());
    };
    // With a pending authorization request, the sign-in page continues it (single sign-on).
    let next = match signed.flow {
        Some(flow) => format!("/w/{}/login?flow={flow}", ctx.workspace),
        None => format!("/w/{}/account", ctx.workspace),
    };
    let page = RecoveryCodesPage {
        brand: ctx.brand.clone(),
        notice,
        codes,
        account_link: next,
    };
    let response = clear_mfa_cookie(state, ctx, render(StatusCode::OK, &page));
    finish_sign_in(state, ctx, &signed.user, login, false, response).await
}

/// The TOTP enrolment page: the QR code, the key and the confirmation form (`action`), with `error`
/// after a wrong code.
pub(super) fn setup_page(
    state: &AppState,
    ctx: &PageContext,
    setup: &TotpSetup,
    action: &str,
    error: Option<&str>,
) -> PageResult {
    let qr = qr_data_uri(setup.otpauth_uri.expose())
        .ok_or_else(|| PageError::from(Error::internal("the QR code could not be drawn")))?;
    let ws = ctx.workspace;
    let page = TotpSetupPage {
        brand: ctx.brand.clone(),
        qr_data_uri: qr,
        secret: setup.secret_base32.expose().to_owned(),
        action: format!("/w/{ws}/{action}"),
        csrf: ctx.csrf.clone(),
        error: error.map(str::to_owned),
        passkey: (action == "mfa/setup" && state.services().passkeys_available()).then(|| {
            (
                format!("/w/{ws}/passkey/options"),
                format!("/w/{ws}/mfa/setup/passkey"),
            )
        }),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render(status, &page))
}

/// The `otpauth:` URI as a QR code (an SVG data URI, allowed by the page CSP's `img-src data:`).
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
