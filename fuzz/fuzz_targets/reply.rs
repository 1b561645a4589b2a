//! `parse_reply_lines` (peer replies seen by the SMTP/LMTP client): never
//! panics; what it parses encodes to a reply with the same code and lines
//! that parses back, and a second encode/parse changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::reply::{parse_reply_lines, Reply};

fn again(r: &Reply) -> Option<Reply> {
    let wire = r.to_wire();
    parse_reply_lines(&wire.strip_suffix("\r\n").unwrap_or(&wire).split("\r\n").collect::<Vec<_>>())
}

fuzz_target!(|text: &str| {
    let Some(first) = parse_reply_lines(&text.split("\r\n").collect::<Vec<_>>()) else { return };
    if first.code >= 100 && !first.lines.is_empty() {
        let second = again(&first).expect("an encoded reply parses");
        assert_eq!((second.code, second.lines.len()), (first.code, first.lines.len()));
        assert_eq!(again(&second).as_ref(), Some(&second));
    }
});
