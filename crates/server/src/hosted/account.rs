//! The signed-in user's account page (`/w/{ws}/account`): browsers and sign-in history, password,
//! TOTP enrolment, the data export. Passkeys and linked providers have their own modules.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use secureflows_core::audit::Actor;
use secureflows_core::{AuthFailure, BrowserSession, Error, User};
use secureflows_crypto::SecretString;

use super::context::{CsrfForm, PageContext, csrf_form, form_post, page_context};
use super::mfa::{CodeForm, WRONG_SETUP_CODE, setup_page};
use super::views::{AccountPage, HistoryRow, PasskeyRow, RecoveryCodesPage, SessionRow, render};
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

csrf_form!(SessionForm { session: String });
csrf_form!(CsrfOnly {});
csrf_form!(PasswordForm {
    current: String,
    new: String,
});

/// What the account page reports about the last action.
pub(super) enum Notice {
    None,
    Done(&'static str),
    Refused(StatusCode, &'static str),
}

/// SECURITY: changing a second factor needs a sign-in at most 15 minutes old, so that a stolen session
/// cookie alone cannot plant an attacker's authenticator (and lock the owner out) or remove one.
fn sign_in_again_first() -> Notice {
    Notice::Refused(
        StatusCode::FORBIDDEN,
        "For your security, sign out and sign in again before changing two-step sign-in.",
    )
}

/// A page of a signed-in browser: its context, session and user.
pub(super) struct SignedIn {
    pub ctx: PageContext,
    pub session: BrowserSession,
    pub user: User,
}

impl SignedIn {
    /// The signed-in browser of `ctx`; one that is not goes to the sign-in page.
    pub fn of(ctx: PageContext) -> PageResult<SignedIn> {
        match ctx.sso.clone() {
            Some((session, user)) => Ok(SignedIn { ctx, session, user }),
            None => Err(PageError::see_other(ctx.login_link(None))),
        }
    }

    /// The account page, reporting `notice`.
    pub async fn view(&self, state: &AppState, notice: Notice) -> PageResult {
        account_view(state, &self.ctx, &self.session, &self.user, notice).await
    }

    /// Whether the browser signed in recently enough to change how its user signs in.
    pub fn recent(&self, state: &AppState) -> bool {
        state.services().signed_in_recently(&self.session)
    }
}

/// Reads an account-page form of a signed-in browser.
pub(super) async fn account_post<T: CsrfForm>(
    state: &AppState,
    workspace: &str,
    request: Request,
) -> PageResult<(SignedIn, T, Actor)> {
    let (ctx, form, actor) = form_post::<T>(state, workspace, request).await?;
    Ok((SignedIn::of(ctx)?, form, actor))
}

/// `GET /w/{ws}/account`: the account security page.
pub(super) async fn account_page(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &headers).await?;
    if ctx.weak_sso.is_some() {
        return super::authorize::step_up(&state, &ctx, None).await;
    }
    SignedIn::of(ctx)?.view(&state, Notice::None).await
}

/// The account page of `user`, signed in with `session`, reporting `notice`.
pub(super) async fn account_view(
    state: &AppState,
    ctx: &PageContext,
    session: &BrowserSession,
    user: &User,
    notice: Notice,
) -> PageResult {
    let services = state.services();
    let overview = services.account_overview(session, user).await?;
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
        sessions: overview.sessions.into_iter().map(SessionRow::of).collect(),
        history: overview.history.into_iter().map(HistoryRow::of).collect(),
        end_action: format!("/w/{ws}/account/sessions/end"),
        end_others_action: format!("/w/{ws}/account/sessions/end-others"),
        password_action: format!("/w/{ws}/account/password"),
        email: overview.email,
        verified: overview.verified,
        totp: overview.factors.totp,
        recovery_left: overview.factors.recovery_codes_left,
        csrf: ctx.csrf.clone(),
        disable_action: format!("/w/{ws}/account/totp/disable"),
        setup_link: format!("/w/{ws}/account/totp"),
        logout_link: format!("/w/{ws}/logout"),
        export_link: format!("/w/{ws}/account/export"),
        passkeys_available: services.passkeys_available(),
        passkeys: overview.passkeys.into_iter().map(PasskeyRow::of).collect(),
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
    Ok(render(code, &page))
}

/// `POST /w/{ws}/account/sessions/end`: signs one of the user's other browsers out.
pub(super) async fn end_session(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (me, form, actor) = account_post::<SessionForm>(&state, &workspace, request).await?;
    let Ok(target) = form.session.parse() else {
        return me
            .view(
                &state,
                Notice::Refused(StatusCode::BAD_REQUEST, "No such session."),
            )
            .await;
    };
    let notice = match state
        .services()
        .end_account_session(&me.session, target, &actor)
        .await
    {
        Ok(()) => Notice::Done("That browser is signed out."),
        Err(Error::NotFound(_)) => Notice::Refused(StatusCode::NOT_FOUND, "No such session."),
        Err(e) => return Err(e.into()),
    };
    me.view(&state, notice).await
}

/// `POST /w/{ws}/account/sessions/end-others`: signs every other browser out.
pub(super) async fn end_others(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (me, _, actor) = account_post::<CsrfOnly>(&state, &workspace, request).await?;
    state.services().end_other_sessions(&me.session, &actor).await?;
    me.view(&state, Notice::Done("Every other browser is signed out."))
        .await
}

/// `POST /w/{ws}/account/password`: changes the password (the current one is required).
pub(super) async fn change_password(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (me, form, actor) = account_post::<PasswordForm>(&state, &workspace, request).await?;
    let (current, new) = (SecretString::new(form.current), SecretString::new(form.new));
    let notice = match state
        .services()
        .change_password(&me.session, &me.user, &current, &new, &actor)
        .await
    {
        Ok(()) => Notice::Done("Your password is changed; other browsers are signed out."),
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            Notice::Refused(StatusCode::UNAUTHORIZED, "The current password is not right.")
        }
        Err(Error::Invalid(_)) => Notice::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The new password does not meet the rules, or appears in a data breach.",
        ),
        Err(e) => return Err(e.into()),
    };
    me.view(&state, notice).await
}

