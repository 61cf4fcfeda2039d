//! Passkeys on the hosted pages. `passkey.js` asks `POST /w/{ws}/passkey/options` for a ceremony (the
//! server keeps its state; the browser gets the `sf_webauthn` cookie), lets the browser's WebAuthn API
//! answer it, and submits the answer with an ordinary CSRF-protected form, so that signing in ends in a
//! normal top-level redirect:
//!
//! * `POST /w/{ws}/passkey/sign-in`: a passkey alone (discoverable credential, user verified);
//! * `POST /w/{ws}/mfa/passkey`: a passkey as the second factor of a pending sign-in;
//! * `POST /w/{ws}/account/passkeys` and `.../remove`: registering and removing one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_core::{AuthFailure, Error, PasskeyId};
use serde::Deserialize;

use super::account::{
    Notice, account_post, account_view, clear_mfa_cookie, enrolled, mfa_form, sign_in_again,
};
use super::pages::{LoginPage, RecoveryCodesPage, render};
use super::{
    CsrfForm, MFA_COOKIE, PageContext, continue_flow, cookie, finish_sign_in, form_post, internal,
    login_form, recently_signed_in, set_cookie,
};
use crate::state::AppState;

const SIGN_IN_AGAIN: &str = "For your security, sign out and sign in again before changing your passkeys.";

/// The ceremony in progress (five minutes).
const CEREMONY_COOKIE: &str = "sf_webauthn";
const CEREMONY_AGE: u64 = 300;

#[derive(Deserialize)]
pub(super) struct OptionsForm {
    csrf: String,
    purpose: String,
}

impl CsrfForm for OptionsForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `POST /w/{ws}/passkey/options`: starts a ceremony (`purpose`: `sign_in`, `second_factor` or
/// `register`) and answers the options for `navigator.credentials` as JSON.
pub(super) async fn options(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let pending = cookie(request.headers(), MFA_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = match form_post::<OptionsForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(_) => {
            return json_error(
                StatusCode::FORBIDDEN,
                "This page expired. Reload it and try again.",
            );
        }
    };
    let services = state.services();
    if !services.passkeys_available() {
        return json_error(
            StatusCode::NOT_FOUND,
            "Passkeys are not available on this server.",
        );
    }
    let started = match form.purpose.as_str() {
        "sign_in" => {
            let address = actor.client_ip.clone().unwrap_or_default();
            if let Some(retry) = state.sign_in_limits().check_address(address) {
                return json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "Too many sign-in attempts. Try again in {} seconds.",
                        retry.as_secs().max(1)
                    ),
                );
            }
            services.start_passkey_sign_in(ctx.workspace).await
        }
        "second_factor" => {
            services
                .start_passkey_second_factor(ctx.workspace, &pending)
                .await
        }
        "enrol" => services.start_passkey_enrolment(ctx.workspace, &pending).await,
        "register" => match &ctx.sso {
            Some((session, _)) if !recently_signed_in(&state, session) => {
                return json_error(StatusCode::FORBIDDEN, SIGN_IN_AGAIN);
            }
            Some((_, user)) => services.start_passkey_registration(user).await,
            None => return json_error(StatusCode::UNAUTHORIZED, "Sign in first."),
        },
        _ => return json_error(StatusCode::BAD_REQUEST, "Unknown passkey request."),
    };
    let challenge = match started {
        Ok(c) => c,
        Err(Error::NotFound(_)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or was completed already. Please sign in again.",
            );
        }
        Err(Error::Invalid(errors)) => {
            let message = errors.first().map(|e| e.message.clone()).unwrap_or_default();
            return json_error(StatusCode::UNPROCESSABLE_ENTITY, &message);
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a passkey ceremony failed");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again.");
        }
    };
    let mut response = Json(challenge.options).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.append(
        header::SET_COOKIE,
        set_cookie(
            &state,
            ctx.workspace,
            CEREMONY_COOKIE,
            challenge.token.expose(),
            "Strict",
            Some(CEREMONY_AGE),
        ),
    );
    ctx.finish(&state, response)
}

