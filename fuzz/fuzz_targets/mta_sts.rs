//! MTA-STS input from the network (RFC 8461): the `_mta-sts` TXT records
//! and the policy file never panic; a parsed policy's `max_age` is within
//! the limit, and its `mx` patterns match hosts without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::delivery::mta_sts::{policy, txt};

fuzz_target!(|input: (Vec<String>, &str, &str)| {
    let (records, body, host) = input;
    if let Ok(id) = txt::policy_id(&records) {
        assert!(!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    if let Ok(p) = policy::parse(body) {
        assert!(p.max_age <= policy::MAX_AGE_LIMIT);
        for m in &p.mx {
            let _ = policy::matches(m, host);
        }
        let _ = policy::requirement(Some(&p), host);
    }
});
