//! Unit tests of the command parser and encoder: tables per verb,
//! parameters, xtext, round trips, and inputs that once panicked.
//!
//! May touch: nothing.

use super::*;
use crate::address::Mailbox;

fn mbx(l: &str, d: &str) -> Path {
    Path::Mailbox(Mailbox { local: l.into(), domain: d.into() })
}

#[test]
fn verbs() {
    let table: &[(&str, Result<Command, ParseError>)] = &[
        ("EHLO client.example", Ok(Command::Ehlo("client.example".into()))),
        ("ehlo [127.0.0.1]", Ok(Command::Ehlo("[127.0.0.1]".into()))),
        ("EHLO", Err(ParseError::Syntax)),
        ("EHLO a b", Err(ParseError::Syntax)),
        ("HELO x", Ok(Command::Helo("x".into()))),
        ("DATA", Ok(Command::Data)),
        ("DATA x", Err(ParseError::Syntax)),
        ("data", Ok(Command::Data)),
        ("RSET", Ok(Command::Rset)),
        ("NOOP anything", Ok(Command::Noop)),
        ("QUIT", Ok(Command::Quit)),
        ("VRFY bob", Ok(Command::Vrfy("bob".into()))),
        ("VRFY", Err(ParseError::Syntax)),
        ("HELP", Ok(Command::Help)),
        ("HELP MAIL", Ok(Command::Help)),
        ("STARTTLS", Ok(Command::StartTls)),
        ("AUTH plain dGVzdA==", Ok(Command::Auth { mechanism: "PLAIN".into(), initial: Some("dGVzdA==".into()) })),
        ("AUTH", Err(ParseError::Syntax)),
        ("BDAT 100", Ok(Command::Bdat { size: 100, last: false })),
        ("BDAT 0 LAST", Ok(Command::Bdat { size: 0, last: true })),
        ("BDAT x", Err(ParseError::Syntax)),
        ("BDAT 10 FIRST", Err(ParseError::Syntax)),
        ("BDAT 99999999999999999999999", Err(ParseError::Syntax)),
        ("FOO", Err(ParseError::Unknown)),
        ("", Err(ParseError::Unknown)),
        ("MAIL FROM:<a@b>\0", Err(ParseError::BadChars)),
    ];
    for (line, want) in table {
        assert_eq!(&parse_command(line.as_bytes()), want, "line {line:?}");
    }
    assert_eq!(parse_command(b"\xff\xfe"), Err(ParseError::BadChars));
}

/// Regression (fuzz target `command`): a multi-byte character where
/// `FROM:`/`TO:` would end used to panic the session task.
#[test]
fn keyword_cut_inside_a_character() {
    for line in ["MAIL FRORį:<a@b>", "MAIL FROį", "RCPT Tį:<a@b>", "RCPT é"] {
        assert_eq!(parse_command(line.as_bytes()), Err(ParseError::Syntax), "{line}");
    }
}