fn clear_ceremony(state: &AppState, ctx: &PageContext, mut response: Response) -> Response {
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, ctx.workspace, CEREMONY_COOKIE, "", "Strict", Some(0)),
    );
    response
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    csrf: String,
    flow: Option<String>,
    credential: String,
}

impl CsrfForm for SignInForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn passkey_refused(ctx: &PageContext, flow: Option<String>) -> LoginPage {
    login_form(
        ctx,
        flow,
        String::new(),
        Some("That passkey could not sign you in. Try again, or use your password.".into()),
    )
}

/// `POST /w/{ws}/passkey/sign-in`: signs in with a passkey alone.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let ceremony = cookie(request.headers(), CEREMONY_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = match form_post::<SignInForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let answer: serde_json::Value = serde_json::from_str(&form.credential).unwrap_or_default();
    let services = state.services();
    let response = match services
        .finish_passkey_sign_in(ctx.workspace, &ceremony, &answer, &actor)
        .await
    {
        Ok((user, login)) => {
            let response = continue_flow(&state, &ctx, form.flow.as_deref(), &login.session).await;
            finish_sign_in(&state, &ctx, &user, &login, false, response).await
        }
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => ctx.finish(
            &state,
            render(StatusCode::UNAUTHORIZED, &passkey_refused(&ctx, form.flow)),
        ),
        Err(e) => internal(e),
    };
    clear_ceremony(&state, &ctx, response)
}

#[derive(Deserialize)]
pub(super) struct CredentialForm {
    csrf: String,
    credential: String,
}

impl CsrfForm for CredentialForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/mfa/passkey`: completes a pending sign-in with a passkey.
pub(super) async fn second_factor(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let pending = cookie(request.headers(), MFA_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let ceremony = cookie(request.headers(), CEREMONY_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = match form_post::<CredentialForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let answer: serde_json::Value = serde_json::from_str(&form.credential).unwrap_or_default();
    let services = state.services();
    let response = match services
        .finish_passkey_second_factor(ctx.workspace, &pending, &ceremony, &answer, &actor)
        .await
    {
        Ok(signed) => {
            let flow = signed.flow.map(|f| f.to_string());
            let response =
                super::signed_in(&state, &ctx, flow.as_deref(), &signed.user, signed.step, false).await;
            clear_mfa_cookie(&state, &ctx, response)
        }
        Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            let factors = services
                .pending_second_factor(ctx.workspace, &pending)
                .await
                .ok()
                .flatten();
            let page = mfa_form(
                &ctx,
                factors,
                Some("That passkey could not confirm it is you. Try again.".into()),
            );
            ctx.finish(&state, render(StatusCode::UNAUTHORIZED, &page))
        }
        Err(Error::NotFound(_)) => sign_in_again(&ctx, &state),
        Err(e) => internal(e),
    };
    clear_ceremony(&state, &ctx, response)
}

#[derive(Deserialize)]
pub(super) struct RegisterForm {
    csrf: String,
    #[serde(default)]
    name: String,
    credential: String,
}

impl CsrfForm for RegisterForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/account/passkeys`: registers the passkey the browser just created.
pub(super) async fn register(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let ceremony = cookie(request.headers(), CEREMONY_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor, session, user) =
        match account_post::<RegisterForm>(&state, &workspace, request).await {
            Ok(posted) => posted,
            Err(r) => return r,
        };
    if !recently_signed_in(&state, &session) {
        let refused = Notice::Refused(StatusCode::FORBIDDEN, SIGN_IN_AGAIN);
        let response = account_view(&state, &ctx, &session, &user, refused).await;
        return clear_ceremony(&state, &ctx, response);
    }
    let answer: serde_json::Value = serde_json::from_str(&form.credential).unwrap_or_default();
    let added = state
        .services()
        .finish_passkey_registration(&user, &ceremony, &form.name, &answer, &actor)
        .await;
    // This browser just proved the new passkey: its session keeps meeting the user's factors.
    if added.is_ok()
        && let Err(e) = state.services().add_session_factor(&session, "hwk").await
    {
        return internal(e);
    }
    let notice = match added {
        Ok((_, Some(codes))) => {
            let page = RecoveryCodesPage {
                brand: ctx.brand.clone(),
                notice: Some("The passkey was added.".into()),
                codes,
                account_link: format!("/w/{}/account", ctx.workspace),
            };
            let response = ctx.finish(&state, render(StatusCode::OK, &page));
            return clear_ceremony(&state, &ctx, response);
        }
        Ok((_, None)) => Notice::Done("The passkey was added."),
        Err(Error::Invalid(_)) => Notice::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The passkey could not be added. Please try again.",
        ),
        Err(Error::Conflict(_)) => {
            Notice::Refused(StatusCode::CONFLICT, "That passkey is registered already.")
        }
        Err(e) => return internal(e),
    };
    let response = account_view(&state, &ctx, &session, &user, notice).await;
    clear_ceremony(&state, &ctx, response)
}

