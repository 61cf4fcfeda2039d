//! Master key, per-workspace data and index keys, and key wrapping.
//!
//! The master key only wraps other keys. A wrapped key is `0x01 || nonce(12) || AES-256-GCM(key) || tag`,
//! with associated data naming the key's purpose, owner and version, so a wrapped key copied onto
//! another workspace or version fails to unwrap.

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::{Aad, CryptoError, random_key_bytes, seal};

const WRAP_FORMAT: u8 = 1;

/// What a wrapped key is for; part of its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// A workspace data key (seals vault values and PII).
    Data,
    /// A workspace index key (keyed hashes for lookups: e-mails, identities, vault key names).
    Index,
    /// A private JWT signing key of the instance.
    Signing,
}

impl KeyPurpose {
    /// Stable text form, stored beside the wrapped key.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Data => "data",
            KeyPurpose::Index => "index",
            KeyPurpose::Signing => "signing",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "data" => Some(KeyPurpose::Data),
            "index" => Some(KeyPurpose::Index),
            "signing" => Some(KeyPurpose::Signing),
            _ => None,
        }
    }
}

/// Where a wrapped key belongs: purpose, owner (a workspace id or a signing key id) and version.
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    /// The key's purpose.
    pub purpose: KeyPurpose,
    /// The owner: a workspace id for data and index keys, the key id for signing keys.
    pub owner: &'a str,
    /// The key's version within its owner and purpose.
    pub version: u32,
}

impl WrapContext<'_> {
    fn aad(&self) -> Aad {
        Aad::new("sf.wrap.v1")
            .field(self.purpose.as_str())
            .field(self.owner)
            .field(self.version.to_be_bytes())
    }
}

/// The instance master key. It wraps data, index and signing keys and never leaves memory in any
/// other form than the operator's key file or environment variable.
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
}

impl MasterKey {
    /// Generates a new master key; returns it with its text encoding (for the key file).
    pub fn generate() -> Result<(MasterKey, Zeroizing<String>), CryptoError> {
        let bytes = random_key_bytes()?;
        let text = Zeroizing::new(STANDARD.encode(bytes.as_ref()));
        Ok((MasterKey::from_bytes(&bytes)?, text))
    }

    /// Parses a master key from its text form: 32 bytes in standard or URL-safe base64, or 64 hex digits.
    /// Surrounding white space is ignored.
    pub fn from_encoded(text: &str) -> Result<MasterKey, CryptoError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            decode_hex(text)
        } else {
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .map_err(|_| ())
        };
        let bytes = Zeroizing::new(
            decoded.map_err(|_| CryptoError::Key("master key is not 32 bytes of base64 or hex"))?,
        );
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Key("master key must be exactly 32 bytes"))?;
        let array = Zeroizing::new(array);
        MasterKey::from_bytes(&array)
    }

    fn from_bytes(bytes: &[u8; 32]) -> Result<MasterKey, CryptoError> {
        let id_key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let tag = hmac::sign(&id_key, b"secureflows.master-key-id.v1");
        let id = format!("mk-{}", hex_lower(&tag.as_ref()[..8]));
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::Key("bad master key length"))?,
        );
        Ok(MasterKey { key, id })
    }

    /// A public fingerprint of the key (`mk-` and 16 hex digits), recorded beside everything it wraps
    /// so that a wrong key is recognised before anything is decrypted.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Wraps (encrypts) key material under the master key.
pub fn wrap_key(master: &MasterKey, ctx: WrapContext<'_>, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal::seal_raw(&master.key, WRAP_FORMAT, &[], &ctx.aad(), key)
}

/// Unwraps key material; fails with `Integrity` for a wrong master key, context or tampered bytes.
pub fn unwrap_key(
    master: &MasterKey,
    ctx: WrapContext<'_>,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (format, _, plain) = seal::open_raw(&master.key, 0, &ctx.aad(), wrapped)?;
    if format != WRAP_FORMAT {
        return Err(CryptoError::Malformed);
    }
    Ok(Zeroizing::new(plain))
}

