//! Every cryptographic operation of secureFlows, by name.
//!
//! Other crates call `seal`, `open`, `wrap_key`, `blind_index`, `SigningKey::sign_jwt` and so on; none of
//! them touches a primitive. The primitives come from `aws-lc-rs` (AES-256-GCM, HMAC-SHA-256, SHA-256,
//! RSA and Ed25519) and `jsonwebtoken` (JWS compact serialisation and verification). Nothing here is
//! invented: this crate only fixes formats (ciphertext layout, associated data encoding, key ids).
//!
//! This crate must never log, and never put key material or plaintext into an error.

mod aad;
mod error;
pub mod jws;
mod keys;
pub mod password;
mod random;
mod seal;
mod secret;
pub mod totp;
pub mod webhook;

pub use aad::Aad;
pub use error::CryptoError;
pub use keys::{
    DataKey, IndexKey, KeyPurpose, MasterKey, WrapContext, blind_index, sha256, sha256_hex, unwrap_key,
    wrap_key,
};
pub use random::{random_bytes, random_key_bytes, random_token};
pub use seal::{SEAL_OVERHEAD, open, peek_key_version, seal};
pub use secret::SecretString;

/// Constant-time equality of two byte strings (for comparing secrets and their hashes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
