//! The DANE side of MX delivery: the resolvers trusted for the AD bit,
//! the per-host TLS decision (`host_tls`, the one place a per-host TLS
//! policy is chosen; MTA-STS can join it there), one attempt at a host
//! with that TLS, and the TLS-report and mail-log lines of each outcome.
//!
//! May touch: DNS (the validating resolvers), outbound TCP to MX hosts
//! (through the pools). RFCs: 7672 §2.2 (DNSSEC status), 8460 (results).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{MxDelivery, MxError};
use crate::config::{Mx, OutboundTls};
use crate::delivery::dane::dns::SecureDns;
use crate::delivery::dane::{failure_of, from_tlsa, untrusted_resolvers, HostTls};
use crate::delivery::mta_sts::Applied;
use crate::delivery::smtp::ConnError;
use crate::delivery::tlsrpt::{FailureType, PolicyType, SessionResult};
use crate::delivery::{Attempt, Message};
use crate::maillog;
use crate::tls::ClientTls;

/// `mx.tls = "dane"`: the resolvers to ask (`mx.nameservers`, or the
/// system's), refused unless they are on loopback or
/// `mx.dnssec_trust_remote_ad` is set; and the "encrypt" TLS config.
pub(super) fn setup(m: &Mx) -> Result<(SecureDns, Arc<ClientTls>), MxError> {
    let servers: Vec<SocketAddr> = if m.nameservers.is_empty() {
        let (cfg, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| MxError::DnsConfig(e.to_string()))?;
        let mut v: Vec<SocketAddr> = cfg.name_servers().iter().map(|n| n.socket_addr).collect();
        v.dedup();
        v
    } else {
        m.nameservers.clone()
    };
    if let Some(why) = untrusted_resolvers(&servers, m.dnssec_trust_remote_ad) {
        return Err(MxError::DnsConfig(why));
    }
    let encrypt = ClientTls::build(OutboundTls::Encrypt, &[], None).map_err(|e| MxError::Tls(e.to_string()))?;
    Ok((SecureDns::new(servers), Arc::new(encrypt)))
}

impl MxDelivery {
    /// Is the domain's MX RRset (or its denial) DNSSEC-secure? `false`
    /// without DANE. A failed lookup defers the domain: with DANE on, we
    /// cannot tell whether its hosts need it.
    pub(super) async fn mx_secure(&self, ascii_domain: &str) -> Result<bool, MxError> {
        let Some((dns, _)) = &self.dane else { return Ok(false) };
        match dns.mx(ascii_domain).await {
            Ok(a) => Ok(a.secure),
            Err(e) => {
                let why = e.to_string();
                maillog::tls(&[("domain", ascii_domain), ("policy", "dane"), ("result", "dnssec-invalid"), ("error", &why)]);
                Err(MxError::Dane { domain: ascii_domain.to_string(), last: why })
            }
        }
    }

    /// The TLS this MX host gets (RFC 7672 §2.2): opportunistic unless
    /// the MX RRset, the host's addresses and its TLSA records are all
    /// secure. Hosts named by address literals have no TLSA records.
    pub(super) async fn host_tls(&self, host: &str, mx_secure: bool) -> HostTls {
        let Some((dns, _)) = &self.dane else { return HostTls::Opportunistic };
        if !mx_secure || host.parse::<IpAddr>().is_ok() {
            return HostTls::Opportunistic;
        }
        let Ok(ascii) = crate::delivery::idna::to_ascii(host) else { return HostTls::Opportunistic };
        match dns.addresses_secure(&ascii).await {
            Ok(true) => from_tlsa(dns.tlsa(self.port, &ascii).await),
            Ok(false) => HostTls::Opportunistic,
            Err(e) => crate::delivery::dane::defer(&e),
        }
    }

    /// The client TLS config for `host` under `verdict`.
    pub(super) fn tls_for(&self, host: &str, verdict: &HostTls) -> Result<Option<Arc<ClientTls>>, MxError> {
        Ok(match (verdict, &self.dane) {
            (HostTls::Dane(records), _) => {
                // RFC 7672 §3.2.2: the reference identifier is the MX host name
                // (the TLSA base domain: we do not follow CNAMEs for it).
                let names = vec![host.trim_end_matches('.').to_string()];
                Some(Arc::new(ClientTls::dane(records.clone(), names).map_err(|e| MxError::Tls(e.to_string()))?))
            }
            (HostTls::Encrypt(_), Some((_, encrypt))) => Some(encrypt.clone()),
            _ => self.tls.clone(),
        })
    }

