//! `ReceivedCounter` (hop counting as the message streams in): any split
//! of the input gives the same count and end-of-header state as one feed,
//! and feeding more never lowers the count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::received::ReceivedCounter;

fuzz_target!(|input: (Vec<u8>, &[u8])| {
    let (cuts, msg) = input;
    let mut whole = ReceivedCounter::new();
    whole.feed(msg);
    let (mut split, mut rest, mut last) = (ReceivedCounter::new(), msg, 0);
    for c in cuts {
        let (a, b) = rest.split_at((c as usize).min(rest.len()));
        split.feed(a);
        assert!(split.count() >= last);
        last = split.count();
        rest = b;
    }
    split.feed(rest);
    assert_eq!((split.count(), split.header_done()), (whole.count(), whole.header_done()));
    // Never more Received: fields than lines.
    assert!(whole.count() as usize <= msg.iter().filter(|&&c| c == b'\n').count() + 1);
});
