//! Unit tests of the SASL machines: RFC vectors, each mechanism end to end,
//! the SCRAM client against the server, and inputs that once panicked.
//!
//! May touch: nothing.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::Sha256;

use super::digest::{self, DigestResponse};
use super::scram::{hash, hmac};
use super::*;

fn ok(authcid: &str) -> Step {
    Step::Success(Success::new(authcid.into(), None))
}

/// RFC 2831 §2.1.2.1 response value for a password (UTF-8 bytes).
fn digest_value(r: &DigestResponse, password: &str, a2_prefix: &str) -> String {
    digest::value(r, format!("{}:{}:{}", r.username, r.realm, password).as_bytes(), a2_prefix)
}

fn run_password(mech: Mechanism, initial: Option<&[u8]>, responses: &[&[u8]], ok: bool) -> Step {
    let mut ex = Exchange::new(mech, "mx.test", ChannelBindings::default(), false, None);
    let mut step = ex.start(initial.map(|i| i.to_vec()));
    let mut it = responses.iter();
    loop {
        step = match step {
            Step::Challenge(_) => match it.next() {
                Some(r) => ex.respond(r),
                None => return step,
            },
            Step::Need(Need::CheckPassword { ref password, .. }) => {
                let good = ok && password == "pa ss:wörd";
                ex.provide(Provide::PasswordOk(good))
            }
            other => return other,
        };
    }
}

#[test]
fn plain_and_login() {
    let alice = ok("alice");
    assert_eq!(run_password(Mechanism::Plain, Some(b"\0alice\0pa ss:w\xc3\xb6rd"), &[], true), alice);
    assert_eq!(run_password(Mechanism::Plain, Some(b"alice\0alice\0pa ss:w\xc3\xb6rd"), &[], true), alice);
    assert_eq!(run_password(Mechanism::Plain, None, &[b"\0alice\0pa ss:w\xc3\xb6rd"], true), alice);
    assert_eq!(run_password(Mechanism::Plain, Some(b"\0alice\0wrong"), &[], true), Step::Fail(SaslError::BadCredentials));
    assert_eq!(run_password(Mechanism::Plain, Some(b"bob\0alice\0x"), &[], true), Step::Fail(SaslError::BadAuthzid));
    assert!(matches!(run_password(Mechanism::Plain, Some(b"nonul"), &[], true), Step::Fail(SaslError::Malformed(_))));
    assert_eq!(run_password(Mechanism::Login, None, &[b"alice", "pa ss:wörd".as_bytes()], true), alice);
    assert_eq!(run_password(Mechanism::Login, Some(b"alice"), &["pa ss:wörd".as_bytes()], true), alice);
    assert_eq!(run_password(Mechanism::Login, None, &[b"alice", b"no"], true), Step::Fail(SaslError::BadCredentials));
}

#[test]
fn success_getters() {
    let Step::Success(s) = run_password(Mechanism::Plain, Some(b"\0alice\0pa ss:w\xc3\xb6rd"), &[], true) else { panic!() };
    assert_eq!((s.authcid(), s.final_data()), ("alice", None));
}

#[test]
fn cram_md5_rfc2195_vector() {
    let mut ex = Exchange::new(Mechanism::CramMd5, "mx.test", ChannelBindings::default(), false, None);
    let Step::Challenge(_) = ex.start(None) else { panic!() };
    // Force the RFC 2195 example challenge.
    ex.st = St::CramChallenge { challenge: "<1896.697170952@postoffice.reston.mci.net>".into() };
    let step = ex.respond(b"tim b913a602c7eda7a495b4e6e7334d3890");
    assert_eq!(step, Step::Need(Need::Secret { authcid: "tim".into() }));
    assert_eq!(ex.provide(Provide::Secret(Some("tanstaaftanstaaf".into()))), ok("tim"));
}

/// Regression: a multi-byte character in the hex digest sliced a `str`
/// off a character boundary and panicked the session task.
#[test]
fn cram_md5_non_ascii_digest_is_malformed() {
    for response in ["tim aéb", "tim é", "tim +f"] {
        let mut ex = Exchange::new(Mechanism::CramMd5, "mx.test", ChannelBindings::default(), false, None);
        let Step::Challenge(_) = ex.start(None) else { panic!() };
        assert_eq!(ex.respond(response.as_bytes()), Step::Fail(SaslError::Malformed("bad hex digest")), "{response}");
    }
}

fn scram_login(mech: Mechanism, cb: ChannelBindings, flag: &str, cb_data: &[u8], password: &str) -> Step {
    let keys = ScramKeys::derive(ScramHash::Sha256, "pencil", b"saltsaltsalt", 4096);
    let mut ex = Exchange::new(mech, "mx.test", cb, mech == Mechanism::ScramSha256Plus, None);
    let cnonce = "rOprNGfwEbeRWgbNEkqO";
    let bare = format!("n=user,r={cnonce}");
    let step = ex.start(Some(format!("{flag},,{bare}").into_bytes()));
    let Step::Need(Need::Scram { .. }) = step else { return step };
    let Step::Challenge(sf) = ex.provide(Provide::Scram(Some(keys))) else { panic!() };
    let server_first = String::from_utf8(sf).unwrap();
    let r = server_first.split(',').next().unwrap().strip_prefix("r=").unwrap().to_string();
    let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), b"saltsaltsalt", 4096);
    let client_key = hmac(ScramHash::Sha256, &salted, b"Client Key");
    let stored = hash(ScramHash::Sha256, &client_key);
    let mut cbind = format!("{flag},,").into_bytes();
    cbind.extend_from_slice(cb_data);
    let without = format!("c={},r={r}", B64.encode(cbind));
    let am = format!("{bare},{server_first},{without}");
    let sig = hmac(ScramHash::Sha256, &stored, am.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    ex.respond(format!("{without},p={}", B64.encode(proof)).as_bytes())
}

