//! Message-stage `[[rule]]`s: rules with `spf`, `dkim`, `dmarc` or `arc`
//! criteria, skipped at RCPT and decided once per message after
//! verification (`session/authcheck.rs`, `postern explain --message`).
//! Pure: the verification results come in as keywords.
//!
//! May touch: nothing. RFCs: 8601 §2.7 (result keywords).

use postern_wire::{Enhanced, Reply};

use super::{matches_client, Facts};
use crate::config::{AuthResult, Config, Rule, RuleAction};
use crate::settings::Settings;

/// The verification results a message rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageAuth {
    /// SPF of the MAIL FROM (or HELO) identity.
    pub spf: AuthResult,
    /// DKIM: pass if any signature passed.
    pub dkim: AuthResult,
    /// DMARC of the From domain.
    pub dmarc: AuthResult,
    /// ARC chain validation.
    pub arc: AuthResult,
}

impl MessageAuth {
    /// From RFC 8601 keywords; an unknown keyword reads as `none`.
    pub fn from_keywords(spf: &str, dkim: &str, dmarc: &str, arc: &str) -> MessageAuth {
        let k = |s: &str| AuthResult::parse(s).unwrap_or(AuthResult::None);
        MessageAuth { spf: k(spf), dkim: k(dkim), dmarc: k(dmarc), arc: k(arc) }
    }
}

/// What the first matching message rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDecision {
    /// `accept`, `reject`, `tempfail` or `hold`.
    pub action: RuleAction,
    /// The rule's name.
    pub rule: String,
    /// Where the rule is: `file:line`.
    pub origin: String,
    /// The reply for `reject` (550 5.7.1) and `tempfail` (451 4.7.1).
    pub reply: Option<Reply>,
}

impl MessageDecision {
    /// The hold reason (the envelope's `quarantine`) for `hold`.
    pub fn hold_reason(&self) -> String {
        format!("rule {} ({})", self.rule, self.origin)
    }
}

/// Does `r`'s message-stage criteria match `a`? (Every criterion given
/// must list the result; a rule without any never matches here.)
pub fn matches_auth(r: &Rule, a: &MessageAuth) -> bool {
    let have = [a.spf, a.dkim, a.dmarc, a.arc];
    r.is_message_stage() && r.message_criteria().iter().zip(have).all(|((_, want), got)| want.is_none_or(|w| w.contains(&got)))
}

/// The first message-stage rule matching the client facts (`f.rcpt` is
/// not looked at) and the results; `None`: no rule, the `[mail_auth]`
/// DMARC switch decides.
pub fn check_message(s: &Settings, f: &Facts<'_>, a: &MessageAuth) -> Option<MessageDecision> {
    let file = s.config_file.clone().unwrap_or_else(|| "config".into());
    s.config.rules.iter().enumerate().find_map(|(i, spanned)| {
        let r = spanned.get_ref();
        if !matches_auth(r, a) || !matches_client(r, f) {
            return None;
        }
        let line = s.config.rule_lines.get(i).copied().unwrap_or(0);
        let rule = r.name.clone().unwrap_or_else(|| format!("rule #{}", i + 1));
        let action = r.action.unwrap_or(RuleAction::Reject);
        let reply = match action {
            // `relay` is refused at load with these criteria; fail closed.
            RuleAction::Reject | RuleAction::Relay => {
                let text = r.message.clone().unwrap_or_else(|| "Message refused by policy".into());
                Some(Reply::new(550, Enhanced(5, 7, 1), format!("{text} (rule {rule})")))
            }
            RuleAction::Tempfail => {
                let text = r.message.clone().unwrap_or_else(|| "Try again later".into());
                Some(Reply::new(451, Enhanced(4, 7, 1), format!("{text} (rule {rule})")))
            }
            RuleAction::Accept | RuleAction::Hold => None,
        };
        Some(MessageDecision { action, rule, origin: format!("{file}:{line}"), reply })
    })
}

/// `config check`'s warning: message-stage rules while `mail_auth.verify`
/// is off never match (nothing is verified). `None` otherwise.
pub fn unverified_warning(c: &Config) -> Option<String> {
    let names: Vec<String> = c
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.get_ref().is_message_stage())
        .map(|(i, r)| r.get_ref().name.clone().unwrap_or_else(|| format!("rule #{}", i + 1)))
        .collect();
    (!c.mail_auth.verify && !names.is_empty())
        .then(|| format!("mail_auth.verify = false: the message-stage rules ({}) never match, nothing is verified", names.join(", ")))
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
