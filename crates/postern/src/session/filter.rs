//! The milter glue of the session: connecting the listener's milters,
//! the sendmail macros of each stage, the DATA and end-of-message stages,
//! and applying what the milters changed to the draft and the transaction.
//! The milter protocol itself is `crate::milter` (and `postern-wire`).
//!
//! May touch: the milters (through `Milters`); the spool draft (rewrites).
//! Macro names are sendmail's (milter protocol v6).

use postern_wire::command::{xtext_decode, xtext_encode, Body, MailParams, RcptParams};
use postern_wire::{codes, Mailbox, Path, Reply};

use super::{Accepted, End, Session, Socket, Txn};
use crate::milter::{self, ConnectInfo, Macros, MessageResult, Milters, Verdict};
use crate::spool::{Draft, QueueId};

/// A milter quarantined the message: it is queued on hold with this reason.
#[derive(Debug)]
pub(super) struct Quarantine(pub(super) String);

impl<S: Socket> Session<S> {
    /// Connects the listener's milters and sends CONNECT.
    pub(super) async fn milter_connect(&mut self) -> Verdict {
        let names = &self.ctx.listener.milters;
        if names.is_empty() {
            return Verdict::Continue;
        }
        let cfgs = self.settings().config.milters_named(names);
        let s = self.settings();
        let ip = self.conn.peer.ip().to_string();
        // sendmail: {client_name} is the confirmed name or "[ip]", {client_ptr}
        // the PTR name even when unconfirmed; FAIL when no lookup was made.
        let client_name = if self.client_name().is_empty() { format!("[{ip}]") } else { self.client_name().to_string() };
        let client_ptr = self.client_ptr().map_or_else(|| format!("[{ip}]"), str::to_string);
        let resolve = self.client_resolve().map_or("FAIL", |r| r.macro_value());
        let macros: Macros = vec![
            ("j", s.hostname.clone()),
            ("_", format!("{client_name} [{ip}]")),
            ("v", concat!("postern ", env!("CARGO_PKG_VERSION")).to_string()),
            ("{daemon_name}", self.ctx.listener.label().to_string()),
            ("{daemon_addr}", self.conn.local.ip().to_string()),
            ("{daemon_port}", self.conn.local.port().to_string()),
            ("{if_name}", s.hostname.clone()),
            ("{if_addr}", self.conn.local.ip().to_string()),
            ("{client_addr}", ip.clone()),
            ("{client_port}", self.conn.peer.port().to_string()),
            ("{client_name}", client_name.clone()),
            ("{client_ptr}", client_ptr),
            ("{client_resolve}", resolve.to_string()),
        ];
        let info = ConnectInfo { hostname: &client_name, peer: self.conn.peer };
        let (m, v) = Milters::connect(&cfgs, &info, &macros, self.client_text()).await;
        self.milters = Some(m);
        v
    }

    /// HELO-stage macros: what TLS gave (sendmail's names).
    pub(super) fn milter_macros_helo(&self) -> Macros {
        let Some(t) = self.tls() else { return vec![("{verify}", "NONE".into())] };
        let mut m: Macros = vec![("{tls_version}", t.version.clone()), ("{cipher}", t.cipher.clone())];
        let bits = if t.cipher.contains("256") || t.cipher.contains("CHACHA20") { "256" } else { "128" };
        m.push(("{cipher_bits}", bits.into()));
        match &t.client_cert {
            None => m.push(("{verify}", "NO".into())),
            Some(c) => {
                m.push(("{cert_subject}", c.cert.subject.clone()));
                m.push(("{cert_issuer}", c.cert.issuer.clone()));
                m.push(("{verify}", if c.verified.is_ok() { "OK" } else { "FAIL" }.into()));
            }
        }
        m
    }

    /// MAIL-stage macros: AUTH facts and the sender.
    pub(super) fn milter_macros_mail(&self, sender: &str) -> Macros {
        let mut m = self.milter_macros_helo();
        if let Some(a) = self.auth() {
            m.push(("{auth_type}", a.mechanism().name().to_string()));
            m.push(("{auth_authen}", a.user().to_string()));
            m.push(("{auth_ssf}", "0".into()));
        }
        let host = sender.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let mailer = if !host.is_empty() && self.settings().is_local_domain(&host) { "local" } else { "esmtp" };
        m.push(("{mail_mailer}", mailer.into()));
        m.push(("{mail_host}", host));
        m.push(("{mail_addr}", sender.to_string()));
        m
    }

    /// RCPT-stage macros.
    pub(super) fn milter_macros_rcpt(&self, to: &Path) -> Macros {
        let addr = match to {
            Path::Mailbox(mb) => mb.to_string(),
            _ => "postmaster".to_string(),
        };
        let host = addr.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let local = host.is_empty() || self.settings().is_local_domain(&host);
        let (mailer, rhost) = if local { ("local", String::new()) } else { ("esmtp", host) };
        vec![("{rcpt_mailer}", mailer.into()), ("{rcpt_host}", rhost), ("{rcpt_addr}", addr)]
    }

    /// A milter asked to drop the connection: 421 and close.
    pub(super) fn milter_close(&mut self, verb: &str, r: Reply) -> Result<(), End> {
        self.reject(verb, r, &[]);
        self.enter(super::State::Closed);
        Err(End::Closed)
    }