#[test]
fn scram_sha256_and_plus() {
    let none = ChannelBindings::default();
    assert!(matches!(scram_login(Mechanism::ScramSha256, none.clone(), "n", b"", "pencil"), Step::Success(_)));
    assert_eq!(scram_login(Mechanism::ScramSha256, none, "n", b"", "wrong"), Step::Fail(SaslError::BadCredentials));
    let cb = ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: Some(vec![9; 32]) };
    assert!(matches!(scram_login(Mechanism::ScramSha256Plus, cb.clone(), "p=tls-exporter", &[7; 32], "pencil"), Step::Success(_)));
    assert!(matches!(scram_login(Mechanism::ScramSha256Plus, cb.clone(), "p=tls-server-end-point", &[9; 32], "pencil"), Step::Success(_)));
    assert!(matches!(
        scram_login(Mechanism::ScramSha256Plus, cb.clone(), "p=tls-exporter", &[8; 32], "pencil"),
        Step::Fail(SaslError::ChannelBinding(_))
    ));
    assert!(matches!(scram_login(Mechanism::ScramSha256Plus, cb.clone(), "n", b"", "pencil"), Step::Fail(SaslError::ChannelBinding(_))));
    // "y" while we offered -PLUS: downgrade.
    let mut ex = Exchange::new(Mechanism::ScramSha256, "h", cb, true, None);
    assert!(matches!(ex.start(Some(b"y,,n=u,r=abc".to_vec())), Step::Fail(SaslError::ChannelBinding(_))));
}

#[test]
fn scram_client_against_server() {
    let keys = ScramKeys::derive(ScramHash::Sha256, "s3cret pw", b"0123456789abcdef", 4096);
    let (mut client, first) = ScramClient::new("bob", "s3cret pw");
    assert!(!client.verify_server("v="), "nothing to verify before final_message");
    let mut ex = Exchange::new(Mechanism::ScramSha256, "h", ChannelBindings::default(), false, None);
    let Step::Need(_) = ex.start(Some(first.into_bytes())) else { panic!() };
    let Step::Challenge(sf) = ex.provide(Provide::Scram(Some(keys))) else { panic!() };
    let fin = client.final_message(std::str::from_utf8(&sf).unwrap()).unwrap();
    let Step::Success(s) = ex.respond(fin.as_bytes()) else { panic!() };
    assert_eq!(s.authcid(), "bob");
    assert!(client.verify_server(std::str::from_utf8(s.final_data().unwrap()).unwrap()));
}

#[test]
fn digest_md5_rfc2831_example() {
    // RFC 2831 §4 example (IMAP there; the computation is the same).
    let r = DigestResponse {
        username: "chris".into(),
        realm: "elwood.innosoft.com".into(),
        nonce: "OA6MG9tEQGm2hh".into(),
        cnonce: "OA6MHXh6VqTrRk".into(),
        nc: "00000001".into(),
        qop: "auth".into(),
        digest_uri: "imap/elwood.innosoft.com".into(),
        response: String::new(),
        authzid: None,
    };
    assert_eq!(digest_value(&r, "secret", "AUTHENTICATE"), "d388dad90d4bbd760a152321f2143af7");
    assert_eq!(digest_value(&r, "secret", ""), "ea40f60335c427b5527b84dbabcdfffd");
    let d = digest::directives("username=\"chris\",realm=\"a,b\",nc=00000001").unwrap();
    assert_eq!(d[1], ("realm".to_string(), "a,b".to_string()));
}

/// Regression: a quoted-pair whose character is multi-byte stepped into
/// the middle of it and panicked on the next slice.
#[test]
fn digest_md5_quoted_pair_multibyte() {
    let d = digest::directives("username=\"a\\éb\\\"c\",x=\"\\").map_err(|e| e.to_string());
    assert_eq!(d, Err("malformed: unterminated quoted string".to_string()));
    let d = digest::directives("username=\"a\\éb\\\"c\"").unwrap();
    assert_eq!(d, vec![("username".to_string(), "aéb\"c".to_string())]);
}

#[test]
fn external_and_responses() {
    let mut ex = Exchange::new(Mechanism::External, "h", ChannelBindings::default(), false, Some("alice".into()));
    assert_eq!(ex.start(Some(Vec::new())), ok("alice"));
    let mut ex = Exchange::new(Mechanism::External, "h", ChannelBindings::default(), false, Some("alice".into()));
    assert_eq!(ex.start(Some(b"bob".to_vec())), Step::Fail(SaslError::BadAuthzid));
    let mut ex = Exchange::new(Mechanism::External, "h", ChannelBindings::default(), false, None);
    assert_eq!(ex.start(Some(Vec::new())), Step::Fail(SaslError::NoExternalIdentity));
    assert_eq!(decode_response("*"), Err(SaslError::Cancelled));
    assert_eq!(decode_response("="), Ok(Vec::new()));
    assert!(matches!(decode_response("!!!"), Err(SaslError::Malformed(_))));
}
