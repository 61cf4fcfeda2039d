//! Verification of ID tokens from an upstream OpenID Connect issuer that an application trusts.
//!
//! The issuer's keys come from its JWKS (fetched by a [`JwksSource`], which the server implements over
//! HTTP with caching). The token's `kid` selects a key from that set; the key must allow the token's
//! algorithm, which must be an asymmetric one (RS*, PS*, ES256/384, EdDSA). `iss` must equal the
//! configured issuer exactly and `aud` must contain the configured audience (OpenID Connect Core
//! §3.1.3.7).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secureflows_crypto::jws::{self, JwkSet, VerifyingKey};
use serde::Deserialize;

use crate::{Error, Result, Timestamp, UpstreamTrust};

/// An issuer's endpoints for the authorization code flow, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamEndpoints {
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
}

/// Talks to upstream issuers: their JSON Web Key Sets, their endpoints and their token endpoint.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The issuer's keys; with `refresh`, fetch again unless fetched very recently.
    async fn key_set(&self, issuer: &str, refresh: bool) -> Result<Arc<JwkSet>>;
    /// The issuer's authorization and token endpoints.
    async fn endpoints(&self, issuer: &str) -> Result<UpstreamEndpoints>;
    /// POSTs a form to a token endpoint and answers its JSON body (any status: the caller reads
    /// `error` or the tokens). `Unavailable` if it cannot be reached or answers no JSON.
    async fn token_request(&self, token_endpoint: &str, form: &[(&str, &str)]) -> Result<serde_json::Value>;
}

/// The identity an upstream ID token asserts.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// Issuer.
    pub issuer: String,
    /// Subject at the issuer.
    pub subject: String,
    /// E-mail, if asserted.
    pub email: Option<String>,
    /// Whether the issuer asserts that it verified the e-mail address (`email_verified`).
    pub email_verified: bool,
    /// The `nonce`, if the token carries one.
    pub nonce: Option<String>,
    /// Display name, if asserted.
    pub name: Option<String>,
    /// How the issuer authenticated the user (`amr`, RFC 8176), as asserted.
    pub amr: Vec<String>,
    /// The authentication context class (`acr`), if asserted.
    pub acr: Option<String>,
    /// When the ID token expires (it can be exchanged once, until then).
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for UpstreamIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Subject, e-mail and name are personal data.
        f.debug_struct("UpstreamIdentity")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    email: Option<String>,
    /// A boolean; some issuers send the string `"true"`.
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    amr: Option<serde_json::Value>,
    #[serde(default)]
    acr: Option<serde_json::Value>,
}

/// The unverified `iss` and `aud` of a token, used only to find the application that will verify it.
#[derive(Debug, Clone)]
pub struct RoutingClaims {
    /// Claimed issuer.
    pub issuer: String,
    /// Claimed audiences.
    pub audiences: Vec<String>,
}

/// Reads `iss` and `aud` without verifying anything.
pub fn routing_claims(token: &str) -> Result<RoutingClaims> {
    #[derive(Deserialize)]
    struct Route {
        iss: String,
        aud: Audience,
    }
    let route: Route = jws::peek_claims_unverified(token).map_err(|_| Error::invalid_token())?;
    let audiences = match route.aud {
        Audience::One(a) => vec![a],
        Audience::Many(v) => v,
    };
    Ok(RoutingClaims {
        issuer: route.iss,
        audiences,
    })
}

/// Verifies an upstream ID token for `trust` at `now`. Every failure is a generic 401.
pub async fn verify_id_token(
    source: &dyn JwksSource,
    token: &str,
    trust: &UpstreamTrust,
    leeway: Duration,
    now: Timestamp,
) -> Result<UpstreamIdentity> {
    let header = jws::peek_header(token).map_err(|_| Error::invalid_token())?;
    if header.crit.is_some() {
        return Err(Error::invalid_token());
    }
    let kid = header.kid.as_deref();
    let mut set = source.key_set(&trust.issuer, false).await?;
    let mut jwk = find_key(&set, kid, header.alg);
    if jwk.is_none() && kid.is_some() {
        // The issuer may have rotated its keys since we fetched them.
        set = source.key_set(&trust.issuer, true).await?;
        jwk = find_key(&set, kid, header.alg);
    }
    let jwk = jwk.ok_or_else(Error::invalid_token)?;
    let key = VerifyingKey::from_upstream_jwk(jwk, header.alg).map_err(|_| Error::invalid_token())?;
    let (_, claims): (_, IdClaims) = key.verify(token).map_err(|_| Error::invalid_token())?;

    if claims.iss != trust.issuer {
        return Err(Error::invalid_token());
    }
    let audience_ok = match &claims.aud {
        Audience::One(a) => *a == trust.audience,
        Audience::Many(v) => v.contains(&trust.audience),
    };
    if !audience_ok {
        return Err(Error::invalid_token());
    }
    let leeway_s = i64::try_from(leeway.as_secs()).unwrap_or(0);
    let now_s = now.secs();
    if claims.exp.saturating_add(leeway_s) <= now_s {
        return Err(Error::invalid_token());
    }
    if claims.nbf.is_some_and(|nbf| nbf > now_s.saturating_add(leeway_s)) {
        return Err(Error::invalid_token());
    }
    if claims.iat.is_some_and(|iat| iat > now_s.saturating_add(leeway_s)) {
        return Err(Error::invalid_token());
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 || claims.sub.chars().any(char::is_control) {
        return Err(Error::invalid_token());
    }
    let email = claims
        .email
        .filter(|e| !e.is_empty() && e.len() <= 320 && !e.chars().any(char::is_control));
    let name = claims
        .name
        .filter(|n| !n.is_empty() && n.len() <= 256 && !n.chars().any(char::is_control));
    let email_verified = match &claims.email_verified {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    };
    // `amr` is an array of strings and `acr` a string (OpenID Connect Core §2); anything else asserts
    // nothing.
    let amr = match &claims.amr {
        Some(serde_json::Value::Array(values)) => values
            .iter()
            .filter_map(|v| v.as_str())
            .take(16)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let acr = claims
        .acr
        .as_ref()
        .and_then(|v| v.as_str())
        .filter(|a| a.len() <= 255)
        .map(str::to_owned);
    Ok(UpstreamIdentity {
        issuer: claims.iss,
        subject: claims.sub,
        email_verified: email_verified && email.is_some(),
        email,
        nonce: claims.nonce,
        name,
        amr,
        acr,
        expires_at: Timestamp::from_secs(claims.exp.saturating_add(leeway_s)),
    })
}

fn find_key<'a>(set: &'a JwkSet, kid: Option<&str>, alg: jws::Algorithm) -> Option<&'a jws::Jwk> {
    match kid {
        Some(kid) => set.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)),
        // Without a kid, only an unambiguous key set can be used.
        None => {
            let mut fitting = set
                .keys
                .iter()
                .filter(|k| VerifyingKey::from_upstream_jwk(k, alg).is_ok());
            let first = fitting.next();
            if fitting.next().is_some() { None } else { first }
        }
    }
}
