//! DATA decoding over arbitrary chunkings: the result never depends on
//! how the input was split, it is what the octet-at-a-time reference
//! decoder gives (`crates/postern-wire/src/data/reference.rs`), the size
//! cap holds, and decoding what `dot_stuff` sent gives the message back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::data::{dot_stuff, normalize_crlf, ChunkScanner, DataDecoder, DotStuffed};

#[path = "../../crates/postern-wire/src/data/reference.rs"]
mod reference;

fn decode(chunks: &[&[u8]], max_size: u64) -> (Vec<u8>, Option<usize>, postern_wire::data::DataFlags) {
    let (mut d, mut out, mut used) = (DataDecoder::new(1000, max_size), Vec::new(), 0);
    for c in chunks {
        let fed = d.feed(c, &mut out);
        used += fed.consumed;
        if fed.done {
            return (out, Some(used), d.flags());
        }
    }
    (out, None, d.flags())
}

fuzz_target!(|input: (Vec<u8>, u16, &[u8])| {
    let (cuts, max_size, msg) = input;
    let mut chunks = Vec::new();
    let mut rest = msg;
    for c in cuts {
        let (a, b) = rest.split_at((c as usize).min(rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks.push(rest);
    let whole = decode(&[msg], max_size.into());
    assert_eq!(decode(&chunks, max_size.into()), whole);
    let (text, end, f) = &whole;
    let want = reference::decode(&[msg], 1000, max_size.into());
    assert_eq!((text, end, [f.bare_cr_lf, f.long_line, f.too_big]), (&want.0, &want.1, want.2));
    assert!(whole.0.len() as u64 <= u64::from(max_size));
    let (mut one, mut many) = (ChunkScanner::new(1000), ChunkScanner::new(1000));
    one.scan(msg);
    chunks.iter().for_each(|c| many.scan(c));
    let one = one.finish();
    assert_eq!(one, many.finish());
    assert_eq!([one.bare_cr_lf, one.long_line, one.too_big], reference::scan(&chunks, 1000));
    // Round trip: stuff a canonical CRLF message, decode it back.
    let canonical = normalize_crlf(msg);
    let mut wire = Vec::new();
    dot_stuff(&canonical, &mut wire);
    assert_eq!(wire.len(), DotStuffed::wire_len(&canonical));
    let (out, end, flags) = decode(&[&wire], u64::MAX);
    let mut want = canonical.clone();
    if !want.is_empty() && !want.ends_with(b"\r\n") {
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!((out, end, flags.bare_cr_lf), (want, Some(wire.len()), false));
});
