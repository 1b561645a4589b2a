//! Which queued messages a `postern queue` command acts on, like
//! `postsuper -d ALL deferred` and `exiqgrep`: queue ids, `ALL`, and
//! selectors (`--from`, `--to`, `--domain`, `--older-than`,
//! `--younger-than`, `--held`, `--deferred`). Pure: the caller lists the
//! spool and asks [`Selection::matches`] for each message.
//!
//! May touch: nothing.

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;

use crate::spool::{Envelope, Place, QueueId, RcptStatus};

/// The selectors shared by `queue list|flush|delete|hold|release|bounce`.
/// All given selectors must match (AND); with queue ids, only those ids.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Sender contains ADDR (case-insensitive substring; "<>" selects the null sender).
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// A recipient still to be delivered contains ADDR (case-insensitive substring).
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
    /// A recipient still to be delivered is in DOMAIN (exact, case-insensitive; not subdomains).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Arrived at least this long ago (e.g. 30m, 2h, 3days).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// Arrived less than this long ago.
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub younger_than: Option<Duration>,
    /// Only messages on hold.
    #[arg(long, conflicts_with = "deferred")]
    pub held: bool,
    /// Only deferred messages: not on hold, and at least one delivery attempt failed temporarily.
    #[arg(long)]
    pub deferred: bool,
}

impl Filter {
    /// No selector given.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// Ids (or `ALL`) plus selectors.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `None`: every message (`ALL`, or selectors alone).
    ids: Option<HashSet<QueueId>>,
    filter: Filter,
}

impl Selection {
    /// Builds a selection from the positional arguments and the
    /// selectors. `ALL` (any case) means every message and cannot be mixed
    /// with ids. With `need_some`, naming nothing at all is a usage error
    /// (so a bare `queue delete` never empties the queue).
    pub fn new(args: &[String], filter: Filter, need_some: bool) -> Result<Selection, String> {
        let all = args.iter().any(|a| a.eq_ignore_ascii_case("all"));
        if all && args.len() > 1 {
            return Err("ALL cannot be combined with queue ids".into());
        }
        if need_some && args.is_empty() && filter.is_empty() {
            return Err(
                "name queue ids, ALL, or a selector (--from, --to, --domain, --older-than, --younger-than, --held, --deferred)".into()
            );
        }
        let ids = if all || args.is_empty() {
            None
        } else {
            let mut set = HashSet::new();
            for a in args {
                set.insert(QueueId::parse(a).ok_or_else(|| format!("{a:?} is not a queue id (16 hex digits) or ALL"))?);
            }
            Some(set)
        };
        Ok(Selection { ids, filter })
    }

    /// Only queue ids, no `ALL` and no selector: the caller acts on each id
    /// directly (and reports ids that are not in the queue).
    pub fn plain_ids(&self) -> Option<Vec<QueueId>> {
        let ids = self.ids.as_ref().filter(|_| self.filter.is_empty())?;
        let mut v: Vec<QueueId> = ids.iter().cloned().collect();
        v.sort();
        Some(v)
    }

    /// Every message: no ids (or `ALL`) and no selector.
    pub fn selects_all(&self) -> bool {
        self.ids.is_none() && self.filter.is_empty()
    }

