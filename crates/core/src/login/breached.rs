//! The breached-password check. The server supplies the source: the k-anonymity range API (only the
//! first five hex characters of the password's SHA-1 leave the machine) or an offline file of hashes.

use async_trait::async_trait;

use crate::Result;

/// Where breached passwords are looked up.
#[async_trait]
pub trait BreachedPasswords: Send + Sync {
    /// How often the password with this SHA-1 (upper-case hex, 40 characters) was seen in breaches;
    /// 0 if never.
    async fn occurrences(&self, sha1_hex: &str) -> Result<u64>;
}

/// No check configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBreachCheck;

#[async_trait]
impl BreachedPasswords for NoBreachCheck {
    async fn occurrences(&self, _sha1_hex: &str) -> Result<u64> {
        Ok(0)
    }
}

/// Parses a range API answer (`SUFFIX:COUNT` lines, 35-character suffixes) for one suffix.
pub fn count_in_range(body: &str, suffix: &str) -> u64 {
    body.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .find(|(s, _)| s.eq_ignore_ascii_case(suffix))
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_answers_are_parsed() {
        let body = "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824\r\n";
        assert_eq!(
            count_in_range(body, "1E4C9B93F3F0682250B6CF8331B7EE68FD8"),
            9_545_824
        );
        assert_eq!(count_in_range(body, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"), 0);
    }
}