/// `parse(encode(x)) == x`, for commands that came from `parse`.
#[test]
fn encode_round_trip() {
    for line in [
        "MAIL FROM:<a@B.example> SIZE=007 BODY=8bitmime SMTPUTF8 AUTH=<> RET=hdrs ENVID=a+2Bb",
        "MAIL FROM:<\"a b\"@[192.0.2.1]> BODY=BINARYMIME AUTH=x+2By@z",
        "MAIL FROM:<>",
        "MAIL FROM:<a@b.example> requiretls SMTPUTF8",
        "RCPT TO:<postmaster> NOTIFY=success,delay ORCPT=rfc822;b+2B1@c",
        "RCPT TO:<us\u{e9}r@d\u{e9}.example>",
        "EHLO mx.example",
        "HELO a b",
        "BDAT 10 last",
        "BDAT 0",
        "AUTH plain AGEAYg==",
        "AUTH login",
        "vrfy bob",
        "NOOP whatever",
        "quit",
    ] {
        let cmd = parse_command(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        assert_eq!(parse_command(cmd.encode().as_bytes()), Ok(cmd.clone()), "{line} -> {}", cmd.encode());
    }
    let p = MailParams { size: Some(5), body: Body::EightBitMime, ..Default::default() };
    assert_eq!(p.encode(), " SIZE=5 BODY=8BITMIME");
    assert_eq!(RcptParams { notify: Some("NEVER".into()), orcpt: Some("rfc822;a=b".into()) }.encode(), " NOTIFY=NEVER ORCPT=rfc822;a+3Db");
}

#[test]
fn mail_from() {
    let ok = |line: &str| match parse_command(line.as_bytes()) {
        Ok(Command::Mail { from, params }) => (from, params),
        other => panic!("{line}: {other:?}"),
    };
    let (from, p) = ok("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME");
    assert_eq!(from, mbx("a", "b.example"));
    assert_eq!(p.size, Some(1000));
    assert_eq!(p.body, Body::EightBitMime);
    let (from, _) = ok("mail from: <a@b.example>");
    assert_eq!(from, mbx("a", "b.example"));
    assert_eq!(ok("MAIL FROM:<>").0, Path::Null);
    let (_, p) = ok("MAIL FROM:<ü@b.example> SMTPUTF8");
    assert!(p.smtputf8);
    let (_, p) = ok("MAIL FROM:<a@b> AUTH=<> RET=hdrs ENVID=QQ+2B1");
    assert_eq!(p.auth.as_deref(), Some("<>"));
    assert_eq!(p.ret.as_deref(), Some("HDRS"));
    assert_eq!(p.envid.as_deref(), Some("QQ+1"));
    assert!(!p.requiretls);
    // RFC 8689 §2: REQUIRETLS, any case, no value.
    let (_, p) = ok("MAIL FROM:<a@b> RequireTLS BODY=8BITMIME");
    assert!(p.requiretls);
    assert_eq!(p.encode(), " BODY=8BITMIME REQUIRETLS");
    let bad: &[(&str, ParseError)] = &[
        ("MAIL FROM:a@b", ParseError::Sender(AddressError::NoBrackets)),
        ("MAIL TO:<a@b>", ParseError::Syntax),
        ("MAIL", ParseError::Syntax),
        ("MAIL FROM:<ü@b>", ParseError::Sender(AddressError::NeedsUtf8)),
        ("MAIL FROM:<a@b> SIZE=abc", ParseError::BadParam("SIZE".into())),
        ("MAIL FROM:<a@b> SIZE=", ParseError::BadParam("SIZE".into())),
        ("MAIL FROM:<a@b> SIZE=1 SIZE=2", ParseError::BadParam("SIZE".into())),
        ("MAIL FROM:<a@b> BODY=9BIT", ParseError::BadParam("BODY".into())),
        ("MAIL FROM:<a@b> SMTPUTF8=yes", ParseError::BadParam("SMTPUTF8".into())),
        ("MAIL FROM:<a@b> RET=ALL", ParseError::BadParam("RET".into())),
        ("MAIL FROM:<a@b> XFOO=1", ParseError::UnknownParam("XFOO".into())),
        ("MAIL FROM:<a@b> AUTH=+zz", ParseError::BadParam("AUTH".into())),
        ("MAIL FROM:<a@b> REQUIRETLS REQUIRETLS", ParseError::BadParam("REQUIRETLS".into())),
        ("MAIL FROM:<a@b> REQUIRETLS=yes", ParseError::BadParam("REQUIRETLS".into())),
        ("MAIL FROM:<a@b> REQUIRETLS= ", ParseError::BadParam("REQUIRETLS".into())),
    ];
    for (line, want) in bad {
        assert_eq!(&parse_command(line.as_bytes()).unwrap_err(), want, "line {line:?}");
    }
}

#[test]
fn rcpt_to() {
    assert_eq!(parse_command(b"RCPT TO:<Postmaster>"), Ok(Command::Rcpt { to: Path::Postmaster, params: RcptParams::default() }));
    match parse_command(b"RCPT TO:<u@d.example> NOTIFY=success,failure ORCPT=rfc822;u+40d") {
        Ok(Command::Rcpt { to, params }) => {
            assert_eq!(to, mbx("u", "d.example"));
            assert_eq!(params.notify.as_deref(), Some("SUCCESS,FAILURE"));
            assert_eq!(params.orcpt.as_deref(), Some("rfc822;u@d"));
        }
        other => panic!("{other:?}"),
    }
    let bad: &[(&str, ParseError)] = &[
        ("RCPT TO:<>", ParseError::Recipient(AddressError::LocalPart)),
        ("RCPT TO:<u@d> NOTIFY=NEVER,SUCCESS", ParseError::BadParam("NOTIFY".into())),
        ("RCPT TO:<u@d> NOTIFY=SOMETIMES", ParseError::BadParam("NOTIFY".into())),
        ("RCPT TO:<u@d> SIZE=1", ParseError::UnknownParam("SIZE".into())),
        ("RCPT TO:<u@d> REQUIRETLS", ParseError::UnknownParam("REQUIRETLS".into())),
        ("RCPT FROM:<u@d>", ParseError::Syntax),
        ("RCPT TO:<u@@d>", ParseError::Recipient(AddressError::LocalPart)),
    ];
    for (line, want) in bad {
        assert_eq!(&parse_command(line.as_bytes()).unwrap_err(), want, "line {line:?}");
    }
}

#[test]
fn replies_for_errors() {
    assert_eq!(ParseError::Unknown.reply().to_wire(), "500 5.5.1 Command unrecognized\r\n");
    assert_eq!(ParseError::UnknownParam("X".into()).reply().code, 555);
    assert_eq!(ParseError::Sender(AddressError::Domain).reply().enhanced, Some(Enhanced(5, 1, 7)));
    assert_eq!(ParseError::Recipient(AddressError::Domain).reply().enhanced, Some(Enhanced(5, 1, 3)));
}

#[test]
fn xtext_roundtrip() {
    for s in ["a+b=c", "plain", "ü", "<>"] {
        assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
    }
    assert_eq!(xtext_decode("a=b"), None);
    assert_eq!(xtext_decode("+4"), None);
}

/// An escape is `+` and two hex digits, nothing else (found by the `xtext`
/// fuzz target: `++2` decoded as 0x02, `from_str_radix` taking the sign).
#[test]
fn xtext_escape_needs_two_hex_digits() {
    for bad in ["++2", "34++2~0cb", "+-1", "+ 1", "+1", "+G0", "a+", "+é"] {
        assert_eq!(xtext_decode(bad), None, "{bad}");
    }
    assert_eq!(xtext_decode("+2B+2b+41").as_deref(), Some("++A"));
    assert_eq!(parse_command(b"RCPT TO:<a@b.example> ORCPT=rfc822;++40"), Err(ParseError::BadParam("ORCPT".into())));
}
