//! Applications: the list, registering one (its secret shown once), its page with ready-to-paste
//! snippets and its settings, rotating its secret and deleting it (both confirmed first). Each change
//! calls the service the management API calls.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use secureflows_core::workspace::{ApplicationPatch, NewApplication};
use secureflows_core::{Application, ApplicationKind, Error, UpstreamTrust};

use super::context::{Browser, ConfirmForm, Console, console, console_form, path_id};
use super::views::{Shell, confirm, error_lines, when};
use crate::pages::{PageResult, render, see_other};
use crate::state::AppState;

/// An application as the pages show it.
struct AppRow {
    id: String,
    name: String,
    kind: &'static str,
    console: bool,
    confidential: bool,
    created: String,
}

impl AppRow {
    fn of(app: &Application) -> AppRow {
        AppRow {
            id: app.id.to_string(),
            name: app.name.clone(),
            kind: app.kind.as_str(),
            console: app.console,
            confidential: !app.is_public(),
            created: when(app.created_at),
        }
    }
}

/// What the application form shows (as entered, or as stored).
#[derive(Default)]
pub(super) struct AppFields {
    name: String,
    kind: String,
    redirect_uris: String,
    post_logout_uris: String,
    allowed_origins: String,
    allow_anonymous: bool,
    token_minutes: String,
    data_hours: String,
    trust_issuer: String,
    trust_audience: String,
}

impl AppFields {
    fn of(app: &Application) -> AppFields {
        AppFields {
            name: app.name.clone(),
            kind: app.kind.as_str().into(),
            redirect_uris: app.redirect_uris.join("\n"),
            post_logout_uris: app.post_logout_uris.join("\n"),
            allowed_origins: app.allowed_origins.join("\n"),
            allow_anonymous: app.allow_anonymous,
            token_minutes: (app.token_ttl.as_secs() / 60).max(1).to_string(),
            data_hours: (app.data_ttl.as_secs() / 3600).max(1).to_string(),
            trust_issuer: app.trust.as_ref().map(|t| t.issuer.clone()).unwrap_or_default(),
            trust_audience: app.trust.as_ref().map(|t| t.audience.clone()).unwrap_or_default(),
        }
    }
}

// The application form as posted.
crate::pages::csrf_form!(AppForm {
    #[serde(default)]
    name: String,
    kind: Option<String>,
    #[serde(default)]
    redirect_uris: String,
    #[serde(default)]
    post_logout_uris: String,
    #[serde(default)]
    allowed_origins: String,
    allow_anonymous: Option<String>,
    #[serde(default)]
    token_minutes: String,
    #[serde(default)]
    data_hours: String,
    #[serde(default)]
    trust_issuer: String,
    #[serde(default)]
    trust_audience: String,
});

impl AppForm {
    fn fields(&self) -> AppFields {
        AppFields {
            name: self.name.clone(),
            kind: self.kind.clone().unwrap_or_default(),
            redirect_uris: self.redirect_uris.clone(),
            post_logout_uris: self.post_logout_uris.clone(),
            allowed_origins: self.allowed_origins.clone(),
            allow_anonymous: self.allow_anonymous.is_some(),
            token_minutes: self.token_minutes.clone(),
            data_hours: self.data_hours.clone(),
            trust_issuer: self.trust_issuer.clone(),
            trust_audience: self.trust_audience.clone(),
        }
    }

    /// The settings every form has, parsed; a field that cannot be read is an `Invalid` error. The
    /// trusted issuer's second-factor lists (set through the API; the form does not show them) are
    /// kept from `stored` while the issuer stays the same.
    fn settings(&self, stored: Option<&UpstreamTrust>) -> Result<Settings, Error> {
        let lines = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let number = |field: &str, text: &str, unit: u64| -> Result<Option<Duration>, Error> {
            match text.trim() {
                "" => Ok(None),
                t => t
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .map(|n| Some(Duration::from_secs(n * unit)))
                    .ok_or_else(|| Error::invalid(field, "must be a whole number")),
            }
        };
        let trust = match (self.trust_issuer.trim(), self.trust_audience.trim()) {
            ("", "") => None,
            (issuer, audience) => {
                let kept = stored.filter(|t| t.issuer == issuer);
                Some(UpstreamTrust {
                    issuer: issuer.to_owned(),
                    audience: audience.to_owned(),
                    second_factor_amr: kept.map(|t| t.second_factor_amr.clone()).unwrap_or_default(),
                    second_factor_acr: kept.map(|t| t.second_factor_acr.clone()).unwrap_or_default(),
                })
            }
        };
        Ok(Settings {
            name: self.name.trim().to_owned(),
            redirect_uris: lines(&self.redirect_uris),
            post_logout_uris: lines(&self.post_logout_uris),
            allowed_origins: lines(&self.allowed_origins),
            allow_anonymous: self.allow_anonymous.is_some(),
            token_ttl: number("token_minutes", &self.token_minutes, 60)?,
            data_ttl: number("data_hours", &self.data_hours, 3600)?,
            trust,
        })
    }
}

