//! `[ldap]` filter and DN templates: the placeholders `%u` `%s` `%l` `%d`
//! `%%`, their expansion with every substituted value escaped (filters per
//! RFC 4515 §3, DNs per RFC 4514 §2.4), and the load-time checks of a
//! template. Pure; the LDAP directory and the config check share it.
//!
//! May touch: nothing (pure). RFCs: 4515 (filter strings), 4514 (DN strings).

/// What a lookup substitutes: `%u` the login (or the whole key), `%s` the
/// whole key (login, address or domain), `%l` the part before the last `@`
/// (the whole key without one), `%d` the part after it (the domain; the
/// whole key for a domain lookup, empty for a login without `@`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key<'a> {
    whole: &'a str,
    local: &'a str,
    domain: &'a str,
}

impl<'a> Key<'a> {
    /// A login or an address (`local@domain`).
    pub fn address(key: &'a str) -> Key<'a> {
        match key.rsplit_once('@') {
            Some((l, d)) => Key { whole: key, local: l, domain: d },
            None => Key { whole: key, local: key, domain: "" },
        }
    }

    /// A domain: `%d`, `%s` and `%u` are the domain, `%l` is empty.
    pub fn domain(domain: &'a str) -> Key<'a> {
        Key { whole: domain, local: "", domain }
    }

    fn value(&self, placeholder: char) -> Option<&'a str> {
        match placeholder {
            'u' | 's' => Some(self.whole),
            'l' => Some(self.local),
            'd' => Some(self.domain),
            _ => None,
        }
    }
}

/// RFC 4515 §3: in an assertion value, `*`, `(`, `)`, `\` and NUL are
/// written as `\` and two hex digits, so a value can never close the
/// filter, open a new one or become a wildcard (`*)(uid=*` is a literal).
pub fn escape_filter_value(v: &str) -> String {
    ldap3::ldap_escape(v).into_owned()
}

/// RFC 4514 §2.4: in an attribute value of a DN, `"+,;<>\=` and NUL, a
/// leading space or `#` and a trailing space are written as `\` and two hex
/// digits, so a value cannot add an RDN or another attribute.
pub fn escape_dn_value(v: &str) -> String {
    ldap3::dn_escape(v).into_owned()
}

/// Expands `template` for `key`, each value passed through `escape`.
/// Unknown placeholders were refused at load; here they stay as written.
fn expand(template: &str, key: &Key<'_>, escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + key.whole.len() * 2);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(p) => match key.value(p) {
                Some(v) => out.push_str(&escape(v)),
                None => {
                    out.push('%');
                    out.push(p);
                }
            },
            None => out.push('%'),
        }
    }
    out
}

/// The search filter `template` asks for `key` (values RFC 4515-escaped).
pub fn filter(template: &str, key: &Key<'_>) -> String {
    expand(template, key, escape_filter_value)
}

/// The DN `template` names for `key` (values RFC 4514-escaped).
pub fn dn(template: &str, key: &Key<'_>) -> String {
    expand(template, key, escape_dn_value)
}

/// Placeholders must be `%u` `%s` `%l` `%d` or `%%`, and one must be there.
fn check_placeholders(template: &str) -> Result<(), String> {
    let mut chars = template.chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%') => {}
                Some('u' | 's' | 'l' | 'd') => any = true,
                Some(p) => return Err(format!("unknown placeholder %{p} in {template:?} (use %u, %s, %l, %d or %% for a literal %)")),
                None => return Err(format!("{template:?} ends with a lone % (write %% for a literal %)")),
            }
        }
    }
    if any {
        Ok(())
    } else {
        Err(format!("{template:?} has no placeholder (%u, %s, %l or %d): it would find the same entries for every lookup"))
    }
}

/// A filter template: known placeholders, and a valid RFC 4515 filter
/// once expanded (checked with a sample value).
pub fn check_filter(template: &str) -> Result<(), String> {
    check_placeholders(template)?;
    let not_a_filter = || format!("{template:?} is not an LDAP filter (RFC 4515), e.g. \"(uid=%u)\"");
    // RFC 4515 §3: a filter is parenthesised; ldap3 also takes a bare `a=b`.
    if !(template.starts_with('(') && template.ends_with(')')) {
        return Err(not_a_filter());
    }
    let sample = filter(template, &Key::address("sample@example.org"));
    ldap3::parse_filter(&sample).map(|_| ()).map_err(|_| not_a_filter())
}

