//! Our access tokens: signed JWTs carrying issuer, subject, audience (the application), workspace,
//! role, session id and token revision.
//!
//! Verification fixes the algorithm from our own key set (never from the token), checks the explicit
//! type, issuer and audience, and caches the result by the token's SHA-256 so that a signature is
//! verified once. Expiry, the login session and the revision are checked by the caller on every
//! request, so the cache never lets a revoked or expired token through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secureflows_crypto::jws::{self, JwsError, SigningAlgorithm, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keyring::KeyService;
use crate::{
    ApplicationId, AuthFailure, Error, ForbiddenReason, Result, Role, SessionId, Timestamp, UserId,
    WorkspaceId,
};

/// Explicit JWT `typ` of SESSION JWTs (Session API only).
pub const SESSION_TOKEN_TYPE: &str = "sf-session+jwt";
/// Explicit JWT `typ` of USER JWTs (management API only).
pub const USER_TOKEN_TYPE: &str = "sf-user+jwt";

/// Which of our access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Issued to an application's end user for the Session API.
    Session,
    /// Issued for the console and the management API.
    User,
}

impl TokenKind {
    fn typ(self) -> &'static str {
        match self {
            TokenKind::Session => SESSION_TOKEN_TYPE,
            TokenKind::User => USER_TOKEN_TYPE,
        }
    }

    fn from_typ(typ: &str) -> Option<Self> {
        match typ {
            SESSION_TOKEN_TYPE => Some(TokenKind::Session),
            USER_TOKEN_TYPE => Some(TokenKind::User),
            _ => None,
        }
    }
}

/// The claims of our access tokens (RFC 7519 names where one exists).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// Issuer: this instance's public URL.
    pub iss: String,
    /// Subject: the user id.
    pub sub: UserId,
    /// Audience: the application's client id (SESSION) or `console:<workspace>` (USER).
    pub aud: String,
    /// Workspace.
    pub ws: WorkspaceId,
    /// Role at issuance.
    pub role: String,
    /// Login session.
    pub sid: SessionId,
    /// Token revision at issuance.
    pub rev: i64,
    /// Issued at (seconds).
    pub iat: i64,
    /// Not before (seconds).
    pub nbf: i64,
    /// Expires (seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// The end user's tier in the application at issuance (SESSION JWTs of applications with tiers).
    /// Informational: the server looks the current tier up on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// What a verified token says. Cached by token hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Kind.
    pub kind: TokenKind,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Application (SESSION tokens).
    pub application: Option<ApplicationId>,
    /// User.
    pub user: UserId,
    /// Login session.
    pub session: SessionId,
    /// Role at issuance.
    pub role: Role,
    /// Revision at issuance.
    pub revision: i64,
    /// Not valid before.
    pub not_before: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// A freshly signed token. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// Lifetime.
    pub expires_in: Duration,
    /// Expiry.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

struct KeySet {
    active: Option<Arc<SigningKey>>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: serde_json::Value,
}

/// Token settings.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss` of every token.
    pub issuer: String,
    /// Tolerated clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    /// Algorithm of newly generated signing keys.
    pub algorithm: SigningAlgorithm,
    /// How many verified tokens to remember.
    pub cache_capacity: u64,
}

