//! E-mail addresses: the one rule by which every address is stored, indexed and compared.
//!
//! An address is taken apart at its last `@` (a fullwidth `＠` counts as one):
//!
//! * the **local part** goes through the PRECIS `UsernameCaseMapped` profile (RFC 8265 §3.3: width
//!   mapping, lower case, NFC, the bidi rule; code points the `IdentifierClass` disallows — spaces,
//!   controls, zero-width and other format characters, symbols outside it — are refused), and must then
//!   be a dot-atom (RFC 5322 §3.2.3, with non-ASCII letters allowed as in RFC 6531): no quoting, no
//!   leading, trailing or doubled dot, at most 64 bytes;
//! * the **domain** goes through UTS 46 (`ToASCII` with the STD3 rules, hyphen checks and DNS lengths:
//!   fullwidth dots and letters are mapped, case is folded, disallowed code points are refused) and is
//!   kept in its ASCII form (A-labels, `xn--…`); it must have at least two labels and no trailing dot.
//!
//! The result — `local@domain`, at most 254 bytes — is what is sealed, what the keyed look-up hash is
//! taken of, and what mail is sent to. Two spellings that render alike (fullwidth forms, NFD and NFC,
//! upper and lower case) are therefore one address; the other compatibility characters PRECIS
//! disallows (the Kelvin sign, ligatures, circled letters) are refused, as is everything else the rule
//! refuses, everywhere an address is typed.

use std::borrow::Cow;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCaseMapped;

use crate::{Error, Result};

/// Most bytes of an address (RFC 5321 §4.5.3.1.3: a 256-octet path less its angle brackets).
const MAX_ADDRESS: usize = 254;
/// Most bytes of a local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Input longer than this is refused before any Unicode processing.
const MAX_INPUT: usize = 1024;

/// An e-mail address in its canonical form (see the module documentation). `Debug` hides it: an
/// address is personal data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl std::fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailAddress(..)")
    }
}

/// Why an address is refused, in the words a form shows next to the field.
fn refused(message: &str) -> Error {
    Error::invalid("email", message)
}

/// ASCII characters a dot-atom may hold besides letters and digits (RFC 5322 §3.2.3 `atext`).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

impl EmailAddress {
    /// Applies the rule to an address as typed (surrounding white space is ignored). `Invalid` (field
    /// `email`) for anything the rule refuses.
    pub fn parse(input: &str) -> Result<EmailAddress> {
        let input = input.trim();
        if input.is_empty() || input.len() > MAX_INPUT {
            return Err(refused("must be an e-mail address"));
        }
        let input: Cow<'_, str> = if input.contains('\u{FF20}') {
            Cow::Owned(input.replace('\u{FF20}', "@"))
        } else {
            Cow::Borrowed(input)
        };
        let (local, domain) = input
            .rsplit_once('@')
            .ok_or_else(|| refused("must be an e-mail address"))?;
        let local = canonical_local(local)?;
        let domain = canonical_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > MAX_ADDRESS {
            return Err(refused("is too long"));
        }
        Ok(EmailAddress(address))
    }

    /// Takes an address stored in its canonical form back (from a sealed column), checking that it
    /// still is canonical under the rule.
    pub fn from_canonical(stored: &str) -> Option<EmailAddress> {
        EmailAddress::parse(stored)
            .ok()
            .filter(|parsed| parsed.0 == stored)
    }

    /// The key under which attempts for a typed address are counted (sign-in throttles): its canonical
    /// form, or for input the rule refuses the input trimmed and lower-cased, so that no spelling of
    /// one address escapes its count.
    pub fn throttle_key(input: &str) -> String {
        match EmailAddress::parse(input) {
            Ok(address) => address.0,
            Err(_) => input.trim().to_lowercase(),
        }
    }

    /// The canonical form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical form, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn canonical_local(local: &str) -> Result<String> {
    if local.is_empty() {
        return Err(refused("needs a name before the @"));
    }
    if local.starts_with('"') {
        return Err(refused("cannot have a quoted name before the @"));
    }
    let enforced = UsernameCaseMapped::enforce(local)
        .map_err(|_| refused("has characters an e-mail address cannot have before the @"))?;
    let valid = enforced.len() <= MAX_LOCAL
        && !enforced.starts_with('.')
        && !enforced.ends_with('.')
        && !enforced.contains("..")
        && enforced
            .bytes()
            .all(|b| !b.is_ascii() || b == b'.' || is_atext(b));
    if !valid {
        return Err(refused(
            "has characters an e-mail address cannot have before the @",
        ));
    }
    Ok(enforced.into_owned())
}

