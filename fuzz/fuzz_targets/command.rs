//! `parse_command` on any line: never panics; errors map to a reply.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match postern_wire::parse_command(line) {
        Ok(cmd) => assert!(!cmd.verb().is_empty()),
        Err(e) => assert!(e.reply().code >= 400),
    }
});
