//! `parse_command` on any line: never panics; errors map to a reply; what
//! parses encodes to a line that parses back to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match postern_wire::parse_command(line) {
        Ok(cmd) => assert_eq!(postern_wire::parse_command(cmd.encode().as_bytes()), Ok(cmd.clone()), "{}", cmd.encode()),
        Err(e) => assert!(e.reply().code >= 400),
    }
});
