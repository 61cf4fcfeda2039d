use secureflows_core::Error;

/// Translates a driver error: unique violation → `Conflict`, no row → `NotFound`, lost connections,
/// pool time-outs and a full disk → `Unavailable`, the rest → `Internal`. Driver text never reaches a
/// client.
pub fn map(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::RowNotFound => Error::NotFound("row"),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") => Error::Conflict("unique constraint"),
            Some("23503") => Error::NotFound("referenced row"),
            Some("53100") => Error::Unavailable("storage full"),
            Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                Error::Unavailable("database unavailable")
            }
            _ => Error::internal(e),
        },
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            Error::Unavailable("database unavailable")
        }
        _ => Error::internal(e),
    }
}

/// `?` on driver results inside store code.
pub trait SqlResult<T> {
    /// Maps the error with [`map`].
    fn db(self) -> Result<T, Error>;
}

impl<T> SqlResult<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, Error> {
        self.map_err(map)
    }
}
