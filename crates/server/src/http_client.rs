//! The one factory of outbound HTTP clients (upstream providers' discovery, keys and tokens; the
//! breached-password range API): no redirects followed, bounded time-outs, our user agent. Callers add
//! what their destination needs (the upstream client's public-only resolver and https rule).

use std::time::Duration;

/// A client builder with the settings every outbound request has; `timeout` bounds connecting and the
/// whole request.
#[allow(clippy::disallowed_methods)] // the one place that builds HTTP clients
pub fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    let timeout = timeout.max(Duration::from_secs(1));
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("secureflows/", env!("CARGO_PKG_VERSION")))
}
