//! The second-factor step of sign-in, and the signed-in user's account page with TOTP enrolment.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secureflows_core::login::links::LinkSignIn;
use secureflows_core::login::mfa::{FirstFactor, MfaStatus};
use secureflows_core::{AuthFailure, BrowserSession, Error, User};
use secureflows_crypto::SecretString;
use serde::Deserialize;

use super::pages::{
    AccountPage, HistoryRow, MfaPage, PasskeyRow, RecoveryCodesPage, SessionRow, TotpSetupPage, error_page,
    render,
};
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
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, ctx.workspace, MFA_COOKIE, "", "Strict", Some(0)),
    );
    response
}

pub(super) fn sign_in_again(ctx: &PageContext, state: &AppState) -> Response {
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
        Ok(Some(factors)) => ctx.finish(
            &state,
            render(StatusCode::OK, &mfa_form(&ctx, Some(factors), None)),
        ),
        Ok(None) => sign_in_again(&ctx, &state),
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
            let response = signed_in(&state, &ctx, flow.as_deref(), &signed.user, signed.step, false).await;
            clear_mfa_cookie(&state, &ctx, response)
        }
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            let factors = state
                .services()
                .pending_second_factor(ctx.workspace, &pending)
                .await
                .ok()
                .flatten();
            let page = mfa_form(
                &ctx,
                factors,
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
        Ok(setup) => setup_page(&state, &ctx, &setup, "mfa/setup", None),
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
        Ok((signed, codes)) => enrolled(&state, &ctx, signed, codes, None).await,
        Err(Error::Invalid(_)) => match state
            .services()
            .start_required_totp(ctx.workspace, &pending)
            .await
        {
            Ok(setup) => setup_page(&state, &ctx, &setup, "mfa/setup", Some(WRONG_SETUP_CODE)),
            Err(Error::NotFound(_)) => sign_in_again(&ctx, &state),
            Err(e) => internal(e),
        },
        Err(Error::NotFound(_)) => sign_in_again(&ctx, &state),
        Err(e) => internal(e),
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
) -> Response {
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
        notice,
        codes,
        account_link: next,
    };
    let response = clear_mfa_cookie(state, ctx, render(StatusCode::OK, &page));
    super::finish_sign_in(state, ctx, &signed.user, login, false, response).await
}

fn setup_page(
    state: &AppState,
    ctx: &PageContext,
    setup: &secureflows_core::login::mfa::TotpSetup,
    action: &str,
    error: Option<&str>,
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
        error: error.map(str::to_owned),
        passkey: (action == "mfa/setup" && state.services().passkeys_available()).then(|| {
            (
                format!("/w/{}/passkey/options", ctx.workspace),
                format!("/w/{}/mfa/setup/passkey", ctx.workspace),
            )
        }),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    ctx.finish(state, render(status, &page))
}

/// A wrong code at a TOTP enrolment: the same key and QR code again (the app keeps working), with the
/// message.
const WRONG_SETUP_CODE: &str = "That code is not right. Check that your phone's clock is set automatically, \
                                then enter the code the app shows now.";

