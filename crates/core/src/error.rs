use std::time::Duration;

use thiserror::Error as ThisError;

/// The result type of every service and store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A validation failure on one field (RFC 9457 extension member `errors`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field, as the client named it.
    pub field: String,
    /// What is wrong with it (no echo of the value).
    pub message: String,
}

impl FieldError {
    /// A field's error.
    pub fn new(field: &str, message: &str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Why a token or credential was refused with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Missing, malformed, forged, wrong issuer/audience/algorithm, unknown key, or not an access token.
    InvalidToken,
    /// Signed correctly, but its login session has ended or the user's token revision was raised.
    SessionRevoked,
    /// A single-use credential (upstream ID token, code) presented a second time.
    Replayed,
    /// Sign-in with e-mail and password failed (never says which part, or whether the account exists
    /// or is locked).
    InvalidCredentials,
}

/// Why a request was refused with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenReason {
    /// One of our access tokens, but of the other kind (USER JWT on the Session API and vice versa).
    WrongTokenKind,
    /// The role does not allow the operation.
    Role,
    /// The application does not allow anonymous (guest) sessions.
    GuestsNotAllowed,
    /// The browser origin is not on the application's allow-list.
    OriginNotAllowed,
    /// A plan quota other than size or sessions is used up.
    QuotaExceeded(Quota),
    /// The account is locked by an administrator.
    AccountLocked,
    /// The account signs in with a second factor (or the workspace requires one), and the credential
    /// did not give it: the user signs in through the hosted login.
    SecondFactorRequired,
}

/// Which plan quota a 403 `quota-exceeded` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Vault keys per user and application.
    Keys,
    /// Applications of the workspace.
    Applications,
    /// OWNERs and ADMINs of the workspace.
    Members,
}

/// What kind of 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Too many concurrent login sessions for the plan.
    Sessions,
    /// A request-rate limit.
    Rate,
    /// An hourly request budget (the end user's tier, or the workspace's plan).
    Budget,
}

/// The one error type of the domain. `server::problem` maps each variant to its HTTP status and a
/// stable problem `type`; nothing else decides statuses.
#[derive(Debug, ThisError)]
pub enum Error {
    /// The thing does not exist, or is not visible to the caller (never distinguishes the two).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Syntactically malformed input (400). The message is safe to show.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// Well-formed input that breaks a rule (422).
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// Authentication failed (401).
    #[error("unauthenticated: {0:?}")]
    Unauthenticated(AuthFailure),
    /// The access token expired (410): the data is intact, signing in again renews access.
    #[error("token expired")]
    Expired,
    /// Authenticated, but not allowed (403).
    #[error("forbidden: {0:?}")]
    Forbidden(ForbiddenReason),
    /// The value is larger than the plan allows (413).
    #[error("value larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A limit was reached (429); try again after `retry_after`.
    #[error("limit reached: {kind:?}")]
    Limited {
        /// Which limit.
        kind: LimitKind,
        /// When trying again may succeed.
        retry_after: Duration,
    },
    /// A billing webhook was refused (400): bad signature or a stale timestamp.
    #[error("webhook refused: {0:?}")]
    Webhook(crate::billing::WebhookFailure),
    /// A dependency (database, key ring) is unavailable or sealed (503).
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// A stored ciphertext failed authentication: tampering or a moved row. Logged as a security event.
    #[error("integrity failure: {0}")]
    Integrity(&'static str),
    /// Anything else: a bug or an unexpected failure. Its source goes to the log, never to a client.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps any error as `Internal`.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(e.into())
    }

    /// 401 for a bad token.
    pub fn invalid_token() -> Self {
        Error::Unauthenticated(AuthFailure::InvalidToken)
    }

    /// 422 with one field error.
    pub fn invalid(field: &str, message: &str) -> Self {
        Error::Invalid(vec![FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        }])
    }
}

impl From<secureflows_crypto::CryptoError> for Error {
    fn from(e: secureflows_crypto::CryptoError) -> Self {
        match e {
            secureflows_crypto::CryptoError::Integrity | secureflows_crypto::CryptoError::Malformed => {
                Error::Integrity("ciphertext failed authentication")
            }
            other => Error::internal(other),
        }
    }
}