    /// One attempt at `host` (`ip`) with the TLS `verdict` demands.
    /// `Err((why, dane))`: no session; `dane` when DANE refused it.
    #[allow(clippy::too_many_arguments)] // the host, its verdicts and the message: all needed
    pub(super) async fn try_host(
        &self,
        domain: &str,
        host: &str,
        ip: IpAddr,
        (verdict, mx_secure): (&HostTls, bool),
        sts: &Applied,
        msg: &Message,
        rcpts: &[String],
    ) -> Result<Attempt, (String, bool)> {
        // RFC 8689 §4.2.1: a REQUIRETLS message goes only to an MX host
        // found securely: a DNSSEC-secure MX answer (DANE mode) or a host an
        // MTA-STS `enforce` policy lists. A verified certificate alone is not
        // enough: a forged MX answer can name a host with a valid
        // certificate for its own name. Every host of the domain is in the
        // same position, so this fails the recipients (5.7.30) at once.
        let listed = sts.tls_for(host).is_some_and(|t| t.tag == "sts-enforce");
        if msg.requiretls && !(mx_secure || listed) {
            let why = format!("REQUIRETLS: the MX host {host} of {domain} was found without DNSSEC or an MTA-STS policy; not sent");
            let reply = crate::delivery::DeliveryReply::status_only(postern_wire::Enhanced(5, 7, 30), why);
            return Ok(Attempt::all(crate::delivery::Outcome::Failed(reply), rcpts.len(), None));
        }
        if let HostTls::Defer { failure, reason } = verdict {
            self.dane_result(domain, host, None, verdict, Err(*failure), reason);
            return Err((reason.clone(), true));
        }
        let (pool, tls) = match self.pool(ip, host, verdict, sts.tls_for(host)) {
            Ok(p) => p,
            Err(e) => return Err((e.to_string(), verdict.reported())),
        };
        let result = pool.try_deliver(msg, rcpts).await;
        if !verdict.reported() {
            // DANE does not decide for this host: MTA-STS may (RFC 8461 §2),
            // else the session is reported as "no-policy-found" (RFC 8460).
            if sts.tls_for(host).is_some() {
                sts.record(host, ip, &result);
            } else {
                let tls_tried = tls.is_some();
                crate::delivery::tlsrpt::classify::record_no_policy(&*self.reports, domain, host, ip, tls_tried, &result);
            }
        }
        match result {
            Ok(a) => {
                if verdict.reported() {
                    // Unusable records only: TLS without authentication (RFC 8460 "tlsa-invalid").
                    let r = if matches!(verdict, HostTls::Encrypt(_)) { Err(FailureType::TlsaInvalid) } else { Ok(()) };
                    self.dane_result(domain, host, Some(ip), verdict, r, a.tls.as_deref().unwrap_or(""));
                }
                Ok(a)
            }
            Err(e) => {
                let last = tls.as_ref().and_then(|t| t.dane.as_ref()).and_then(|d| d.last_failure());
                let why = match (&e, &last) {
                    // The verifier's own words, not rustls' debug form of them.
                    (ConnError::Handshake { .. }, Some(f)) => format!("4.7.5 DANE authentication failed: {f}"),
                    _ => e.reply().to_string(),
                };
                let failure = if verdict.reported() { failure_of(&e, last) } else { None };
                match failure {
                    Some(f) => {
                        self.dane_result(domain, host, Some(ip), verdict, Err(f), &why);
                        Err((why, true))
                    }
                    None => Err((why, false)),
                }
            }
        }
    }

    /// Counts a DANE session for TLS reporting, and logs failures.
    fn dane_result(&self, domain: &str, host: &str, ip: Option<IpAddr>, verdict: &HostTls, result: Result<(), FailureType>, detail: &str) {
        let strings: Vec<String> = verdict.records().iter().map(ToString::to_string).collect();
        self.reports.record(&SessionResult {
            policy_domain: domain,
            policy_type: PolicyType::Tlsa,
            policy_strings: &strings,
            mx_patterns: &[],
            mx_host: host,
            ip,
            result,
            detail,
        });
        if let Err(f) = result {
            let relay = match ip {
                Some(ip) => format!("{host}[{ip}]:{}", self.port),
                None => host.to_string(),
            };
            let action = if matches!(verdict, HostTls::Encrypt(_)) { "delivered-unauthenticated" } else { "deferred" };
            maillog::tls(&[
                ("relay", &relay),
                ("domain", domain),
                ("policy", "dane"),
                ("result", f.as_str()),
                ("action", action),
                ("tlsa", &strings.join(", ")),
                ("error", detail),
            ]);
        }
    }
}

#[cfg(test)]
#[path = "dane_host_tests.rs"]
mod tests;