struct Settings {
    name: String,
    redirect_uris: Vec<String>,
    post_logout_uris: Vec<String>,
    allowed_origins: Vec<String>,
    allow_anonymous: bool,
    token_ttl: Option<Duration>,
    data_ttl: Option<Duration>,
    trust: Option<UpstreamTrust>,
}

#[derive(Template)]
#[template(path = "console/applications.html")]
struct ListPage {
    shell: Shell,
    apps: Vec<AppRow>,
    own_console: Option<String>,
}

#[derive(Template)]
#[template(path = "console/application_new.html")]
struct NewPage {
    shell: Shell,
    form: AppFields,
    errors: Vec<String>,
    action: String,
    submit: &'static str,
    creating: bool,
}

#[derive(Template)]
#[template(path = "console/application.html")]
struct AppPage {
    shell: Shell,
    app: AppRow,
    secret: Option<String>,
    issuer: String,
    snippet_page: String,
    snippet_curl: String,
    snippet_verify: String,
    editable: bool,
    form: AppFields,
    errors: Vec<String>,
    action: String,
    submit: &'static str,
    creating: bool,
    tiers: super::tiers::TierTable,
}

/// `GET …/applications` (OWNER, ADMIN).
pub(super) async fn list(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/applications"),
    )
    .await?;
    let services = state.services();
    let apps = services.workspace_applications(&c.caller).await?;
    let own_console = apps
        .iter()
        .find(|a| services.is_own_console_client(a))
        .map(|a| a.id.to_string());
    let apps = apps
        .iter()
        .filter(|a| !services.is_own_console_client(a))
        .map(AppRow::of)
        .collect();
    Ok(render(
        StatusCode::OK,
        &ListPage {
            shell: c.shell,
            apps,
            own_console,
        },
    ))
}

/// `GET …/applications/new` (OWNER, ADMIN).
pub(super) async fn new_form(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/applications/new"),
    )
    .await?;
    let defaults = state.services().settings.clone();
    let form = AppFields {
        kind: "browser".into(),
        token_minutes: (defaults.default_token_ttl.as_secs() / 60).max(1).to_string(),
        data_hours: (defaults.default_data_ttl.as_secs() / 3600).max(1).to_string(),
        ..AppFields::default()
    };
    Ok(new_page(c, form, Vec::new(), StatusCode::OK))
}

fn new_page(c: Console, form: AppFields, errors: Vec<String>, status: StatusCode) -> Response {
    let action = c.path("/applications");
    render(
        status,
        &NewPage {
            shell: c.shell,
            form,
            errors,
            action,
            submit: "Register application",
            creating: true,
        },
    )
}

