//! JSON Web Signatures: our own signing keys (RS256 with 3072-bit RSA, or EdDSA with Ed25519), their
//! public JWKs, and verification of compact JWS tokens with a key the *verifier* chose.
//!
//! SECURITY: the algorithm is never taken from the token. Callers pick the key by `kid` from a key set
//! they trust and pass that key's algorithm; `alg: none`, HMAC and a mismatching algorithm all fail
//! (RFC 8725 §3.1, §3.2). `jku`, `x5u` and embedded `jwk` headers are ignored.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use zeroize::Zeroizing;

pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use jsonwebtoken::{Algorithm, DecodingKey, Header};

use crate::{CryptoError, sha256};

/// Algorithms secureFlows signs its own tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 3072-bit keys (SECURITY.md: ≥3072 bits).
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl SigningAlgorithm {
    /// The JOSE name (`RS256`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Rs256 => "RS256",
            SigningAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// Parses a JOSE name or the configuration spelling (`rs256`, `eddsa`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "rs256" => Some(SigningAlgorithm::Rs256),
            "eddsa" | "ed25519" => Some(SigningAlgorithm::EdDsa),
            _ => None,
        }
    }

    /// The `jsonwebtoken` algorithm.
    pub fn jose(self) -> Algorithm {
        match self {
            SigningAlgorithm::Rs256 => Algorithm::RS256,
            SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// A private signing key with its public half.
pub struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    pkcs8: Zeroizing<Vec<u8>>,
    encoding: jsonwebtoken::EncodingKey,
    public_jwk: serde_json::Value,
    decoding: DecodingKey,
}

impl SigningKey {
    /// Generates a new key pair.
    pub fn generate(alg: SigningAlgorithm) -> Result<SigningKey, CryptoError> {
        let pkcs8 = match alg {
            SigningAlgorithm::Rs256 => {
                let pair =
                    RsaKeyPair::generate(KeySize::Rsa3072).map_err(|_| CryptoError::Key("RSA generation"))?;
                let der = pair.as_der().map_err(|_| CryptoError::Key("RSA encoding"))?;
                Zeroizing::new(der.as_ref().to_vec())
            }
            SigningAlgorithm::EdDsa => {
                let pair = Ed25519KeyPair::generate().map_err(|_| CryptoError::Key("Ed25519 generation"))?;
                let doc = pair
                    .to_pkcs8()
                    .map_err(|_| CryptoError::Key("Ed25519 encoding"))?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
        };
        SigningKey::from_pkcs8(alg, &pkcs8)
    }

    /// Rebuilds a key from its PKCS#8 DER encoding (as unwrapped from the key ring).
    pub fn from_pkcs8(alg: SigningAlgorithm, pkcs8: &[u8]) -> Result<SigningKey, CryptoError> {
        let (encoding, public_jwk, decoding) = match alg {
            SigningAlgorithm::Rs256 => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::Key("RSA key rejected"))?;
                if pair.public_modulus_len() < 384 {
                    return Err(CryptoError::Key("RSA signing keys must have at least 3072 bits"));
                }
                let public = pair.public_key();
                let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
                let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
                let thumb = json!({"e": e, "kty": "RSA", "n": n});
                let kid = thumbprint(&thumb)?;
                let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e});
                let pem = Zeroizing::new(pkcs8_pem(pkcs8));
                let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|_| CryptoError::Key("RSA key rejected by JWS encoder"))?;
                let decoding = DecodingKey::from_rsa_components(&n, &e)
                    .map_err(|_| CryptoError::Key("RSA public key rejected"))?;
                (encoding, jwk, decoding)
            }
            SigningAlgorithm::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
                    .map_err(|_| CryptoError::Key("Ed25519 key rejected"))?;
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                let thumb = json!({"crv": "Ed25519", "kty": "OKP", "x": x});
                let kid = thumbprint(&thumb)?;
                let jwk =
                    json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": x});
                let encoding = jsonwebtoken::EncodingKey::from_ed_der(pkcs8);
                let decoding = DecodingKey::from_ed_components(&x)
                    .map_err(|_| CryptoError::Key("Ed25519 public key rejected"))?;
                (encoding, jwk, decoding)
            }
        };
        let kid = public_jwk["kid"].as_str().unwrap_or_default().to_owned();
        Ok(SigningKey {
            kid,
            alg,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            encoding,
            public_jwk,
            decoding,
        })
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> SigningAlgorithm {
        self.alg
    }

    /// The PKCS#8 encoding of the private key, for wrapping only.
    pub fn private_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK (for `/.well-known/jwks.json`).
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    /// The verifying half of this key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            alg: self.alg.jose(),
            key: self.decoding.clone(),
        }
    }

    /// Signs `claims` as a compact JWS with `typ` (explicit typing, RFC 8725 §3.11) and this key's `kid`.
    pub fn sign_jwt<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, CryptoError> {
        let mut header = Header::new(self.alg.jose());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| CryptoError::Signing)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A public key with the one algorithm it may verify.
