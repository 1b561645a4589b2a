//! The `_mta-sts.DOMAIN` TXT record (RFC 8461 §3.1): `v=STSv1; id=...;`.
//!
//! May touch: nothing (pure). RFCs: 8461 §3.1.

/// Why the TXT answer gives no usable policy id. Whatever the reason, a
/// cached unexpired policy stays in force (RFC 8461 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    /// No record starts with `v=STSv1`: the domain publishes no policy.
    #[error("no v=STSv1 record")]
    Absent,
    /// More than one `v=STSv1` record (§3.1: then there is no policy).
    #[error("{0} v=STSv1 records")]
    Several(usize),
    /// The one `v=STSv1` record is malformed.
    #[error("bad record {record:?}: {why}")]
    Bad {
        /// The record.
        record: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The DNS did not answer (SERVFAIL, timeout).
    #[error("DNS: {0}")]
    Dns(String),
}

/// The policy id of the TXT records of `_mta-sts.DOMAIN` (each record's
/// character strings already joined). Records not starting with
/// `v=STSv1` are ignored (§3.1); exactly one must remain. Pure.
pub fn policy_id(records: &[String]) -> Result<String, TxtError> {
    let sts: Vec<&String> = records.iter().filter(|r| is_sts(r)).collect();
    match sts.as_slice() {
        [] => Err(TxtError::Absent),
        [one] => parse(one),
        many => Err(TxtError::Several(many.len())),
    }
}

/// `v=STSv1` followed by a delimiter (or nothing).
fn is_sts(r: &str) -> bool {
    r.strip_prefix("v=STSv1").is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

/// `sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]`
/// (§3.1): `id` is 1 to 32 letters and digits; extensions are
/// `name=value` and ignored.
fn parse(record: &str) -> Result<String, TxtError> {
    let bad = |why| TxtError::Bad { record: record.to_string(), why };
    let mut fields = record.split(';').map(|f| f.trim_matches([' ', '\t']));
    fields.next(); // "v=STSv1", checked by is_sts
    let mut id = None;
    let rest: Vec<&str> = fields.collect();
    for (i, f) in rest.iter().enumerate() {
        if f.is_empty() {
            // Only a trailing delimiter may leave an empty field.
            if i + 1 == rest.len() {
                continue;
            }
            return Err(bad("empty field"));
        }
        let (name, value) = f.split_once('=').ok_or_else(|| bad("field without '='"))?;
        if name == "id" {
            if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad("id must be 1 to 32 letters and digits"));
            }
            id.get_or_insert_with(|| value.to_string());
        } else if !ext_name(name) || value.is_empty() || !value.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=') {
            return Err(bad("malformed extension field"));
        }
    }
    id.ok_or_else(|| bad("no id"))
}

/// `sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`.
fn ext_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(records: &[&str]) -> Result<String, TxtError> {
        policy_id(&records.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn records() {
        let ok = [
            (&["v=STSv1; id=20160831085700Z;"][..], "20160831085700Z"),
            (&["v=STSv1;id=abc"], "abc"),
            (&["v=STSv1; id=abc ; ext-1=x"], "abc"),
            (&["v=spf1 -all", "v=STSv1; id=a1;"], "a1"),
            (&["v=STSv1 ; id=Z9"], "Z9"),
        ];
        for (r, want) in ok {
            assert_eq!(id(r).as_deref(), Ok(want), "{r:?}");
        }
        assert_eq!(id(&[]), Err(TxtError::Absent));
        assert_eq!(id(&["v=spf1 -all", "v=STSv10; id=1"]), Err(TxtError::Absent));
        assert_eq!(id(&["v=STSv1; id=1", "v=STSv1; id=2"]), Err(TxtError::Several(2)));
        for bad in [
            "v=STSv1",
            "v=STSv1;",
            "v=STSv1; id=",
            "v=STSv1; id=a-b",
            "v=STSv1; id=123456789012345678901234567890123",
            "v=STSv1; ;id=1",
            "v=STSv1; id=1; junk",
            "v=STSv1; id=1; _x=1",
            "v=STSv1; id=1; x=a;b=",
        ] {
            assert!(matches!(id(&[bad]), Err(TxtError::Bad { .. })), "{bad}");
        }
    }
}
