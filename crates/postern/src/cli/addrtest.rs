//! `sendmail -bv` and `sendmail -bt`: what postern would do with an
//! address, without sending anything. The alias expansion (with the
//! aliases file line), the mailbox (Maildir path or LMTP server) or the
//! next hop (`[[route]]`, smarthost, MX), and the relay decision. The
//! verdict comes from the code the mail takes: `policy::local_targets` (as
//! `sendmail` resolves), `delivery::route` (as the queue routes) and
//! `policy::check_rcpt` (as the SMTP server decides, shown for a loopback
//! client on the first listener, like `postern explain`).
//!
//! May touch: standard input/output.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};

use postern_wire::{Mailbox, Path};

use super::sysexits as exit;
use crate::config::RouteTransport;
use crate::delivery::{route, Route};
use crate::policy::{check_rcpt, local_targets, Facts, RcptDecision};
use crate::settings::Settings;

/// What becomes of one final (alias-expanded) address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The delivery address.
    pub address: String,
    /// sendmail's `mailer`: `local`, `lmtp` or `esmtp`.
    pub mailer: &'static str,
    /// Where it goes: the Maildir, the LMTP server, the next hop.
    pub destination: String,
}

/// The result of testing one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliverable to these targets; `trace` shows the alias expansion.
    Deliverable {
        /// The final addresses.
        targets: Vec<Target>,
        /// The alias expansion, one line per step, indented by depth.
        trace: Vec<String>,
    },
    /// Not deliverable, and why (sendmail's wording where it has one).
    Undeliverable(String),
}

/// Tests one address as `sendmail` would queue it (a bare name gets the host name).
pub fn test_address(s: &Settings, given: &str) -> (String, Verdict) {
    let given = given.trim().trim_start_matches('<').trim_end_matches('>');
    let full = if given.contains('@') { given.to_string() } else { format!("{given}@{}", s.hostname) };
    let m = match Mailbox::parse(&full, true) {
        Ok(m) => m,
        Err(e) => return (full, Verdict::Undeliverable(format!("bad address: {e}"))),
    };
    let domain = m.domain.to_ascii_lowercase();
    let full = m.to_string();
    if !s.is_local_domain(&domain) {
        return (full.clone(), Verdict::Deliverable { targets: vec![target(s, &full)], trace: Vec::new() });
    }
    let local = m.local.to_ascii_lowercase();
    match local_targets(s, &local, &domain) {
        None => (full, Verdict::Undeliverable("User unknown".to_string())),
        Some(finals) => {
            let mut trace = Vec::new();
            walk(s, &local, 0, &mut Vec::new(), &mut trace);
            (full, Verdict::Deliverable { targets: finals.iter().map(|a| target(s, a)).collect(), trace })
        }
    }
}

/// The alias expansion of `name` as text, like `Aliases::expand` walks it.
fn walk(s: &Settings, name: &str, depth: usize, seen: &mut Vec<String>, out: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let Some((targets, line)) = s.aliases.entry(name).filter(|_| !seen.iter().any(|n| n == name)) else {
        return;
    };
    let file = s.aliases_path();
    out.push(format!("{pad}alias {name} ({}:{line}) -> {}", file.display(), targets.join(", ")));
    seen.push(name.to_string());
    for t in targets {
        if !t.contains('@') && t != name {
            walk(s, t, depth + 1, seen, out);
        }
    }
}

/// Where the queue would take `address` (already expanded).
fn target(s: &Settings, address: &str) -> Target {
    let local = address.rsplit_once('@').map(|(l, _)| l.to_ascii_lowercase()).unwrap_or_default();
    let maildir = || format!("Maildir {}/", s.maildir_root.join(&local).display());
    // sendmail -bv/-bt have no sender: routes by `senders` are not taken.
    let (mailer, destination) = match route(s, "", address) {
        Route::Maildir => ("local", maildir()),
        Route::Lmtp => ("lmtp", format!("LMTP {}", s.config.local.lmtp.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "(none)".into()))),
        Route::Smarthost => {
            ("esmtp", format!("smarthost {}", s.config.relay.smarthost.as_ref().map(|e| e.to_string()).unwrap_or_default()))
        }
        Route::Mx(domain) => ("esmtp", format!("MX of {domain}")),
        Route::Custom(i) => {
            let r = &s.config.routes[i];
            let hop = r.hops().iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
            match r.transport {
                RouteTransport::Maildir => ("local", format!("{} ([[route]] {})", maildir(), i + 1)),
                RouteTransport::Lmtp => ("lmtp", format!("LMTP {hop} ([[route]] {})", i + 1)),
                _ => ("esmtp", format!("{} {hop} ([[route]] {})", r.transport.as_str(), i + 1)),
            }
        }
    };
    Target { address: address.to_string(), mailer, destination }
}

/// The relay decision for `address`: from `sendmail`, accepted unless the
/// local user is unknown; what the SMTP server would answer a loopback
/// client, with the rule.
fn relay_line(s: &Settings, address: &str, deliverable: bool) -> String {
    let Ok(m) = Mailbox::parse(address, true) else { return String::new() };
    let listener = s.config.listeners.first().map(|l| l.label().to_string()).unwrap_or_default();
    let rcpt = Path::Mailbox(m);
    let facts = Facts {
        listener: &listener,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tls: false,
        authenticated: None,
        cert: None,
        sender: None,
        rcpt: &rcpt,
        user_db: None,
        client_resolve: None,
        directory: None,
    };
    let d = check_rcpt(s, &facts);
    let what = match &d {
        RcptDecision::Accept { action, .. } => action.as_str().to_string(),
        RcptDecision::Reject { reply, .. } => format!("reject ({})", reply.summary()),
    };
    let local = if deliverable { "accepted from local sendmail" } else { "refused by local sendmail (exit 67)" };
    format!("relay: {local}; SMTP from 127.0.0.1 on listener {listener}: {what} (rule {}, {})", d.rule(), d.origin())
}

