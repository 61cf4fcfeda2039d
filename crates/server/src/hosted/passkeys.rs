//! Passkeys on the hosted pages. `passkey.js` asks `POST /w/{ws}/passkey/options` for a ceremony (the
//! server keeps its state; the browser gets the `sf_webauthn` cookie), lets the browser's WebAuthn API
//! answer it, and submits the answer with an ordinary CSRF-protected form, so that signing in ends in a
//! normal top-level redirect:
//!
//! * `POST /w/{ws}/passkey/sign-in`: a passkey alone (discoverable credential, user verified);
//! * `POST /w/{ws}/mfa/passkey`: a passkey as the second factor of a pending sign-in;
//! * `POST /w/{ws}/mfa/setup/passkey`: the second factor a workspace requires, set up as a passkey;
//! * `POST /w/{ws}/account/passkeys` and `.../remove`: registering and removing one.
//!
//! Every answer to a ceremony ends its cookie, whatever the outcome (`ending_ceremony`).

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_core::login::passkey::{PasskeyChallenge, PasskeyOptions, PasskeyPurpose};
use secureflows_core::{AuthFailure, Error, PasskeyId};

use super::account::{Notice, SignedIn, account_post};
use super::authorize::continue_flow;
use super::context::{MFA_COOKIE, PageContext, cookie, csrf_form, form_post, set_cookie};
use super::login::{finish_sign_in, login_form};
use super::mfa::{enrolled, or_sign_in_again, second_factor_given};
use super::views::{RecoveryCodesPage, render};
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

const SIGN_IN_AGAIN: &str = "For your security, sign out and sign in again before changing your passkeys.";

/// The ceremony in progress (five minutes).
const CEREMONY_COOKIE: &str = "sf_webauthn";
const CEREMONY_AGE: u64 = 300;

csrf_form!(OptionsForm { purpose: String });
csrf_form!(SignInForm {
    flow: Option<String>,
    credential: String,
});
csrf_form!(CredentialForm { credential: String });
csrf_form!(RegisterForm {
    #[serde(default)]
    name: String,
    credential: String,
});
csrf_form!(RemoveForm { passkey: String });

/// An error for `passkey.js`, which shows `error` beside the button.
fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The ceremony and sign-in step cookies of a request.
fn ceremony_cookies(request: &Request) -> (String, String) {
    let read = |name| cookie(request.headers(), name).unwrap_or_default().to_owned();
    (read(CEREMONY_COOKIE), read(MFA_COOKIE))
}

/// The browser's answer to a ceremony (anything unreadable fails its verification).
fn answer(credential: &str) -> serde_json::Value {
    serde_json::from_str(credential).unwrap_or_default()
}

