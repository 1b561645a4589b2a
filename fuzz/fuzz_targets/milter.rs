//! The MTA side of the milter codec on a stream of milter packets: framing
//! and response decoding never panic, header edits never panic, and a
//! header built from a milter's value is always one field when read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::milter::{apply_header_change, parse_frame, split_headers, Header, Response};

fuzz_target!(|input: (&[u8], &[u8])| {
    let (message, mut stream) = input;
    let (mut headers, _) = split_headers(message);
    while let Ok(Some((cmd, data, used))) = parse_frame(stream) {
        if let Ok(r) = Response::parse(cmd, data) {
            if let Response::AddHeader { name, value } = &r {
                let mut out = Vec::new();
                Header::from_milter(name, value).encode(&mut out);
                assert!(!Header::valid_name(name) || split_headers(&out).0.len() == 1, "{out:?}");
            }
            apply_header_change(&mut headers, &r);
        }
        stream = &stream[used..];
    }
});
