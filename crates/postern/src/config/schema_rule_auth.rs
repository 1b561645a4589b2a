//! Message-stage criteria of `[[rule]]` (`spf`, `dkim`, `dmarc`, `arc`):
//! lists of verification result keywords. A rule with one of them is
//! decided after `[mail_auth]` verification, not at RCPT.
//!
//! May touch: nothing. RFCs: 8601 §2.7 (result keywords), 7208 §2.6.

use serde::{Deserialize, Serialize};

use super::schema::{Rule, RuleAction};

/// A verification result keyword (RFC 8601 §2.7) in a rule criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthResult {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// SPF `~all`.
    SoftFail,
    /// SPF `?all`; a DKIM signature that could not be checked.
    Neutral,
    /// Nothing to check (no record, no signature); also "not verified".
    None,
    /// A temporary (DNS) error.
    TempError,
    /// A permanent error in the records or the signature.
    PermError,
}

impl AuthResult {
    /// The RFC 8601 keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    /// Parses a keyword (case-insensitive).
    pub fn parse(s: &str) -> Option<AuthResult> {
        [
            AuthResult::Pass,
            AuthResult::Fail,
            AuthResult::SoftFail,
            AuthResult::Neutral,
            AuthResult::None,
            AuthResult::TempError,
            AuthResult::PermError,
        ]
        .into_iter()
        .find(|o| o.as_str().eq_ignore_ascii_case(s))
    }
}

impl Rule {
    /// The message-stage criteria given, by key.
    pub fn message_criteria(&self) -> [(&'static str, Option<&[AuthResult]>); 4] {
        [("spf", self.spf.as_deref()), ("dkim", self.dkim.as_deref()), ("dmarc", self.dmarc.as_deref()), ("arc", self.arc.as_deref())]
    }

    /// Is this a message-stage rule (skipped at RCPT, decided after
    /// verification)?
    pub fn is_message_stage(&self) -> bool {
        self.message_criteria().iter().any(|(_, v)| v.is_some())
    }
}

impl RuleAction {
    /// Can a rule at this stage take this action? `relay` only means
    /// something for a recipient, `hold` only for a whole message.
    pub fn fits(self, message_stage: bool) -> bool {
        match self {
            RuleAction::Relay => !message_stage,
            RuleAction::Hold => message_stage,
            RuleAction::Accept | RuleAction::Reject | RuleAction::Tempfail => true,
        }
    }
}
