//! Per-request context: the request id and path (for problem bodies and logs), and the client address
//! as the configured trusted proxies allow it to be known.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use axum::http::HeaderMap;

tokio::task_local! {
    static CONTEXT: Arc<RequestContext>;
}

/// What every response of a request may need to know about it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Request id (also sent as `X-Request-Id`).
    pub id: String,
    /// The request path (RFC 9457 `instance`).
    pub path: String,
    /// How this request's error pages are framed, once a page handler knows its workspace.
    pub frame: std::sync::OnceLock<crate::pages::Frame>,
}

impl RequestContext {
    /// The context of a new request.
    pub fn new(id: String, path: String) -> RequestContext {
        RequestContext {
            id,
            path,
            frame: std::sync::OnceLock::new(),
        }
    }

    /// The context of the request being handled on this task, if any.
    pub fn current() -> Option<Arc<RequestContext>> {
        CONTEXT.try_with(Arc::clone).ok()
    }

    /// Runs `f` with this context as the current one.
    pub async fn scope<F: Future>(self: Arc<Self>, f: F) -> F::Output {
        CONTEXT.scope(self, f).await
    }
}

static PREFIX: LazyLock<String> = LazyLock::new(|| {
    let bytes = secureflows_crypto::random_bytes::<4>().unwrap_or([0; 4]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
});
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new request id: a per-process random prefix and a counter (unique, cheap, not a secret).
pub fn next_request_id() -> String {
    format!("{}-{:x}", *PREFIX, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The peer address of a connection, put into each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The client address: the peer, unless the peer is a trusted proxy, in which case the right-most
/// address of `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> String {
    let Some(peer) = peer else {
        return "unknown".to_owned();
    };
    let peer_ip = normalize(peer.ip());
    if trusted.is_empty() || !trusted.contains(&peer_ip) {
        return peer_ip.to_string();
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(normalize)
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .copied()
        .unwrap_or(peer_ip)
        .to_string()
}

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 1.2.3.4"));
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(client_ip(Some(peer), &h, &[]), "10.0.0.1");
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(Some(peer), &h, &[proxy]), "1.2.3.4");
        let other: SocketAddr = "9.9.9.9:1".parse().unwrap();
        assert_eq!(client_ip(Some(other), &h, &[proxy]), "9.9.9.9");
    }

    #[test]
    fn request_ids_are_unique() {
        assert_ne!(next_request_id(), next_request_id());
    }
}
