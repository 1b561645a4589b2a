//! DKIM signing in the session: after the milters' end-of-message changes,
//! before the commit and its 250, the `DKIM-Signature:` fields are put in
//! front of the draft's text, so the signature covers what is queued.
//! Which mail is signed and how is `crate::mailauth::sign`.
//!
//! May touch: the spool draft (a rewrite). RFCs: 6376 (through mail-auth).

use postern_wire::{codes, Mailbox, Path, Reply};

use super::{Greeted, Session, Socket, Txn};
use crate::config::RuleAction;
use crate::mailauth::sign::{self, Origin};
use crate::maillog;
use crate::policy::{evaluate, Facts};
use crate::spool::Draft;

impl<S: Socket> Session<S> {
    /// Does this client relay because of its client certificate? True when
    /// the relay rules let it relay to an outside domain with its
    /// certificate and would not without.
    fn relays_by_certificate(&self, txn: &Txn) -> bool {
        let Some(cert) = self.tls().and_then(|t| t.client_cert.as_ref()) else { return false };
        let sender = match &txn.from {
            Path::Mailbox(m) => Some(m.clone()),
            _ => None,
        };
        let probe = Path::Mailbox(Mailbox { local: "probe".into(), domain: "dkim-origin-probe.invalid".into() });
        let mut facts = Facts {
            listener: self.ctx.listener.label(),
            client_ip: self.conn.peer.ip(),
            tls: true,
            authenticated: None,
            cert: Some(cert),
            sender: sender.as_ref(),
            rcpt: &probe,
            user_db: None,
            client_resolve: self.client_resolve(),
            directory: None,
        };
        let with = evaluate(self.settings(), &facts).action == RuleAction::Relay;
        facts.cert = None;
        with && evaluate(self.settings(), &facts).action != RuleAction::Relay
    }

    /// Signs the draft if this mail is ours to sign and its domain has a
    /// `[[dkim]]` key. `Ok(labels)`: `selector@domain,...` for the mail log
    /// (`None`: not signed). `Err`: 451 4.7.0, never an unsigned 250.
    pub(super) fn dkim_sign(&self, greeted: &Greeted, txn: &Txn, draft: &mut Draft) -> Result<Option<String>, Reply> {
        let keys = &self.settings().dkim;
        if keys.is_empty() {
            return Ok(None);
        }
        let origin = Origin {
            role: Some(self.ctx.listener.role),
            authenticated: greeted.auth.is_some(),
            cert_relay: self.relays_by_certificate(txn),
            trusted_network: self.settings().config.relay.networks.iter().any(|c| c.contains(self.conn.peer.ip())),
        };
        if !sign::should_sign(&origin) {
            return Ok(None);
        }
        let sender = txn.sender();
        sign::sign_draft(keys, draft, &sender).map_err(|e| {
            maillog::error(&[("id", draft.id.as_str()), ("from", &sender), ("error", &e), ("action", "451 4.7.0")]);
            codes::dkim_sign_failed()
        })
    }
}