/// Issues and verifies our access tokens.
pub struct TokenService {
    settings: TokenSettings,
    keys: Arc<KeyService>,
    set: RwLock<Arc<KeySet>>,
    last_reload: Mutex<Option<Instant>>,
    verified: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How often an unknown `kid` may trigger a reload of the key set.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

impl TokenService {
    /// A token service; call [`TokenService::load_keys`] before use.
    pub fn new(settings: TokenSettings, keys: Arc<KeyService>) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(settings.cache_capacity)
            .time_to_idle(Duration::from_secs(3600))
            .build();
        TokenService {
            settings,
            keys,
            set: RwLock::new(Arc::new(KeySet {
                active: None,
                verifying: HashMap::new(),
                jwks: serde_json::json!({"keys": []}),
            })),
            last_reload: Mutex::new(None),
            verified,
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Makes sure an active signing key of the configured algorithm exists (first start), then loads.
    pub async fn ensure_signing_key(&self, now: Timestamp) -> Result<()> {
        let keys = self.keys.signing_keys().await?;
        let has_active = keys
            .iter()
            .any(|(record, key)| record.retired_at.is_none() && key.alg() == self.settings.algorithm);
        if !has_active {
            self.keys.add_signing_key(self.settings.algorithm, now).await?;
        }
        self.load_keys().await
    }

    /// Generates a new active signing key; the old one keeps verifying. Returns the new key id.
    pub async fn rotate_signing_key(&self, now: Timestamp) -> Result<String> {
        let kid = self.keys.add_signing_key(self.settings.algorithm, now).await?;
        self.load_keys().await?;
        Ok(kid)
    }

    /// (Re)loads the signing keys from the key ring.
    pub async fn load_keys(&self) -> Result<()> {
        let loaded = self.keys.signing_keys().await?;
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        let mut active: Option<(Timestamp, Arc<SigningKey>)> = None;
        for (record, key) in loaded {
            verifying.insert(key.kid().to_owned(), key.verifying_key());
            jwks.push(key.public_jwk().clone());
            if record.retired_at.is_none() && active.as_ref().is_none_or(|(t, _)| record.created_at > *t) {
                active = Some((record.created_at, Arc::new(key)));
            }
        }
        let set = KeySet {
            active: active.map(|(_, k)| k),
            verifying,
            jwks: serde_json::json!({ "keys": jwks }),
        };
        if let Ok(mut guard) = self.set.write() {
            *guard = Arc::new(set);
        }
        Ok(())
    }

    fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The public keys as a JWK Set (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        self.current().jwks.clone()
    }

    /// Signs an access token of `kind` for these claims' subject.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &self,
        kind: TokenKind,
        audience: String,
        workspace: WorkspaceId,
        user: UserId,
        session: SessionId,
        role: Role,
        revision: i64,
        ttl: Duration,
        now: Timestamp,
        tier: Option<&str>,
    ) -> Result<IssuedToken> {
        let key = self.active_key()?;
        let expires_at = now.plus(ttl);
        let claims = AccessClaims {
            // The workspace's own issuer: its discovery document names the keys that sign the token.
            iss: crate::login::workspace_issuer(&self.settings.issuer, workspace),
            sub: user,
            aud: audience,
            ws: workspace,
            role: role.as_str().to_owned(),
            sid: session,
            rev: revision,
            iat: now.secs(),
            nbf: now.secs(),
            exp: expires_at.secs(),
            jti: secureflows_crypto::random_token("")?,
            tier: tier.map(str::to_owned),
        };
        let token = key.sign_jwt(kind.typ(), &claims)?;
        Ok(IssuedToken {
            token,
            expires_in: ttl,
            expires_at: Timestamp::from_secs(claims.exp),
        })
    }

    /// Verifies signature, algorithm, type, issuer and audience shape of one of our access tokens and
    /// returns what it says. Does **not** check expiry, session or revision: callers do, every time.
    ///
    /// Errors: 401 `InvalidToken` for anything that is not a valid access token of ours; 403
    /// `WrongTokenKind` for a valid access token of the other kind.
    pub async fn verify(&self, token: &str, expected: TokenKind) -> Result<Arc<VerifiedToken>> {
        let hash = secureflows_crypto::sha256(token.as_bytes());
        if let Some(hit) = self.verified.get(&hash) {
            return check_kind(hit, expected);
        }
        let verified = Arc::new(self.verify_uncached(token).await?);
        self.verified.insert(hash, verified.clone());
        check_kind(verified, expected)
    }

