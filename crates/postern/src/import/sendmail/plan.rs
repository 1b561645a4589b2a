//! What the sendmail import decided, before it is written: a [`Plan`] of
//! postern settings, and [`Plan::emit`], which writes postern.toml text and
//! says on which line each setting landed (for the report's `at`).
//!
//! May touch: nothing (values in, text out).

use std::collections::HashMap;

/// One `[[listener]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PListener {
    /// `name` (sendmail's `Name=`).
    pub name: String,
    /// `address`.
    pub address: String,
    /// `role`.
    pub role: &'static str,
    /// `auth_mechanisms = []` (sendmail `M=A`).
    pub no_auth: bool,
    /// `require_tls = false` on a submission listener (sendmail never
    /// requires TLS by itself).
    pub tls_optional: bool,
}

/// One `[[rule]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PRule {
    /// `name`.
    pub name: String,
    /// `client`.
    pub client: Vec<String>,
    /// `sender`.
    pub sender: Vec<String>,
    /// `authenticated`.
    pub authenticated: Option<bool>,
    /// `cert_issuer`.
    pub cert_issuer: Option<String>,
    /// `cert_subject`.
    pub cert_subject: Option<String>,
    /// `rcpt` (recipient classes), when limited.
    pub rcpt: Vec<&'static str>,
    /// `action`.
    pub action: &'static str,
    /// `message`.
    pub message: Option<String>,
}

/// One `[[milter]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PMilter {
    /// `name`.
    pub name: String,
    /// `socket`.
    pub socket: String,
    /// `default_action`.
    pub default_action: &'static str,
    /// `connect_timeout`, `command_timeout`, `eom_timeout` when given.
    pub timeouts: Vec<(&'static str, String)>,
}

/// One `[[route]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PRoute {
    /// `domains`.
    pub domains: Vec<String>,
    /// `next_hop`.
    pub next_hop: String,
}

/// Everything the import maps.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `hostname`.
    pub hostname: Option<String>,
    /// `[[listener]]`s.
    pub listeners: Vec<PListener>,
    /// Ask for client certificates (sendmail does unless `confTLS_SRV_OPTIONS` has `V`).
    pub request_certs: bool,
    /// `request_client_certificates_from` (Srv_Features `v`).
    pub request_from: Vec<String>,
    /// `never_request_client_certificates_from` (Srv_Features `V`).
    pub never_request_from: Vec<String>,
    /// `local.domains`.
    pub local_domains: Vec<String>,
    /// `local.aliases`.
    pub aliases: Option<String>,
    /// `local.users`: alias targets that are mailboxes (sendmail: accounts).
    pub local_users: Vec<String>,
    /// `relay.networks` (and the rule `relay-networks`).
    pub relay_networks: Vec<String>,
    /// `relay.domains`.
    pub relay_domains: Vec<String>,
    /// `relay.smarthost`.
    pub smarthost: Option<String>,
    /// `relay.smarthost_client_certificate` / `_key`.
    pub smarthost_cert: Option<(String, String)>,
    /// `tls.certificate` / `tls.key`.
    pub cert: Option<String>,
    /// `tls.key`.
    pub key: Option<String>,
    /// `tls.client_ca_files`.
    pub client_cas: Vec<String>,
    /// `auth.mechanisms`.
    pub mechanisms: Option<Vec<String>>,
    /// The rule `authenticated` (TRUST_AUTH_MECH).
    pub trust_auth: bool,
    /// `limits.max_message_size`.
    pub max_message_size: Option<u64>,
    /// `[[milter]]`s (every listener uses them, in order).
    pub milters: Vec<PMilter>,
    /// Refusals and exceptions, before the permits.
    pub rules_first: Vec<PRule>,
    /// Relaying by certificate (CERTISSUER/CERTSUBJECT), after the permits.
    pub cert_rules: Vec<PRule>,
    /// `[[route]]`s.
    pub routes: Vec<PRoute>,
    /// `[inbound.rdns] sender_domain_check` (sendmail refuses unresolvable
    /// sender domains unless FEATURE(accept_unresolvable_domains)).
    pub sender_domain_check: bool,
    /// `reject_at = "rcpt"` (FEATURE(delay_checks)) instead of "command".
    pub delay_checks: bool,
    /// `[inbound.dnsbl] lists`.
    pub dnsbl: Vec<String>,
}

/// Quotes a TOML basic string.
pub fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

/// Text with line numbers: each key is remembered with the line it is on.
#[derive(Default)]
struct Out {
    text: String,
    line: usize,
    at: HashMap<String, usize>,
}

impl Out {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
        self.line += 1;
    }
    /// A line that a report target points to.
    fn key(&mut self, target: &str, s: &str) {
        self.push(s);
        self.at.entry(target.to_string()).or_insert(self.line);
    }
}

impl Plan {
    /// Every rule in order: refusals, local/relay domains, networks,
    /// AUTH, certificates.
    pub fn rules(&self) -> Vec<PRule> {
        let mut out = self.rules_first.clone();
        out.push(PRule { name: "local-and-relay-domains".into(), action: "accept", ..PRule::default() });
        if !self.relay_networks.is_empty() {
            out.push(PRule { name: "relay-networks".into(), client: self.relay_networks.clone(), action: "relay", ..PRule::default() });
        }
        if self.trust_auth {
            out.push(PRule { name: "authenticated".into(), authenticated: Some(true), action: "relay", ..PRule::default() });
        }
        out.extend(self.cert_rules.iter().cloned());
        out
    }

