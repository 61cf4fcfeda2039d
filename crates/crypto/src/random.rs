use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::CryptoError;

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// 32 random bytes meant to become a key; zeroized when dropped.
pub fn random_key_bytes() -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(out.as_mut())
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// An opaque secret: `prefix` followed by 256 random bits in base64url (SECURITY.md: ≥128 bits,
/// from a CSPRNG, typed by its prefix).
pub fn random_token(prefix: &str) -> Result<String, CryptoError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}
