//! Hosted login state, one file per store trait (the same names in both backends): passwords and
//! lockout, flows and browser sessions, codes and refresh tokens, second factors, identity providers,
//! ceremonies; the rows they share are in `rows`.

mod browsers;
mod ceremonies;
mod factors;
mod grants;
mod passwords;
mod providers;
mod rows;

pub(crate) use self::rows::{end_login_session, write_password};
