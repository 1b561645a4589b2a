//! One search result entry (RFC 4511 §4.5.2 SearchResultEntry) as a DN and
//! its attributes, decoded without panicking: ldap3's own
//! `SearchEntry::construct` `expect`s a well-formed entry, and these bytes
//! come from the network.
//!
//! May touch: nothing (pure). RFC 4511 §4.5.2.

use ldap3::asn1::StructureTag;
use ldap3::ResultEntry;

/// An entry: its DN and its attributes with their (UTF-8) values; values
/// that are not UTF-8 are left out (postern reads names, addresses and
/// `{SCHEME}` password strings only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The entry's DN.
    pub dn: String,
    /// Attribute type (as the server spelled it) and values.
    pub attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    /// The values of `attr` (attribute names compare case-insensitively,
    /// RFC 4512 §2.5).
    pub fn values<'a>(&'a self, attr: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attrs.iter().filter(move |(a, _)| a.eq_ignore_ascii_case(attr)).flat_map(|(_, v)| v.iter().map(String::as_str))
    }
}

/// Decodes a result entry; `None`: not a SearchResultEntry (a referral,
/// an intermediate response) or malformed.
pub fn decode(re: ResultEntry) -> Option<Entry> {
    // [APPLICATION 4] SEQUENCE { objectName LDAPDN, attributes PartialAttributeList }
    let mut parts = re.0.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs = Vec::new();
    for attr in parts.next()?.expect_constructed()? {
        if let Some(a) = attribute(attr) {
            attrs.push(a);
        }
    }
    Some(Entry { dn, attrs })
}

/// PartialAttribute ::= SEQUENCE { type AttributeDescription, vals SET OF value }
fn attribute(t: StructureTag) -> Option<(String, Vec<String>)> {
    let mut parts = t.expect_constructed()?.into_iter();
    let name = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let values = parts.next()?.expect_constructed()?.into_iter().filter_map(|v| String::from_utf8(v.expect_primitive()?).ok()).collect();
    Some((name, values))
}

#[cfg(test)]
mod tests {
    use ldap3::asn1::{TagClass, PL};

    use super::*;

    fn prim(id: u64, b: &[u8]) -> StructureTag {
        StructureTag { class: TagClass::Universal, id, payload: PL::P(b.to_vec()) }
    }

    fn cons(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag { class, id, payload: PL::C(inner) }
    }

    #[test]
    fn decodes_an_entry_and_survives_garbage() {
        let attr = |n: &str, vals: &[&[u8]]| {
            cons(
                TagClass::Universal,
                16,
                vec![prim(4, n.as_bytes()), cons(TagClass::Universal, 17, vals.iter().map(|v| prim(4, v)).collect())],
            )
        };
        let good = cons(
            TagClass::Application,
            4,
            vec![
                prim(4, b"uid=alice,dc=example,dc=org"),
                cons(TagClass::Universal, 16, vec![attr("mail", &[b"alice@a.example", b"\xff\xfe"]), attr("UID", &[b"alice"])]),
            ],
        );
        let e = decode(ResultEntry::new(good)).unwrap();
        assert_eq!(e.dn, "uid=alice,dc=example,dc=org");
        assert_eq!(e.values("mail").collect::<Vec<_>>(), ["alice@a.example"]);
        assert_eq!(e.values("uid").collect::<Vec<_>>(), ["alice"]);
        let garbage = [
            prim(4, b"x"),
            cons(TagClass::Application, 4, vec![]),
            cons(TagClass::Application, 4, vec![prim(4, b"\xff")]),
            cons(TagClass::Application, 4, vec![prim(4, b"dn"), prim(4, b"not a sequence")]),
            cons(TagClass::Application, 19, vec![prim(4, b"ldap://elsewhere/")]),
        ];
        for g in garbage {
            assert_eq!(decode(ResultEntry::new(g)), None);
        }
        // A malformed attribute is skipped, the rest kept.
        let partial = cons(
            TagClass::Application,
            4,
            vec![prim(4, b"dn"), cons(TagClass::Universal, 16, vec![prim(4, b"x"), attr("uid", &[b"bob"])])],
        );
        assert_eq!(decode(ResultEntry::new(partial)).unwrap().values("uid").collect::<Vec<_>>(), ["bob"]);
    }
}
