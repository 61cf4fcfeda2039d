//! AES-256-GCM sealing in the secureFlows ciphertext format.
//!
//! `format(1) || key_version(4, big-endian) || nonce(12) || ciphertext || tag(16)`. The header is
//! authenticated too: it is prepended to the caller's associated data. Nonces are 96 random bits from
//! the system CSPRNG (NIST SP 800-38D §8.2.2); data keys are rotated by the operator long before 2^32
//! encryptions.

use aws_lc_rs::aead::{self, LessSafeKey, NONCE_LEN, Nonce};

use crate::{Aad, CryptoError, DataKey, random_bytes};

const VALUE_FORMAT: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Bytes a sealed value adds to its plaintext.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Seals `plaintext` under `key`, bound to `aad`.
pub fn seal(key: &DataKey, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal_raw(&key.key, VALUE_FORMAT, &key.version.to_be_bytes(), aad, plaintext)
}

/// Opens a value sealed by [`seal`]. Fails with `Integrity` if the key, the associated data or any byte
/// differs, and never returns partial plaintext.
pub fn open(key: &DataKey, aad: &Aad, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if peek_key_version(sealed)? != key.version {
        return Err(CryptoError::Integrity);
    }
    let (format, _, plain) = open_raw(&key.key, 4, aad, sealed)?;
    if format != VALUE_FORMAT {
        return Err(CryptoError::Malformed);
    }
    Ok(plain)
}

/// The data-key version a sealed value names (to pick the key that opens it).
pub fn peek_key_version(sealed: &[u8]) -> Result<u32, CryptoError> {
    match sealed {
        [VALUE_FORMAT, a, b, c, d, ..] if sealed.len() >= SEAL_OVERHEAD => {
            Ok(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => Err(CryptoError::Malformed),
    }
}

/// `format || extra || nonce || ct || tag`, authenticating `format || extra || aad`.
pub(crate) fn seal_raw(
    key: &LessSafeKey,
    format: u8,
    extra: &[u8],
    aad: &Aad,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    let header_len = 1 + extra.len();
    let mut out = Vec::with_capacity(header_len + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(format);
    out.extend_from_slice(extra);
    let full_aad = authenticated(&out, aad);
    out.extend_from_slice(&nonce_bytes);
    let body_start = out.len();
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            aead::Aad::from(full_aad.as_slice()),
            &mut out[body_start..],
        )
        .map_err(|_| CryptoError::Integrity)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Inverse of [`seal_raw`] for an `extra` of `extra_len` bytes. Returns `(format, extra, plaintext)`.
pub(crate) fn open_raw(
    key: &LessSafeKey,
    extra_len: usize,
    aad: &Aad,
    sealed: &[u8],
) -> Result<(u8, Vec<u8>, Vec<u8>), CryptoError> {
    let header_len = 1 + extra_len;
    if sealed.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let (header, rest) = sealed.split_at(header_len);
    let (nonce_bytes, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| CryptoError::Malformed)?;
    let full_aad = authenticated(header, aad);
    let mut buf = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, aead::Aad::from(full_aad.as_slice()), &mut buf)
        .map_err(|_| CryptoError::Integrity)?
        .len();
    buf.truncate(plain_len);
    Ok((header[0], header[1..].to_vec(), buf))
}

fn authenticated(header: &[u8], aad: &Aad) -> Vec<u8> {
    let mut full = Vec::with_capacity(header.len() + aad.as_bytes().len());
    full.extend_from_slice(header);
    full.extend_from_slice(aad.as_bytes());
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u32, byte: u8) -> DataKey {
        DataKey::from_bytes(version, &[byte; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_overhead() {
        let k = key(3, 9);
        let aad = Aad::new("t").field("ws").field("user");
        let sealed = seal(&k, &aad, b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(peek_key_version(&sealed).unwrap(), 3);
        assert_eq!(open(&k, &aad, &sealed).unwrap(), b"hello");
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn nonces_differ_between_seals() {
        let k = key(1, 1);
        let aad = Aad::new("t");
        let a = seal(&k, &aad, b"same").unwrap();
        let b = seal(&k, &aad, b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn every_flipped_bit_fails_closed() {
        let k = key(1, 1);
        let aad = Aad::new("t").field("row-1");
        let sealed = seal(&k, &aad, b"secret value").unwrap();
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(open(&k, &aad, &bad).is_err(), "byte {i} bit {bit}");
            }
        }
        assert!(open(&k, &aad, &sealed[..sealed.len() - 1]).is_err());
        assert!(open(&k, &aad, &[]).is_err());
    }

    #[test]
    fn other_aad_or_key_fails() {
        let k = key(1, 1);
        let sealed = seal(&k, &Aad::new("t").field("row-1"), b"v").unwrap();
        assert_eq!(
            open(&k, &Aad::new("t").field("row-2"), &sealed),
            Err(CryptoError::Integrity)
        );
        assert_eq!(
            open(&key(1, 2), &Aad::new("t").field("row-1"), &sealed),
            Err(CryptoError::Integrity)
        );
        assert_eq!(
            open(&key(2, 1), &Aad::new("t").field("row-1"), &sealed),
            Err(CryptoError::Integrity)
        );
    }
}
