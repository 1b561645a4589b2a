//! "Did you mean": the closest expected name for an unknown key or enum
//! value, by edit distance, added to serde's "unknown field/variant"
//! message (like git's and cargo's suggestions).
//!
//! May touch: nothing (pure).

/// Edit distance between two short names, counting an insertion, a
/// deletion, a substitution or a swap of two neighbours as one edit
/// (optimal string alignment; config names are ASCII).
pub(super) fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j] + 1).min(d[i * w + j - 1] + 1).min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                v
            };
        }
    }
    d[a.len() * w + b.len()]
}

/// The expected name closest to `given`, if close enough to be a typo:
/// at most a third of the longer name's length (at least 1), and unique at
/// that distance.
pub(super) fn closest<'a>(given: &str, expected: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = expected.iter().map(|e| (distance(&given, &e.to_ascii_lowercase()), *e)).collect();
    scored.sort();
    let (best, name) = *scored.first()?;
    let limit = (given.len().max(name.len()) / 3).max(1);
    let unique = scored.get(1).is_none_or(|(d, _)| *d > best);
    (best <= limit && unique).then_some(name)
}

/// Adds "; did you mean `x`?" to a serde message of the form
/// "unknown field `given`, expected one of `a`, `b`" (also "unknown
/// variant", "expected `a` or `b`"); other messages come back unchanged.
pub(super) fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `")) else {
        return message.to_string();
    };
    let Some((given, tail)) = rest.split_once('`') else { return message.to_string() };
    // The expected names are the back-quoted words after "expected".
    let Some((_, expected)) = tail.split_once("expected") else { return message.to_string() };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(given, &names) {
        Some(n) => format!("{message}; did you mean `{n}`?"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "abc", 0),
            ("abc", "", 3),
            ("max_mesage_size", "max_message_size", 1),
            ("smpt", "smtp", 1),
            ("kitten", "sitting", 3),
        ] {
            assert_eq!(distance(a, b), d, "{a} {b}");
        }
    }

    #[test]
    fn suggestions() {
        let table = [
            ("unknown field `max_mesage_size`, expected one of `max_message_size`, `max_recipients`", Some("max_message_size")),
            ("unknown variant `smpt`, expected one of `smtp`, `submission`, `submissions`", Some("smtp")),
            ("unknown variant `Reject`, expected `reject` or `normalize`", Some("reject")),
            ("unknown field `bogus`, expected one of `max_message_size`, `max_recipients`", None),
            ("invalid type: string \"x\", expected u64", None),
        ];
        for (msg, want) in table {
            let got = did_you_mean(msg);
            match want {
                Some(n) => assert!(got.ends_with(&format!("; did you mean `{n}`?")), "{got}"),
                None => assert_eq!(got, msg),
            }
        }
    }
}