/// A workspace data key of one version: seals vault values and PII with AES-256-GCM.
pub struct DataKey {
    pub(crate) version: u32,
    pub(crate) key: LessSafeKey,
}

impl DataKey {
    /// Builds a data key from its 32 raw bytes.
    pub fn from_bytes(version: u32, bytes: &[u8]) -> Result<DataKey, CryptoError> {
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes)
                .map_err(|_| CryptoError::Key("data key must be 32 bytes"))?,
        );
        Ok(DataKey { version, key })
    }

    /// The key's version, written into every ciphertext it seals.
    pub fn version(&self) -> u32 {
        self.version
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A workspace index key: HMAC-SHA-256 for blind indexes (look-ups without storing the clear value).
pub struct IndexKey {
    key: hmac::Key,
}

impl IndexKey {
    /// Builds an index key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<IndexKey, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::Key("index key must be 32 bytes"));
        }
        Ok(IndexKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKey(..)")
    }
}

/// A keyed hash of `input` (canonically encoded fields): equal inputs give equal indexes, and without the
/// key nothing about the input can be learnt or checked.
pub fn blind_index(key: &IndexKey, input: &Aad) -> [u8; 32] {
    let tag = hmac::sign(&key.key, input.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of `data` in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex_lower(&sha256(data))
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

fn decode_hex(text: &str) -> Result<Vec<u8>, ()> {
    if !text.len().is_multiple_of(2) {
        return Err(());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_round_trips_through_text() {
        let (key, text) = MasterKey::generate().unwrap();
        let again = MasterKey::from_encoded(&format!("  {}\n", text.as_str())).unwrap();
        assert_eq!(key.id(), again.id());
        assert!(key.id().starts_with("mk-"));
    }

    #[test]
    fn master_key_accepts_hex_and_rejects_short_keys() {
        let hex = "00".repeat(32);
        assert!(MasterKey::from_encoded(&hex).is_ok());
        assert!(MasterKey::from_encoded("c2hvcnQ=").is_err());
        assert!(MasterKey::from_encoded("").is_err());
    }

    #[test]
    fn wrapped_key_is_bound_to_its_context_and_master_key() {
        let (master, _) = MasterKey::generate().unwrap();
        let (other, _) = MasterKey::generate().unwrap();
        let ctx = WrapContext {
            purpose: KeyPurpose::Data,
            owner: "ws-a",
            version: 1,
        };
        let wrapped = wrap_key(&master, ctx, &[7u8; 32]).unwrap();
        assert_eq!(unwrap_key(&master, ctx, &wrapped).unwrap().as_slice(), &[7u8; 32]);
        assert_eq!(
            unwrap_key(&other, ctx, &wrapped).unwrap_err(),
            CryptoError::Integrity
        );
        let moved = WrapContext { owner: "ws-b", ..ctx };
        assert_eq!(
            unwrap_key(&master, moved, &wrapped).unwrap_err(),
            CryptoError::Integrity
        );
        let newer = WrapContext { version: 2, ..ctx };
        assert_eq!(
            unwrap_key(&master, newer, &wrapped).unwrap_err(),
            CryptoError::Integrity
        );
        let index = WrapContext {
            purpose: KeyPurpose::Index,
            ..ctx
        };
        assert_eq!(
            unwrap_key(&master, index, &wrapped).unwrap_err(),
            CryptoError::Integrity
        );
    }

    #[test]
    fn blind_index_depends_on_key_and_input() {
        let k1 = IndexKey::from_bytes(&[1u8; 32]).unwrap();
        let k2 = IndexKey::from_bytes(&[2u8; 32]).unwrap();
        let a = Aad::new("email").field("a@example.com");
        let b = Aad::new("email").field("b@example.com");
        assert_eq!(blind_index(&k1, &a), blind_index(&k1, &a));
        assert_ne!(blind_index(&k1, &a), blind_index(&k1, &b));
        assert_ne!(blind_index(&k1, &a), blind_index(&k2, &a));
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
