//! Sign-out (`/w/{ws}/logout`): RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), at once
//! with a matching `id_token_hint`, else after the user confirms.

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::Response;
use secureflows_core::audit::Actor;
use secureflows_core::login::oidc::redirect_to;

use super::context::{
    PageContext, SSO_COOKIE, csrf_form, form_post, page_context, query_pairs, see_other, set_cookie,
};
use super::views::{Brand, MessagePage, render};
use crate::extract::request_actor;
use crate::pages::{PageError, PageResult};
use crate::state::AppState;

csrf_form!(LogoutForm {
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
});

#[derive(Debug, Default)]
struct LogoutQuery {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    client_id: Option<String>,
    state: Option<String>,
}

impl LogoutQuery {
    /// The logout parameters of a query string; others are ignored.
    fn parse(query: Option<&str>) -> LogoutQuery {
        let mut q = LogoutQuery::default();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "id_token_hint" => q.id_token_hint = Some(v),
                "post_logout_redirect_uri" => q.post_logout_redirect_uri = Some(v),
                "client_id" => q.client_id = Some(v),
                "state" => q.state = Some(v),
                _ => {}
            }
        }
        q
    }

    /// The hint's claim `name`, if the hint is one of our ID tokens.
    fn hinted(&self, state: &AppState, name: &str) -> Option<String> {
        let claims = state
            .services()
            .tokens
            .verify_id_token_hint(self.id_token_hint.as_deref()?)
            .ok()?;
        claims.get(name).and_then(|v| v.as_str()).map(str::to_owned)
    }
}

/// `GET /w/{ws}/logout`. With a valid `id_token_hint` for the signed-in user the browser is signed out
/// at once; otherwise the user confirms (a form with CSRF protection), so that no other site can sign
/// a user out. `post_logout_redirect_uri` must be registered exactly.
pub(super) async fn logout(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    RawQuery(query): RawQuery,
    parts: axum::http::request::Parts,
) -> PageResult {
    let ctx = page_context(&state, &workspace, &parts.headers).await?;
    let q = LogoutQuery::parse(query.as_deref());
    let target = logout_target(&state, &ctx, &q).await?;
    let matches = match (
        ctx.sso.as_ref().or(ctx.weak_sso.as_ref()),
        q.hinted(&state, "sub"),
    ) {
        (Some((_, user)), Some(sub)) => user.id.to_string() == sub,
        (None, _) => true,
        _ => false,
    };
    if !matches {
        return Ok(confirm_page(&ctx, &q));
    }
    finish_logout(&state, &ctx, &request_actor(&parts, &state), target).await
}

/// `POST /w/{ws}/logout`: the confirmed sign-out.
pub(super) async fn logout_confirm(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let (ctx, form, actor) = form_post::<LogoutForm>(&state, &workspace, request).await?;
    let q = LogoutQuery {
        id_token_hint: None,
        post_logout_redirect_uri: form.post_logout_redirect_uri,
        client_id: form.client_id,
        state: form.state,
    };
    let target = logout_target(&state, &ctx, &q).await?;
    finish_logout(&state, &ctx, &actor, target).await
}

/// Where to go after logout: a registered post-logout URI of the client (with `state`), or nowhere.
async fn logout_target(state: &AppState, ctx: &PageContext, q: &LogoutQuery) -> PageResult<Option<String>> {
    let Some(uri) = &q.post_logout_redirect_uri else {
        return Ok(None);
    };
    let client = q.client_id.clone().or_else(|| q.hinted(state, "aud"));
    let app = match client.and_then(|c| c.parse().ok()) {
        Some(id) => state.services().stores.applications.find_application(id).await?,
        None => None,
    };
    match app {
        Some(app) if app.workspace_id == ctx.workspace && app.post_logout_uris.iter().any(|u| u == uri) => {
            let params: Vec<(&str, &str)> =
                q.state.as_deref().map(|s| vec![("state", s)]).unwrap_or_default();
            Ok(Some(redirect_to(uri, &params)))
        }
        _ => Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "This sign-out link does not work",
            "The address to return to after signing out is not registered for the application that sent you \
             here. You are still signed in; you can sign out from your account page.",
        )
        .way_on(format!("/w/{}/account", ctx.workspace), "Go to your account")),
    }
}

fn confirm_page(ctx: &PageContext, q: &LogoutQuery) -> Response {
    #[derive(askama::Template, Debug)]
    #[template(
        source = r#"{% extends "base.html" %}{% block title %}Sign out{% endblock %}{% block content %}
<h1 id="heading">Sign out?</h1>
<p>Do you want to sign out of {{ brand.name }} on this browser?</p>
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% if let Some(v) = client_id %}<input type="hidden" name="client_id" value="{{ v }}">{% endif %}
{% if let Some(v) = post_logout_redirect_uri %}<input type="hidden" name="post_logout_redirect_uri" value="{{ v }}">{% endif %}
{% if let Some(v) = st %}<input type="hidden" name="state" value="{{ v }}">{% endif %}
<button type="submit" id="confirm-logout">Sign out</button>
</form>{% endblock %}"#,
        ext = "html"
    )]
    struct ConfirmPage {
        brand: Brand,
        action: String,
        csrf: String,
        client_id: Option<String>,
        post_logout_redirect_uri: Option<String>,
        st: Option<String>,
    }
    render(
        StatusCode::OK,
        &ConfirmPage {
            brand: ctx.brand.clone(),
            action: format!("/w/{}/logout", ctx.workspace),
            csrf: ctx.csrf.clone(),
            client_id: q.client_id.clone(),
            post_logout_redirect_uri: q.post_logout_redirect_uri.clone(),
            st: q.state.clone(),
        },
    )
}

async fn finish_logout(
    state: &AppState,
    ctx: &PageContext,
    actor: &Actor,
    target: Option<String>,
) -> PageResult {
    if let Some((browser, _)) = ctx.sso.as_ref().or(ctx.weak_sso.as_ref()) {
        state.services().end_browser_session(browser, actor).await?;
    }
    let mut response = match target {
        Some(url) => see_other(&url),
        None => render(
            StatusCode::OK,
            &MessagePage {
                brand: ctx.brand.clone(),
                heading: "You are signed out".into(),
                message: "You have been signed out on this browser.".into(),
                link: None,
            },
        ),
    };
    let expired = set_cookie(state, ctx.workspace, SSO_COOKIE, "", "Lax", Some(0));
    response.headers_mut().append(header::SET_COOKIE, expired);
    Ok(response)
}