/// `POST /w/{ws}/passkey/options`: starts a ceremony (`purpose`: `sign_in`, `second_factor`, `enrol` or
/// `register`) and answers the options for `navigator.credentials` as JSON.
pub(super) async fn options(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> Response {
    let (_, pending) = ceremony_cookies(&request);
    let Ok((ctx, form, actor)) = form_post::<OptionsForm>(&state, &workspace, request).await else {
        return json_error(
            StatusCode::FORBIDDEN,
            "This page expired. Reload it and try again.",
        );
    };
    let purpose = match purpose(&state, &form.purpose, actor.client_ip.as_deref()) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let browser = ctx.sso.as_ref().map(|(s, u)| (s, u));
    let started = state
        .services()
        .passkey_options(ctx.workspace, purpose, &pending, browser)
        .await;
    match started {
        Ok(PasskeyOptions::Started(challenge)) => ceremony_started(&state, &ctx, challenge),
        Ok(PasskeyOptions::NotSignedIn) => json_error(StatusCode::UNAUTHORIZED, "Sign in first."),
        Ok(PasskeyOptions::SignInAgain) => json_error(StatusCode::FORBIDDEN, SIGN_IN_AGAIN),
        Err(e) => options_error(e),
    }
}

/// A started ceremony: its options as JSON, and its cookie.
fn ceremony_started(state: &AppState, ctx: &PageContext, challenge: PasskeyChallenge) -> Response {
    let mut response = Json(challenge.options).into_response();
    let token = challenge.token.expose();
    let cookie = set_cookie(
        state,
        ctx.workspace,
        CEREMONY_COOKIE,
        token,
        "Strict",
        Some(CEREMONY_AGE),
    );
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.append(header::SET_COOKIE, cookie);
    response
}

/// The ceremony a page asks for, if passkeys are available, the purpose is known and (signing in) the
/// client address is within the sign-in throttle.
fn purpose(state: &AppState, name: &str, client: Option<&str>) -> Result<PasskeyPurpose, Response> {
    if !state.services().passkeys_available() {
        return Err(json_error(
            StatusCode::NOT_FOUND,
            "Passkeys are not available on this server.",
        ));
    }
    let purpose = PasskeyPurpose::parse(name)
        .ok_or_else(|| json_error(StatusCode::BAD_REQUEST, "Unknown passkey request."))?;
    if purpose == PasskeyPurpose::SignIn
        && let Some(retry) = state
            .sign_in_limits()
            .check_address(client.unwrap_or_default().to_owned())
    {
        let message = format!(
            "Too many sign-in attempts. Try again in {} seconds.",
            retry.as_secs().max(1)
        );
        return Err(json_error(StatusCode::TOO_MANY_REQUESTS, &message));
    }
    Ok(purpose)
}

/// A ceremony that could not start, for `passkey.js`; an internal failure is logged by the envelope.
fn options_error(e: Error) -> Response {
    match e {
        Error::NotFound(_) => json_error(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired or was completed already. Please sign in again.",
        ),
        Error::Invalid(errors) => {
            let message = errors.first().map(|e| e.message.clone()).unwrap_or_default();
            json_error(StatusCode::UNPROCESSABLE_ENTITY, &message)
        }
        e => {
            let failure = crate::failure::Failure::of(&e);
            let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again.");
            if let Some(failure) = failure {
                failure.attach(&mut response);
            }
            response
        }
    }
}

/// A ceremony's answer, whatever its outcome, ends the ceremony cookie.
fn ending_ceremony(state: &AppState, workspace: &str, result: PageResult) -> Response {
    let mut response = result.into_response();
    if let Ok(workspace) = workspace.parse() {
        let expired = set_cookie(state, workspace, CEREMONY_COOKIE, "", "Strict", Some(0));
        response.headers_mut().append(header::SET_COOKIE, expired);
    }
    response
}

/// `POST /w/{ws}/passkey/sign-in`: signs in with a passkey alone.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> Response {
    let (ceremony, _) = ceremony_cookies(&request);
    let result = async {
        let (ctx, form, actor) = form_post::<SignInForm>(&state, &workspace, request).await?;
        let services = state.services();
        match services
            .finish_passkey_sign_in(ctx.workspace, &ceremony, &answer(&form.credential), &actor)
            .await
        {
            Ok((user, login)) => {
                let response = continue_flow(&state, &ctx, form.flow.as_deref(), &login.session).await?;
                finish_sign_in(&state, &ctx, &user, &login, false, response).await
            }
            Err(Error::Unauthenticated(AuthFailure::InvalidCredentials)) => {
                let error = "That passkey could not sign you in. Try again, or use your password.";
                let page = login_form(&ctx, form.flow, String::new(), Some(error.into()));
                Ok(render(StatusCode::UNAUTHORIZED, &page))
            }
            Err(e) => Err(e.into()),
        }
    };
    ending_ceremony(&state, &workspace, result.await)
}