/// The signed-in browser and user, or the way to the sign-in page.
fn signed_in_user(ctx: &PageContext) -> Result<(&BrowserSession, &User), Response> {
    match &ctx.sso {
        Some((session, user)) => Ok((session, user)),
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
    if ctx.weak_sso.is_some() {
        return super::step_up(&state, &ctx, None).await;
    }
    let (session, user) = match signed_in_user(&ctx) {
        Ok(found) => found,
        Err(r) => return ctx.finish(&state, r),
    };
    account_view(&state, &ctx, session, user, Notice::None).await
}

/// SECURITY: changing a second factor needs a sign-in at most 15 minutes old, so that a stolen session
/// cookie alone cannot plant an attacker's authenticator (and lock the owner out) or remove one.
fn sign_in_again_first() -> Notice {
    Notice::Refused(
        StatusCode::FORBIDDEN,
        "For your security, sign out and sign in again before changing two-step sign-in.",
    )
}

/// What the account page reports about the last action.
pub(super) enum Notice {
    None,
    Done(&'static str),
    Refused(StatusCode, &'static str),
}

pub(super) async fn account_view(
    state: &AppState,
    ctx: &PageContext,
    session: &BrowserSession,
    user: &User,
    notice: Notice,
) -> Response {
    let services = state.services();
    let loaded = async {
        let status = services.mfa_status(user).await?;
        let verified = services
            .stores
            .login
            .email_verified(ctx.workspace, user.id)
            .await?;
        let keys = services.keys.workspace_keys(ctx.workspace, false).await?;
        let sessions = services.account_sessions(session).await?;
        let history = services.login_history(user, 10).await?;
        let passkeys = services.list_passkeys(user).await?;
        Ok::<_, Error>((
            (status, passkeys),
            verified,
            services.user_email(&keys, user).unwrap_or_default(),
            sessions,
            history,
        ))
    };
    let ((status, passkeys), verified, email, sessions, history) = match loaded.await {
        Ok(found) => found,
        Err(e) => return internal(e),
    };
    let (code, notice, error) = match notice {
        Notice::None => (StatusCode::OK, None, None),
        Notice::Done(text) => (StatusCode::OK, Some(text.to_owned()), None),
        Notice::Refused(code, text) => (code, None, Some(text.to_owned())),
    };
    let ws = ctx.workspace;
    let page = AccountPage {
        brand: ctx.brand.clone(),
        notice,
        error,
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow {
                id: s.id.to_string(),
                current: s.current,
                device: super::devices::device_name(&s.device),
                client_ip: s.client_ip,
                last_seen: super::devices::ShownTime::of(s.last_seen_at),
            })
            .collect(),
        history: history
            .into_iter()
            .map(|h| HistoryRow {
                at: super::devices::ShownTime::of(h.at),
                what: match h.action.as_str() {
                    "user.sign_in" => "signed in",
                    "user.sign_up" => "account created",
                    "user.sign_in_locked" => "locked after failed attempts",
                    _ => "failed attempt",
                },
                client_ip: h.client_ip,
                device: super::devices::device_name(&h.user_agent),
            })
            .collect(),
        end_action: format!("/w/{ws}/account/sessions/end"),
        end_others_action: format!("/w/{ws}/account/sessions/end-others"),
        password_action: format!("/w/{ws}/account/password"),
        email,
        verified,
        totp: status.totp,
        recovery_left: status.recovery_codes_left,
        csrf: ctx.csrf.clone(),
        disable_action: format!("/w/{ws}/account/totp/disable"),
        setup_link: format!("/w/{ws}/account/totp"),
        logout_link: format!("/w/{ws}/logout"),
        export_link: format!("/w/{ws}/account/export"),
        passkeys_available: services.passkeys_available(),
        passkeys: passkeys
            .into_iter()
            .map(|p| PasskeyRow {
                id: p.id.to_string(),
                name: p.name,
                created: p.created_at.rfc3339(),
                last_used: p
                    .last_used_at
                    .map(|t| t.rfc3339())
                    .unwrap_or_else(|| "never".into()),
            })
            .collect(),
        options_action: format!("/w/{ws}/passkey/options"),
        passkey_action: format!("/w/{ws}/account/passkeys"),
        remove_passkey_action: format!("/w/{ws}/account/passkeys/remove"),
        providers: ctx
            .providers
            .iter()
            .map(|p| (p.id.to_string(), p.name.clone()))
            .collect(),
        link_action: format!("/w/{ws}/account/upstream"),
    };
    ctx.finish(state, render(code, &page))
}

#[derive(Deserialize)]
pub(super) struct SessionForm {
    csrf: String,
    session: String,
}

impl CsrfForm for SessionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    csrf: String,
    current: String,
    new: String,
}

impl CsrfForm for PasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Reads an account-page form of a signed-in browser.
pub(super) async fn account_post<T: CsrfForm>(
    state: &AppState,
    workspace: &str,
    request: axum::extract::Request,
) -> Result<
    (
        PageContext,
        T,
        secureflows_core::audit::Actor,
        BrowserSession,
        User,
    ),
    Response,
> {
    let (ctx, form, actor) = form_post::<T>(state, workspace, request).await?;
    let (session, user) = match signed_in_user(&ctx) {
        Ok((s, u)) => (s.clone(), u.clone()),
        Err(r) => return Err(ctx.finish(state, r)),
    };
    Ok((ctx, form, actor, session, user))
}

/// `POST /w/{ws}/account/sessions/end`: signs one of the user's other browsers out.
pub(super) async fn end_session(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor, session, user) =
        match account_post::<SessionForm>(&state, &workspace, request).await {
            Ok(posted) => posted,
            Err(r) => return r,
        };
    let Ok(target) = form.session.parse() else {
        return account_view(
            &state,
            &ctx,
            &session,
            &user,
            Notice::Refused(StatusCode::BAD_REQUEST, "No such session."),
        )
        .await;
    };
    match state
        .services()
        .end_account_session(&session, target, &actor)
        .await
    {
        Ok(()) => {
            account_view(
                &state,
                &ctx,
                &session,
                &user,
                Notice::Done("That browser is signed out."),
            )
            .await
        }
        Err(Error::NotFound(_)) => {
            account_view(
                &state,
                &ctx,
                &session,
                &user,
                Notice::Refused(StatusCode::NOT_FOUND, "No such session."),
            )
            .await
        }
        Err(e) => internal(e),
    }
}

