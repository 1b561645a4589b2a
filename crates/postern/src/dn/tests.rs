//! Table tests of DN parsing, printing and matching (F10).

use super::*;

fn dn(rdns: &[&[(&str, &str)]]) -> Dn {
    Dn { rdns: rdns.iter().map(|r| r.iter().map(|(n, v)| Attr { name: n.to_string(), value: v.to_string() }).collect()).collect() }
}

#[test]
fn parses_rfc4514_text() {
    let cases: &[(&str, Dn)] = &[
        ("", dn(&[])),
        ("CN=host.example", dn(&[&[("CN", "host.example")]])),
        ("C=DE, O=Partner GmbH,CN=mx", dn(&[&[("C", "DE")], &[("O", "Partner GmbH")], &[("CN", "mx")]])),
        (r"CN=evil\, O=Partner", dn(&[&[("CN", "evil, O=Partner")]])),
        (r"CN=a\2Cb", dn(&[&[("CN", "a,b")]])),
        (r"CN=caf\C3\A9", dn(&[&[("CN", "café")]])),
        ("OU=a+CN=b, O=x", dn(&[&[("OU", "a"), ("CN", "b")], &[("O", "x")]])),
        (r"CN=\ padded\ ", dn(&[&[("CN", " padded ")]])),
        ("2.5.4.3=oid", dn(&[&[("2.5.4.3", "oid")]])),
    ];
    for (text, want) in cases {
        assert_eq!(Dn::parse(text).as_ref(), Ok(want), "{text:?}");
    }
    for bad in ["CN", "=x", r"CN=a\", r"CN=a\4", "O=x,,CN=y"] {
        assert!(Dn::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn prints_escaped_and_parses_back() {
    let d = dn(&[&[("O", "x, CN=admin")], &[("CN", "mallory")], &[("OU", "a+b"), ("CN", " #lead")]]);
    let text = d.to_string();
    assert_eq!(text, r"O=x\, CN\=admin, CN=mallory, OU=a\+b+CN=\ #lead");
    assert_eq!(Dn::parse(&text), Ok(d));
    assert_eq!(dn(&[&[("C", "US")], &[("CN", "host")]]).to_string(), "C=US, CN=host");
}

#[test]
fn matches_attribute_by_attribute() {
    let cert = |rdns: &[&[(&str, &str)]]| dn(rdns);
    let cases: &[(&str, Dn, bool)] = &[
        ("CN=*.sat.example", cert(&[&[("CN", "one.sat.example")]]), true),
        ("cn=ONE.sat.EXAMPLE", cert(&[&[("CN", "one.sat.example")]]), true),
        ("CN=*.sat.example", cert(&[&[("CN", "sat.example")]]), false),
        // F10: a glob never spans RDNs.
        ("CN=*.sat.example", cert(&[&[("CN", "evil")], &[("OU", "a.sat.example")]]), false),
        // F10: a CN whose value contains ", O=Partner" is one attribute.
        ("CN=*, O=Partner", cert(&[&[("CN", "mallory, O=Partner")]]), false),
        ("CN=*,O=Partner", cert(&[&[("CN", "mallory,O=Partner")]]), false),
        ("CN=*, O=Partner", cert(&[&[("CN", "mx")], &[("O", "Partner")]]), true),
        // The whole sequence, in order.
        ("CN=*", cert(&[&[("CN", "mx")], &[("O", "Partner")]]), false),
        ("O=Partner, CN=*", cert(&[&[("CN", "mx")], &[("O", "Partner")]]), false),
        ("O=*, CN=mx", cert(&[&[("O", "Partner")], &[("CN", "mx")]]), true),
        // Multi-valued RDNs are sets.
        ("CN=b+OU=a", cert(&[&[("OU", "a"), ("CN", "b")]]), true),
        ("CN=b", cert(&[&[("OU", "a"), ("CN", "b")]]), false),
        // An escaped comma in the pattern matches a comma inside a value.
        (r"CN=evil\, O=Partner", cert(&[&[("CN", "evil, O=Partner")]]), true),
        ("CN=a*b*c", cert(&[&[("CN", "axxbyyc")]]), true),
        ("CN=a*b*c", cert(&[&[("CN", "axxbyy")]]), false),
        ("CN=*", cert(&[&[("CN", "")]]), true),
    ];
    for (pattern, d, want) in cases {
        let p = Dn::parse(pattern).unwrap();
        assert_eq!(p.matches(d), *want, "{pattern:?} vs {d}");
    }
}