/// `POST …/applications` (OWNER, ADMIN): registers it and shows its page, with a server
/// application's secret this once.
pub(super) async fn create(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/new");
    let (c, form, _): (_, AppForm, _) = console_form(&state, &workspace, &here, request).await?;
    let kind = match form.kind.as_deref() {
        Some(k) => ApplicationKind::parse(k),
        None => Some(ApplicationKind::Browser),
    };
    let parsed = form.settings(None).and_then(|s| {
        let kind = kind.ok_or_else(|| Error::invalid("kind", "choose browser, server or native"))?;
        Ok(NewApplication {
            name: s.name,
            trust: s.trust,
            allowed_origins: s.allowed_origins,
            data_ttl: s.data_ttl,
            token_ttl: s.token_ttl,
            kind: Some(kind),
            public: kind.is_public(),
            redirect_uris: s.redirect_uris,
            post_logout_uris: s.post_logout_uris,
            allow_anonymous: s.allow_anonymous,
            console: false,
            tiers: Vec::new(),
            default_tier: None,
        })
    });
    let created = match parsed {
        Ok(new) => state.services().register_application(&c.caller, new).await,
        Err(e) => Err(e),
    };
    match created {
        Ok((app, secret)) => {
            let secret = secret.map(|s| s.expose().to_owned());
            let mut c = c;
            c.shell.notice = Some(format!("{} is registered.", app.name));
            app_page(&state, c, &app, secret, None, None, StatusCode::CREATED).await
        }
        Err(Error::Invalid(errors)) => {
            let lines = error_lines(&errors, field_label);
            Ok(new_page(
                c,
                form.fields(),
                lines,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET …/applications/{id}` (OWNER, ADMIN).
pub(super) async fn show(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}");
    let c = console(&state, &workspace, &browser, &here).await?;
    let app = state
        .services()
        .workspace_application(&c.caller, path_id(&id)?)
        .await?;
    app_page(&state, c, &app, None, None, None, StatusCode::OK).await
}

/// `POST …/applications/{id}` (OWNER, ADMIN; a console client: OWNER): saves its settings.
pub(super) async fn update(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}");
    let (mut c, form, _): (_, AppForm, _) = console_form(&state, &workspace, &here, request).await?;
    let id = path_id(&id)?;
    let services = state.services();
    let stored = services.workspace_application(&c.caller, id).await?;
    let saved = match form.settings(stored.trust.as_ref()) {
        Ok(s) => {
            let patch = ApplicationPatch {
                name: Some(s.name),
                allowed_origins: Some(s.allowed_origins),
                redirect_uris: Some(s.redirect_uris),
                post_logout_uris: Some(s.post_logout_uris),
                allow_anonymous: Some(s.allow_anonymous),
                trust: Some(s.trust),
                data_ttl: s.data_ttl,
                token_ttl: s.token_ttl,
                // Tiers have a form of their own.
                tiers: None,
                default_tier: None,
            };
            services.update_application(&c.caller, id, patch).await
        }
        Err(e) => Err(e),
    };
    match saved {
        Ok(app) => {
            c.shell.notice = Some("Saved.".into());
            app_page(&state, c, &app, None, None, None, StatusCode::OK).await
        }
        Err(Error::Invalid(errors)) => {
            let lines = error_lines(&errors, field_label);
            app_page(
                &state,
                c,
                &stored,
                None,
                Some((form.fields(), lines)),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET …/applications/{id}/secret`: asks before the secret is replaced.
pub(super) async fn confirm_rotate(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}/secret");
    let c = console(&state, &workspace, &browser, &here).await?;
    let app = state
        .services()
        .workspace_application(&c.caller, path_id(&id)?)
        .await?;
    Ok(confirm_page(
        c,
        &app,
        format!("Rotate the secret of {}?", app.name),
        "The current secret stops working at once: the application's server must be given the new one, \
         which is shown once on the next page.",
        "secret",
        "Rotate the secret",
    ))
}

/// `POST …/applications/{id}/secret` (OWNER, ADMIN): a new secret, shown once.
pub(super) async fn rotate(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}/secret");
    let (mut c, form, _): (_, ConfirmForm, _) = console_form(&state, &workspace, &here, request).await?;
    form.confirmed()?;
    let id = path_id(&id)?;
    let services = state.services();
    let secret = services.rotate_application_secret(&c.caller, id).await?;
    let app = services.workspace_application(&c.caller, id).await?;
    c.shell.notice = Some("The secret is rotated; the old one no longer works.".into());
    app_page(
        &state,
        c,
        &app,
        Some(secret.expose().to_owned()),
        None,
        None,
        StatusCode::OK,
    )
    .await
}

/// `GET …/applications/{id}/delete`: asks before the application is deleted.
pub(super) async fn confirm_delete(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}/delete");
    let c = console(&state, &workspace, &browser, &here).await?;
    let app = state
        .services()
        .workspace_application(&c.caller, path_id(&id)?)
        .await?;
    Ok(confirm_page(
        c,
        &app,
        format!("Delete {}?", app.name),
        "Its users can no longer sign in to it, its session tokens stop working, and the values it stored \
         in the vault are deleted. This cannot be undone.",
        "delete",
        "Delete the application",
    ))
}

/// `POST …/applications/{id}/delete` (OWNER, ADMIN; a console client: OWNER).
pub(super) async fn delete(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}/delete");
    let (c, form, _): (_, ConfirmForm, _) = console_form(&state, &workspace, &here, request).await?;
    form.confirmed()?;
    state
        .services()
        .delete_application(&c.caller, path_id(&id)?)
        .await?;
    Ok(see_other(&c.path("/applications")))
}

fn confirm_page(
    c: Console,
    app: &Application,
    heading: String,
    message: &str,
    what: &str,
    button: &'static str,
) -> Response {
    let action = c.path(&format!("/applications/{}/{what}", app.id));
    let back = c.path(&format!("/applications/{}", app.id));
    confirm(c, heading, message, action, button, back)
}

/// The application's page; `entered` and `tiers` re-show a form as posted, with its errors.
pub(super) async fn app_page(
    state: &AppState,
    c: Console,
    app: &Application,
    secret: Option<String>,
    entered: Option<(AppFields, Vec<String>)>,
    tiers: Option<super::tiers::TierTable>,
    status: StatusCode,
) -> PageResult {
    let services = state.services();
    let stripe_configured = services
        .stores
        .billing
        .billing_secret(app.workspace_id, app.id)
        .await?
        .is_some();
    let base_url = state.issuer().trim_end_matches('/').to_owned();
    let fresh = super::tiers::TierTable::of(app, stripe_configured, &base_url);
    let tiers = match tiers {
        Some(t) => super::tiers::TierTable {
            stripe_configured,
            webhook_url: fresh.webhook_url.clone(),
            ..t
        },
        None => fresh,
    };
    let issuer = services.issuer_of(app.workspace_id);
    let base = state.issuer().trim_end_matches('/');
    let editable = !app.console || c.caller.role() == secureflows_core::Role::Owner;
    let (form, errors) = entered.unwrap_or_else(|| (AppFields::of(app), Vec::new()));
    let action = c.path(&format!("/applications/{}", app.id));
    Ok(render(
        status,
        &AppPage {
            tiers,
            snippet_page: snippet_page(&issuer, app),
            snippet_curl: snippet_curl(base, &issuer, app),
            snippet_verify: snippet_verify(base, &issuer, app),
            app: AppRow::of(app),
            shell: c.shell,
            secret,
            issuer,
            editable,
            form,
            errors,
            action,
            submit: "Save changes",
            creating: false,
        },
    ))
}

fn field_label(field: &str) -> &'static str {
    match field {
        "name" => "Name",
        "kind" => "Kind",
        "public" => "Kind",
        "redirect_uris" => "Redirect URIs",
        "post_logout_uris" => "Sign-out return URIs",
        "allowed_origins" => "Allowed origins",
        "token_minutes" | "token_ttl" => "Session token lifetime",
        "data_hours" | "session_ttl" | "data_ttl" => "Vault data lifetime",
        "trust_issuer" | "trust" => "Trusted upstream issuer",
        "trust_audience" => "Audience",
        _ => "Settings",
    }
}

