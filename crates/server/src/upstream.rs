//! Fetching upstream issuers' key sets over HTTP: OpenID discovery, then `jwks_uri`.
//!
//! SECURITY (SSRF): fetches go only to public addresses unless `upstream.allow_private_networks` is
//! set; the resolver drops loopback, private, link-local and other special addresses, and literal IP
//! hosts are checked before connecting. Redirects are not followed, `http` is refused unless
//! `upstream.allow_http` is set, and responses are capped in size.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secureflows_core::auth::upstream::{JwksSource, UpstreamEndpoints};
use secureflows_core::{Error, Result};
use secureflows_crypto::jws::JwkSet;
use serde::Deserialize;

use crate::config::UpstreamConfig;

/// Largest discovery document or key set accepted.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// A forced refresh (unknown `kid`) happens at most this often per issuer.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// A failed fetch is not retried for this long (the last good keys, if any, keep serving).
const FAILURE_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Cached {
    keys: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
    forced: Option<Instant>,
    failed: Option<Instant>,
}

/// Key sets of upstream issuers, fetched over HTTP and cached.
pub struct HttpJwksSource {
    client: reqwest::Client,
    settings: UpstreamConfig,
    cache: Mutex<HashMap<String, Cached>>,
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Issuers' authorization and token endpoints, kept as long as key sets; a failure is remembered
    /// for the back-off time.
    endpoints: Mutex<HashMap<String, (Instant, Option<UpstreamEndpoints>)>>,
}

impl std::fmt::Debug for HttpJwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJwksSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Whether an address is one an outbound fetch must not reach (RFC 6890 special-purpose ranges).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // Only global unicast (2000::/3) is public; within it, documentation, the IETF protocol
            // block (Teredo among others) and 6to4 (which embeds an IPv4 address) are refused too.
            (s[0] & 0xe000) != 0x2000
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x2001 && s[1] < 0x0200)
                || s[0] == 0x2002
        }
    }
}

struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err("the host resolves to no public address".into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

impl HttpJwksSource {
    /// A source with these settings.
    pub fn new(settings: UpstreamConfig) -> anyhow::Result<Self> {
        // No proxy: a proxy would resolve names itself, around the public-only resolver.
        let mut builder =
            crate::http_client::builder(Duration::from_secs(settings.fetch_timeout_secs)).no_proxy();
        if !settings.allow_private_networks {
            builder = builder.dns_resolver(PublicOnlyResolver);
        }
        if !settings.allow_http {
            builder = builder.https_only(true);
        }
        Ok(HttpJwksSource {
            client: builder.build()?,
            settings,
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    fn check_destination(&self, url: &str) -> Result<url::Url> {
        let url = url::Url::parse(url).map_err(|_| Error::Unavailable("upstream issuer URL is invalid"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.settings.allow_http => {}
            _ => return Err(Error::Unavailable("upstream fetches must use https")),
        }
        if !self.settings.allow_private_networks {
            let literal = match url.host() {
                Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
                Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
                Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                    return Err(Error::Unavailable("upstream destination is not allowed"));
                }
                _ => None,
            };
            if literal.is_some_and(is_private) {
                return Err(Error::Unavailable("upstream destination is not allowed"));
            }
        }
        Ok(url)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let url = self.check_destination(url)?;
        let response = self.client.get(url).send().await.map_err(|e| {
            tracing::warn!(error = %e, "upstream fetch failed");
            Error::Unavailable("upstream issuer unreachable")
        })?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "upstream fetch answered with an error");
            return Err(Error::Unavailable("upstream issuer unreachable"));
        }
        read_json(response).await
    }

    /// The issuer's discovery document, checked to name the issuer it was fetched for (OpenID Connect
    /// Discovery §4.3).
    async fn discovery(&self, issuer: &str) -> Result<Discovery> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer != issuer {
            return Err(Error::Unavailable("upstream discovery names another issuer"));
        }
        Ok(discovery)
    }

    async fn fetch(&self, issuer: &str) -> Result<Arc<JwkSet>> {
        let discovery = self.discovery(issuer).await?;
        let keys: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        Ok(Arc::new(keys))
    }

    /// The cached keys if they may be used: within the cache lifetime, or, for a forced refresh (an
    /// unknown `kid`), when the last forced refresh was too recent to repeat.
    fn usable(&self, issuer: &str, refresh: bool) -> Option<Arc<JwkSet>> {
        let cache = self.cache.lock().ok()?;
        let c = cache.get(issuer)?;
        let keys = c.keys.clone()?;
        let ttl = Duration::from_secs(self.settings.jwks_cache_secs);
        let ok = if refresh {
            c.forced.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL)
        } else {
            c.fetched.is_some_and(|t| t.elapsed() < ttl)
        };
        ok.then_some(keys)
    }

    /// After a recent failure: the last good keys (or `Unavailable`) without trying again.
    fn backing_off(&self, issuer: &str) -> Option<Result<Arc<JwkSet>>> {
        let cache = self.cache.lock().ok()?;
        let c = cache.get(issuer)?;
        if c.failed.is_none_or(|t| t.elapsed() >= FAILURE_BACKOFF) {
            return None;
        }
        Some(
            c.keys
                .clone()
                .ok_or(Error::Unavailable("upstream issuer unreachable")),
        )
    }

    fn issuer_lock(&self, issuer: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.fetching.lock() {
            Ok(mut locks) => {
                if locks.len() > 1000 {
                    locks.retain(|_, l| Arc::strong_count(l) > 1);
                }
                locks.entry(issuer.to_owned()).or_default().clone()
            }
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn record(&self, issuer: &str, outcome: &Result<Arc<JwkSet>>, refresh: bool) {
        let Ok(mut cache) = self.cache.lock() else { return };
        if cache.len() > 1000 && !cache.contains_key(issuer) {
            cache.clear();
        }
        let entry = cache.entry(issuer.to_owned()).or_default();
        let now = Instant::now();
        match outcome {
            Ok(keys) => {
                entry.keys = Some(keys.clone());
                entry.fetched = Some(now);
                entry.failed = None;
                if refresh {
                    entry.forced = Some(now);
                }
            }
            Err(_) => entry.failed = Some(now),
        }
    }
}

/// Reads a JSON body of at most [`MAX_DOCUMENT_BYTES`].
async fn read_json<T: serde::de::DeserializeOwned>(mut response: reqwest::Response) -> Result<T> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| Error::Unavailable("upstream issuer unreachable"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::Unavailable("upstream document too large"));
        }
    }
    serde_json::from_slice(&body).map_err(|_| Error::Unavailable("upstream document is not valid"))
}

