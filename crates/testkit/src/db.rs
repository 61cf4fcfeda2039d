//! The backend matrix and fresh databases.

use std::sync::Arc;

use base64::Engine as _;

/// Which storage a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// SQLite files in a fresh temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres(Arc<TestDb>),
}

impl Backend {
    /// A fresh PostgreSQL database on the server of `admin_url` (the benchmark's).
    pub fn postgres_at(admin_url: &str) -> Backend {
        Backend::Postgres(Arc::new(TestDb::new(admin_url)))
    }

    /// A PostgreSQL backend with a fresh database, or `None` (after a loud message) when
    /// `SECUREFLOWS_TEST_PG_URL` is not set. Panics when it is required but missing.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("SECUREFLOWS_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(Arc::new(TestDb::new(&url)))),
            _ => {
                assert!(
                    std::env::var("SECUREFLOWS_REQUIRE_PG").as_deref() != Ok("1"),
                    "SECUREFLOWS_TEST_PG_URL is not set but PostgreSQL tests are required"
                );
                eprintln!("SKIPPED: PostgreSQL variant (set SECUREFLOWS_TEST_PG_URL to run it)");
                None
            }
        }
    }

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// A randomly named PostgreSQL database (and its `_keyring` twin), dropped when the last user goes.
#[derive(Debug)]
pub struct TestDb {
    admin_url: url::Url,
    name: String,
}

impl TestDb {
    fn new(admin_url: &str) -> TestDb {
        let admin_url = url::Url::parse(admin_url).expect("SECUREFLOWS_TEST_PG_URL is not a URL");
        let name = format!("sf_test_{}", uuid::Uuid::new_v4().simple());
        TestDb { admin_url, name }
    }

    /// URL of the data database (created by the server's migrations on first use? No: created here).
    pub fn url(&self) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }

    /// URL of the key-ring database.
    pub fn keyring_url(&self) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{}_keyring", self.name));
        url.to_string()
    }

    /// Creates the data database.
    pub async fn create(&self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(self.admin_url.as_str())
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(&format!("create database \"{}\"", self.name))
            .execute(&mut conn)
            .await
            .expect("create test database");
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.to_string();
        let names = [self.name.clone(), format!("{}_keyring", self.name)];
        // Drop may run inside or outside a runtime; a thread of its own has neither problem.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    for name in names {
                        let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                            .execute(&mut conn)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// Whether `haystack` contains `marker` raw, in hex (either case), base64 (standard or URL-safe, at any
/// of the three alignments) or UTF-16LE.
pub fn contains_marker(haystack: &[u8], marker: &[u8]) -> bool {
    let find = |needle: &[u8]| !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle);
    if find(marker) {
        return true;
    }
    let hex: String = marker.iter().map(|b| format!("{b:02x}")).collect();
    if find(hex.as_bytes()) || find(hex.to_uppercase().as_bytes()) {
        return true;
    }
    let utf16: Vec<u8> = marker.iter().flat_map(|b| [*b, 0]).collect();
    if find(&utf16) {
        return true;
    }
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for skip in 0..3 {
            // Base64 of the marker shifted by `skip` bytes: the stable middle part is what would appear.
            let mut padded = vec![0u8; skip];
            padded.extend_from_slice(marker);
            let encoded = engine.encode(&padded);
            let start = (skip * 4).div_ceil(3) + 1;
            let end = encoded.len().saturating_sub(4);
            if end > start + 8 && find(&encoded.as_bytes()[start..end]) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_found_in_every_encoding() {
        let marker = b"SF-MARKER-0123456789abcdef-XYZ";
        let mut hay = b"....".to_vec();
        hay.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(b"xx".iter().chain(marker).copied().collect::<Vec<u8>>())
                .as_bytes(),
        );
        assert!(contains_marker(&hay, marker));
        let hex: String = marker.iter().map(|b| format!("{b:02X}")).collect();
        assert!(contains_marker(hex.as_bytes(), marker));
        assert!(!contains_marker(b"nothing here at all, nothing", marker));
    }
}