/// A web page's sign-in: PKCE, the hosted login, the code exchanged for the session token.
fn snippet_page(issuer: &str, app: &Application) -> String {
    let redirect = app
        .redirect_uris
        .first()
        .cloned()
        .unwrap_or_else(|| "https://app.example.com/callback".into());
    format!(
        r#"<script type="module">
const issuer = {issuer};
const clientId = {id};
const redirectUri = {redirect};
const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const params = new URLSearchParams(location.search);
let sessionToken = null; // in memory only

if (params.has("code")) {{
  const state = sessionStorage.getItem("sf_state");
  const verifier = sessionStorage.getItem("sf_verifier");
  sessionStorage.removeItem("sf_state");
  sessionStorage.removeItem("sf_verifier");
  if (params.get("state") !== state) throw new Error("state mismatch");
  const res = await fetch(issuer + "/token", {{
    method: "POST",
    body: new URLSearchParams({{ grant_type: "authorization_code", code: params.get("code"),
      redirect_uri: redirectUri, client_id: clientId, code_verifier: verifier }}),
  }});
  sessionToken = (await res.json()).access_token;
  history.replaceState(null, "", redirectUri);
}}

export async function signIn() {{
  const verifier = b64(crypto.getRandomValues(new Uint8Array(32)));
  const state = b64(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = b64(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem("sf_state", state);
  sessionStorage.setItem("sf_verifier", verifier);
  location.assign(issuer + "/authorize?" + new URLSearchParams({{ response_type: "code",
    client_id: clientId, redirect_uri: redirectUri, scope: "openid", state,
    code_challenge: challenge, code_challenge_method: "S256" }}));
}}
</script>"#,
        issuer = js(issuer),
        id = js(&app.id.to_string()),
        redirect = js(&redirect),
    )
}

/// A JavaScript string literal (JSON is a subset), whatever the text holds.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// A single-quoted shell word, whatever the text holds.
fn sh(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// curl: a guest session when the application allows one (else the code exchange), and the vault.
fn snippet_curl(base: &str, issuer: &str, app: &Application) -> String {
    let get_token = if app.allow_anonymous {
        format!(
            "# A guest session (this application allows guest sessions):\n\
             TOKEN=$(curl -s -X POST {base}/api/v1/auth/anonymous \\\n  \
             -H 'Content-Type: application/json' -d '{{\"client_id\": \"{id}\"}}' | jq -r .sessionToken)",
            id = app.id
        )
    } else {
        let auth = if app.is_public() {
            format!("-d client_id={}", app.id)
        } else {
            format!("-u {}:$CLIENT_SECRET", app.id)
        };
        format!(
            "# After a sign-in, exchange the code the browser brought back (with its PKCE verifier):\n\
             TOKEN=$(curl -s -X POST {issuer}/token {auth} \\\n  \
             -d grant_type=authorization_code -d code=$CODE -d code_verifier=$VERIFIER \\\n  \
             --data-urlencode redirect_uri={redirect} | jq -r .access_token)",
            redirect = sh(app
                .redirect_uris
                .first()
                .map(String::as_str)
                .unwrap_or("https://app.example.com/callback")),
        )
    };
    format!(
        "{get_token}\n\n\
         # Store a value in the user's vault, and read it back:\n\
         curl -s -X POST {base}/api/v1/sessions/set/greeting -H \"Authorization: Bearer $TOKEN\" \\\n  \
         -H 'Content-Type: text/plain' --data 'hello from the vault'\n\
         curl -s {base}/api/v1/sessions/get/greeting -H \"Authorization: Bearer $TOKEN\""
    )
}

/// Node.js with `jose`: offline verification against the server's keys.
fn snippet_verify(base: &str, issuer: &str, app: &Application) -> String {
    format!(
        r#"import {{ createRemoteJWKSet, jwtVerify }} from "jose";

const keys = createRemoteJWKSet(new URL({jwks}));

export async function verifySessionToken(token) {{
  const {{ payload }} = await jwtVerify(token, keys, {{
    issuer: {issuer},
    audience: {id},
    typ: "sf-session+jwt",
  }});
  return payload; // payload.sub is the user; revocation shows at the server within seconds
}}"#,
        jwks = js(&format!("{base}/.well-known/jwks.json")),
        issuer = js(issuer),
        id = js(&app.id.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_quote_what_they_hold() {
        assert_eq!(
            sh("https://x/cb?a=1;curl${IFS}evil|sh"),
            "'https://x/cb?a=1;curl${IFS}evil|sh'"
        );
        assert_eq!(sh("it's"), "'it'\\''s'");
        assert_eq!(js("a\"b</script>\\"), "\"a\\\"b</script>\\\\\"");
    }

    #[test]
    fn saving_keeps_the_trusted_issuers_second_factor_lists() {
        let stored = UpstreamTrust {
            issuer: "https://accounts.example".into(),
            audience: "aud".into(),
            second_factor_amr: vec!["mfa".into()],
            second_factor_acr: vec!["loa2".into()],
        };
        let form = |issuer: &str| AppForm {
            csrf: String::new(),
            name: "App".into(),
            kind: None,
            redirect_uris: String::new(),
            post_logout_uris: String::new(),
            allowed_origins: String::new(),
            allow_anonymous: None,
            token_minutes: String::new(),
            data_hours: String::new(),
            trust_issuer: issuer.into(),
            trust_audience: "aud2".into(),
        };
        let kept = form("https://accounts.example")
            .settings(Some(&stored))
            .unwrap()
            .trust
            .unwrap();
        assert_eq!(
            (kept.audience.as_str(), kept.second_factor_amr.clone()),
            ("aud2", vec!["mfa".to_owned()])
        );
        assert_eq!(kept.second_factor_acr, ["loa2"]);
        let other = form("https://other.example")
            .settings(Some(&stored))
            .unwrap()
            .trust
            .unwrap();
        assert!(
            other.second_factor_amr.is_empty(),
            "another issuer starts with none"
        );
    }
}
