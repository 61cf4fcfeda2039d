/// Associated data for AES-GCM, in a canonical and unambiguous encoding.
///
/// Every field is written as a 4-byte big-endian length followed by its bytes, after a purpose label
/// encoded the same way. Two different field lists can therefore never encode to the same bytes
/// (`("ab","c")` and `("a","bc")` differ), which is what makes a ciphertext fail to open anywhere but
/// in the place it was sealed for.
#[derive(Clone, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    /// Starts associated data for one purpose (e.g. `"sf.vault.value.v1"`).
    pub fn new(purpose: &str) -> Self {
        let mut aad = Aad(Vec::with_capacity(128));
        aad.push(purpose.as_bytes());
        aad
    }

    /// Appends one field.
    #[must_use]
    pub fn field(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.push(bytes.as_ref());
        self
    }

    fn push(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Aad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Associated data names users and keys; keep it out of logs.
        f.write_str("Aad(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::Aad;

    #[test]
    fn encoding_is_unambiguous() {
        let a = Aad::new("p").field("ab").field("c");
        let b = Aad::new("p").field("a").field("bc");
        assert_ne!(a.as_bytes(), b.as_bytes());
        let c = Aad::new("pa").field("b");
        let d = Aad::new("p").field("ab");
        assert_ne!(c.as_bytes(), d.as_bytes());
    }

    #[test]
    fn encoding_is_length_prefixed() {
        let a = Aad::new("p").field([1u8, 2]);
        assert_eq!(a.as_bytes(), &[0, 0, 0, 1, b'p', 0, 0, 0, 2, 1, 2]);
    }
}
