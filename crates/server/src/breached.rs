//! Breached-password sources: the k-anonymity range API (`GET {base}/range/{5 hex}`: only the first
//! five hex characters of the password's SHA-1 leave the machine; the answer lists suffixes with
//! counts and is padded by the service) and an offline sorted file of hashes.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secureflows_core::login::breached::{BreachedPasswords, NoBreachCheck, count_in_range};
use secureflows_core::{Error, Result};

use crate::config::LoginConfig;

/// The range API.
#[derive(Debug)]
pub struct RangeApi {
    client: reqwest::Client,
    base: String,
}

impl RangeApi {
    /// A client for `base` (no trailing `/range`).
    pub fn new(base: &str) -> anyhow::Result<RangeApi> {
        let client = crate::http_client::builder(Duration::from_secs(3)).build()?;
        Ok(RangeApi {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }
}

#[async_trait]
impl BreachedPasswords for RangeApi {
    async fn occurrences(&self, sha1_hex: &str) -> Result<u64> {
        let (prefix, suffix) = sha1_hex.split_at(5.min(sha1_hex.len()));
        let response = self
            .client
            .get(format!("{}/range/{prefix}", self.base))
            .header("add-padding", "true")
            .send()
            .await
            .map_err(|_| Error::Unavailable("breached-password range API"))?;
        if !response.status().is_success() {
            return Err(Error::Unavailable("breached-password range API"));
        }
        let body = response
            .text()
            .await
            .map_err(|_| Error::Unavailable("breached-password range API"))?;
        Ok(count_in_range(&body, suffix))
    }
}

/// A local file of upper-case hex SHA-1 hashes, one per line (optionally `HASH:COUNT`), sorted, as the
/// published downloads are. Looked up by binary search over byte offsets: nothing is loaded into memory.
#[derive(Debug)]
pub struct HashFile {
    path: PathBuf,
}

impl HashFile {
    /// Opens (checks) the file.
    pub fn new(path: PathBuf) -> anyhow::Result<HashFile> {
        std::fs::metadata(&path)?;
        Ok(HashFile { path })
    }

    fn lookup(path: &std::path::Path, hash: &str) -> std::io::Result<u64> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let (mut lo, mut hi) = (0u64, len);
        // Invariant: a line starting at or after `lo` and before `hi` may match.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (start, line) = line_at(&mut file, mid)?;
            let Some(line) = line else {
                hi = mid;
                continue;
            };
            let (h, count) = line.split_once(':').unwrap_or((line.as_str(), "1"));
            match h.trim().to_ascii_uppercase().as_str().cmp(hash) {
                std::cmp::Ordering::Equal => return Ok(count.trim().parse().unwrap_or(1)),
                std::cmp::Ordering::Less => lo = start + line.len() as u64 + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(0)
    }
}

/// The first whole line starting at or after `offset` (the line `offset` falls in is skipped unless
/// `offset` is 0). Returns the line's start.
fn line_at(file: &mut std::fs::File, offset: u64) -> std::io::Result<(u64, Option<String>)> {
    let start = if offset == 0 {
        0
    } else {
        file.seek(SeekFrom::Start(offset - 1))?;
        let mut skipped = 0u64;
        let mut byte = [0u8; 1];
        loop {
            if file.read(&mut byte)? == 0 {
                return Ok((offset, None));
            }
            skipped += 1;
            if byte[0] == b'\n' {
                break;
            }
        }
        offset - 1 + skipped
    };
    file.seek(SeekFrom::Start(start))?;
    let mut buf = [0u8; 128];
    let n = file.read(&mut buf)?;
    if n == 0 {
        return Ok((start, None));
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text
        .split('\n')
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r')
        .to_owned();
    Ok((start, Some(line)))
}

#[async_trait]
impl BreachedPasswords for HashFile {
    async fn occurrences(&self, sha1_hex: &str) -> Result<u64> {
        let path = self.path.clone();
        let hash = sha1_hex.to_ascii_uppercase();
        tokio::task::spawn_blocking(move || HashFile::lookup(&path, &hash))
            .await
            .map_err(|_| Error::Unavailable("breached-password file"))?
            .map_err(|_| Error::Unavailable("breached-password file"))
    }
}

/// The source the configuration names.
pub fn from_config(config: &LoginConfig) -> anyhow::Result<Arc<dyn BreachedPasswords>> {
    Ok(match (&config.breached_file, &config.breached_range_url) {
        (Some(path), _) => Arc::new(HashFile::new(path.clone())?),
        (None, Some(url)) => Arc::new(RangeApi::new(url)?),
        (None, None) => Arc::new(NoBreachCheck),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_file_binary_search() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pwned.txt");
        let mut hashes: Vec<String> = (0..500)
            .map(|i| secureflows_crypto::password::breach_digest(&format!("pw{i}")))
            .collect();
        hashes.sort();
        let body: String = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{h}:{}\r\n", i + 1))
            .collect();
        std::fs::write(&path, body).unwrap();
        let file = HashFile::new(path).unwrap();
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(file.occurrences(h).await.unwrap(), (i + 1) as u64, "{i}");
        }
        let absent = secureflows_crypto::password::breach_digest("not in the file");
        assert_eq!(file.occurrences(&absent).await.unwrap(), 0);
    }
}
