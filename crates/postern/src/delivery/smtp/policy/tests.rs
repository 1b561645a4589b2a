use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::spool::QueueId;

fn msg(sender: &str, smtputf8: bool, requiretls: bool, tls_required_no: bool) -> Message {
    Message {
        id: QueueId::generate(),
        sender: sender.into(),
        body: Arc::new(b"Subject: t\r\n\r\nx\r\n".to_vec()),
        eight_bit: false,
        smtputf8,
        dsn: Default::default(),
        requiretls,
        tls_required_no,
    }
}

fn ext(words: &[&str]) -> HashSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// RFC 8689 §4.2.1 as a table: channel × the peer offers REQUIRETLS ×
/// the message has REQUIRETLS × `TLS-Required: No` → sent (with the
/// option when asked) or failed with 5.7.30. `TLS-Required: No` never
/// weakens REQUIRETLS (§5: REQUIRETLS wins).
#[test]
fn requiretls_decisions() {
    use Channel::*;
    #[rustfmt::skip]
    let table: &[(Channel, bool, bool, bool, Option<&str>)] = &[
        // channel,     offers, requiretls, tls-required:no, failure (None: sent)
        (Plaintext,     false, false, false, None),
        (Plaintext,     true,  false, true,  None),
        (UnverifiedTls, false, false, false, None),
        (VerifiedTls,   false, false, false, None),
        (VerifiedTls,   true,  false, false, None),
        (VerifiedTls,   true,  true,  false, None),
        (VerifiedTls,   true,  true,  true,  None),
        (VerifiedTls,   false, true,  false, Some("does not offer REQUIRETLS")),
        (VerifiedTls,   false, true,  true,  Some("does not offer REQUIRETLS")),
        (UnverifiedTls, true,  true,  false, Some("did not verify")),
        (UnverifiedTls, true,  true,  true,  Some("did not verify")),
        (Plaintext,     true,  true,  false, Some("without TLS")),
        (Plaintext,     false, true,  true,  Some("without TLS")),
    ];
    for &(channel, offers, requiretls, no, want) in table {
        let e = if offers { ext(&["REQUIRETLS", "PIPELINING"]) } else { ext(&["PIPELINING"]) };
        let m = msg("a@b.example", false, requiretls, no);
        let got = envelope(&m, &["r@c.example".into()], Peer { lmtp: false, channel, ext: &e });
        let case = format!("{channel:?} offers={offers} requiretls={requiretls} tls-required-no={no}");
        match (want, got) {
            (None, Ok(env)) => {
                assert_eq!(env.requiretls, requiretls, "{case}: MAIL FROM carries REQUIRETLS iff asked");
                assert_eq!(env.rcpts, vec![(0, "r@c.example".to_string())], "{case}");
            }
            (Some(why), Err(r)) => {
                assert_eq!(r.status(), Enhanced(5, 7, 30), "{case}");
                assert!(r.text.contains(why), "{case}: {r}");
            }
            (want, got) => panic!("{case}: want {want:?}, got {got:?}"),
        }
    }
}

/// LMTP is local delivery, the end of the line: no check, no option.
#[test]
fn lmtp_is_the_end_of_the_line() {
    let e = ext(&["PIPELINING"]);
    let m = msg("a@b.example", false, true, false);
    let env = envelope(&m, &["r@c.example".into()], Peer { lmtp: true, channel: Channel::Plaintext, ext: &e }).unwrap();
    assert!(!env.requiretls);
}

/// RFC 6531 §3.2: a UTF-8 domain goes as A-labels to a next hop without
/// SMTPUTF8; a UTF-8 local part cannot, and fails 5.6.7 alone.
#[test]
fn idna_for_a_peer_without_smtputf8() {
    let plain = ext(&["PIPELINING", "8BITMIME"]);
    let utf8 = ext(&["PIPELINING", "SMTPUTF8"]);
    let rcpts: Vec<String> = vec!["kim@bücher.example".into(), "jörg@bücher.example".into(), "ok@plain.example".into()];
    let m = msg("sender@bücher.example", true, false, false);
    let env = envelope(&m, &rcpts, Peer { lmtp: false, channel: Channel::Plaintext, ext: &plain }).unwrap();
    assert_eq!(env.sender, "sender@xn--bcher-kva.example");
    assert!(!env.smtputf8);
    assert_eq!(env.rcpts, vec![(0, "kim@xn--bcher-kva.example".to_string()), (2, "ok@plain.example".to_string())]);
    assert_eq!(env.refused.len(), 1);
    assert_eq!(env.refused[0].0, 1);
    assert_eq!(env.refused[0].1.status(), Enhanced(5, 6, 7));
    // A peer with SMTPUTF8 gets the addresses as they are.
    let env = envelope(&m, &rcpts, Peer { lmtp: false, channel: Channel::Plaintext, ext: &utf8 }).unwrap();
    assert!(env.smtputf8);
    assert_eq!(env.sender, "sender@bücher.example");
    assert_eq!(env.rcpts.len(), 3);
    // A UTF-8 sender local part fails everyone.
    let m = msg("jörg@bücher.example", true, false, false);
    let r = envelope(&m, &rcpts, Peer { lmtp: false, channel: Channel::Plaintext, ext: &plain }).unwrap_err();
    assert_eq!(r.status(), Enhanced(5, 6, 7));
    // The null sender stays null.
    assert_eq!(ascii_address("").as_deref(), Some(""));
    assert_eq!(ascii_address("a@BÜCHER.example").as_deref(), Some("a@xn--bcher-kva.example"));
    assert_eq!(ascii_address("a@Mixed.Case.example").as_deref(), Some("a@Mixed.Case.example"));
    assert_eq!(ascii_address("a@bad domain.bücher"), None);
}

#[test]
fn tls_required_header() {
    let table: &[(&str, bool)] = &[
        ("TLS-Required: No\r\nSubject: x\r\n\r\nbody\r\n", true),
        ("Received: from x\r\n\tby y\r\ntls-required:no\r\n\r\n", true),
        ("Subject: x\r\nTLS-Required:\r\n  No\r\n\r\n", true),
        ("TLS-Required: Yes\r\n\r\n", false),
        ("TLS-Required: No thanks\r\n\r\n", false),
        ("Subject: x\r\n\r\nTLS-Required: No\r\n", false),
        ("Subject: x\r\nnot a header line\r\nTLS-Required: No\r\n\r\n", false),
        ("X-TLS-Required: No\r\n\r\n", false),
        ("Subject: TLS-Required: No\r\n\r\n", false),
        ("", false),
        ("TLS-Required: No", true),
    ];
    for (text, want) in table {
        assert_eq!(tls_required_no(text.as_bytes()), *want, "{text:?}");
    }
}
