//! Members and invitations: who runs the workspace, inviting someone (by e-mail, or a link shown once
//! when no SMTP server is configured), resending and revoking invitations. What is done to one
//! member (role, lock, sign-out, delete) is on their user page (`users`).

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use secureflows_core::members::{CreatedInvite, Delivery};
use secureflows_core::{Error, InviteId, Role};
use serde::Deserialize;

use super::context::{Browser, ConfirmForm, Console, PlainForm, console, console_form, path_id};
use super::views::{Shell, confirm, error_lines, role_label, when};
use crate::pages::{PageResult, render, see_other};
use crate::state::AppState;

/// A member as the list shows them.
pub(super) struct MemberRow {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub status: &'static str,
    pub created: String,
}

impl MemberRow {
    pub fn of(m: &secureflows_core::members::Member) -> MemberRow {
        MemberRow {
            id: m.user.id.to_string(),
            email: m.email.clone().unwrap_or_else(|| "(no address)".into()),
            role: role_label(m.user.role),
            status: m.user.status.as_str(),
            created: when(m.user.created_at),
        }
    }
}

struct InviteRow {
    id: String,
    email: String,
    role: &'static str,
    state: &'static str,
    expires: String,
    open: bool,
}

#[derive(Template)]
#[template(path = "console/members.html")]
struct MembersPage {
    shell: Shell,
    members: Vec<MemberRow>,
    invites: Vec<InviteRow>,
    next_invites: Option<String>,
    invite_link: Option<String>,
    invited: String,
    mail_failed: bool,
    mail: bool,
    outbox: bool,
    may_invite_owner: bool,
    email: String,
    role: String,
    errors: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct InvitesQuery {
    after: Option<String>,
}

/// What a members page shows besides the lists: a notice, a link shown once, a form being fixed.
#[derive(Default)]
struct Outcome {
    notice: Option<String>,
    invite_link: Option<(String, String, bool)>,
    email: String,
    role: String,
    errors: Vec<String>,
}

const INVITES_PER_PAGE: u32 = 50;

/// `GET …/members` (OWNER, ADMIN).
pub(super) async fn members(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<InvitesQuery>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/members"),
    )
    .await?;
    let after = q.after.as_deref().and_then(|a| a.parse().ok());
    members_page(&state, c, after, Outcome::default(), StatusCode::OK).await
}

async fn members_page(
    state: &AppState,
    mut c: Console,
    after: Option<InviteId>,
    outcome: Outcome,
    status: StatusCode,
) -> PageResult {
    let services = state.services();
    let members = services.workspace_admins(&c.caller).await?;
    let invites = services.list_invites(&c.caller, after, INVITES_PER_PAGE).await?;
    let now = services.clock.now();
    let next_invites = (invites.len() == INVITES_PER_PAGE as usize)
        .then(|| {
            invites
                .last()
                .map(|i| c.path(&format!("/members?after={}", i.invite.id)))
        })
        .flatten();
    let invites = invites
        .iter()
        .map(|i| {
            let state = i.invite.state(now);
            InviteRow {
                id: i.invite.id.to_string(),
                email: i.email.clone(),
                role: role_label(i.invite.role),
                state,
                expires: when(i.invite.expires_at),
                open: state == "pending" || state == "expired",
            }
        })
        .collect();
    c.shell.notice = outcome.notice;
    let (invite_link, invited, mail_failed) = match outcome.invite_link {
        Some((link, to, failed)) => (Some(link), to, failed),
        None => (None, String::new(), false),
    };
    Ok(render(
        status,
        &MembersPage {
            may_invite_owner: c.caller.role() == Role::Owner,
            mail: services.mailer.enabled() && !services.mailer.development_outbox(),
            outbox: services.mailer.development_outbox(),
            members: members.iter().map(MemberRow::of).collect(),
            invites,
            next_invites,
            invite_link,
            invited,
            mail_failed,
            email: outcome.email,
            role: if outcome.role.is_empty() {
                "admin".into()
            } else {
                outcome.role
            },
            errors: outcome.errors,
            shell: c.shell,
        },
    ))
}

crate::pages::csrf_form!(InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
});

/// `POST …/members/invites` (OWNER, ADMIN; an OWNER invites OWNERs).
pub(super) async fn invite(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/members");
    let (c, form, _): (_, InviteForm, _) = console_form(&state, &workspace, &here, request).await?;
    let role = Role::parse(&form.role).unwrap_or(Role::User);
    match state
        .services()
        .create_invite(&c.caller, &form.email, role, None)
        .await
    {
        Ok(created) => {
            let outbox = state.services().mailer.development_outbox();
            members_page(&state, c, None, sent(created, outbox), StatusCode::OK).await
        }
        Err(Error::Invalid(errors)) => {
            let outcome = Outcome {
                email: form.email,
                role: form.role,
                errors: error_lines(&errors, |f| if f == "email" { "E-mail address" } else { "Role" }),
                ..Outcome::default()
            };
            members_page(&state, c, None, outcome, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => Err(e.into()),
    }
}

/// What the page says after an invitation went out (or the link to share, shown once).
fn sent(created: CreatedInvite, outbox: bool) -> Outcome {
    let to = created.view.email.clone();
    match created.delivery {
        Delivery::Sent if outbox => Outcome {
            notice: Some(format!(
                "The invitation to {to} is in the development outbox (no SMTP server is configured): \
                 `secureflows mail list` on the server shows it with its link."
            )),
            ..Outcome::default()
        },
        Delivery::Sent => Outcome {
            notice: Some(format!("An invitation was e-mailed to {to}.")),
            ..Outcome::default()
        },
        Delivery::Disabled | Delivery::Failed => Outcome {
            notice: Some(format!("The invitation to {to} is ready.")),
            invite_link: Some((
                created.link.expose().to_owned(),
                to,
                created.delivery == Delivery::Failed,
            )),
            ..Outcome::default()
        },
    }
}

/// `POST …/members/invites/{id}/resend`: a new link to the same address; the old one stops working.
pub(super) async fn resend(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/members");
    let (c, _form, _): (_, PlainForm, _) = console_form(&state, &workspace, &here, request).await?;
    let created = state.services().resend_invite(&c.caller, path_id(&id)?).await?;
    let outbox = state.services().mailer.development_outbox();
    members_page(&state, c, None, sent(created, outbox), StatusCode::OK).await
}

/// `GET …/members/invites/{id}/revoke`: asks first.
pub(super) async fn confirm_revoke(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/members/invites/{id}/revoke");
    let c = console(&state, &workspace, &browser, &here).await?;
    path_id::<secureflows_core::InviteId>(&id)?;
    let action = c.path(&format!("/members/invites/{id}/revoke"));
    let back = c.path("/members");
    Ok(confirm(
        c,
        "Revoke this invitation?".into(),
        "Its link stops working at once. You can invite the same address again later.",
        action,
        "Revoke the invitation",
        back,
    ))
}

/// `POST …/members/invites/{id}/revoke` (OWNER, ADMIN).
pub(super) async fn revoke(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/members/invites/{id}/revoke");
    let (c, form, _): (_, ConfirmForm, _) = console_form(&state, &workspace, &here, request).await?;
    form.confirmed()?;
    state.services().revoke_invite(&c.caller, path_id(&id)?).await?;
    Ok(see_other(&c.path("/members")))
}
