//! How the account page names a browser and shows a time: "Firefox on Windows" rather than the raw
//! `User-Agent`, and a `<time datetime>` in UTC with readable wording.

/// "Browser on system" from a `User-Agent`; "Unknown browser" when it names neither. Tokens are
/// checked from the most specific: Edge and Opera also say Chrome, Chrome also says Safari, and every
/// iPhone browser says Safari.
pub fn device_name(user_agent: &str) -> String {
    let has = |token: &str| user_agent.contains(token);
    let browser = if has("Edg/") || has("EdgA/") || has("EdgiOS/") {
        Some("Edge")
    } else if has("OPR/") || has("Opera") {
        Some("Opera")
    } else if has("SamsungBrowser/") {
        Some("Samsung Internet")
    } else if has("Firefox/") || has("FxiOS/") {
        Some("Firefox")
    } else if has("HeadlessChrome/") {
        Some("Headless Chrome")
    } else if has("Chromium/") {
        Some("Chromium")
    } else if has("Chrome/") || has("CriOS/") {
        Some("Chrome")
    } else if has("Safari/") && has("Version/") {
        Some("Safari")
    } else {
        None
    };
    let system = if has("iPhone") || has("iPad") || has("iPod") {
        Some("iOS")
    } else if has("Android") {
        Some("Android")
    } else if has("CrOS") {
        Some("ChromeOS")
    } else if has("Windows") {
        Some("Windows")
    } else if has("Macintosh") || has("Mac OS X") {
        Some("macOS")
    } else if has("Linux") || has("X11") {
        Some("Linux")
    } else {
        None
    };
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(s)) => format!("A browser on {s}"),
        (None, None) => "Unknown browser".to_owned(),
    }
}

/// A moment for a page: the `datetime` attribute (RFC 3339, UTC) and readable wording in UTC, such as
/// "7 December 2026, 14:05 UTC". Pages may localise it with JavaScript; without, this is what shows.
#[derive(Debug, Clone)]
pub struct ShownTime {
    /// RFC 3339.
    pub datetime: String,
    /// Readable, in UTC.
    pub text: String,
}

impl ShownTime {
    /// From a timestamp.
    pub fn of(at: secureflows_core::Timestamp) -> ShownTime {
        let datetime = at.rfc3339();
        let format = time::macros::format_description!(
            "[day padding:none] [month repr:long] [year], [hour]:[minute] UTC"
        );
        let text = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.millis()) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| datetime.clone());
        ShownTime { datetime, text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_and_systems_are_named() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                "Safari on macOS",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0 Mobile/15E148 Safari/604.1",
                "Chrome on iOS",
            ),
            (
                "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
                "Firefox on Android",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
                "Headless Chrome on Linux",
            ),
            ("curl/8.5.0", "Unknown browser"),
            ("", "Unknown browser"),
        ];
        for (agent, name) in cases {
            assert_eq!(device_name(agent), name, "{agent}");
        }
    }

    #[test]
    fn times_show_in_utc_with_words() {
        let at = secureflows_core::Timestamp::parse_rfc3339("2026-12-07T14:05:09Z").unwrap();
        let shown = ShownTime::of(at);
        assert_eq!(shown.text, "7 December 2026, 14:05 UTC");
        assert!(
            shown.datetime.starts_with("2026-12-07T14:05:09"),
            "{}",
            shown.datetime
        );
    }
}