/// `POST /w/{ws}/account/sessions/end-others`: signs every other browser out.
pub(super) async fn end_others(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, _, actor, session, user) = match account_post::<CsrfOnly>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    match state.services().end_other_sessions(&session, &actor).await {
        Ok(_) => {
            account_view(
                &state,
                &ctx,
                &session,
                &user,
                Notice::Done("Every other browser is signed out."),
            )
            .await
        }
        Err(e) => internal(e),
    }
}

/// `POST /w/{ws}/account/password`: changes the password (the current one is required).
pub(super) async fn change_password(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor, session, user) =
        match account_post::<PasswordForm>(&state, &workspace, request).await {
            Ok(posted) => posted,
            Err(r) => return r,
        };
    let (current, new) = (SecretString::new(form.current), SecretString::new(form.new));
    match state
        .services()
        .change_password(&session, &user, &current, &new, &actor)
        .await
    {
        Ok(()) => {
            account_view(
                &state,
                &ctx,
                &session,
                &user,
                Notice::Done("Your password is changed; other browsers are signed out."),
            )
            .await
        }
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            account_view(
                &state,
                &ctx,
                &session,
                &user,
                Notice::Refused(StatusCode::UNAUTHORIZED, "The current password is not right."),
            )
            .await
        }
        Err(Error::Invalid(_)) => {
            account_view(
                &state,
                &ctx,
                &session,
                &user,
                Notice::Refused(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The new password does not meet the rules, or appears in a data breach.",
                ),
            )
            .await
        }
        Err(e) => internal(e),
    }
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
    let (session, user) = match signed_in_user(&ctx) {
        Ok(found) => found,
        Err(r) => return ctx.finish(&state, r),
    };
    if !super::recently_signed_in(&state, session) {
        return account_view(&state, &ctx, session, user, sign_in_again_first()).await;
    }
    let setup = match state.services().start_totp(user).await {
        Ok(s) => s,
        Err(Error::Conflict(_)) => {
            return ctx.finish(&state, see_other(&format!("/w/{}/account", ctx.workspace)));
        }
        Err(e) => return internal(e),
    };
    setup_page(&state, &ctx, &setup, "account/totp", None)
}

/// `POST /w/{ws}/account/totp`: confirms the key with a code; shows the recovery codes once.
pub(super) async fn totp_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor, session, user) = match account_post::<CodeForm>(&state, &workspace, request).await
    {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    if !super::recently_signed_in(&state, &session) {
        return account_view(&state, &ctx, &session, &user, sign_in_again_first()).await;
    }
    match state.services().confirm_totp(&user, &form.code, &actor).await {
        Ok(codes) => {
            // This browser just proved the new authenticator: its session keeps meeting the user's
            // factors.
            if let Err(e) = state.services().add_session_factor(&session, "otp").await {
                return internal(e);
            }
            let page = RecoveryCodesPage {
                brand: ctx.brand.clone(),
                notice: None,
                codes,
                account_link: format!("/w/{}/account", ctx.workspace),
            };
            ctx.finish(&state, render(StatusCode::OK, &page))
        }
        Err(Error::Invalid(_)) => match state.services().start_totp(&user).await {
            Ok(setup) => setup_page(&state, &ctx, &setup, "account/totp", Some(WRONG_SETUP_CODE)),
            Err(Error::Conflict(_)) => {
                ctx.finish(&state, see_other(&format!("/w/{}/account", ctx.workspace)))
            }
            Err(e) => internal(e),
        },
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
    let (ctx, form, actor, session, user) = match account_post::<CodeForm>(&state, &workspace, request).await
    {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    if !super::recently_signed_in(&state, &session) {
        return account_view(&state, &ctx, &session, &user, sign_in_again_first()).await;
    }
    match state.services().disable_totp(&user, &form.code, &actor).await {
        Ok(()) => {
            account_view(
                &state,
                &ctx,
                &session,
                &user,
                Notice::Done("Two-step sign-in is off."),
            )
            .await
        }
        Err(Error::Invalid(_)) => {
            let refused = Notice::Refused(StatusCode::UNPROCESSABLE_ENTITY, "The code is not right.");
            account_view(&state, &ctx, &session, &user, refused).await
        }
        Err(e) => internal(e),
    }
}

/// `GET /w/{ws}/account/export`: everything the workspace holds about the signed-in user, as a JSON
/// download (their vault values decrypted here for them).
pub(super) async fn export(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    parts: axum::http::request::Parts,
) -> Response {
    let ctx = match page_context(&state, &workspace, &parts.headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (_, user) = match signed_in_user(&ctx) {
        Ok(found) => found,
        Err(r) => return ctx.finish(&state, r),
    };
    let actor = crate::extract::request_actor(&parts, &state);
    match state.services().export_user_data(user, &actor).await {
        Ok(data) => {
            let mut response = axum::Json(data).into_response();
            response.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                axum::http::HeaderValue::from_static("attachment; filename=\"my-data.json\""),
            );
            ctx.finish(&state, response)
        }
        Err(e) => internal(e),
    }
}