/// A DN template: known placeholders, at least one `attr=value` pair.
pub fn check_template(template: &str) -> Result<(), String> {
    check_placeholders(template)?;
    if !template.contains('=') {
        return Err(format!("{template:?} is not a DN, e.g. \"uid=%u,ou=people,dc=example,dc=org\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "(&(objectClass=inetOrgPerson)(uid=%u))";

    #[test]
    fn filters_escape_every_value() {
        let table: &[(&str, &str, &str)] = &[
            (USER, "alice", "(&(objectClass=inetOrgPerson)(uid=alice))"),
            (USER, "*", "(&(objectClass=inetOrgPerson)(uid=\\2a))"),
            (USER, "*)(uid=*", "(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))"),
            (USER, "admin)(|(uid=*", "(&(objectClass=inetOrgPerson)(uid=admin\\29\\28|\\28uid=\\2a))"),
            (USER, "a\\b", "(&(objectClass=inetOrgPerson)(uid=a\\5cb))"),
            (USER, "nul\0x", "(&(objectClass=inetOrgPerson)(uid=nul\\00x))"),
            (USER, "jörg", "(&(objectClass=inetOrgPerson)(uid=jörg))"),
            ("(mail=%s)", "a*@b.example", "(mail=a\\2a@b.example)"),
            ("(&(uid=%l)(associatedDomain=%d))", "al)ice@b(.example", "(&(uid=al\\29ice)(associatedDomain=b\\28.example))"),
            ("(uid=%l)", "a@b@c.example", "(uid=a@b)"),
            ("(x=100%%%u)", "u", "(x=100%u)"),
        ];
        for (template, value, want) in table {
            let got = filter(template, &Key::address(value));
            assert_eq!(&got, want, "{template} with {value:?}");
            // Every expansion is one well-formed filter: nothing injected.
            assert!(ldap3::parse_filter(&got).is_ok(), "{got}");
        }
    }

    #[test]
    fn domain_keys() {
        assert_eq!(filter("(&(dc=%d)(x=%s)(l=%l))", &Key::domain("a.example")), "(&(dc=a.example)(x=a.example)(l=))");
        assert_eq!(filter("(dc=%d)", &Key::domain("*")), "(dc=\\2a)");
    }

    #[test]
    fn dns_escape_every_value() {
        let t = "uid=%u,ou=people,dc=example,dc=org";
        let table: &[(&str, &str)] = &[
            ("alice", "uid=alice,ou=people,dc=example,dc=org"),
            ("a,ou=admins", "uid=a\\2cou\\3dadmins,ou=people,dc=example,dc=org"),
            ("a+cn=x", "uid=a\\2bcn\\3dx,ou=people,dc=example,dc=org"),
            (" lead", "uid=\\20lead,ou=people,dc=example,dc=org"),
            ("#hash", "uid=\\23hash,ou=people,dc=example,dc=org"),
            ("trail ", "uid=trail\\20,ou=people,dc=example,dc=org"),
            ("q\"<>;\\", "uid=q\\22\\3c\\3e\\3b\\5c,ou=people,dc=example,dc=org"),
        ];
        for (value, want) in table {
            assert_eq!(&dn(t, &Key::address(value)), want, "{value:?}");
        }
    }

    #[test]
    fn template_checks() {
        let ok = [USER, "(mail=%s)", "(|(mail=%s)(mailAlternateAddress=%s))", "(&(uid=%l)(dc=%d))"];
        for t in ok {
            assert!(check_filter(t).is_ok(), "{t}");
        }
        let bad: &[(&str, &str)] = &[
            ("(uid=%x)", "unknown placeholder %x"),
            ("(uid=%u", "is not an LDAP filter"),
            ("uid=%u", "is not an LDAP filter"),
            ("(uid=alice)", "has no placeholder"),
            ("(uid=%u)%", "lone %"),
        ];
        for (t, want) in bad {
            let e = check_filter(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        assert!(check_template("uid=%u,dc=example,dc=org").is_ok());
        assert!(check_template("%u").unwrap_err().contains("is not a DN"));
        assert!(check_template("uid=%q").unwrap_err().contains("unknown placeholder"));
    }
}