    async fn verify_uncached(&self, token: &str) -> Result<VerifiedToken> {
        let header = jws::peek_header(token).map_err(|_| Error::invalid_token())?;
        let kind = header
            .typ
            .as_deref()
            .and_then(TokenKind::from_typ)
            .ok_or_else(Error::invalid_token)?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: we understand no critical extension, so none may be present.
            return Err(Error::invalid_token());
        }
        let kid = header
            .kid
            .as_deref()
            .filter(|k| k.len() <= 128)
            .ok_or_else(Error::invalid_token)?;
        let key = match self.current().verifying.get(kid) {
            Some(key) => key.clone(),
            None => {
                // A key another node just created may not be loaded here yet.
                if !self.reload_allowed() {
                    return Err(Error::invalid_token());
                }
                self.load_keys().await?;
                self.current()
                    .verifying
                    .get(kid)
                    .cloned()
                    .ok_or_else(Error::invalid_token)?
            }
        };
        if header.alg != key.alg() {
            return Err(Error::invalid_token());
        }
        let (_, claims): (_, AccessClaims) = key.verify(token).map_err(|e| match e {
            JwsError::Invalid | JwsError::Claims => Error::invalid_token(),
        })?;
        if claims.iss != crate::login::workspace_issuer(&self.settings.issuer, claims.ws) {
            return Err(Error::invalid_token());
        }
        let role = Role::parse(&claims.role).ok_or_else(Error::invalid_token)?;
        let application = match kind {
            TokenKind::Session => Some(
                claims
                    .aud
                    .parse::<ApplicationId>()
                    .map_err(|_| Error::invalid_token())?,
            ),
            TokenKind::User => {
                if claims.aud != console_audience(claims.ws) {
                    return Err(Error::invalid_token());
                }
                None
            }
        };
        if claims.exp < claims.nbf {
            return Err(Error::invalid_token());
        }
        Ok(VerifiedToken {
            kind,
            workspace: claims.ws,
            application,
            user: claims.sub,
            session: claims.sid,
            role,
            revision: claims.rev,
            not_before: Timestamp::from_secs(claims.nbf),
            expires_at: Timestamp::from_secs(claims.exp),
        })
    }

    /// Signs an OpenID Connect ID token (`typ` `JWT`) with the active key.
    pub fn sign_id_token(&self, claims: &serde_json::Value) -> Result<String> {
        Ok(self.active_key()?.sign_jwt("JWT", claims)?)
    }

    fn active_key(&self) -> Result<Arc<SigningKey>> {
        self.current()
            .active
            .clone()
            .ok_or(Error::Unavailable("no signing key loaded"))
    }

    /// Verifies the signature of an ID token we issued (an `id_token_hint`) and returns its claims.
    /// Expiry is not checked: a hint may be old (OpenID Connect RP-Initiated Logout §2).
    pub fn verify_id_token_hint(&self, token: &str) -> Result<serde_json::Value> {
        let header = jws::peek_header(token).map_err(|_| Error::invalid_token())?;
        if header.typ.as_deref() != Some("JWT") || header.crit.is_some() {
            return Err(Error::invalid_token());
        }
        let kid = header.kid.as_deref().ok_or_else(Error::invalid_token)?;
        let key = self
            .current()
            .verifying
            .get(kid)
            .cloned()
            .ok_or_else(Error::invalid_token)?;
        if header.alg != key.alg() {
            return Err(Error::invalid_token());
        }
        let (_, claims): (_, serde_json::Value) = key.verify(token).map_err(|_| Error::invalid_token())?;
        Ok(claims)
    }

    fn reload_allowed(&self) -> bool {
        let Ok(mut last) = self.last_reload.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < RELOAD_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Checks `exp` and `nbf` against `now` with the configured leeway: `Expired` (410) after expiry.
    pub fn check_time(&self, token: &VerifiedToken, now: Timestamp) -> Result<()> {
        if now.minus(self.settings.leeway) >= token.expires_at {
            return Err(Error::Expired);
        }
        if now.plus(self.settings.leeway) < token.not_before {
            return Err(Error::invalid_token());
        }
        Ok(())
    }
}

/// The audience of USER JWTs of a workspace's console.
pub fn console_audience(workspace: WorkspaceId) -> String {
    format!("console:{workspace}")
}

fn check_kind(token: Arc<VerifiedToken>, expected: TokenKind) -> Result<Arc<VerifiedToken>> {
    if token.kind == expected {
        Ok(token)
    } else {
        Err(Error::Forbidden(ForbiddenReason::WrongTokenKind))
    }
}

impl From<AuthFailure> for Error {
    fn from(f: AuthFailure) -> Self {
        Error::Unauthenticated(f)
    }
}
