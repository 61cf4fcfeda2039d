use rusqlite::ErrorCode;
use secureflows_core::Error;

/// Translates a driver error: constraint → `Conflict`, no row → `NotFound`, full disk or a busy
/// database → `Unavailable`, the rest → `Internal`. Driver text never reaches a client.
pub fn map(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::QueryReturnedNoRows => Error::NotFound("row"),
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => Error::Conflict("unique constraint"),
            ErrorCode::DiskFull => Error::Unavailable("storage full"),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Error::Unavailable("database busy"),
            ErrorCode::CannotOpen | ErrorCode::SystemIoFailure => Error::Unavailable("database unavailable"),
            _ => Error::internal(e),
        },
        _ => Error::internal(e),
    }
}

/// `?` on driver results inside store code.
pub trait SqlResult<T> {
    /// Maps the error with [`map`].
    fn db(self) -> Result<T, Error>;
}

impl<T> SqlResult<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T, Error> {
        self.map_err(map)
    }
}
