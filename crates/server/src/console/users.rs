//! End users (and members): exact search by e-mail through the blind index, a keyset-paged list, and
//! one user's page: the browsers they are signed in on, their recent sign-ins, their vault keys per
//! application and, audited, a value; lock, unlock, sign out everywhere, change role, delete (the
//! destructive ones confirmed first).

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use secureflows_core::tier::TierSource;
use secureflows_core::vault::VaultKey;
use secureflows_core::{ApplicationId, Role, UserId, UserStatus};
use serde::Deserialize;

use super::context::{Browser, ConfirmForm, Console, PlainForm, console, console_form, path_id};
use super::members::MemberRow;
use super::views::{Shell, confirm, role_label, when};
use crate::pages::{PageError, PageResult, render, see_other};
use crate::state::AppState;

const PER_PAGE: u32 = 50;

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    shell: Shell,
    users: Vec<MemberRow>,
    email: String,
    searched: bool,
    next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct UsersQuery {
    after: Option<String>,
}

/// `GET …/users` (OWNER, ADMIN): a page of users in creation order (keyset: `after` the last id).
pub(super) async fn list(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<UsersQuery>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users");
    let c = console(&state, &workspace, &browser, &here).await?;
    let after: Option<UserId> = q.after.as_deref().and_then(|a| a.parse().ok());
    let page = state.services().list_members(&c.caller, after, PER_PAGE).await?;
    let next = (page.len() == PER_PAGE as usize)
        .then(|| {
            page.last()
                .map(|m| c.path(&format!("/users?after={}", m.user.id)))
        })
        .flatten();
    Ok(users_page(c, &page, String::new(), false, next))
}

fn users_page(
    c: Console,
    users: &[secureflows_core::members::Member],
    email: String,
    searched: bool,
    next: Option<String>,
) -> axum::response::Response {
    render(
        StatusCode::OK,
        &UsersPage {
            users: users.iter().map(MemberRow::of).collect(),
            searched,
            email,
            next,
            shell: c.shell,
        },
    )
}

crate::pages::csrf_form!(SearchForm {
    #[serde(default)]
    email: String,
});

/// `POST …/users` (OWNER, ADMIN): the user with exactly this address, found through its blind index.
/// A form post, so that the address never sits in a URL (proxies log those).
pub(super) async fn search(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users");
    let (c, form, _): (_, SearchForm, _) = console_form(&state, &workspace, &here, request).await?;
    let email = form.email.trim().to_owned();
    match state.services().member_by_email(&c.caller, &email).await? {
        Some(found) => Ok(see_other(&c.path(&format!("/users/{}", found.user.id)))),
        None => Ok(users_page(c, &[], email, true, None)),
    }
}

struct UserView {
    id: String,
    email: String,
    role: &'static str,
    status: &'static str,
    locked: bool,
    created: String,
}

struct DeviceRow {
    device: String,
    client_ip: String,
    created: String,
    last_seen: String,
}

struct HistoryRow {
    at: String,
    what: &'static str,
    client_ip: String,
    user_agent: String,
}

struct ValueRow {
    application: String,
    application_id: String,
    key: String,
    size: u64,
    updated: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "console/user.html")]
struct UserPage {
    shell: Shell,
    user: UserView,
    manageable: bool,
    roles: Vec<(&'static str, &'static str, bool)>,
    devices: Vec<DeviceRow>,
    history: Vec<HistoryRow>,
    values: Vec<ValueRow>,
    show_vault: bool,
    identities: Vec<(String, String, String)>,
    revealed: Option<(String, String)>,
    tiers: Vec<TierRow>,
    tier_saved: bool,
}

/// The user's tier in one application that has tiers.
struct TierRow {
    application: String,
    application_id: String,
    current: String,
    is_default: bool,
    source: &'static str,
    choices: Vec<(String, bool)>,
}

/// `GET …/users/{id}` (OWNER, ADMIN).
pub(super) async fn show(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    Query(q): Query<UserQuery>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users/{id}");
    let c = console(&state, &workspace, &browser, &here).await?;
    let tier_saved = q.tier.as_deref() == Some("saved");
    user_page(&state, c, path_id(&id)?, q.vault.is_some(), None, tier_saved).await
}

#[derive(Deserialize)]
pub(super) struct UserQuery {
    vault: Option<String>,
    tier: Option<String>,
}

