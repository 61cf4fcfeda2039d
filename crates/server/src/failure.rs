//! What a failed request leaves for the log. Turning an error into a response (a problem or a page)
//! never logs: it attaches a `Failure` to the response, and the envelope logs it once, with the
//! request id, after the handler returns. The person sees their own words; the log keeps the details.

use axum::response::Response;
use secureflows_core::Error;

/// How loud a failure is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A client's mistake worth a line (a refused authorization request).
    Info,
    /// The service could not serve now (busy, a dependency away).
    Warn,
    /// A bug or a broken dependency.
    Error,
    /// A ciphertext failed authentication: tampering or a moved row (target `security`).
    Security,
}

/// A failure for the log: never a token, a secret, a link or an address.
#[derive(Debug, Clone)]
pub struct Failure {
    level: Level,
    what: String,
}

impl Failure {
    /// A failure at `level`, described for the log.
    pub fn new(level: Level, what: impl Into<String>) -> Failure {
        Failure {
            level,
            what: what.into(),
        }
    }

    /// What the log must know of a domain error; `None` for a client's mistake, which its response
    /// describes fully.
    pub fn of(e: &Error) -> Option<Failure> {
        match e {
            Error::Unavailable(why) => Some(Failure::new(Level::Warn, format!("service unavailable: {why}"))),
            Error::Integrity(what) => Some(Failure::new(
                Level::Security,
                format!("integrity failure: {what}"),
            )),
            Error::Internal(source) => {
                Some(Failure::new(Level::Error, format!("internal error: {source:?}")))
            }
            _ => None,
        }
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Attaches this failure to a response, for the envelope to log.
    pub fn attach(self, response: &mut Response) {
        response.extensions_mut().insert(self);
    }

    /// Logs the failure a response carries, if any, with its request id.
    pub fn log_from(response: &mut Response, request_id: &str) {
        let Some(failure) = response.extensions_mut().remove::<Failure>() else {
            return;
        };
        let status = response.status().as_u16();
        let what = failure.what.as_str();
        match failure.level {
            Level::Info => tracing::info!(request_id, status, "{what}"),
            Level::Warn => tracing::warn!(request_id, status, "{what}"),
            Level::Error => tracing::error!(request_id, status, "{what}"),
            Level::Security => tracing::error!(target: "security", request_id, status, "{what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_client_cannot_fix_is_logged() {
        assert!(Failure::of(&Error::NotFound("user")).is_none());
        assert!(Failure::of(&Error::Malformed("x".into())).is_none());
        assert_eq!(
            Failure::of(&Error::Unavailable("db")).map(|f| f.level()),
            Some(Level::Warn)
        );
        assert_eq!(
            Failure::of(&Error::Integrity("row")).map(|f| f.level()),
            Some(Level::Security)
        );
        assert_eq!(
            Failure::of(&Error::internal(std::io::Error::other("disk"))).map(|f| f.level()),
            Some(Level::Error)
        );
    }

    #[test]
    fn a_failure_is_taken_off_the_response_when_logged() {
        let mut response = Response::new(axum::body::Body::empty());
        Failure::new(Level::Info, "refused").attach(&mut response);
        Failure::log_from(&mut response, "r-1");
        assert!(response.extensions().get::<Failure>().is_none());
    }
}
