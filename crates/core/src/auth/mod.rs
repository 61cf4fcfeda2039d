//! Authentication: our access tokens (issue, verify, cache), upstream ID tokens, and login sessions.

pub mod callback;
pub mod session;
pub mod token;
pub mod upstream;