/// sendmail's `-bv` lines for one address.
pub fn verify_lines(address: &str, v: &Verdict) -> Vec<String> {
    match v {
        Verdict::Undeliverable(why) => vec![format!("{address}... {why}")],
        Verdict::Deliverable { targets, .. } => targets
            .iter()
            .map(|t| match t.mailer {
                "local" => format!("{}... deliverable: mailer local, user {}", t.address, t.address.split('@').next().unwrap_or("")),
                m => format!("{}... deliverable: mailer {m}, {}, user {}", t.address, t.destination, t.address),
            })
            .collect(),
    }
}

/// `-bv`: one line per final address; 0 if all are deliverable, 67 if not.
pub fn verify(s: &Settings, addresses: &[String]) -> i32 {
    if addresses.is_empty() {
        eprintln!("postern sendmail: -bv needs one or more addresses");
        return exit::USAGE;
    }
    let mut code = exit::OK;
    for a in addresses.iter().flat_map(|a| a.split(',')).map(str::trim).filter(|a| !a.is_empty()) {
        let (full, v) = test_address(s, a);
        if matches!(v, Verdict::Undeliverable(_)) {
            code = exit::NOUSER;
        }
        for l in verify_lines(&full, &v) {
            println!("{l}");
        }
    }
    code
}

/// The `-bt` report for one address.
pub fn report(s: &Settings, address: &str) -> Vec<String> {
    let (full, v) = test_address(s, address);
    let mut out = vec![full.clone()];
    match &v {
        Verdict::Undeliverable(why) => out.push(format!("  undeliverable: {why}")),
        Verdict::Deliverable { targets, trace } => {
            out.extend(trace.iter().map(|l| format!("  {l}")));
            for t in targets {
                out.push(format!("  {} -> mailer {}, {}", t.address, t.mailer, t.destination));
            }
        }
    }
    out.push(format!("  {}", relay_line(s, &full, matches!(v, Verdict::Deliverable { .. }))));
    out
}

/// `-bt`: reports for the addresses given, or for lines read from
/// standard input (`/quit` or end of input stops) after a short banner.
pub fn test(s: &Settings, addresses: &[String]) -> i32 {
    if !addresses.is_empty() {
        for a in addresses {
            println!("{}", report(s, a).join("\n"));
        }
        return exit::OK;
    }
    println!("postern address test mode (not sendmail's rule-set debugger: postern has no rule sets).");
    println!("Enter one address per line; /quit or end of input ends.");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let a = line.trim();
        match a {
            "" => continue,
            "/quit" | "/q" => break,
            _ => println!("{}", report(s, a).join("\n")),
        }
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::sendmail_bs::tests::settings;

    #[test]
    fn verify_table() {
        let s = settings("[[route]]\ndomains = [\"backup.test\"]\ntransport = \"smtp\"\nnext_hop = \"10.0.0.1:25\"\n");
        let root = s.maildir_root.display().to_string();
        let cases: &[(&str, &[&str])] = &[
            ("alice", &["alice@mx.test... deliverable: mailer local, user alice"]),
            ("ALICE@MX.test", &["alice@mx.test... deliverable: mailer local, user alice"]),
            ("root", &["postmaster@mx.test... deliverable: mailer local, user postmaster"]),
            (
                "team@mx.test",
                &[
                    "alice@mx.test... deliverable: mailer local, user alice",
                    "bob@far.test... deliverable: mailer esmtp, MX of far.test, user bob@far.test",
                ],
            ),
            ("x@backup.test", &["x@backup.test... deliverable: mailer esmtp, smtp 10.0.0.1:25 ([[route]] 1), user x@backup.test"]),
            ("nobody@mx.test", &["nobody@mx.test... User unknown"]),
        ];
        for (a, want) in cases {
            let (full, v) = test_address(&s, a);
            assert_eq!(verify_lines(&full, &v), *want, "{a}");
        }
        assert!(matches!(test_address(&s, "a b@x").1, Verdict::Undeliverable(_)));
        let r = report(&s, "team").join("\n");
        assert!(r.contains("alias team (") && r.contains("aliases:2) -> alice, bob@far.test"), "{r}");
        assert!(r.contains(&format!("alice@mx.test -> mailer local, Maildir {root}/alice/")), "{r}");
        assert!(r.contains("relay: accepted from local sendmail; SMTP from 127.0.0.1"), "{r}");
        let r = report(&s, "nobody").join("\n");
        assert!(r.contains("undeliverable: User unknown") && r.contains("relay: refused by local sendmail (exit 67)"), "{r}");
        let r = report(&s, "root").join("\n");
        assert!(r.contains("alias root (") && r.contains(":4) -> postmaster"), "{r}");
        let s = settings("[relay]\nsmarthost = \"relay.test:587\"\n");
        let (full, v) = test_address(&s, "x@far.test");
        assert_eq!(verify_lines(&full, &v), ["x@far.test... deliverable: mailer esmtp, smarthost relay.test:587, user x@far.test"]);
    }
}
