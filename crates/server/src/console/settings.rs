//! The workspace's settings: name, branding, sign-in policy (OWNER), upstream sign-in providers, and
//! the server's own settings shown read-only with the configuration key that sets each.

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use secureflows_core::login::federation::NewProvider;
use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::login::{Branding, LoginPolicy, MfaRequirement, SignupMode};
use secureflows_core::{Error, FieldError, ProviderKind, Role};
use secureflows_crypto::SecretString;

use super::context::{Browser, ConfirmForm, Console, console, console_form, path_id};
use super::views::{Shell, confirm, error_lines};
use crate::pages::{PageError, PageResult, render, see_other};
use crate::state::AppState;

struct ProviderRow {
    id: String,
    name: String,
    issuer: String,
    client_id: String,
}

#[derive(Template)]
#[template(path = "console/settings.html")]
struct SettingsPage {
    shell: Shell,
    name: String,
    color: String,
    logo_url: String,
    owner: bool,
    password: &'static str,
    mfa: &'static str,
    signup: &'static str,
    providers: Vec<ProviderRow>,
    upstream_callback: String,
    instance: Vec<(&'static str, String, &'static str)>,
    errors: Vec<String>,
}

/// `GET …/settings` (OWNER, ADMIN).
pub(super) async fn settings(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/settings"),
    )
    .await?;
    settings_page(&state, c, Vec::new(), StatusCode::OK).await
}

async fn settings_page(
    state: &AppState,
    c: Console,
    errors: Vec<FieldError>,
    status: StatusCode,
) -> PageResult {
    let services = state.services();
    // The page shows the workspace as it is now (a change just made included).
    let w = services.get_workspace(c.workspace()).await?;
    let providers = services.list_identity_providers(&c.caller).await?;
    let config = state.config();
    let not_set = || "not set".to_owned();
    let instance = vec![
        ("Public URL", state.issuer().to_owned(), "server.public_url"),
        (
            "Accepted host names",
            if config.server.public_hosts.is_empty() {
                "any".into()
            } else {
                config.server.public_hosts.join(", ")
            },
            "server.public_hosts",
        ),
        (
            "Outgoing mail (SMTP)",
            config.smtp.host.as_ref().map_or_else(not_set, |h| {
                format!("{h}:{} ({})", config.smtp.port, config.smtp.tls)
            }),
            "smtp.host",
        ),
        (
            "Token signing algorithm",
            config.keys.signing_algorithm.clone(),
            "keys.signing_algorithm",
        ),
        (
            "Session token lifetime (default)",
            format!("{} minutes", services.settings.default_token_ttl.as_secs() / 60),
            "tokens.ttl_secs",
        ),
        ("Plan limits", format!("plan {}", w.plan.as_str()), "plans.<name>"),
    ];
    Ok(render(
        status,
        &SettingsPage {
            name: w.name.clone(),
            color: w.branding.color.clone().unwrap_or_default(),
            logo_url: w.branding.logo_url.clone().unwrap_or_default(),
            owner: c.caller.role() == Role::Owner,
            password: w.login_policy.password.as_str(),
            mfa: w.login_policy.mfa.as_str(),
            signup: w.login_policy.signup.as_str(),
            providers: providers
                .into_iter()
                .map(|p| ProviderRow {
                    id: p.id.to_string(),
                    name: p.name,
                    issuer: p.issuer,
                    client_id: p.client_id,
                })
                .collect(),
            upstream_callback: format!("{}/upstream/callback", services.issuer_of(w.id)),
            instance,
            errors: error_lines(&errors, label),
            shell: c.shell,
        },
    ))
}

fn label(field: &str) -> &'static str {
    match field {
        "name" => "Workspace name",
        "color" => "Accent colour",
        "logo_url" => "Logo URL",
        "password" | "mfa" | "signup" => "Sign-in policy",
        "issuer" => "Issuer URL",
        "client_id" => "Client id",
        "client_secret" => "Client secret",
        "kind" => "Provider",
        _ => "Settings",
    }
}

