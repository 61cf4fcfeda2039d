//! Management API handlers (`/api/v1`, USER JWT): thin wrappers that parse, call one service and map
//! the result to a body. Roles are checked in the services; identity and workspace come from the
//! token only.

pub mod applications;
pub mod audit;
pub mod identity_providers;
pub mod invites;
pub mod tiers;
pub mod users;
pub mod workspaces;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secureflows_core::{Error, Result, Timestamp};

/// The query of a plain paged list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 200;

/// The page size asked for, within bounds.
pub fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Error::invalid("limit", "must be between 1 and 200")),
    }
}

/// An opaque cursor: the position after which the next page starts, tagged with what it pages.
pub fn encode_cursor(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

/// Reads a cursor made by [`encode_cursor`] for the same `kind`.
pub fn decode_cursor<T: std::str::FromStr>(kind: &str, cursor: &str) -> Result<T> {
    let bad = || Error::Malformed("invalid cursor".into());
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let position = text
        .strip_prefix(kind)
        .and_then(|t| t.strip_prefix(':'))
        .ok_or_else(bad)?;
    position.parse().map_err(|_| bad())
}

/// An RFC 3339 time from a query parameter.
pub fn parse_time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>> {
    value
        .map(|v| Timestamp::parse_rfc3339(v).ok_or_else(|| Error::invalid(field, "must be an RFC 3339 time")))
        .transpose()
}

/// The next page's cursor when this page is full.
pub fn next_cursor<T>(
    items: &[T],
    limit: u32,
    kind: &str,
    position: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() == limit as usize {
        items.last().map(|last| encode_cursor(kind, &position(last)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_kinds() {
        let c = encode_cursor("seq", "42");
        assert_eq!(decode_cursor::<i64>("seq", &c).unwrap(), 42);
        assert!(decode_cursor::<i64>("user", &c).is_err());
        assert!(decode_cursor::<i64>("seq", "%%%").is_err());
    }
}
