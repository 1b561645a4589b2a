//! The command table: for every verb, what must be true before it runs
//! (OpenSMTPD `commands[]`, Postfix `smtpd_cmd_table`). The session's
//! dispatcher consults [`check`] before calling a verb's handler, so "what
//! is allowed before HELO / before TLS / before AUTH / inside a transaction
//! / between BDAT chunks" is reviewable here, in one place, and tested with
//! a table. Handlers keep only the checks that need the command's arguments
//! (sizes, addresses, mechanisms).
//!
//! May touch: nothing (pure). Implements the sequencing rules of RFC 5321
//! §4.1.4, RFC 3207 §4 (STARTTLS), RFC 4954 §4 (AUTH), RFC 3030 §2 (BDAT),
//! RFC 6409 §4.3 (submission needs AUTH).

use postern_wire::{codes, Command, Reply};

/// The verbs of the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Ehlo,
    Helo,
    Lhlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
}

impl Verb {
    /// The verb of a parsed command.
    pub(crate) fn of(cmd: &Command) -> Verb {
        match cmd {
            Command::Ehlo(_) => Verb::Ehlo,
            Command::Helo(_) => Verb::Helo,
            Command::Lhlo(_) => Verb::Lhlo,
            Command::Mail { .. } => Verb::Mail,
            Command::Rcpt { .. } => Verb::Rcpt,
            Command::Data => Verb::Data,
            Command::Bdat { .. } => Verb::Bdat,
            Command::Rset => Verb::Rset,
            Command::Noop => Verb::Noop,
            Command::Quit => Verb::Quit,
            Command::Vrfy(_) => Verb::Vrfy,
            Command::Expn(_) => Verb::Expn,
            Command::Help => Verb::Help,
            Command::StartTls => Verb::StartTls,
            Command::Auth { .. } => Verb::Auth,
        }
    }

    /// The verb as the mail log writes it (`command=`).
    pub(crate) fn name(self) -> &'static str {
        rule(self).name
    }
}

/// Where a verb stands towards the mail transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InTxn {
    /// Allowed with or without a transaction.
    Any,
    /// Only outside a transaction; 503 with this text inside one.
    Outside(&'static str),
    /// Only inside a transaction; 503 with this text outside one.
    Inside(&'static str),
}

/// What one verb needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub(crate) verb: Verb,
    /// The name in log lines.
    pub(crate) name: &'static str,
    /// 503 with this text before HELO/EHLO (`None`: allowed).
    pub(crate) needs_helo: Option<&'static str>,
    /// Inside or outside a mail transaction.
    pub(crate) txn: InTxn,
    /// Allowed between BDAT chunks (RFC 3030 §2: only BDAT, RSET, QUIT; NOOP is harmless).
    pub(crate) between_chunks: bool,
    /// Allowed after a milter refused the connection (RFC 5321 §3.1: only QUIT).
    pub(crate) after_refusal: bool,
    /// 530 on a listener that requires TLS, until TLS is active.
    pub(crate) needs_tls: bool,
    /// 530 on a submission listener until AUTH or a verified client certificate.
    pub(crate) needs_auth: bool,
    /// 503 with this text once TLS is active (RFC 3207 §4.2: one STARTTLS).
    pub(crate) once_tls: Option<&'static str>,
    /// 454 when the server has no TLS material (RFC 3207 §4), checked
    /// right after `once_tls`.
    pub(crate) needs_tls_material: bool,
    /// 503 with this text once authenticated (RFC 4954 §4: one AUTH).
    pub(crate) once_auth: Option<&'static str>,
    /// Octets follow the command line (BDAT): the session reads them even
    /// when the command is refused, or the stream would be lost.
    pub(crate) payload: bool,
    /// Carries no mail: counts against `limits.max_junk_commands` (F3,
    /// Postfix `smtpd_junk_command_limit`). NOOP, VRFY, EXPN, HELP, RSET,
    /// HELO, EHLO and LHLO; not MAIL/RCPT/DATA/BDAT (they make progress),
    /// QUIT (it ends the session), STARTTLS and AUTH (once each per TLS or
    /// AUTH; failed AUTH has its own throttle). The count restarts after
    /// each accepted message.
    pub(crate) junk: bool,
}

const fn anywhere(verb: Verb, name: &'static str) -> Rule {
    Rule {
        verb,
        name,
        needs_helo: None,
        txn: InTxn::Any,
        between_chunks: false,
        after_refusal: false,
        needs_tls: false,
        needs_auth: false,
        once_tls: None,
        needs_tls_material: false,
        once_auth: None,
        payload: false,
        junk: false,
    }
}