async fn user_page(
    state: &AppState,
    c: Console,
    id: UserId,
    show_vault: bool,
    revealed: Option<(String, String)>,
    tier_saved: bool,
) -> PageResult {
    let services = state.services();
    let overview = services.user_overview(&c.caller, id).await?;
    let (member, devices, history) = (overview.member, overview.devices, overview.history);
    // Listing a user's vault keys is an audited read: only when asked for.
    let values = if show_vault {
        services.admin_list_values(&c.caller, id).await?
    } else {
        Vec::new()
    };
    let apps = services.workspace_applications(&c.caller).await?;
    let app_name = |a: ApplicationId| {
        apps.iter()
            .find(|x| x.id == a)
            .map(|x| x.name.clone())
            .unwrap_or_else(|| a.to_string())
    };
    let mut tiers = Vec::new();
    for app in apps.iter().filter(|a| !a.tiers.is_empty()) {
        let t = services.user_tier(&c.caller, app.id, id).await?;
        let current = t.tier.as_ref().map(|t| t.name.clone()).unwrap_or_default();
        tiers.push(TierRow {
            application: app.name.clone(),
            application_id: app.id.to_string(),
            is_default: t.is_default,
            source: match t.assignment.as_ref().map(|a| a.source) {
                _ if t.is_default => "—",
                Some(TierSource::Api) => "management API",
                Some(TierSource::Console) => "console",
                Some(TierSource::Stripe) => "Stripe",
                None => "—",
            },
            choices: app
                .tiers
                .iter()
                .map(|x| (x.name.clone(), !t.is_default && x.name == current))
                .collect(),
            current,
        });
    }
    let target = &member.user;
    let me = c.caller.role();
    let manageable = target.role != Role::Owner || me == Role::Owner;
    // Roles this caller may give (only an OWNER gives or takes OWNER); guests have no role to change.
    let roles = if target.role == Role::Anon || !manageable {
        Vec::new()
    } else {
        let mut roles = vec![(Role::Admin, "Admin"), (Role::User, "User")];
        if me == Role::Owner {
            roles.insert(0, (Role::Owner, "Owner"));
        }
        roles
            .into_iter()
            .map(|(role, label)| (role.as_str(), label, role == target.role))
            .collect()
    };
    Ok(render(
        StatusCode::OK,
        &UserPage {
            user: UserView {
                id: target.id.to_string(),
                email: member.email.clone().unwrap_or_else(|| "(no address)".into()),
                role: role_label(target.role),
                status: target.status.as_str(),
                locked: target.status == UserStatus::Locked,
                created: when(target.created_at),
            },
            manageable,
            roles,
            devices: devices
                .into_iter()
                .map(|d| DeviceRow {
                    device: d.device,
                    client_ip: d.client_ip,
                    created: when(d.created_at),
                    last_seen: when(d.last_seen_at),
                })
                .collect(),
            history: history
                .into_iter()
                .map(|h| HistoryRow {
                    at: when(h.at),
                    what: sign_in_words(&h.action),
                    client_ip: h.client_ip,
                    user_agent: h.user_agent,
                })
                .collect(),
            values: values
                .into_iter()
                .map(|(app, v)| ValueRow {
                    application: app_name(app),
                    application_id: app.to_string(),
                    key: v.key,
                    size: v.size,
                    updated: when(v.updated_at),
                    expires: when(v.expires_at),
                })
                .collect(),
            identities: overview
                .identities
                .into_iter()
                .map(|i| (i.issuer, i.subject, when(i.linked_at)))
                .collect(),
            show_vault,
            revealed,
            tiers,
            tier_saved,
            shell: c.shell,
        },
    ))
}

fn sign_in_words(action: &str) -> &'static str {
    match action {
        "user.sign_in" => "Signed in",
        "user.sign_in_failed" => "Failed sign-in",
        "user.sign_in_locked" => "Locked out after failed sign-ins",
        "user.sign_up" => "Signed up",
        _ => "Other",
    }
}

/// `POST …/users/{id}/unlock` (OWNER, ADMIN; an OWNER: OWNER): unlocks, and ends a sign-in lockout.
pub(super) async fn unlock(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users/{id}");
    let (mut c, _form, _): (_, PlainForm, _) = console_form(&state, &workspace, &here, request).await?;
    let id = path_id(&id)?;
    state.services().set_member_locked(&c.caller, id, false).await?;
    c.shell.notice = Some("Unlocked: they can sign in again.".into());
    user_page(&state, c, id, false, None, false).await
}

crate::pages::csrf_form!(RoleForm { role: String });

