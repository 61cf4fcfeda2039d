//! The test harness: a real server on `127.0.0.1:0` over real HTTP (`TestApp`), the backend matrix
//! (SQLite in a fresh temp directory, PostgreSQL in a fresh randomly named database), a local OpenID
//! issuer serving a JWKS over HTTP (`TestIssuer`), and raw reads of what the databases hold.
//!
//! PostgreSQL comes from `SECUREFLOWS_TEST_PG_URL` (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`). Unset, PostgreSQL variants are skipped loudly, unless
//! `SECUREFLOWS_REQUIRE_PG=1` (set by `.ci/run`), which makes them fail.
//!
//! Tests that drive outside programs (a third-party OpenID client in Python, Chromium through
//! ChromeDriver) find them through environment variables that `scripts/test` sets after installing
//! them; unset, those tests are skipped loudly, unless `SECUREFLOWS_REQUIRE_EXTERNAL=1` (set by
//! `.ci/run`), which makes them fail.

// The test kit reads its environment (the PostgreSQL URL, what must not be skipped) and builds its own
// HTTP clients.
#![allow(clippy::disallowed_methods)]
// A test harness fails the test loudly on any setup error: that is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod app;
pub mod browser;
mod db;
mod issuer;
mod smtp;

pub use app::{TestApp, TestOptions};
pub use db::{Backend, TestDb, contains_marker};
pub use issuer::TestIssuer;
pub use smtp::{ReceivedMail, SmtpSink};

/// The path of an outside program named by the environment variable `var`, or `None` (after a loud
/// message) when it is unset. Panics when outside programs are required.
pub fn external_tool(var: &str) -> Option<std::path::PathBuf> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => Some(path.into()),
        _ => {
            assert!(
                std::env::var("SECUREFLOWS_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
                "{var} is not set but tests with outside programs are required (run scripts/test)"
            );
            eprintln!("SKIPPED: needs {var} (scripts/test sets it up)");
            None
        }
    }
}

/// Emits a `sqlite` and a `postgres` test for each `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(backend) = $crate::Backend::postgres() {
                        super::$name(backend).await;
                    }
                }
            }
        )*
    };
}
