//! The default parity table ([`default_probes`]), generated from facts of
//! an imported postern configuration ([`Facts::from_config`]), and the
//! list of deliberate postern choices that explain a difference
//! ([`EXPLANATIONS`], applied by [`explain`]).
//!
//! May touch: nothing (pure).

use std::net::{IpAddr, Ipv4Addr};

use super::parity::{Class, ClientCert, Difference, Port, Probe};
use crate::config::{Config, Role};

/// What the table generator needs to know about the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// A client address inside the trusted networks (127/8).
    pub inside: IpAddr,
    /// A client address outside them (127/8), if there is one.
    pub outside: Option<IpAddr>,
    /// More client addresses worth probing (a second inside address, the
    /// first loopback address of each rule's `client` networks).
    pub more_clients: Vec<IpAddr>,
    /// A local domain, if any.
    pub local_domain: Option<String>,
    /// An existing local user (local part), if any.
    pub local_user: Option<String>,
    /// A relay (or route) domain, if any.
    pub relay_domain: Option<String>,
    /// The listeners there are.
    pub ports: Vec<Port>,
    /// The client certificate kinds the probes can present.
    pub certs: Vec<ClientCert>,
    /// A user and password that log in, if known.
    pub auth: Option<(String, String)>,
}

impl Facts {
    /// Facts of `cfg`; `certs` and `auth` come from the caller (the
    /// importer cannot know passwords or hold the probe certificates).
    pub fn from_config(cfg: &Config, certs: Vec<ClientCert>, auth: Option<(String, String)>) -> Facts {
        let nets = &cfg.relay.networks;
        let inside_of = |ip: IpAddr| nets.iter().any(|n| n.contains(ip));
        let candidates = (1..=254u8).flat_map(|a| [1u8, 2, 7, 100].into_iter().map(move |d| IpAddr::V4(Ipv4Addr::new(127, 0, a - 1, d))));
        let mut inside = None;
        let mut outside = None;
        let mut more_clients = Vec::new();
        for ip in candidates {
            if inside_of(ip) {
                if inside.is_some() && more_clients.is_empty() {
                    more_clients.push(ip);
                }
                inside.get_or_insert(ip);
            } else {
                outside.get_or_insert(ip);
            }
            if inside.is_some() && outside.is_some() && !more_clients.is_empty() {
                break;
            }
        }
        for r in &cfg.rules {
            for c in r.get_ref().client.iter().flatten() {
                let text = format!("{c}");
                let first = text.split('/').next().and_then(|a| a.parse::<IpAddr>().ok());
                if let Some(IpAddr::V4(a)) = first {
                    let ip = if a.octets()[3] == 0 { Ipv4Addr::from(u32::from(a) + 1) } else { a };
                    let ip = IpAddr::V4(ip);
                    if ip.is_loopback() && Some(ip) != inside && Some(ip) != outside && !more_clients.contains(&ip) {
                        more_clients.push(ip);
                    }
                }
            }
        }
        let local_domain = cfg
            .local
            .domains
            .as_ref()
            .and_then(|d| d.iter().find(|d| *d != "localhost" && !d.starts_with("localhost.")).or(d.first()).cloned());
        let relay_domain = cfg.relay.domains.first().cloned().or_else(|| cfg.routes.iter().find_map(|r| r.domains.first().cloned()));
        let mut ports = Vec::new();
        for l in &cfg.listeners {
            let p = match l.role {
                Role::Smtp => Port::Smtp,
                Role::Submission => Port::Submission,
                Role::Submissions => Port::Smtps,
            };
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        Facts {
            inside: inside.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            outside,
            more_clients,
            local_domain,
            local_user: cfg.local.users.first().cloned(),
            relay_domain,
            ports,
            certs,
            auth,
        }
    }
}

/// The recipients every probe tries: the local user, postmaster, an
/// unknown local user, the relay domain, another domain, and tricky local
/// parts (`%` and `!` routing, a quoted `@`, two `@`).
pub fn recipients(f: &Facts) -> Vec<String> {
    let local = f.local_domain.clone().unwrap_or_else(|| "localhost".into());
    let mut r = Vec::new();
    if let Some(u) = &f.local_user {
        r.push(format!("{u}@{local}"));
    }
    r.push(format!("nobody-here@{local}"));
    if let Some(d) = &f.relay_domain {
        r.push(format!("someone@{d}"));
        r.push(format!("a%b@{d}"));
    }
    r.push("customer@other.example".into());
    r.push("a%b@other.example".into());
    r.push(format!("a%b@{local}"));
    r.push(format!("\"a@b\"@{local}"));
    r.push("a!b@other.example".into());
    r
}

/// The default table: every listener × client inside/outside the trusted
/// networks × TLS (none, STARTTLS/implicit) × client certificate × AUTH
/// (none, right, wrong), senders rotating through local, foreign and <>.
pub fn default_probes(f: &Facts) -> Vec<Probe> {
    let rcpts = recipients(f);
    let local = f.local_domain.clone().unwrap_or_else(|| "localhost".into());
    let mut senders = vec![
        ("from-local", format!("sender@{local}")),
        ("from-foreign", "someone@foreign.example".to_string()),
        ("from-null", String::new()),
    ];
    if let Some(u) = &f.local_user {
        senders.push(("from-user", format!("{u}@{local}")));
    }
    if let Some(d) = &f.relay_domain {
        senders.push(("from-relaydom", format!("sender@{d}")));
    }
    senders.push(("from-other", "postmaster@other.example".to_string()));
    let mut clients = vec![("inside".to_string(), f.inside)];
    if let Some(o) = f.outside {
        clients.push(("outside".to_string(), o));
    }
    for ip in &f.more_clients {
        clients.push((format!("client-{ip}"), *ip));
    }
    let mut auths: Vec<(&str, Option<(String, String)>)> = vec![("noauth", None)];
    if let Some((u, p)) = &f.auth {
        auths.push(("auth-ok", Some((u.clone(), p.clone()))));
        auths.push(("auth-bad", Some((u.clone(), format!("{p}-wrong")))));
    }
    let mut out = Vec::new();
    let mut n = 0usize;
    for &port in &f.ports {
        let tls_modes: &[bool] = if port == Port::Smtps { &[true] } else { &[false, true] };
        for (cname, ip) in &clients {
            for &tls in tls_modes {
                let mut certs = vec![ClientCert::None];
                if tls {
                    certs.extend(f.certs.iter().copied().filter(|c| *c != ClientCert::None));
                }
                for cert in certs {
                    for (aname, auth) in &auths {
                        // AUTH variants only without a certificate: enough to
                        // show the AUTH decisions without multiplying the table.
                        if auth.is_some() && cert != ClientCert::None {
                            continue;
                        }
                        for (si, (from_name, sender)) in senders.iter().enumerate() {
                            // Other listeners: the first three senders are enough.
                            if port != Port::Smtp && si >= 3 {
                                continue;
                            }
                            // All three senders for the plain case, one otherwise.
                            if (cert != ClientCert::None || auth.is_some()) && si != n % if port == Port::Smtp { senders.len() } else { 3 }
                            {
                                continue;
                            }
                            n += 1;
                            let port_name = match port {
                                Port::Smtp => "smtp",
                                Port::Submission => "submission",
                                Port::Smtps => "smtps",
                            };
                            let tls_name = if !tls {
                                "plain"
                            } else if port == Port::Smtps {
                                "tls"
                            } else {
                                "starttls"
                            };
                            let cert_name = cert.key().unwrap_or("nocert");
                            out.push(Probe {
                                name: format!("{n:03}-{port_name}-{cname}-{tls_name}-{cert_name}-{aname}-{from_name}"),
                                client_ip: *ip,
                                port,
                                starttls: tls && port != Port::Smtps,
                                cert,
                                auth: auth.clone(),
                                mail_from: sender.clone(),
                                rcpts: rcpts.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// A deliberate postern choice that explains a difference.
pub struct Explanation {
    /// A short name.
    pub name: &'static str,
    /// Why postern differs, for the report.
    pub reason: &'static str,
    /// Does it explain this difference (given all differences of the same
    /// probe) of this probe?
    pub applies: fn(&Probe, &Difference, &[&Difference]) -> bool,
}

/// The deliberate differences, each with its reason.
pub const EXPLANATIONS: &[Explanation] = &[
    Explanation {
        name: "no-percent-hack",
        reason: "postern does not rewrite user%domain@local (Postfix allow_percent_hack) nor a quoted \"a@b\"@local into \
                 a@b: the local part is a local part, and an unknown one gets 550 5.1.1 (RFC 5321 3.6.1 deprecates \
                 source routes; relaying by trick is refused)",
        applies: |p, d, _| {
            let n = d.step.strip_prefix("rcpt ").and_then(|n| n.parse::<usize>().ok());
            let rcpt = n.and_then(|n| p.rcpts.get(n.wrapping_sub(1)));
            let local_part = rcpt.and_then(|r| r.rsplit_once('@')).map(|(l, _)| l).unwrap_or("");
            d.postern == Class::PermFail
                && d.source == Class::Accept
                && (local_part.contains('%') || local_part.contains('"') || local_part.contains('!'))
        },
    },
    Explanation {
        name: "submission-auth-at-mail",
        reason: "on a submission listener postern asks for AUTH (or a CA-verified client certificate) at MAIL \
                 (530 5.7.0, RFC 6409 4.3); the source took MAIL and then refused every recipient, so no mail \
                 is accepted on either side",
        applies: |p, _, same| {
            p.port != Port::Smtp
                && same.iter().any(|d| d.step == "mail" && d.source == Class::Accept && d.postern == Class::PermFail)
                && same.iter().filter(|d| d.step.starts_with("rcpt")).all(|d| d.source != Class::Accept && d.postern == Class::NotReached)
        },
    },
    Explanation {
        name: "address-literal",
        reason: "postern treats an address literal (x@[127.0.0.1]) as another domain, relayed for clients that may \
                 relay (delivery then refuses to loop back, 5.4.6); sendmail counts its own address literals as local \
                 and refuses an unknown local user",
        applies: |p, d, _| {
            let n = d.step.strip_prefix("rcpt ").and_then(|n| n.parse::<usize>().ok());
            let rcpt = n.and_then(|n| p.rcpts.get(n.wrapping_sub(1)));
            rcpt.is_some_and(|r| r.ends_with(']') && r.contains("@[")) && d.source == Class::PermFail && d.postern == Class::Accept
        },
    },
    Explanation {
        name: "refused-at-rcpt",
        reason: "postern refuses a client the access rules refuse at RCPT (like sendmail's FEATURE(delay_checks)), \
                 not at MAIL, and still offers AUTH to it: the source refused MAIL (and offered no AUTH), postern took \
                 MAIL and refused every recipient, so no mail is accepted on either side",
        applies: |_, _, same| {
            same.iter().any(|d| d.step == "mail" && d.source == Class::PermFail && d.postern == Class::Accept)
                && same.iter().filter(|d| d.step.starts_with("rcpt")).all(|d| d.source == Class::NotReached && d.postern == Class::PermFail)
                && same.iter().filter(|d| d.step == "auth").all(|d| d.source == Class::NotReached)
                && same.iter().any(|d| d.step.starts_with("rcpt"))
        },
    },
    Explanation {
        name: "auth-offered-to-refused-client",
        reason: "postern offers AUTH to every client over TLS and refuses a wrong password (535); sendmail offers no \
                 AUTH to a client its access map refuses. Nothing else in the session is accepted by postern that the \
                 source refused",
        applies: |_, d, same| {
            d.step == "auth"
                && d.source == Class::NotReached
                && d.postern == Class::PermFail
                && same.iter().all(|x| x.postern != Class::Accept || x.source == Class::Accept)
        },
    },
    Explanation {
        name: "certificate-is-authentication",
        reason: "on a submission listener postern counts a client certificate that verifies against the trusted CA as \
                 authentication (the seed set-up relays on it); sendmail's M=a submission daemon wants AUTH at MAIL. \
                 The recipients are then decided by the relay rules, which the source never reached",
        applies: |p, _, same| {
            p.port != Port::Smtp
                && p.cert == ClientCert::Trusted
                && same.iter().any(|d| d.step == "mail" && d.source == Class::PermFail && d.postern == Class::Accept)
                && same.iter().filter(|d| d.step.starts_with("rcpt")).all(|d| d.source == Class::NotReached)
        },
    },
    Explanation {
        name: "auth-before-tls",
        reason: "postern never offers or accepts AUTH before TLS (auth.plaintext_networks relaxes it); \
             the source offered AUTH over plaintext, so the probe logged in (or failed to) there and \
             not here, and MAIL/RCPT follow from that",
        applies: |p, _, same_probe| {
            !p.starttls
                && p.port != Port::Smtps
                && p.auth.is_some()
                && same_probe.iter().any(|d| d.step == "auth" && d.postern == Class::NotReached && d.source != Class::NotReached)
        },
    },
];

/// Sets [`Difference::explained`] on every difference an [`EXPLANATIONS`]
/// entry covers. `probes` are looked up by name.
pub fn explain(probes: &[Probe], diffs: &mut [Difference]) {
    let snapshot = diffs.to_vec();
    for d in diffs.iter_mut() {
        let Some(p) = probes.iter().find(|p| p.name == d.probe) else { continue };
        let same: Vec<&Difference> = snapshot.iter().filter(|x| x.probe == d.probe).collect();
        if let Some(e) = EXPLANATIONS.iter().find(|e| (e.applies)(p, d, &same)) {
            d.explained = Some(format!("{}: {}", e.name, e.reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_is_big_enough_and_covers_the_cases() {
        let cfg = Config::parse(
            "[local]\ndomains = [\"pf.test\"]\nusers = [\"alice\"]\n[relay]\nnetworks = [\"127.0.0.1/32\"]\ndomains = [\"relay.example\"]\n[[listener]]\naddress = \"127.0.0.1:2525\"\n[[listener]]\naddress = \"127.0.0.1:2587\"\nrole = \"submission\"\n",
            "t",
        )
        .unwrap();
        let f = Facts::from_config(
            &cfg,
            vec![ClientCert::Trusted, ClientCert::LookAlike, ClientCert::SelfSigned],
            Some(("alice".into(), "pw".into())),
        );
        assert_eq!(f.inside, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(f.outside, Some("127.0.0.2".parse().unwrap()));
        let p = default_probes(&f);
        assert!(p.len() >= 40, "{}", p.len());
        assert!(p.iter().any(|p| p.cert == ClientCert::LookAlike && p.port == Port::Submission));
        assert!(p.iter().any(|p| p.auth.as_ref().is_some_and(|a| a.1 != "pw")));
        assert!(p.iter().any(|p| p.mail_from.is_empty()));
        let r = &p[0].rcpts;
        for want in ["alice@pf.test", "someone@relay.example", "customer@other.example", "a%b@other.example", "\"a@b\"@pf.test"] {
            assert!(r.iter().any(|x| x == want), "{want}: {r:?}");
        }
        let mut names: Vec<&String> = p.iter().map(|p| &p.name).collect();
        names.dedup();
        assert_eq!(names.len(), p.len());
    }

    #[test]
    fn explanations_apply_only_where_they_should() {
        let mut probe = Probe {
            name: "p".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            port: Port::Smtp,
            starttls: false,
            cert: ClientCert::None,
            auth: None,
            mail_from: String::new(),
            rcpts: vec!["a%b@pf.test".into(), "x@pf.test".into()],
        };
        let d =
            |step: &str, s: Class, p: Class| Difference { probe: "p".into(), step: step.into(), source: s, postern: p, explained: None };
        let mut diffs = vec![d("rcpt 1", Class::Accept, Class::PermFail), d("rcpt 2", Class::Accept, Class::PermFail)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs[0].explained.as_deref().unwrap().starts_with("no-percent-hack"));
        assert!(diffs[1].explained.is_none(), "an ordinary local part is not explained");
        // Submission: MAIL refused here, the source refused every RCPT.
        probe.port = Port::Submission;
        let mut diffs = vec![d("mail", Class::Accept, Class::PermFail), d("rcpt 2", Class::PermFail, Class::NotReached)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs.iter().all(|x| x.explained.is_some()));
        // ... but not when the source accepted a recipient.
        let mut diffs = vec![d("mail", Class::Accept, Class::PermFail), d("rcpt 2", Class::Accept, Class::NotReached)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs.iter().all(|x| x.explained.is_none()));
        // A refused client: the source refused MAIL, postern every RCPT.
        probe.port = Port::Smtp;
        let mut diffs = vec![
            d("mail", Class::PermFail, Class::Accept),
            d("rcpt 1", Class::NotReached, Class::PermFail),
            d("rcpt 2", Class::NotReached, Class::PermFail),
        ];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs.iter().all(|x| x.explained.as_deref().is_some_and(|e| e.starts_with("refused-at-rcpt"))), "{diffs:?}");
        // ... but not when postern accepted a recipient.
        let mut diffs = vec![d("mail", Class::PermFail, Class::Accept), d("rcpt 1", Class::NotReached, Class::Accept)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs.iter().all(|x| x.explained.is_none()), "{diffs:?}");
        // AUTH refused here, not offered there: explained only while postern accepts nothing more.
        let mut diffs = vec![d("auth", Class::NotReached, Class::PermFail)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs[0].explained.as_deref().is_some_and(|e| e.starts_with("auth-offered-to-refused-client")));
        let mut diffs = vec![d("auth", Class::NotReached, Class::PermFail), d("rcpt 1", Class::PermFail, Class::Accept)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs.iter().all(|x| x.explained.is_none()), "{diffs:?}");
        // Address literals; a trusted certificate on submission.
        probe.rcpts = vec!["x@[127.0.0.1]".into()];
        let mut diffs = vec![d("rcpt 1", Class::PermFail, Class::Accept)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs[0].explained.as_deref().is_some_and(|e| e.starts_with("address-literal")));
        probe.rcpts = vec!["x@far.example".into()];
        let mut diffs = vec![d("mail", Class::PermFail, Class::Accept), d("rcpt 1", Class::NotReached, Class::Accept)];
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs.iter().all(|x| x.explained.is_none()), "port 25, no certificate: {diffs:?}");
        probe.port = Port::Submission;
        probe.cert = ClientCert::Trusted;
        explain(std::slice::from_ref(&probe), &mut diffs);
        assert!(diffs.iter().all(|x| x.explained.as_deref().is_some_and(|e| e.starts_with("certificate-is-authentication"))));
    }
}