/// `GET /w/{ws}/account/totp`: a new key, its QR code, and the confirmation form.
pub(super) async fn totp_setup(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let me = SignedIn::of(page_context(&state, &workspace, &headers).await?)?;
    if !me.recent(&state) {
        return me.view(&state, sign_in_again_first()).await;
    }
    match state.services().start_totp(&me.user).await {
        Ok(setup) => setup_page(&state, &me.ctx, &setup, "account/totp", None),
        // Enrolled already (another tab): the account page says so.
        Err(Error::Conflict(_)) => Err(PageError::see_other(format!("/w/{}/account", me.ctx.workspace))),
        Err(e) => Err(e.into()),
    }
}

/// `POST /w/{ws}/account/totp`: confirms the key with a code; shows the recovery codes once.
pub(super) async fn totp_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (me, form, actor) = account_post::<CodeForm>(&state, &workspace, request).await?;
    if !me.recent(&state) {
        return me.view(&state, sign_in_again_first()).await;
    }
    let services = state.services();
    let account = || PageError::see_other(format!("/w/{}/account", me.ctx.workspace));
    let codes = match services.confirm_totp(&me.user, &form.code, &actor).await {
        Ok(codes) => codes,
        Err(Error::Invalid(_)) => match services.start_totp(&me.user).await {
            Ok(setup) => return setup_page(&state, &me.ctx, &setup, "account/totp", Some(WRONG_SETUP_CODE)),
            Err(Error::Conflict(_)) => return Err(account()),
            Err(e) => return Err(e.into()),
        },
        Err(Error::Conflict(_) | Error::NotFound(_)) => return Err(account()),
        Err(e) => return Err(e.into()),
    };
    // This browser just proved the new authenticator: its session keeps meeting the user's factors.
    services.add_session_factor(&me.session, "otp").await?;
    let page = RecoveryCodesPage {
        brand: me.ctx.brand.clone(),
        notice: None,
        codes,
        account_link: format!("/w/{}/account", me.ctx.workspace),
    };
    Ok(render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/account/totp/disable`: turns TOTP off with a current or recovery code.
pub(super) async fn totp_disable(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (me, form, actor) = account_post::<CodeForm>(&state, &workspace, request).await?;
    let notice = if !me.recent(&state) {
        sign_in_again_first()
    } else {
        match state.services().disable_totp(&me.user, &form.code, &actor).await {
            Ok(()) => Notice::Done("Two-step sign-in is off."),
            Err(Error::Invalid(_)) => {
                Notice::Refused(StatusCode::UNPROCESSABLE_ENTITY, "The code is not right.")
            }
            Err(e) => return Err(e.into()),
        }
    };
    me.view(&state, notice).await
}

/// `GET /w/{ws}/account/export`: everything the workspace holds about the signed-in user, as a JSON
/// download (their vault values decrypted here for them).
pub(super) async fn export(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    parts: axum::http::request::Parts,
) -> PageResult {
    let me = SignedIn::of(page_context(&state, &workspace, &parts.headers).await?)?;
    let actor = crate::extract::request_actor(&parts, &state);
    let data = state.services().export_user_data(&me.user, &actor).await?;
    let mut response = axum::Json(data).into_response();
    let disposition = HeaderValue::from_static("attachment; filename=\"my-data.json\"");
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, disposition);
    Ok(response)
}