/// The table. Order is the order of [`Verb`].
pub(crate) const VERBS: [Rule; 15] = [
    Rule { junk: true, ..anywhere(Verb::Ehlo, "EHLO") },
    Rule { junk: true, ..anywhere(Verb::Helo, "HELO") },
    Rule { junk: true, ..anywhere(Verb::Lhlo, "LHLO") },
    Rule {
        needs_helo: Some("Send HELO/EHLO first"),
        txn: InTxn::Outside("Nested MAIL command"),
        needs_tls: true,
        needs_auth: true,
        ..anywhere(Verb::Mail, "MAIL")
    },
    Rule { txn: InTxn::Inside("Need MAIL before RCPT"), ..anywhere(Verb::Rcpt, "RCPT") },
    Rule { txn: InTxn::Inside("Need MAIL and RCPT first"), ..anywhere(Verb::Data, "DATA") },
    Rule { txn: InTxn::Inside("Need MAIL and RCPT first"), between_chunks: true, payload: true, ..anywhere(Verb::Bdat, "BDAT") },
    Rule { between_chunks: true, junk: true, ..anywhere(Verb::Rset, "RSET") },
    Rule { between_chunks: true, junk: true, ..anywhere(Verb::Noop, "NOOP") },
    Rule { between_chunks: true, after_refusal: true, ..anywhere(Verb::Quit, "QUIT") },
    Rule { junk: true, ..anywhere(Verb::Vrfy, "VRFY") },
    Rule { junk: true, ..anywhere(Verb::Expn, "EXPN") },
    Rule { junk: true, ..anywhere(Verb::Help, "HELP") },
    Rule {
        txn: InTxn::Outside("MAIL transaction in progress"),
        once_tls: Some("TLS already active"),
        needs_tls_material: true,
        ..anywhere(Verb::StartTls, "STARTTLS")
    },
    Rule {
        needs_helo: Some("Send EHLO first"),
        txn: InTxn::Outside("AUTH not allowed during a mail transaction"),
        once_auth: Some("Already authenticated"),
        ..anywhere(Verb::Auth, "AUTH")
    },
];

/// The table's row for a verb.
pub(crate) fn rule(verb: Verb) -> &'static Rule {
    let r = &VERBS[verb as usize];
    debug_assert_eq!(r.verb, verb, "VERBS is out of order");
    r
}

/// Where the session is, as far as the table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before HELO/EHLO (greeting, or just after STARTTLS).
    Fresh,
    /// A milter refused the connection: QUIT only.
    Refused,
    /// HELO/EHLO done, no transaction.
    Ready,
    /// Inside a transaction.
    Mail,
    /// Between BDAT chunks.
    Bdat,
}

/// The facts [`check`] decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gate {
    /// Where the session is.
    pub(crate) phase: Phase,
    /// TLS is active.
    pub(crate) tls: bool,
    /// The server has TLS material (a certificate) for this connection.
    pub(crate) tls_available: bool,
    /// An AUTH exchange succeeded.
    pub(crate) authenticated: bool,
    /// The listener requires TLS before mail (`require_tls`, submission), or
    /// the client's certificate mode is `required` (F5).
    pub(crate) listener_needs_tls: bool,
    /// The listener requires AUTH (or a verified certificate) before mail,
    /// and neither has happened.
    pub(crate) listener_needs_auth: bool,
}

/// Why a command may not run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Out of sequence: the reply alone (no log line).
    Sequence(Reply),
    /// Refused by the listener's policy: the reply and a `reject` log line.
    Policy(Reply),
}

/// May `verb` run now? Pure; the order of the checks is part of the
/// behaviour (the first that fails gives the reply).
pub(crate) fn check(verb: Verb, g: &Gate) -> Result<(), Refusal> {
    let r = rule(verb);
    let seq = |text: &'static str| Err(Refusal::Sequence(codes::bad_sequence().with_text(text)));
    if g.phase == Phase::Refused && !r.after_refusal {
        return seq("Connection refused, send QUIT");
    }
    if g.phase == Phase::Bdat && !r.between_chunks {
        return seq("Expecting BDAT, RSET or QUIT");
    }
    if let (Some(text), true) = (r.once_tls, g.tls) {
        return seq(text);
    }
    if r.needs_tls_material && !g.tls_available {
        return Err(Refusal::Sequence(codes::tls_unavailable()));
    }
    if let (Some(text), true) = (r.once_auth, g.authenticated) {
        return seq(text);
    }
    if let (Some(text), Phase::Fresh) = (r.needs_helo, g.phase) {
        return seq(text);
    }
    let in_txn = matches!(g.phase, Phase::Mail | Phase::Bdat);
    match r.txn {
        InTxn::Outside(text) if in_txn => return seq(text),
        InTxn::Inside(text) if !in_txn => return seq(text),
        _ => {}
    }
    if r.needs_tls && g.listener_needs_tls && !g.tls {
        return Err(Refusal::Policy(codes::tls_required()));
    }
    if r.needs_auth && g.listener_needs_auth {
        return Err(Refusal::Policy(codes::auth_required()));
    }
    Ok(())
}

/// Unit tests: one line per case.
#[cfg(test)]
mod tests {
    use super::*;

    fn gate(phase: Phase) -> Gate {
        Gate { phase, tls: false, tls_available: true, authenticated: false, listener_needs_tls: false, listener_needs_auth: false }
    }

