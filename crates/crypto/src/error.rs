use thiserror::Error;

/// What can go wrong in a cryptographic operation. The variants carry no key material and no plaintext.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// Authentication of a ciphertext failed: wrong key, wrong associated data, or tampering.
    #[error("ciphertext failed authentication")]
    Integrity,
    /// The ciphertext is shorter than its header or carries an unknown format version.
    #[error("ciphertext is malformed")]
    Malformed,
    /// A key could not be encoded, decoded or generated.
    #[error("key error: {0}")]
    Key(&'static str),
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// A JWT could not be signed.
    #[error("signing failed")]
    Signing,
}