#[derive(Deserialize)]
pub(super) struct RemoveForm {
    csrf: String,
    passkey: String,
}

impl CsrfForm for RemoveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /w/{ws}/account/passkeys/remove`: removes one of the user's passkeys.
pub(super) async fn remove(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (ctx, form, actor, session, user) =
        match account_post::<RemoveForm>(&state, &workspace, request).await {
            Ok(posted) => posted,
            Err(r) => return r,
        };
    if !recently_signed_in(&state, &session) {
        let refused = Notice::Refused(StatusCode::FORBIDDEN, SIGN_IN_AGAIN);
        return account_view(&state, &ctx, &session, &user, refused).await;
    }
    let Ok(id) = form.passkey.parse::<PasskeyId>() else {
        let refused = Notice::Refused(StatusCode::BAD_REQUEST, "There is no such passkey.");
        return account_view(&state, &ctx, &session, &user, refused).await;
    };
    let notice = match state.services().remove_passkey(&user, id, &actor).await {
        Ok(()) => Notice::Done("The passkey was removed."),
        Err(Error::NotFound(_)) => Notice::Refused(StatusCode::NOT_FOUND, "There is no such passkey."),
        Err(e) => return internal(e),
    };
    account_view(&state, &ctx, &session, &user, notice).await
}

/// `POST /w/{ws}/mfa/setup/passkey`: the second factor the workspace requires, set up as a passkey;
/// signs in and shows the recovery codes with the way on.
pub(super) async fn enrol(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let pending = cookie(request.headers(), MFA_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let ceremony = cookie(request.headers(), CEREMONY_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let (ctx, form, actor) = match form_post::<RegisterForm>(&state, &workspace, request).await {
        Ok(posted) => posted,
        Err(r) => return r,
    };
    let answer: serde_json::Value = serde_json::from_str(&form.credential).unwrap_or_default();
    let response = match state
        .services()
        .complete_passkey_enrolment(ctx.workspace, &pending, &ceremony, &form.name, &answer, &actor)
        .await
    {
        Ok((signed, codes)) => {
            let notice = Some("The passkey was added.".to_owned());
            enrolled(&state, &ctx, signed, codes, notice).await
        }
        Err(Error::Invalid(_) | Error::Conflict(_)) => ctx.finish(
            &state,
            super::pages::error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                ctx.brand.clone(),
                "The passkey could not be added. Go back and try again.",
            ),
        ),
        Err(Error::NotFound(_)) => sign_in_again(&ctx, &state),
        Err(e) => internal(e),
    };
    clear_ceremony(&state, &ctx, response)
}