    /// The milters' DATA stage (sent once the queue id is known). Returns
    /// a refusal; a refusal or a close also aborts the milters' message.
    pub(super) async fn milter_data(&mut self, id: &QueueId, txn: &mut Txn) -> Result<Option<Reply>, End> {
        let Some(m) = self.milters.as_mut() else { return Ok(None) };
        m.queue_id = Some(id.to_string());
        let macros: Macros = vec![("i", id.to_string())];
        match m.data(&macros).await {
            Verdict::Continue => Ok(None),
            Verdict::Discard => {
                txn.discard = true;
                Ok(None)
            }
            Verdict::Reject(r) => {
                m.abort().await;
                Ok(Some(r))
            }
            Verdict::Close(r) => self.milter_close("DATA", r).map(|_| None),
        }
    }

    /// Runs the milters over the message (end-of-data stage).
    pub(super) async fn milter_message(&mut self, draft: &mut Draft) -> MessageResult {
        let max = self.settings().config.limits.max_message_size;
        let id = draft.id.to_string();
        let eoh: Macros = vec![("i", id.clone())];
        let eom: Macros = vec![("i", id)];
        match self.milters.as_mut() {
            Some(m) => m.message(draft, &eoh, &eom, max).await,
            None => MessageResult {
                verdict: Verdict::Continue,
                rewrite: None,
                quarantine: None,
                change_from: None,
                add_rcpts: Vec::new(),
                del_rcpts: Vec::new(),
            },
        }
    }

    /// Applies what the milters decided and changed to the draft and the
    /// transaction. `Err` means: queue it on hold (quarantine).
    pub(super) fn apply_milters(&mut self, out: MessageResult, txn: &mut Txn, draft: &mut Draft) -> Result<Verdict, Quarantine> {
        if out.verdict != Verdict::Continue {
            return Ok(out.verdict);
        }
        if let Some(rw) = &out.rewrite {
            if let Err(e) = milter::rewrite_draft(draft, rw) {
                tracing::error!("milter: rewriting the message failed: {e}");
                let r = if e.is_no_space() { codes::insufficient_storage() } else { codes::local_error() };
                return Ok(Verdict::Reject(r));
            }
        }
        if let Some((from, _params)) = &out.change_from {
            match postern_wire::address::parse_path(&bracketed(from), true, false, true) {
                Ok((path, _)) => txn.from = path,
                Err(e) => tracing::warn!("milter: ignoring bad new sender {from:?}: {e:?}"),
            }
        }
        for d in &out.del_rcpts {
            let d = unbracketed(d);
            for a in &mut txn.rcpts {
                a.targets.retain(|t| !t.eq_ignore_ascii_case(d));
            }
            txn.rcpts.retain(|a| !a.targets.is_empty() && !a.original.eq_ignore_ascii_case(d));
        }
        for (r, params) in &out.add_rcpts {
            let addr = unbracketed(r).to_string();
            match Mailbox::parse(&addr, true) {
                Ok(_) => {
                    let params = rcpt_params_from(params.as_deref());
                    txn.rcpts.push(Accepted { original: addr.clone(), targets: vec![addr], params });
                }
                Err(e) => tracing::warn!("milter: ignoring bad new recipient {r:?}: {e:?}"),
            }
        }
        if txn.rcpts.is_empty() {
            // Every recipient was deleted: nobody to deliver to.
            return Ok(Verdict::Discard);
        }
        match out.quarantine {
            Some((milter, reason)) => Err(Quarantine(format!("quarantined by milter {milter}: {reason}"))),
            None => Ok(Verdict::Continue),
        }
    }
}

/// `<addr>` as milters and MAIL/RCPT write it, whether or not they bracketed it.
fn bracketed(a: &str) -> String {
    let a = a.trim();
    if a.starts_with('<') {
        a.to_string()
    } else {
        format!("<{a}>")
    }
}

fn unbracketed(a: &str) -> &str {
    let a = a.trim();
    a.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(a)
}

/// NOTIFY= and ORCPT= from a milter's ESMTP parameters for a new recipient.
fn rcpt_params_from(params: Option<&str>) -> RcptParams {
    let mut p = RcptParams::default();
    for word in params.unwrap_or("").split_ascii_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            if k.eq_ignore_ascii_case("NOTIFY") {
                p.notify = Some(v.to_ascii_uppercase());
            } else if k.eq_ignore_ascii_case("ORCPT") {
                p.orcpt = xtext_decode(v);
            }
        }
    }
    p
}

/// MAIL arguments as milters get them: `<path>` then ESMTP parameters.
pub(super) fn mail_args(from: &Path, params: &MailParams) -> Vec<String> {
    let mut args = vec![match from {
        Path::Mailbox(m) => format!("<{m}>"),
        _ => "<>".to_string(),
    }];
    if let Some(size) = params.size {
        args.push(format!("SIZE={size}"));
    }
    match params.body {
        Body::SevenBit => {}
        Body::EightBitMime => args.push("BODY=8BITMIME".into()),
        Body::BinaryMime => args.push("BODY=BINARYMIME".into()),
    }
    if params.smtputf8 {
        args.push("SMTPUTF8".into());
    }
    if let Some(r) = &params.ret {
        args.push(format!("RET={r}"));
    }
    if let Some(e) = &params.envid {
        args.push(format!("ENVID={}", xtext_encode(e)));
    }
    if let Some(a) = &params.auth {
        args.push(format!("AUTH={}", xtext_encode(a)));
    }
    if params.requiretls {
        args.push("REQUIRETLS".into());
    }
    args
}

/// RCPT arguments as milters get them.
pub(super) fn rcpt_args(rcpt: &str, params: &RcptParams) -> Vec<String> {
    let mut args = vec![format!("<{rcpt}>")];
    if let Some(n) = &params.notify {
        args.push(format!("NOTIFY={n}"));
    }
    if let Some(o) = &params.orcpt {
        args.push(format!("ORCPT={}", xtext_encode(o)));
    }
    args
}
