//! RFC 5321 paths and mailboxes: never panic; a parsed path ends where
//! the parameters begin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::address::{parse_path, Mailbox};

fuzz_target!(|input: (u8, &str)| {
    let (flags, s) = input;
    let (null, postmaster, utf8) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
    if let Ok((_, rest)) = parse_path(s, null, postmaster, utf8) {
        assert!(rest.is_empty() || rest.starts_with(' '));
    }
    let _ = Mailbox::parse(s, utf8);
});
