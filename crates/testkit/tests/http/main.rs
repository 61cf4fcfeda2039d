//! HTTP tests: the real server over real HTTP on loopback, each storage test on SQLite and PostgreSQL.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod support;

mod access_log;
mod application_kinds;
mod audit_chain;
mod audit_values;
mod bad_input;
mod browser;
mod console_browser;
mod console_pages;
mod console_sign_in;
mod crypto_at_rest;
mod email_addresses;
mod enumeration_timing;
mod headers;
mod hosted_email;
mod hosted_login;
mod hosted_mfa;
mod limits;
mod lockout;
mod manage_api;
mod manage_roles;
mod oidc_interop;
mod oidc_prompts;
mod passkeys;
mod password_hashing;
mod refresh_tokens;
mod row_level_security;
mod session_api;
mod sqlite_wal;
mod step_up;
mod tiers;
mod tokens;
mod upstream;
mod upstream_login;
mod webhooks;
