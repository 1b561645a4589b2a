//! Configuration files: `Config::parse` (TOML, then every semantic check)
//! never panics on any text; it returns a config or errors naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::config::Config;

fuzz_target!(|text: &str| {
    if let Err(e) = Config::parse(text, "postern.toml") {
        assert!(!e.to_string().is_empty());
    }
});
