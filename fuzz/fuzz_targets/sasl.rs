//! Every SASL mechanism driven by arbitrary client responses and arbitrary
//! answers to its `Need`s (right or wrong kind): never panics, and never
//! succeeds for a password check the caller refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::sasl::{ChannelBindings, Exchange, Mechanism, Provide, ScramKeys, Step};

fuzz_target!(|input: (u8, bool, Option<String>, Option<Vec<u8>>, Vec<(u8, Vec<u8>)>)| {
    let (mech, plus, external, initial, moves) = input;
    let mech = Mechanism::ALL[mech as usize % Mechanism::ALL.len()];
    let bindings = ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: None };
    let mut ex = Exchange::new(mech, "mx.test", bindings, plus, external);
    let mut step = ex.start(initial);
    for (kind, bytes) in moves {
        step = match (kind % 4, step) {
            (_, Step::Success(_) | Step::Fail(_)) => return,
            (0, _) => ex.respond(&bytes),
            (1, _) => ex.provide(Provide::PasswordOk(false)),
            (2, _) => ex.provide(Provide::Secret(Some(String::from_utf8_lossy(&bytes).into_owned()).filter(|s| !s.is_empty()))),
            _ => ex.provide(Provide::Scram(Some(ScramKeys { salt: bytes.clone(), iterations: 4096, stored_key: bytes.clone(), server_key: bytes }))),
        };
        if let Step::Success(s) = &step {
            assert!(matches!(mech, Mechanism::External | Mechanism::CramMd5 | Mechanism::DigestMd5 | Mechanism::ScramSha1 | Mechanism::ScramSha256 | Mechanism::ScramSha256Plus), "{s:?}");
        }
    }
});