    /// Whether the message is selected; `now` in Unix seconds.
    pub fn matches(&self, e: &Envelope, place: Place, now: u64) -> bool {
        let f = &self.filter;
        let age = Duration::from_secs(now.saturating_sub(e.created));
        let open = || e.recipients.iter().filter(|r| r.status != RcptStatus::Delivered);
        let contains = |hay: &str, needle: &str| hay.to_ascii_lowercase().contains(&needle.to_ascii_lowercase());
        self.ids.as_ref().is_none_or(|ids| ids.contains(&e.id))
            && f.from.as_deref().is_none_or(|n| if n == "<>" { e.sender.is_empty() } else { contains(&e.sender, n) })
            && f.to.as_deref().is_none_or(|n| open().any(|r| contains(&r.address, n) || contains(&r.original, n)))
            && f.domain.as_deref().is_none_or(|d| {
                let d = d.trim_start_matches('@');
                open().any(|r| r.address.rsplit_once('@').is_some_and(|(_, dom)| dom.eq_ignore_ascii_case(d)))
            })
            && f.older_than.is_none_or(|min| age >= min)
            && f.younger_than.is_none_or(|max| age < max)
            && (!f.held || place == Place::Hold)
            && (!f.deferred || (place == Place::Active && e.recipients.iter().any(|r| r.status == RcptStatus::Pending && r.attempts > 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;

    const NOW: u64 = 1_000_000;
    const A: &str = "000000000000000A";
    const B: &str = "000000000000000B";
    const C: &str = "000000000000000C";

    fn env(id: &str, sender: &str, rcpts: &[&str], age_secs: u64, attempts: u32) -> Envelope {
        let recipients = rcpts
            .iter()
            .map(|r| {
                let mut rc = Recipient::pending(*r, *r);
                rc.attempts = attempts;
                rc
            })
            .collect();
        Envelope {
            version: 1,
            id: QueueId::parse(id).expect("id"),
            created: NOW - age_secs,
            sender: sender.into(),
            recipients,
            size: 100,
            eight_bit: false,
            smtputf8: false,
            client: "local".into(),
            helo: None,
            ret: None,
            envid: None,
            quarantine: None,
            requiretls: false,
        }
    }

    fn queue() -> Vec<(Envelope, Place)> {
        let mut delivered = env(C, "", &["Done@Far.Example", "x@other.test"], 10, 0);
        delivered.recipients[0].status = RcptStatus::Delivered;
        vec![
            (env(A, "alice@mx.test", &["bob@far.example"], 3 * 3600, 2), Place::Active),
            (env(B, "carol@mx.test", &["dave@near.example", "eve@far.example"], 60, 0), Place::Hold),
            (delivered, Place::Active),
        ]
    }

    fn f() -> Filter {
        Filter::default()
    }

    #[test]
    fn selections() {
        let h = |s: &str| Some(humantime::parse_duration(s).expect("duration"));
        let cases: Vec<(&[&str], Filter, &[&str])> = vec![
            (&[A], f(), &[A]),
            (&[A, "000000000000000b"], f(), &[A, B]),
            (&["ALL"], f(), &[A, B, C]),
            (&["all"], f(), &[A, B, C]),
            (&[], Filter { from: Some("ALICE".into()), ..f() }, &[A]),
            (&[], Filter { from: Some("@mx.test".into()), ..f() }, &[A, B]),
            (&[], Filter { from: Some("<>".into()), ..f() }, &[C]),
            (&["ALL"], Filter { to: Some("far.example".into()), ..f() }, &[A, B]),
            (&[], Filter { to: Some("done@".into()), ..f() }, &[]),
            (&[], Filter { domain: Some("far.example".into()), ..f() }, &[A, B]),
            (&[], Filter { domain: Some("@NEAR.example".into()), ..f() }, &[B]),
            (&[], Filter { domain: Some("example".into()), ..f() }, &[]),
            (&[], Filter { older_than: h("2h"), ..f() }, &[A]),
            (&[], Filter { younger_than: h("2h"), ..f() }, &[B, C]),
            (&[], Filter { older_than: h("30s"), younger_than: h("2h"), ..f() }, &[B]),
            (&[], Filter { held: true, ..f() }, &[B]),
            (&[], Filter { deferred: true, ..f() }, &[A]),
            (&["ALL"], Filter { held: true, from: Some("alice".into()), ..f() }, &[]),
            (&[B, C], Filter { domain: Some("far.example".into()), ..f() }, &[B]),
        ];
        for (args, filter, want) in cases {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let sel = Selection::new(&args, filter.clone(), true).expect("valid");
            let got: Vec<String> = queue().iter().filter(|(e, p)| sel.matches(e, *p, NOW)).map(|(e, _)| e.id.to_string()).collect();
            assert_eq!(got, want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{args:?} {filter:?}");
        }
    }

    #[test]
    fn usage_errors() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(Selection::new(&s(&[]), f(), true).is_err(), "nothing named");
        assert!(Selection::new(&s(&[]), f(), false).is_ok(), "list/flush: everything");
        assert!(Selection::new(&s(&["ALL", A]), f(), true).is_err());
        assert!(Selection::new(&s(&["nope"]), f(), true).is_err());
        assert_eq!(Selection::new(&s(&[B, A]), f(), true).expect("ids").plain_ids().map(|v| v.len()), Some(2));
        assert!(Selection::new(&s(&[A]), Filter { held: true, ..f() }, true).expect("ids").plain_ids().is_none());
        assert!(Selection::new(&s(&["ALL"]), f(), true).expect("all").plain_ids().is_none());
    }
}
