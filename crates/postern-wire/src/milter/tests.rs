//! Unit tests of the milter codec: encoding, framing, responses, headers.
//!
//! May touch: nothing.

use super::*;

#[test]
fn encodes_commands() {
    let mut out = Vec::new();
    Command::OptNeg { version: 6, actions: 0x1ff, protocol: 0x3f }.encode(&mut out);
    assert_eq!(out, [0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0x3f]);
    out.clear();
    Command::Connect { hostname: "mx.example", family: Family::Inet("127.0.0.1".parse().unwrap(), 25) }.encode(&mut out);
    assert_eq!(&out[4..], b"Cmx.example\x004\x00\x19127.0.0.1\x00");
    out.clear();
    let pairs = [("j", "host".to_string()), ("{client_addr}", "1.2.3.4".to_string())];
    Command::Macros { stage: Stage::Connect, pairs: &pairs }.encode(&mut out);
    assert_eq!(&out[4..], b"DCj\x00host\x00{client_addr}\x001.2.3.4\x00");
    out.clear();
    Command::Mail(&["<a@b>".into(), "SIZE=10".into()]).encode(&mut out);
    assert_eq!(&out[..], b"\x00\x00\x00\x0fM<a@b>\x00SIZE=10\x00");
    out.clear();
    Command::Header { name: "Subject", value: "a\0b" }.encode(&mut out);
    assert_eq!(&out[4..], b"LSubject\x00a b\x00");
}

#[test]
fn frames_and_responses() {
    assert_eq!(parse_frame(&[0, 0, 0]), Ok(None));
    assert_eq!(parse_frame(&[0, 0, 0, 2, b'c']), Ok(None));
    assert_eq!(parse_frame(&[0, 0, 0, 0]), Err(MilterError::Length(0)));
    assert_eq!(parse_frame(&[0x7f, 0, 0, 0, b'c']), Err(MilterError::Length(0x7f00_0000)));
    let (c, d, n) = parse_frame(&[0, 0, 0, 1, b'c', 9]).unwrap().unwrap();
    assert_eq!((c, d, n), (b'c', &[][..], 5));
    let cases: Vec<(u8, &[u8], Response)> = vec![
        (b'a', b"", Response::Accept),
        (
            b'O',
            b"\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x02{auth_authen} i\0\0\0\0\x09junk\0",
            Response::OptNeg { version: 6, actions: 1, protocol: 0, macros: vec![(Stage::Mail, vec!["{auth_authen}".into(), "i".into()])] },
        ),
        (b'q', b"virus\0", Response::Quarantine("virus".into())),
        (b'h', b"X-A\0v\0", Response::AddHeader { name: "X-A".into(), value: "v".into() }),
        (b'i', b"\0\0\0\x01X-B\0w\0", Response::InsertHeader { index: 1, name: "X-B".into(), value: "w".into() }),
        (b'm', b"\0\0\0\x02Subject\0\0", Response::ChangeHeader { index: 2, name: "Subject".into(), value: String::new() }),
        (b'+', b"<x@y>\0", Response::AddRcpt { rcpt: "<x@y>".into(), params: None }),
        (b'2', b"<x@y>\0NOTIFY=NEVER\0", Response::AddRcpt { rcpt: "<x@y>".into(), params: Some("NOTIFY=NEVER".into()) }),
        (b'-', b"<x@y>\0", Response::DelRcpt("<x@y>".into())),
        (b'e', b"<s@y>\0", Response::ChangeFrom { from: "<s@y>".into(), params: None }),
        (b'b', b"new body\r\n", Response::ReplaceBody(b"new body\r\n".to_vec())),
    ];
    for (c, d, want) in cases {
        assert_eq!(Response::parse(c, d).unwrap(), want, "{}", c as char);
    }
    let Response::ReplyCode(r) = Response::parse(b'y', b"554 5.7.1 go away\0").unwrap() else { panic!() };
    assert_eq!(r.summary(), "554 5.7.1 go away");
    assert!(Response::parse(b'y', b"250 2.0.0 fine\0").is_err());
    assert!(Response::parse(b'h', b"\0").is_err());
    assert!(Response::parse(b'i', b"\0\0").is_err());
    assert_eq!(Response::parse(b'Z', b""), Err(MilterError::Unknown('Z')));
}

/// Arbitrary bytes never panic the codec: a bounded, seeded smoke test
/// that runs with `cargo test`; `fuzz/fuzz_targets/milter.rs` is the
/// coverage-guided version.
#[test]
fn random_input_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"\0\r\n :\tabcXY<>@.5y";
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if r % 3 == 0 {
                    alphabet[(r as usize / 3) % alphabet.len()]
                } else {
                    (r >> 8) as u8
                }
            })
            .collect();
        let cmd = b"OacdrtspfayqhimM+2-be4lZ"[(next() % 24) as usize];
        if let Ok(r) = Response::parse(cmd, &data) {
            let mut h = split_headers(&data).0;
            apply_header_change(&mut h, &r);
            let mut out = Vec::new();
            for f in &h {
                f.encode(&mut out);
            }
        }
        let _ = parse_frame(&data);
    }
}

#[test]
fn headers_split_and_change() {
    let msg = b"Received: from x\r\n\tby y\r\nSubject: hi\r\nX-A: 1\r\nsubject: two\r\n\r\nbody\r\n";
    let (mut h, body) = split_headers(msg);
    assert_eq!(&msg[body..], b"body\r\n");
    assert_eq!(h.len(), 4);
    assert_eq!(h[0].milter_value(false), "from x\n\tby y");
    apply_header_change(&mut h, &Response::ChangeHeader { index: 2, name: "Subject".into(), value: "new".into() });
    assert_eq!(h[3].raw_value, " new");
    apply_header_change(&mut h, &Response::ChangeHeader { index: 1, name: "X-A".into(), value: String::new() });
    assert_eq!(h.len(), 3);
    apply_header_change(&mut h, &Response::InsertHeader { index: 0, name: "X-Top".into(), value: "a\n\tb".into() });
    let mut out = Vec::new();
    h[0].encode(&mut out);
    assert_eq!(out, b"X-Top: a\r\n\tb\r\n");
    assert!(!apply_header_change(&mut h, &Response::AddHeader { name: "Bad Name".into(), value: "v".into() }));
    assert!(!apply_header_change(&mut h, &Response::AddHeader { name: "X\r\nBcc".into(), value: "v".into() }));
    out.clear();
    Header::from_milter("X-Inj", "a\nBcc: victim@example.org\r\n\tok").encode(&mut out);
    assert_eq!(out, b"X-Inj: a\r\n\tBcc: victim@example.org\r\n\tok\r\n");
    let (h2, b2) = split_headers(b"no header line\r\n\r\n");
    assert!(h2.is_empty());
    assert_eq!(b2, 0);
    let (h3, b3) = split_headers(b"A: b\r\n");
    assert_eq!((h3.len(), b3), (1, 6));
}
