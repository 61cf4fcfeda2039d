//! The console's templates and what they show: the shell every signed-in page shares (workspace,
//! member, navigation, CSRF token) and each page's own view.

use askama::Template;
use secureflows_core::console::ConsoleCaller;
use secureflows_core::{FieldError, Role};

use super::context::PATH;

/// One entry of the side navigation.
pub(super) struct NavItem {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

/// What every signed-in console page shows around its content.
pub(super) struct Shell {
    pub workspace: String,
    pub home: String,
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    /// A one-line notice after a change ("Saved.").
    pub notice: Option<String>,
}

/// The console's sections: (path under the workspace, label).
const SECTIONS: [(&str, &str); 9] = [
    ("", "Overview"),
    ("/applications", "Applications"),
    ("/members", "Members"),
    ("/users", "End users"),
    ("/audit", "Audit log"),
    ("/access", "API access"),
    ("/settings", "Settings"),
    ("/plan", "Plan and usage"),
    ("/keys", "Keys"),
];

impl Shell {
    /// The shell of a page at `here` for this caller.
    pub fn of(caller: &ConsoleCaller, email: String, csrf: String, here: &str) -> Shell {
        let home = format!("{PATH}/w/{}", caller.workspace_id());
        let current = current_section(&home, here).map(|(rest, _)| rest);
        let nav = SECTIONS
            .iter()
            .map(|(rest, label)| NavItem {
                href: format!("{home}{rest}"),
                label,
                current: current == Some(*rest),
            })
            .collect();
        Shell {
            workspace: caller.workspace.name.clone(),
            home,
            email,
            role: role_label(caller.role()),
            csrf,
            nav,
            notice: None,
        }
    }
}

/// Whether the page at `here` is in the section `rest` of the workspace console at `home`.
fn section_matches(home: &str, rest: &str, here: &str) -> bool {
    let path = here.split('?').next().unwrap_or(here);
    let href = format!("{home}{rest}");
    path == href || (!rest.is_empty() && path.starts_with(&format!("{href}/")))
}

/// The section the page at `here` is in: the longest that matches.
fn current_section(home: &str, here: &str) -> Option<(&'static str, &'static str)> {
    SECTIONS
        .iter()
        .filter(|(rest, _)| section_matches(home, rest, here))
        .max_by_key(|(rest, _)| rest.len())
        .copied()
}

/// A role in words.
pub(super) fn role_label(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::User => "user",
        Role::Anon => "guest",
        Role::Support => "support",
    }
}

/// Field errors in words, for a form's error summary.
pub(super) fn error_lines(errors: &[FieldError], label: impl Fn(&str) -> &'static str) -> Vec<String> {
    errors
        .iter()
        .map(|e| format!("{}: {}", label(&e.field), e.message))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_section_is_current() {
        let home = "/console/w/x";
        for (page, expected) in [
            ("/console/w/x", "Overview"),
            ("/console/w/x/users/1", "End users"),
            ("/console/w/x/audit?action=a", "Audit log"),
            ("/console/w/x/applications/new", "Applications"),
        ] {
            let current: Vec<&str> = super::SECTIONS
                .iter()
                .filter(|(rest, _)| super::section_matches(home, rest, page))
                .map(|(_, label)| *label)
                .collect();
            let chosen = super::current_section(home, page);
            assert_eq!(chosen.map(|(_, l)| l), Some(expected), "{page}: {current:?}");
        }
    }
}

#[derive(Template)]
#[template(path = "console/start.html")]
pub(super) struct StartPage {
    pub setup_pending: bool,
    pub workspaces: Vec<(String, String)>,
    pub open_signup: bool,
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
pub(super) struct ConfirmPage {
    pub shell: Shell,
    pub heading: String,
    pub message: String,
    pub action: String,
    pub button: &'static str,
    pub back: String,
}

/// A time as the pages show it: `2026-12-07 16:43 UTC`.
pub(super) fn when(at: secureflows_core::Timestamp) -> String {
    let text = at.rfc3339();
    match text.get(..16) {
        Some(minutes) => format!("{} UTC", minutes.replacen('T', " ", 1)),
        None => text,
    }
}

/// The page that asks before a destructive action: what will happen, the button that does it (a
/// form post) and the way back.
pub(super) fn confirm(
    c: super::context::Console,
    heading: String,
    message: &str,
    action: String,
    button: &'static str,
    back: String,
) -> axum::response::Response {
    crate::pages::render(
        axum::http::StatusCode::OK,
        &ConfirmPage {
            shell: c.shell,
            heading,
            message: message.into(),
            action,
            button,
            back,
        },
    )
}
