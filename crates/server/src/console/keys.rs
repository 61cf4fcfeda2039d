//! Keys: the workspace's data-key versions and their rotation (OWNER, confirmed first), and the
//! instance's signing keys, read-only.

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;

use super::context::{Browser, ConfirmForm, Console, console, console_form};
use super::views::{Shell, confirm, when};
use crate::pages::{PageResult, render};
use crate::state::AppState;

struct DataKeyRow {
    version: u32,
    active: bool,
    created: String,
}

struct SigningKeyRow {
    kid: String,
    alg: String,
    created: String,
    state: String,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    shell: Shell,
    owner: bool,
    data_keys: Vec<DataKeyRow>,
    signing: Vec<SigningKeyRow>,
    jwks: String,
}

/// `GET …/keys` (OWNER, ADMIN).
pub(super) async fn keys(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/keys"),
    )
    .await?;
    keys_page(&state, c).await
}

async fn keys_page(state: &AppState, c: Console) -> PageResult {
    let (data, signing) = state.services().key_overview(&c.caller).await?;
    Ok(render(
        StatusCode::OK,
        &KeysPage {
            owner: c.caller.role() == secureflows_core::Role::Owner,
            data_keys: data
                .into_iter()
                .map(|k| DataKeyRow {
                    version: k.version,
                    active: k.active,
                    created: when(k.created_at),
                })
                .collect(),
            signing: signing
                .into_iter()
                .map(|k| SigningKeyRow {
                    kid: k.kid,
                    alg: k.alg,
                    created: when(k.created_at),
                    state: k
                        .retired_at
                        .map_or_else(|| "signing".to_owned(), |at| format!("retired {}", when(at))),
                })
                .collect(),
            jwks: format!("{}/.well-known/jwks.json", state.issuer().trim_end_matches('/')),
            shell: c.shell,
        },
    ))
}

/// `GET …/keys/rotate`: asks first.
pub(super) async fn confirm_rotate(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/keys/rotate"),
    )
    .await?;
    let action = c.path("/keys/rotate");
    let back = c.path("/keys");
    Ok(confirm(
        c,
        "Rotate the data key?".into(),
        "A new version seals everything written from now on. Nothing stored is lost: older versions keep \
         opening what they sealed.",
        action,
        "Rotate the data key",
        back,
    ))
}

/// `POST …/keys/rotate` (OWNER).
pub(super) async fn rotate(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/keys/rotate");
    let (mut c, form, _): (_, ConfirmForm, _) = console_form(&state, &workspace, &here, request).await?;
    form.confirmed()?;
    let version = state.services().rotate_data_key_as(&c.caller).await?;
    c.shell.notice = Some(format!("Data key version {version} is now active."));
    keys_page(&state, c).await
}
