//! The hosted login's page templates (askama, `templates/`, escaped by default).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub use crate::pages::{Brand, MessagePage, message, render};
use crate::state::AppState;

/// `GET /w/{ws}/brand.css`: the workspace's accent colour (validated `#rrggbb`) as a style sheet, so
/// that pages need no inline style.
pub async fn brand_stylesheet(State(state): State<AppState>, Path(workspace): Path<String>) -> Response {
    let color = match workspace.parse() {
        Ok(id) => state
            .services()
            .get_workspace(id)
            .await
            .ok()
            .and_then(|w| w.branding.color)
            .filter(|c| c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit())),
        Err(_) => None,
    };
    let Some(color) = color else {
        return crate::problem::Problem::not_found().into_response();
    };
    let mut response = format!(":root {{ --accent: {color}; }}\n").into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The sign-in form.
#[derive(Template, Debug)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub brand: Brand,
    pub action: String,
    pub csrf: String,
    pub flow: Option<String>,
    pub email: String,
    pub error: Option<String>,
    pub signup_link: String,
    pub forgot_link: String,
    pub magic_action: String,
    pub magic_links: bool,
    /// Upstream providers: the start link and the button's name.
    pub providers: Vec<(String, String)>,
    pub passkeys: bool,
    pub passkey_action: String,
    pub options_action: String,
    /// `prompt=select_account` in a signed-in browser: its account, and the form that continues as it.
    pub continue_as: Option<(String, String)>,
}

/// A page that confirms a link's action with a button (a link opened by a mail scanner does nothing).
#[derive(Template, Debug)]
#[template(path = "confirm.html")]
pub struct ConfirmLinkPage {
    pub brand: Brand,
    pub heading: String,
    pub message: String,
    pub action: String,
    pub csrf: String,
    pub token: String,
    pub button_id: String,
    pub button_label: String,
}

/// Asks for an e-mail address.
#[derive(Template, Debug)]
#[template(path = "email_form.html")]
pub struct EmailFormPage {
    pub brand: Brand,
    pub heading: String,
    pub message: String,
    pub action: String,
    pub csrf: String,
    pub flow: Option<String>,
    pub button_label: String,
}

/// The new-password form of a reset link.
#[derive(Template, Debug)]
#[template(path = "reset.html")]
pub struct ResetPage {
    pub brand: Brand,
    pub action: String,
    pub csrf: String,
    pub token: String,
    pub errors: Vec<String>,
    pub min_length: usize,
    pub rules: String,
}

/// The sign-up form.
#[derive(Template, Debug)]
#[template(path = "signup.html")]
pub struct SignupPage {
    pub brand: Brand,
    pub action: String,
    pub csrf: String,
    pub flow: Option<String>,
    pub email: String,
    pub name: String,
    pub errors: Vec<String>,
    pub min_length: usize,
    pub rules: String,
    pub login_link: String,
}

/// The second-factor form.
#[derive(Template, Debug)]
#[template(path = "mfa.html")]
pub struct MfaPage {
    pub brand: Brand,
    pub action: String,
    pub passkey_action: String,
    pub options_action: String,
    pub csrf: String,
    pub totp: bool,
    pub passkey: bool,
    pub error: Option<String>,
}

/// The account security page.
#[derive(Template, Debug)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub brand: Brand,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub sessions: Vec<SessionRow>,
    pub history: Vec<HistoryRow>,
    pub end_action: String,
    pub end_others_action: String,
    pub password_action: String,
    pub email: String,
    pub verified: bool,
    pub totp: bool,
    pub recovery_left: u32,
    pub csrf: String,
    pub disable_action: String,
    pub setup_link: String,
    pub logout_link: String,
    pub export_link: String,
    pub passkeys_available: bool,
    pub passkeys: Vec<PasskeyRow>,
    pub options_action: String,
    pub passkey_action: String,
    pub remove_passkey_action: String,
    /// Upstream providers to link: (id, name).
    pub providers: Vec<(String, String)>,
    pub link_action: String,
}

/// A passkey on the account page.
#[derive(Debug)]
pub struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub last_used: String,
}

/// TOTP enrolment: the QR code, the key and the confirmation form.
#[derive(Template, Debug)]
#[template(path = "totp_setup.html")]
pub struct TotpSetupPage {
    pub brand: Brand,
    pub qr_data_uri: String,
    pub secret: String,
    pub action: String,
    pub csrf: String,
    pub error: Option<String>,
    /// At a required enrolment, a passkey instead: (options action, form action).
    pub passkey: Option<(String, String)>,
}

/// Recovery codes, shown once.
#[derive(Template, Debug)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage {
    pub brand: Brand,
    pub notice: Option<String>,
    pub codes: Vec<String>,
    pub account_link: String,
}

/// A signed-in browser on the account page.
#[derive(Debug)]
pub struct SessionRow {
    pub id: String,
    pub current: bool,
    /// "Browser on system" (`devices::device_name`).
    pub device: String,
    pub client_ip: String,
    pub last_seen: super::devices::ShownTime,
}

/// A recent sign-in on the account page.
#[derive(Debug)]
pub struct HistoryRow {
    pub at: super::devices::ShownTime,
    pub what: &'static str,
    pub client_ip: String,
    /// "Browser on system" (`devices::device_name`).
    pub device: String,
}

/// Accepting an invitation.
#[derive(Template, Debug)]
#[template(path = "invite.html")]
pub struct InvitePage {
    pub brand: Brand,
    pub role: &'static str,
    pub email: String,
    pub errors: Vec<String>,
    pub action: String,
    pub csrf: String,
    pub token: String,
    pub min_length: usize,
    pub rules: String,
}

impl SessionRow {
    /// A browser the user is signed in on, as the account page shows it.
    pub fn of(s: secureflows_core::login::account::DeviceSession) -> SessionRow {
        SessionRow {
            id: s.id.to_string(),
            current: s.current,
            device: super::devices::device_name(&s.device),
            client_ip: s.client_ip,
            last_seen: super::devices::ShownTime::of(s.last_seen_at),
        }
    }
}

impl HistoryRow {
    /// A recent sign-in, as the account page shows it.
    pub fn of(h: secureflows_core::login::account::SignInRecord) -> HistoryRow {
        HistoryRow {
            at: super::devices::ShownTime::of(h.at),
            what: match h.action.as_str() {
                "user.sign_in" => "signed in",
                "user.sign_up" => "account created",
                "user.sign_in_locked" => "locked after failed attempts",
                _ => "failed attempt",
            },
            client_ip: h.client_ip,
            device: super::devices::device_name(&h.user_agent),
        }
    }
}

impl PasskeyRow {
    /// A passkey, as the account page shows it.
    pub fn of(p: secureflows_core::login::passkey::PasskeyInfo) -> PasskeyRow {
        PasskeyRow {
            id: p.id.to_string(),
            name: p.name,
            created: p.created_at.rfc3339(),
            last_used: p
                .last_used_at
                .map(|t| t.rfc3339())
                .unwrap_or_else(|| "never".into()),
        }
    }
}
