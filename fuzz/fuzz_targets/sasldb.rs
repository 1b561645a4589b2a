//! The hand-written Berkeley DB hash reader behind `postern users import
//! --sasldb2`: any file is read or refused without panicking, and what it
//! returns fits in the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::users::sasldb::read_bdb_hash;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = read_bdb_hash(data) {
        let total: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= data.len());
    }
});