impl HttpJwksSource {
    /// The cached endpoints of an issuer, or its cached failure during the back-off.
    fn cached_endpoints(&self, issuer: &str) -> Option<Result<UpstreamEndpoints>> {
        let ttl = Duration::from_secs(self.settings.jwks_cache_secs);
        let cache = self.endpoints.lock().ok()?;
        let (at, found) = cache.get(issuer)?;
        match found {
            Some(found) if at.elapsed() < ttl => Some(Ok(found.clone())),
            None if at.elapsed() < FAILURE_BACKOFF => {
                Some(Err(Error::Unavailable("upstream issuer unreachable")))
            }
            _ => None,
        }
    }

    /// The issuer's code-flow endpoints from its discovery document.
    async fn fetch_endpoints(&self, issuer: &str) -> Result<UpstreamEndpoints> {
        let discovery = self.discovery(issuer).await?;
        let (Some(authorization_endpoint), Some(token_endpoint)) =
            (discovery.authorization_endpoint, discovery.token_endpoint)
        else {
            return Err(Error::Unavailable(
                "upstream discovery has no authorization code endpoints",
            ));
        };
        // The browser goes to the authorization endpoint; the server itself calls the token endpoint,
        // so it is checked like every other destination.
        for endpoint in [&authorization_endpoint, &token_endpoint] {
            let url = url::Url::parse(endpoint)
                .map_err(|_| Error::Unavailable("upstream discovery has an invalid endpoint"))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(Error::Unavailable("upstream discovery has an invalid endpoint"));
            }
        }
        self.check_destination(&token_endpoint)?;
        Ok(UpstreamEndpoints {
            authorization_endpoint,
            token_endpoint,
        })
    }
}

#[async_trait]
impl JwksSource for HttpJwksSource {
    async fn endpoints(&self, issuer: &str) -> Result<UpstreamEndpoints> {
        if let Some(cached) = self.cached_endpoints(issuer) {
            return cached;
        }
        // Single flight: concurrent sign-ins with one provider wait for one discovery fetch.
        let lock = self.issuer_lock(&format!("endpoints {issuer}"));
        let _fetching = lock.lock().await;
        if let Some(cached) = self.cached_endpoints(issuer) {
            return cached;
        }
        let found = self.fetch_endpoints(issuer).await;
        if let Ok(mut cache) = self.endpoints.lock() {
            if cache.len() > 1000 {
                cache.clear();
            }
            cache.insert(issuer.to_owned(), (Instant::now(), found.as_ref().ok().cloned()));
        }
        found
    }

    async fn token_request(&self, token_endpoint: &str, form: &[(&str, &str)]) -> Result<serde_json::Value> {
        let url = self.check_destination(token_endpoint)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "upstream token request failed");
                Error::Unavailable("upstream issuer unreachable")
            })?;
        read_json(response).await
    }

    async fn key_set(&self, issuer: &str, refresh: bool) -> Result<Arc<JwkSet>> {
        if let Some(keys) = self.usable(issuer, refresh) {
            return Ok(keys);
        }
        if let Some(outcome) = self.backing_off(issuer) {
            return outcome;
        }
        // One fetch at a time per issuer: a slow or unreachable issuer holds up no other.
        let lock = self.issuer_lock(issuer);
        let _guard = lock.lock().await;
        if let Some(keys) = self.usable(issuer, refresh) {
            return Ok(keys);
        }
        if let Some(outcome) = self.backing_off(issuer) {
            return outcome;
        }
        let outcome = self.fetch(issuer).await;
        self.record(issuer, &outcome, refresh);
        match outcome {
            Ok(keys) => Ok(keys),
            Err(e) => {
                // Keep serving the last good keys while the issuer is unreachable.
                let stale = self
                    .cache
                    .lock()
                    .ok()
                    .and_then(|c| c.get(issuer).and_then(|c| c.keys.clone()));
                match stale {
                    Some(keys) => {
                        tracing::warn!(issuer, "upstream key refresh failed; using the last keys fetched");
                        Ok(keys)
                    }
                    None => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_private() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "::a00:1",
            "2002:a00:1::1",
            "2001::1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "100::1",
            "2001:db8::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn destinations_are_checked() {
        let source = HttpJwksSource::new(UpstreamConfig::default()).unwrap();
        assert!(source.check_destination("http://example.com/jwks").is_err());
        assert!(source.check_destination("https://127.0.0.1/jwks").is_err());
        assert!(source.check_destination("https://localhost/jwks").is_err());
        assert!(source.check_destination("https://[::1]/jwks").is_err());
        assert!(source.check_destination("https://example.com/jwks").is_ok());
    }
}