/// Invisible code points (Unicode's default-ignorable ones: soft hyphen, zero-width spaces and joiners,
/// bidi controls, variation selectors, tags). UTS 46 would silently drop most of them; an address
/// typed with one is refused instead, as PRECIS refuses them in the local part.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

fn canonical_domain(domain: &str) -> Result<String> {
    // UTS 46 would keep a trailing dot (the DNS root) and map the ideographic and fullwidth dots to it.
    if domain.is_empty() || domain.ends_with(['.', '\u{3002}', '\u{FF0E}', '\u{FF61}']) {
        return Err(refused("must end with a domain name like example.com"));
    }
    if domain.chars().any(is_invisible) {
        return Err(refused("has a domain name that is not valid"));
    }
    let ascii =
        idna::domain_to_ascii_strict(domain).map_err(|_| refused("has a domain name that is not valid"))?;
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) || ascii.len() > 253 {
        return Err(refused("must end with a domain name like example.com"));
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        EmailAddress::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .into_string()
    }

    #[test]
    fn spellings_that_render_alike_are_one_address() {
        let plain = canon("ada@example.com");
        for variant in [
            " Ada@Example.COM ",
            "ＡＤＡ@example.com",         // fullwidth local part
            "ada＠example.com",           // fullwidth at sign
            "ada@ｅｘａｍｐｌｅ．ｃｏｍ", // fullwidth domain
            "ADA@EXAMPLE.COM",
        ] {
            assert_eq!(canon(variant), plain, "{variant:?}");
        }
        // NFD and NFC.
        assert_eq!(
            canon("jose\u{0301}@example.com"),
            canon("jos\u{00E9}@example.com")
        );
        // Fullwidth forms are mapped; other compatibility characters (the Kelvin sign) are refused.
        assert_eq!(canon("\u{FF4B}im@example.com"), canon("kim@example.com"));
        assert!(EmailAddress::parse("\u{212A}im@example.com").is_err());
        // An internationalised domain is kept as A-labels.
        assert_eq!(canon("ana@Bücher.example"), "ana@xn--bcher-kva.example");
        assert_eq!(canon("ana@xn--bcher-kva.example"), "ana@xn--bcher-kva.example");
    }

    #[test]
    fn what_the_rule_refuses() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",             // one label
            "ada@example.com.",        // trailing dot
            "ada@example.com\u{3002}", // ideographic full stop as trailing dot
            "ad\u{200B}a@example.com", // zero-width space
            "ad\u{200D}a@example.com", // zero-width joiner out of context
            "ada@exa\u{200B}mple.com", // zero-width space in the domain
            "a da@example.com",
            "\"a da\"@example.com",
            ".ada@example.com",
            "ada.@example.com",
            "a..da@example.com",
            "ada(x)@example.com",
            "ada@exam_ple.com",
            "ada@-example.com",
            "ad\u{0007}a@example.com",
            "ad\u{202E}a@example.com", // right-to-left override
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&long_local).is_err());
        assert!(EmailAddress::parse(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn canonical_forms_round_trip() {
        let a = EmailAddress::parse("Ada.Lovelace+x@Example.com").unwrap();
        assert_eq!(a.as_str(), "ada.lovelace+x@example.com");
        assert_eq!(EmailAddress::from_canonical(a.as_str()), Some(a));
        assert_eq!(EmailAddress::from_canonical("Ada@example.com"), None);
        assert_eq!(
            format!("{:?}", EmailAddress::parse("ada@example.com").unwrap()),
            "EmailAddress(..)"
        );
    }
}
