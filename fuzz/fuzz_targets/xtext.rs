//! RFC 3461 xtext and the DSN parameters: `xtext_decode` never panics and
//! accepts only well-formed xtext (`+` then two hex digits); decoding what
//! `xtext_encode` made gives the text back; ENVID/ORCPT built from any text
//! with NOTIFY/RET parse back through `parse_command` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::command::{xtext_decode, xtext_encode};
use postern_wire::{parse_command, Command};

const NOTIFY: [&str; 4] = ["SUCCESS", "FAILURE", "DELAY", "NEVER"];

fuzz_target!(|input: (u8, &str, &str)| {
    let (flags, raw, text) = input;
    // Arbitrary xtext: only well-formed input decodes, and it is stable.
    if let Some(d) = xtext_decode(raw) {
        let b = raw.as_bytes();
        for (i, _) in raw.match_indices('+') {
            assert!(b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit(), "{raw:?}");
        }
        assert_eq!(xtext_decode(&xtext_encode(&d)).as_deref(), Some(d.as_str()));
    }
    // Any text survives encode/decode.
    let enc = xtext_encode(text);
    assert!(enc.bytes().all(|c| (33..=126).contains(&c) && c != b'='), "{enc:?}");
    assert_eq!(xtext_decode(&enc).as_deref(), Some(text));
    // DSN parameters through the command parser.
    let ret = if flags & 1 != 0 { "FULL" } else { "HDRS" };
    match parse_command(format!("MAIL FROM:<a@b.example> RET={ret} ENVID={enc}").as_bytes()) {
        Ok(Command::Mail { params, .. }) => {
            assert_eq!((params.ret.as_deref(), params.envid.as_deref()), (Some(ret), Some(text)));
        }
        other => panic!("{other:?}"),
    }
    let notify: Vec<&str> = match flags >> 4 & 7 {
        0 => vec!["NEVER"],
        n => NOTIFY[..3].iter().enumerate().filter(|(i, _)| n >> i & 1 != 0).map(|(_, v)| *v).collect(),
    };
    let notify = notify.join(",");
    match parse_command(format!("RCPT TO:<a@b.example> NOTIFY={notify} ORCPT=rfc822;{enc}").as_bytes()) {
        Ok(Command::Rcpt { params, .. }) => {
            assert_eq!(params.notify.as_deref(), Some(notify.as_str()));
            assert_eq!(params.orcpt, Some(format!("rfc822;{text}")));
        }
        other => panic!("{other:?}"),
    }
    // Raw parameter values: never panic; an accepted ORCPT is its xtext decoding.
    let raw1 = raw.split(' ').next().unwrap_or("");
    if let Ok(Command::Rcpt { params, .. }) = parse_command(format!("RCPT TO:<a@b.example> NOTIFY={raw} ORCPT={raw1}").as_bytes()) {
        assert_eq!(params.orcpt, xtext_decode(raw1));
    }
    let _ = parse_command(format!("MAIL FROM:<> RET={raw1} ENVID={raw1} AUTH={raw1}").as_bytes());
});