    /// The wire text of the refusal, or "ok".
    fn outcome(verb: Verb, g: Gate) -> String {
        match check(verb, &g) {
            Ok(()) => "ok".into(),
            Err(Refusal::Sequence(r)) => format!("seq {}", r.to_wire().trim_end()),
            Err(Refusal::Policy(r)) => format!("policy {}", r.to_wire().trim_end()),
        }
    }

    #[test]
    fn table_rows_are_in_verb_order() {
        for (i, r) in VERBS.iter().enumerate() {
            assert_eq!(r.verb as usize, i, "{:?}", r.verb);
        }
    }

    #[test]
    fn sequencing_table() {
        use Phase::{Fresh, Ready, Refused};
        use Verb::*;
        let tls = |mut g: Gate| {
            g.tls = true;
            g
        };
        let authed = |mut g: Gate| {
            g.authenticated = true;
            g
        };
        let needs_tls = |mut g: Gate| {
            g.listener_needs_tls = true;
            g
        };
        let needs_auth = |mut g: Gate| {
            g.listener_needs_auth = true;
            g
        };
        let cases: &[(Verb, Gate, &str)] = &[
            (Ehlo, gate(Fresh), "ok"),
            (Ehlo, gate(Phase::Mail), "ok"),
            (Ehlo, gate(Phase::Bdat), "seq 503 5.5.1 Expecting BDAT, RSET or QUIT"),
            (Ehlo, gate(Refused), "seq 503 5.5.1 Connection refused, send QUIT"),
            (Quit, gate(Refused), "ok"),
            (Quit, gate(Phase::Bdat), "ok"),
            (Rset, gate(Phase::Bdat), "ok"),
            (Rset, gate(Refused), "seq 503 5.5.1 Connection refused, send QUIT"),
            (Noop, gate(Phase::Bdat), "ok"),
            (Mail, gate(Fresh), "seq 503 5.5.1 Send HELO/EHLO first"),
            (Mail, gate(Ready), "ok"),
            (Mail, gate(Phase::Mail), "seq 503 5.5.1 Nested MAIL command"),
            (Mail, gate(Phase::Bdat), "seq 503 5.5.1 Expecting BDAT, RSET or QUIT"),
            (Mail, needs_tls(gate(Ready)), "policy 530 5.7.0 Must issue a STARTTLS command first"),
            (Mail, tls(needs_tls(gate(Ready))), "ok"),
            (Mail, tls(needs_tls(needs_auth(gate(Ready)))), "policy 530 5.7.0 Authentication required"),
            (Mail, needs_tls(gate(Fresh)), "seq 503 5.5.1 Send HELO/EHLO first"),
            (Rcpt, gate(Fresh), "seq 503 5.5.1 Need MAIL before RCPT"),
            (Rcpt, gate(Ready), "seq 503 5.5.1 Need MAIL before RCPT"),
            (Rcpt, gate(Phase::Mail), "ok"),
            (Data, gate(Ready), "seq 503 5.5.1 Need MAIL and RCPT first"),
            (Data, gate(Fresh), "seq 503 5.5.1 Need MAIL and RCPT first"),
            (Data, gate(Phase::Mail), "ok"),
            (Bdat, gate(Ready), "seq 503 5.5.1 Need MAIL and RCPT first"),
            (Bdat, gate(Phase::Bdat), "ok"),
            (StartTls, gate(Fresh), "ok"),
            (StartTls, gate(Ready), "ok"),
            (StartTls, gate(Phase::Mail), "seq 503 5.5.1 MAIL transaction in progress"),
            (StartTls, tls(gate(Fresh)), "seq 503 5.5.1 TLS already active"),
            (StartTls, tls(gate(Phase::Mail)), "seq 503 5.5.1 TLS already active"),
            (StartTls, Gate { tls_available: false, ..gate(Phase::Mail) }, "seq 454 4.7.0 TLS not available"),
            (StartTls, Gate { tls_available: false, ..gate(Fresh) }, "seq 454 4.7.0 TLS not available"),
            (Auth, gate(Fresh), "seq 503 5.5.1 Send EHLO first"),
            (Auth, tls(gate(Ready)), "ok"),
            (Auth, tls(gate(Phase::Mail)), "seq 503 5.5.1 AUTH not allowed during a mail transaction"),
            (Auth, authed(tls(gate(Ready))), "seq 503 5.5.1 Already authenticated"),
            (Auth, needs_auth(gate(Ready)), "ok"),
            (Vrfy, gate(Fresh), "ok"),
            (Help, gate(Phase::Mail), "ok"),
        ];
        let mut bad = Vec::new();
        for (verb, g, want) in cases {
            let got = outcome(*verb, *g);
            if got != *want {
                bad.push(format!("{verb:?} {g:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn only_bdat_carries_a_payload() {
        for r in &VERBS {
            assert_eq!(r.payload, r.verb == Verb::Bdat);
        }
    }

    #[test]
    fn junk_verbs_are_those_that_carry_no_mail() {
        use Verb::*;
        let junk: Vec<Verb> = VERBS.iter().filter(|r| r.junk).map(|r| r.verb).collect();
        assert_eq!(junk, [Ehlo, Helo, Lhlo, Rset, Noop, Vrfy, Expn, Help]);
    }
}