/// `POST …/users/{id}/role` (OWNER, ADMIN; OWNER for OWNER): the member's sessions end with it.
pub(super) async fn change_role(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users/{id}");
    let (mut c, form, _): (_, RoleForm, _) = console_form(&state, &workspace, &here, request).await?;
    let id = path_id(&id)?;
    let role = Role::parse(&form.role).ok_or_else(PageError::incomplete_form)?;
    state.services().set_member_role(&c.caller, id, role).await?;
    if id == c.caller.token.user {
        // Changing one's own role ends one's own console session: on to sign in again.
        return Ok(see_other(&c.path("")));
    }
    c.shell.notice = Some(format!("The role is now {}.", role_label(role)));
    user_page(&state, c, id, false, None, false).await
}

/// The three confirmed actions on a user.
#[derive(Clone, Copy)]
enum Drastic {
    Lock,
    SignOut,
    Delete,
}

impl Drastic {
    fn of(what: &str) -> Option<Drastic> {
        match what {
            "lock" => Some(Drastic::Lock),
            "signout" => Some(Drastic::SignOut),
            "delete" => Some(Drastic::Delete),
            _ => None,
        }
    }

    fn words(self, email: &str) -> (String, &'static str, &'static str) {
        match self {
            Drastic::Lock => (
                format!("Lock {email}?"),
                "They are signed out everywhere at once and cannot sign in until they are unlocked. Their \
                 data stays.",
                "Lock the account",
            ),
            Drastic::SignOut => (
                format!("Sign {email} out everywhere?"),
                "Every session and token of theirs ends at once, in every application and browser. They \
                 can sign in again.",
                "Sign out everywhere",
            ),
            Drastic::Delete => (
                format!("Delete {email}?"),
                "The account, its sign-ins and every value it stored in the vault are deleted. This cannot \
                 be undone.",
                "Delete the account",
            ),
        }
    }
}

/// `GET …/users/{id}/{lock|signout|delete}`: asks first.
pub(super) async fn confirm_drastic(
    State(state): State<AppState>,
    Path((workspace, id, what)): Path<(String, String, String)>,
    browser: Browser,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users/{id}/{what}");
    let c = console(&state, &workspace, &browser, &here).await?;
    let action = Drastic::of(&what).ok_or_else(PageError::no_such_page)?;
    let member = state.services().get_member(&c.caller, path_id(&id)?).await?;
    let (heading, message, button) = action.words(member.email.as_deref().unwrap_or("this user"));
    let post = c.path(&format!("/users/{id}/{what}"));
    let back = c.path(&format!("/users/{id}"));
    Ok(confirm(c, heading, message, post, button, back))
}

/// `POST …/users/{id}/{lock|signout|delete}` (OWNER, ADMIN; OWNER for OWNER).
pub(super) async fn drastic(
    State(state): State<AppState>,
    Path((workspace, id, what)): Path<(String, String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users/{id}/{what}");
    let (mut c, form, _): (_, ConfirmForm, _) = console_form(&state, &workspace, &here, request).await?;
    form.confirmed()?;
    let action = Drastic::of(&what).ok_or_else(PageError::no_such_page)?;
    let id = path_id(&id)?;
    let services = state.services();
    match action {
        Drastic::Lock => {
            services.set_member_locked(&c.caller, id, true).await?;
            c.shell.notice = Some("Locked: signed out everywhere, and no sign-in until unlocked.".into());
        }
        Drastic::SignOut => {
            services.end_member_sessions(&c.caller, id).await?;
            c.shell.notice = Some("Signed out everywhere.".into());
        }
        Drastic::Delete => {
            services.delete_member(&c.caller, id).await?;
            return Ok(see_other(&c.path("/users")));
        }
    }
    if id == c.caller.token.user {
        return Ok(see_other(&c.path("")));
    }
    user_page(&state, c, id, false, None, false).await
}

/// `POST …/users/{id}/values/{application}/{key}` (OWNER, ADMIN): reads one value, audited with the
/// key's name.
pub(super) async fn read_value(
    State(state): State<AppState>,
    Path((workspace, id, application, key)): Path<(String, String, String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users/{id}");
    let (c, _form, _): (_, PlainForm, _) = console_form(&state, &workspace, &here, request).await?;
    let id = path_id(&id)?;
    let application: ApplicationId = application.parse().map_err(|_| PageError::no_such_page())?;
    let key = VaultKey::parse(&key)?;
    let value = state
        .services()
        .admin_get_value(&c.caller, id, application, &key)
        .await?;
    let shown = match String::from_utf8(value.bytes) {
        Ok(text) => text,
        Err(e) => format!(
            "({} bytes of {}, not text)",
            e.as_bytes().len(),
            value.content_type
        ),
    };
    user_page(&state, c, id, true, Some((key.as_str().to_owned(), shown)), false).await
}
