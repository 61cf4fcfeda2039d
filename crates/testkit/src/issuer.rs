//! A local OpenID Connect issuer: serves discovery and a JWKS over real HTTP and signs ID tokens with
//! keys of its own.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use secureflows_crypto::jws::{SigningAlgorithm, SigningKey};
use serde_json::{Value, json};

struct Keys {
    published: Vec<Arc<SigningKey>>,
    current: Arc<SigningKey>,
}

/// A running test issuer.
pub struct TestIssuer {
    /// Issuer URL (`http://127.0.0.1:PORT`).
    pub url: String,
    keys: Arc<Mutex<Keys>>,
    jwks_fetches: Arc<Mutex<u32>>,
    discovery_fetches: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer").field("url", &self.url).finish()
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct IssuerState {
    url: String,
    keys: Arc<Mutex<Keys>>,
    fetches: Arc<Mutex<u32>>,
    discoveries: Arc<Mutex<u32>>,
}

async fn discovery(State(s): State<IssuerState>) -> Json<Value> {
    *s.discoveries.lock().unwrap() += 1;
    // A moment's work, so that concurrent fetches overlap.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    Json(json!({
        "issuer": s.url,
        "jwks_uri": format!("{}/jwks", s.url),
        "authorization_endpoint": format!("{}/authorize", s.url),
        "token_endpoint": format!("{}/token", s.url),
    }))
}

async fn jwks(State(s): State<IssuerState>) -> Json<Value> {
    *s.fetches.lock().unwrap() += 1;
    let keys = s.keys.lock().unwrap();
    Json(json!({ "keys": keys.published.iter().map(|k| k.public_jwk().clone()).collect::<Vec<_>>() }))
}

impl TestIssuer {
    /// Starts an issuer with one Ed25519 key ([`TestIssuer::rotate`] adds RS256 keys).
    pub async fn start() -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = Arc::new(SigningKey::generate(SigningAlgorithm::EdDsa).unwrap());
        let keys = Arc::new(Mutex::new(Keys {
            published: vec![key.clone()],
            current: key,
        }));
        let fetches = Arc::new(Mutex::new(0));
        let discoveries = Arc::new(Mutex::new(0));
        let state = IssuerState {
            url: url.clone(),
            keys: keys.clone(),
            fetches: fetches.clone(),
            discoveries: discoveries.clone(),
        };
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TestIssuer {
            url,
            keys,
            jwks_fetches: fetches,
            discovery_fetches: discoveries,
            task,
        }
    }

    /// Standard claims for `subject` and `audience`, issued at `now_secs` and valid five minutes.
    pub fn claims(&self, subject: &str, audience: &str, now_secs: i64) -> Value {
        json!({
            "iss": self.url,
            "sub": subject,
            "aud": audience,
            "iat": now_secs,
            "exp": now_secs + 300,
            "email": format!("{subject}@example.com"),
            "email_verified": true,
            "name": format!("User {subject}"),
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        let key = self.keys.lock().unwrap().current.clone();
        key.sign_jwt("JWT", claims).unwrap()
    }

    /// Signs `claims` with a key that is not in the published JWKS.
    pub fn sign_with_unpublished_key(&self, claims: &Value) -> String {
        SigningKey::generate(SigningAlgorithm::EdDsa)
            .unwrap()
            .sign_jwt("JWT", claims)
            .unwrap()
    }

    /// Publishes a new key and signs with it from now on (the old key stays published).
    pub fn rotate(&self) {
        let key = Arc::new(SigningKey::generate(SigningAlgorithm::Rs256).unwrap());
        let mut keys = self.keys.lock().unwrap();
        keys.published.push(key.clone());
        keys.current = key;
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> u32 {
        *self.jwks_fetches.lock().unwrap()
    }

    /// How many times the discovery document was fetched.
    pub fn discovery_fetches(&self) -> u32 {
        *self.discovery_fetches.lock().unwrap()
    }
}