    /// postern.toml text, and the line of each report target in it.
    pub fn emit(&self, source: &str) -> (String, HashMap<String, usize>) {
        let mut o = Out::default();
        o.push(&format!("# postern configuration imported from sendmail ({source}) by `postern import sendmail`."));
        o.push("# import-report.txt says which source line became which key below.");
        if let Some(h) = &self.hostname {
            o.key("hostname", &format!("hostname = {}", q(h)));
        }
        let milter_names: Vec<String> = self.milters.iter().map(|m| m.name.clone()).collect();
        for l in &self.listeners {
            o.push("");
            o.key(&format!("listener {}", l.name), "[[listener]]");
            o.push(&format!("name = {}", q(&l.name)));
            o.push(&format!("address = {}", q(&l.address)));
            o.push(&format!("role = {}", q(l.role)));
            if l.tls_optional {
                o.push("require_tls = false");
            }
            o.key("client certificates", &format!("client_certificates = {}", q(if self.request_certs { "optional" } else { "none" })));
            if !self.request_from.is_empty() {
                o.key("request_client_certificates_from", &format!("request_client_certificates_from = {}", list(&self.request_from)));
            }
            if !self.never_request_from.is_empty() {
                o.key(
                    "never_request_client_certificates_from",
                    &format!("never_request_client_certificates_from = {}", list(&self.never_request_from)),
                );
            }
            if l.no_auth {
                o.push("auth_mechanisms = []");
            }
            if !milter_names.is_empty() {
                o.key("listener.milters", &format!("milters = {}", list(&milter_names)));
            }
        }
        if let Some(size) = self.max_message_size {
            o.push("");
            o.push("[limits]");
            o.key("limits.max_message_size", &format!("max_message_size = {size}"));
        }
        o.push("");
        o.push("[local]");
        if !self.local_domains.is_empty() {
            o.key("local.domains", &format!("domains = {}", list(&self.local_domains)));
        }
        if !self.local_users.is_empty() {
            o.key("local.users", &format!("users = {}", list(&self.local_users)));
        }
        if let Some(a) = &self.aliases {
            o.key("local.aliases", &format!("aliases = {}", q(a)));
        }
        o.push("");
        o.push("[relay]");
        o.push("# sendmail's relay decisions are written out as the [[rule]]s below.");
        o.key("relay.default_rules", "default_rules = false");
        o.key("relay.networks", &format!("networks = {}", list(&self.relay_networks)));
        if !self.relay_domains.is_empty() {
            o.key("relay.domains", &format!("domains = {}", list(&self.relay_domains)));
        }
        if let Some(s) = &self.smarthost {
            o.key("relay.smarthost", &format!("smarthost = {}", q(s)));
        }
        if let Some((c, k)) = &self.smarthost_cert {
            o.key("relay.smarthost_client_certificate", &format!("smarthost_client_certificate = {}", q(c)));
            o.key("relay.smarthost_client_key", &format!("smarthost_client_key = {}", q(k)));
        }
        if self.cert.is_some() || self.key.is_some() || !self.client_cas.is_empty() {
            o.push("");
            o.push("[tls]");
            if let Some(c) = &self.cert {
                o.key("tls.certificate", &format!("certificate = {}", q(c)));
            }
            if let Some(k) = &self.key {
                o.key("tls.key", &format!("key = {}", q(k)));
            }
            if !self.client_cas.is_empty() {
                o.key("tls.client_ca_files", &format!("client_ca_files = {}", list(&self.client_cas)));
            }
        }
        if let Some(m) = &self.mechanisms {
            o.push("");
            o.push("[auth]");
            o.key("auth.mechanisms", &format!("mechanisms = {}", list(m)));
        }
        if self.sender_domain_check || !self.dnsbl.is_empty() {
            if self.sender_domain_check {
                o.push("");
                o.push("[inbound.rdns]");
                o.key("inbound.rdns.sender_domain_check", "sender_domain_check = true");
                o.push(&format!("reject_at = {}", q(if self.delay_checks { "rcpt" } else { "command" })));
            }
            if !self.dnsbl.is_empty() {
                o.push("");
                o.push("[inbound.dnsbl]");
                o.key("inbound.dnsbl.lists", &format!("lists = {}", list(&self.dnsbl)));
                o.push(&format!("stage = {}", q("rcpt")));
            }
        }
        for r in self.rules() {
            o.push("");
            o.key(&format!("rule {}", r.name), "[[rule]]");
            o.push(&format!("name = {}", q(&r.name)));
            if !r.client.is_empty() {
                o.push(&format!("client = {}", list(&r.client)));
            }
            if !r.sender.is_empty() {
                o.push(&format!("sender = {}", list(&r.sender)));
            }
            if let Some(a) = r.authenticated {
                o.push(&format!("authenticated = {a}"));
            }
            if let Some(d) = &r.cert_issuer {
                o.push(&format!("cert_issuer = {}", q(d)));
            }
            if let Some(d) = &r.cert_subject {
                o.push(&format!("cert_subject = {}", q(d)));
            }
            if !r.rcpt.is_empty() {
                o.push(&format!("rcpt = [{}]", r.rcpt.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ")));
            }
            o.push(&format!("action = {}", q(r.action)));
            if let Some(m) = &r.message {
                o.push(&format!("message = {}", q(m)));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            o.push("");
            o.key(&format!("route {}", i + 1), "[[route]]");
            o.push(&format!("domains = {}", list(&r.domains)));
            o.push("transport = \"smtp\"");
            o.push(&format!("next_hop = {}", q(&r.next_hop)));
        }
        for m in &self.milters {
            o.push("");
            o.key(&format!("milter {}", m.name), "[[milter]]");
            o.push(&format!("name = {}", q(&m.name)));
            o.push(&format!("socket = {}", q(&m.socket)));
            o.push(&format!("default_action = {}", q(m.default_action)));
            for (k, v) in &m.timeouts {
                o.push(&format!("{k} = {}", q(v)));
            }
        }
        (o.text, o.at)
    }
}