/// `POST /w/{ws}/mfa/passkey`: completes a pending sign-in with a passkey.
pub(super) async fn second_factor(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> Response {
    let (ceremony, pending) = ceremony_cookies(&request);
    let result = async {
        let (ctx, form, actor) = form_post::<CredentialForm>(&state, &workspace, request).await?;
        let services = state.services();
        let answer = answer(&form.credential);
        let given = services
            .finish_passkey_second_factor(ctx.workspace, &pending, &ceremony, &answer, &actor)
            .await;
        let refused = "That passkey could not confirm it is you. Try again.";
        second_factor_given(&state, &ctx, &pending, given, refused).await
    };
    ending_ceremony(&state, &workspace, result.await)
}

/// `POST /w/{ws}/account/passkeys`: registers the passkey the browser just created.
pub(super) async fn register(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> Response {
    let (ceremony, _) = ceremony_cookies(&request);
    let result = async {
        let (me, form, actor) = account_post::<RegisterForm>(&state, &workspace, request).await?;
        if !me.recent(&state) {
            return me
                .view(&state, Notice::Refused(StatusCode::FORBIDDEN, SIGN_IN_AGAIN))
                .await;
        }
        let answer = answer(&form.credential);
        let added = state
            .services()
            .finish_passkey_registration(&me.user, &ceremony, &form.name, &answer, &actor)
            .await;
        let notice = match added {
            Ok((_, codes)) => return added_passkey(&state, &me, codes).await,
            Err(Error::Invalid(_)) => Notice::Refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The passkey could not be added. Please try again.",
            ),
            Err(Error::Conflict(_)) => {
                Notice::Refused(StatusCode::CONFLICT, "That passkey is registered already.")
            }
            Err(e) => return Err(e.into()),
        };
        me.view(&state, notice).await
    };
    ending_ceremony(&state, &workspace, result.await)
}

/// A passkey was added: this browser just proved it, so its session keeps meeting the user's factors;
/// a first second factor comes with recovery codes, shown once.
async fn added_passkey(state: &AppState, me: &SignedIn, codes: Option<Vec<String>>) -> PageResult {
    state.services().add_session_factor(&me.session, "hwk").await?;
    let Some(codes) = codes else {
        return me.view(state, Notice::Done("The passkey was added.")).await;
    };
    let page = RecoveryCodesPage {
        brand: me.ctx.brand.clone(),
        notice: Some("The passkey was added.".into()),
        codes,
        account_link: format!("/w/{}/account", me.ctx.workspace),
    };
    Ok(render(StatusCode::OK, &page))
}

/// `POST /w/{ws}/account/passkeys/remove`: removes one of the user's passkeys.
pub(super) async fn remove(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (me, form, actor) = account_post::<RemoveForm>(&state, &workspace, request).await?;
    let no_such = Notice::Refused(StatusCode::NOT_FOUND, "There is no such passkey.");
    let notice = match form.passkey.parse::<PasskeyId>() {
        _ if !me.recent(&state) => Notice::Refused(StatusCode::FORBIDDEN, SIGN_IN_AGAIN),
        Err(_) => no_such,
        Ok(id) => match state.services().remove_passkey(&me.user, id, &actor).await {
            Ok(()) => Notice::Done("The passkey was removed."),
            Err(Error::NotFound(_)) => no_such,
            Err(e) => return Err(e.into()),
        },
    };
    me.view(&state, notice).await
}

/// `POST /w/{ws}/mfa/setup/passkey`: the second factor the workspace requires, set up as a passkey;
/// signs in and shows the recovery codes with the way on.
pub(super) async fn enrol(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> Response {
    let (ceremony, pending) = ceremony_cookies(&request);
    let result = async {
        let (ctx, form, actor) = form_post::<RegisterForm>(&state, &workspace, request).await?;
        let services = state.services();
        let answer = answer(&form.credential);
        match services
            .complete_passkey_enrolment(ctx.workspace, &pending, &ceremony, &form.name, &answer, &actor)
            .await
        {
            Ok((signed, codes)) => {
                enrolled(&state, &ctx, signed, codes, Some("The passkey was added.".into())).await
            }
            Err(Error::Invalid(_) | Error::Conflict(_)) => Err(PageError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The passkey could not be added",
                "Go back and try again, or set up an authenticator app instead.",
            )
            .way_on(
                format!("/w/{}/mfa/setup", ctx.workspace),
                "Back to setting up two-step sign-in",
            )),
            Err(e) => Err(or_sign_in_again(e)),
        }
    };
    ending_ceremony(&state, &workspace, result.await)
}
