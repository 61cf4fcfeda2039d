//! Durations on the command line: a whole number and a unit, `s`, `m`, `h` or `d` (e.g. `15m`, `24h`).

use std::time::Duration;

/// Parses `15m`, `24h`, `30s`, `7d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("a duration needs a unit: s, m, h or d")?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("invalid duration `{text}`"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or("duration too long")?,
        "h" => n.checked_mul(3600).ok_or("duration too long")?,
        "d" => n.checked_mul(86_400).ok_or("duration too long")?,
        _ => return Err(format!("invalid duration unit in `{text}`; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse("15").is_err());
        assert!(parse("m").is_err());
        assert!(parse("5y").is_err());
        assert!(parse("-5m").is_err());
    }
}
