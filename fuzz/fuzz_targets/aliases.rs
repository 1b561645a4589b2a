//! Aliases files: `Aliases::parse` never panics, and expanding any name
//! (listed or not) terminates with de-duplicated targets that are each a
//! safe local mailbox name or an address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::aliases::{is_local_name, Aliases};

fuzz_target!(|input: (&str, &str)| {
    let (text, probe) = input;
    let Ok(a) = Aliases::parse(text, "aliases") else { return };
    let names: Vec<String> = a.targets().map(str::to_string).chain([probe.to_ascii_lowercase()]).collect();
    for name in names {
        let out = a.expand(&name);
        assert!(!out.is_empty());
        for (i, t) in out.iter().enumerate() {
            assert!(!out[..i].contains(t), "{out:?}");
            assert!(t.contains('@') || is_local_name(t) || *t == name.to_ascii_lowercase(), "{t:?}");
        }
    }
});
