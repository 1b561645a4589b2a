//! Internationalised domain names (RFC 5890/5891, UTS #46): DNS lookups
//! (MX, A/AAAA, TLSA, MTA-STS) and next hops that do not speak SMTPUTF8
//! use A-labels (`xn--…`); a UTF-8 domain in an address is converted here
//! with the `idna` crate.
//!
//! May touch: nothing (pure). RFCs: 5890, 5891, 6531 §3.2.

/// The A-label (ASCII) form of `domain`, lower-cased; an ASCII domain
/// comes back lower-cased. `Err` names why a UTF-8 domain is not a valid
/// IDN. Address literals (`[…]`) come back unchanged.
pub fn to_ascii(domain: &str) -> Result<String, String> {
    if domain.starts_with('[') {
        return Ok(domain.to_string());
    }
    if domain.is_ascii() {
        return Ok(domain.to_ascii_lowercase());
    }
    idna::domain_to_ascii_strict(domain).map_err(|_| format!("{domain} is not a valid internationalised domain name"))
}

/// The U-label (Unicode) form of `domain` for display; unchanged when it
/// has no A-labels or they do not decode.
pub fn to_unicode(domain: &str) -> String {
    let (s, r) = idna::domain_to_unicode(domain);
    if r.is_ok() {
        s
    } else {
        domain.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(to_ascii("Example.COM").unwrap(), "example.com");
        assert_eq!(to_ascii("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(to_ascii("BÜCHER.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(to_ascii("[192.0.2.1]").unwrap(), "[192.0.2.1]");
        assert!(to_ascii("bad domain.bücher").is_err());
        assert_eq!(to_unicode("xn--bcher-kva.example"), "bücher.example");
        assert_eq!(to_unicode("plain.example"), "plain.example");
    }
}