#[derive(Clone)]
pub struct VerifyingKey {
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Algorithms accepted from upstream OpenID providers. HMAC and `none` are never accepted.
pub const UPSTREAM_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl VerifyingKey {
    /// Builds a verifying key from an upstream JWK for the algorithm the token header names, after
    /// checking that the algorithm is an asymmetric one we accept and that the JWK allows it.
    pub fn from_upstream_jwk(jwk: &Jwk, header_alg: Algorithm) -> Result<VerifyingKey, CryptoError> {
        if !UPSTREAM_ALGORITHMS.contains(&header_alg) {
            return Err(CryptoError::Key("algorithm not accepted"));
        }
        if let Some(key_alg) = jwk.common.key_algorithm
            && key_alg.to_string() != format!("{header_alg:?}")
        {
            return Err(CryptoError::Key("JWK algorithm differs from token algorithm"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| CryptoError::Key("JWK rejected"))?;
        if !header_alg.family().eq(&key.family()) {
            return Err(CryptoError::Key("JWK type does not fit the algorithm"));
        }
        Ok(VerifyingKey { alg: header_alg, key })
    }

    /// The algorithm this key verifies.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Verifies a compact JWS and returns its header and claims. Only the signature and the algorithm
    /// are checked here; time, issuer, audience and type are the caller's rules.
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<(Header, C), JwsError> {
        let mut validation = jsonwebtoken::Validation::new(self.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        match jsonwebtoken::decode::<C>(token, &self.key, &validation) {
            Ok(data) => Ok((data.header, data.claims)),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::Json(_) => JwsError::Claims,
                _ => JwsError::Invalid,
            }),
        }
    }
}

/// Why a JWS was refused. Deliberately coarse: every case answers the same to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Malformed, unsigned, wrongly signed, or signed with another algorithm.
    #[error("invalid signature or token")]
    Invalid,
    /// Signed correctly but the claims do not have the expected shape.
    #[error("claims have an unexpected shape")]
    Claims,
}

/// Reads a token's header without verifying anything: only to choose a key by `kid`.
/// Tokens with `alg: none` or an unknown algorithm fail here.
pub fn peek_header(token: &str) -> Result<Header, JwsError> {
    if token.len() > 16 * 1024 || token.split('.').count() != 3 {
        return Err(JwsError::Invalid);
    }
    jsonwebtoken::decode_header(token).map_err(|_| JwsError::Invalid)
}

/// Reads a token's claims without verifying anything: only to route a token to the configuration
/// that will verify it (e.g. an upstream ID token's `iss` and `aud`). Never trust the result.
pub fn peek_claims_unverified<C: DeserializeOwned>(token: &str) -> Result<C, JwsError> {
    let payload = token.split('.').nth(1).ok_or(JwsError::Invalid)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| JwsError::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| JwsError::Claims)
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of the required members, already in lexical order.
fn thumbprint(members: &serde_json::Value) -> Result<String, CryptoError> {
    let canonical = serde_json::to_vec(members).map_err(|_| CryptoError::Key("JWK encoding"))?;
    Ok(URL_SAFE_NO_PAD.encode(sha256(&canonical)))
}

fn pkcs8_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::with_capacity(b64.len() + 80);
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Claims {
        sub: String,
        n: u32,
    }

    fn round_trip(alg: SigningAlgorithm) {
        let key = SigningKey::generate(alg).unwrap();
        let token = key
            .sign_jwt(
                "sf-session+jwt",
                &Claims {
                    sub: "u".into(),
                    n: 1,
                },
            )
            .unwrap();
        let header = peek_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.typ.as_deref(), Some("sf-session+jwt"));
        let (_, claims): (_, Claims) = key.verifying_key().verify(&token).unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: "u".into(),
                n: 1
            }
        );
        let again = SigningKey::from_pkcs8(alg, key.private_pkcs8()).unwrap();
        assert_eq!(again.kid(), key.kid());
        let (_, claims2): (_, Claims) = again.verifying_key().verify(&token).unwrap();
        assert_eq!(claims2.n, 1);
        let other = SigningKey::generate(alg).unwrap();
        assert!(other.verifying_key().verify::<Claims>(&token).is_err());
    }

    #[test]
    fn rs256_round_trip() {
        round_trip(SigningAlgorithm::Rs256);
    }

    #[test]
    fn eddsa_round_trip() {
        round_trip(SigningAlgorithm::EdDsa);
    }

    #[test]
    fn rsa_keys_are_3072_bits() {
        let key = SigningKey::generate(SigningAlgorithm::Rs256).unwrap();
        let n = key.public_jwk()["n"].as_str().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(n).unwrap().len(), 384);
    }

    #[test]
    fn alg_none_and_hmac_with_public_key_are_refused() {
        let key = SigningKey::generate(SigningAlgorithm::Rs256).unwrap();
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"u","n":1}"#);
        for alg in ["none", "None", "NONE", "nOnE"] {
            let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, key.kid()));
            assert!(peek_header(&format!("{head}.{body}.")).is_err());
            assert!(
                key.verifying_key()
                    .verify::<Claims>(&format!("{head}.{body}."))
                    .is_err()
            );
        }
        // HS256 keyed with the public key's bytes.
        let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, key.kid()));
        let secret = serde_json::to_vec(key.public_jwk()).unwrap();
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            format!("{head}.{body}").as_bytes(),
        );
        let forged = format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert!(key.verifying_key().verify::<Claims>(&forged).is_err());
    }

    #[test]
    fn peek_rejects_malformed_tokens() {
        for t in ["", "a", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(peek_header(t).is_err(), "{t}");
        }
    }
}