/// Answers a settings form: the page with a notice, or with what to fix.
async fn answer(state: &AppState, mut c: Console, done: Result<(), Error>, notice: &str) -> PageResult {
    match done {
        Ok(()) => {
            c.shell.notice = Some(notice.into());
            settings_page(state, c, Vec::new(), StatusCode::OK).await
        }
        Err(Error::Invalid(errors)) => {
            settings_page(state, c, errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => Err(e.into()),
    }
}

crate::pages::csrf_form!(NameForm {
    #[serde(default)]
    name: String,
});

/// `POST …/settings/name` (OWNER, ADMIN).
pub(super) async fn rename(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/settings");
    let (c, form, _): (_, NameForm, _) = console_form(&state, &workspace, &here, request).await?;
    let done = state
        .services()
        .rename_workspace(&c.caller, form.name.trim())
        .await
        .map(|_| ());
    answer(&state, c, done, "The workspace is renamed.").await
}

crate::pages::csrf_form!(BrandingForm {
    #[serde(default)]
    color: String,
    #[serde(default)]
    logo_url: String,
});

/// `POST …/settings/branding` (OWNER, ADMIN).
pub(super) async fn branding(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/settings");
    let (c, form, _): (_, BrandingForm, _) = console_form(&state, &workspace, &here, request).await?;
    let optional = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let branding = Branding {
        color: optional(&form.color).map(|c| c.to_ascii_lowercase()),
        logo_url: optional(&form.logo_url),
    };
    let done = state
        .services()
        .set_branding(&c.caller, branding)
        .await
        .map(|_| ());
    answer(
        &state,
        c,
        done,
        "The branding is saved; the sign-in pages show it now.",
    )
    .await
}

crate::pages::csrf_form!(PolicyForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    mfa: String,
    #[serde(default)]
    signup: String,
});

/// `POST …/settings/policy` (OWNER).
pub(super) async fn policy(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/settings");
    let (c, form, _): (_, PolicyForm, _) = console_form(&state, &workspace, &here, request).await?;
    let parsed = match (
        PasswordPolicy::parse(&form.password),
        MfaRequirement::parse(&form.mfa),
        SignupMode::parse(&form.signup),
    ) {
        (Some(password), Some(mfa), Some(signup)) => Ok(LoginPolicy {
            password,
            mfa,
            signup,
        }),
        _ => Err(Error::invalid("password", "choose one of each")),
    };
    let done = match parsed {
        Ok(policy) => state
            .services()
            .set_login_policy(&c.caller, policy)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    answer(&state, c, done, "The sign-in policy is saved.").await
}

crate::pages::csrf_form!(ProviderForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    client_secret: Option<SecretString>,
});

/// `POST …/settings/providers` (OWNER, ADMIN).
pub(super) async fn add_provider(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/settings");
    let (c, form, _): (_, ProviderForm, _) = console_form(&state, &workspace, &here, request).await?;
    let optional = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let done = match ProviderKind::parse(&form.kind) {
        Some(kind) => {
            let new = NewProvider {
                kind,
                name: optional(&form.name),
                issuer: optional(&form.issuer),
                client_id: form.client_id,
                client_secret: form.client_secret.filter(|s| !s.expose().is_empty()),
            };
            state
                .services()
                .add_identity_provider(&c.caller, new)
                .await
                .map(|_| ())
        }
        None => Err(Error::invalid("kind", "choose Google or OpenID Connect")),
    };
    answer(&state, c, done, "The provider is added to the sign-in page.").await
}

/// `GET …/settings/providers/{id}/remove`: asks first.
pub(super) async fn confirm_remove(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/settings/providers/{id}/remove");
    let c = console(&state, &workspace, &browser, &here).await?;
    let id = path_id(&id)?;
    let providers = state.services().list_identity_providers(&c.caller).await?;
    let provider = providers
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(PageError::no_such_page)?;
    let action = c.path(&format!("/settings/providers/{id}/remove"));
    let back = c.path("/settings");
    Ok(confirm(
        c,
        format!("Remove {}?", provider.name),
        "Its button leaves the sign-in page. Accounts that signed in with it stay, and can sign in another way.",
        action,
        "Remove the provider",
        back,
    ))
}

/// `POST …/settings/providers/{id}/remove` (OWNER, ADMIN).
pub(super) async fn remove_provider(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/settings/providers/{id}/remove");
    let (c, form, _): (_, ConfirmForm, _) = console_form(&state, &workspace, &here, request).await?;
    form.confirmed()?;
    state
        .services()
        .remove_identity_provider(&c.caller, path_id(&id)?)
        .await?;
    Ok(see_other(&c.path("/settings")))
}
