//! Verification of one incoming message with `mail-auth`: SPF of the MAIL
//! FROM identity (the HELO identity for the null sender), every DKIM
//! signature, the ARC chain, and DMARC of the RFC5322.From domain with
//! relaxed/strict alignment on organizational domains from the Public
//! Suffix List (`psl`). The results become our own types (`verdict.rs`),
//! so the header, the log and the policy decision stay pure.
//!
//! May touch: DNS (through the `MessageAuthenticator`). RFCs: 7208 (SPF,
//! with its 10-lookup and void-lookup limits, in `mail-auth`), 6376
//! (DKIM), 8617 (ARC), 7489 (DMARC: §3.1 alignment, §6.6.3 policy
//! discovery, §6.6.4 p/sp/pct).

use std::net::IpAddr;

use mail_auth::common::cache::NoCache;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::{Dmarc, Policy as MaPolicy};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::ProtoErrorKind;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult, Txt};

pub use super::verdict::{decide, strip_forged, Action, DkimSignature, Outcome, Policy, Results, SpfIdentity};

/// The SMTP facts verification needs.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// The MAIL FROM address, "" for the null sender.
    pub mail_from: &'a str,
    /// Our host name (SPF `%{r}`).
    pub host: &'a str,
}

/// The organizational domain (RFC 7489 §3.2): the public suffix plus one
/// label; the domain itself when the list does not know it.
pub fn organizational_domain(domain: &str) -> &str {
    let lower = domain.trim_end_matches('.');
    match psl::domain(lower.as_bytes()) {
        Some(d) => {
            let n = d.as_bytes().len();
            &lower[lower.len() - n..]
        }
        None => lower,
    }
}

/// Checks SPF, DKIM, ARC and DMARC of `message` (the text as received).
pub async fn verify(auth: &MessageAuthenticator, env: &Envelope<'_>, message: &[u8]) -> Results {
    // SPF: MAIL FROM, or HELO for the null sender (RFC 7208 §2.4).
    let (spf_params, spf_identity) = if env.mail_from.is_empty() {
        (SpfParameters::verify_ehlo(env.ip, env.helo, env.host), SpfIdentity::Helo(env.helo.to_string()))
    } else {
        (SpfParameters::verify_mail_from(env.ip, env.helo, env.host, env.mail_from), SpfIdentity::MailFrom(env.mail_from.to_string()))
    };
    let spf_out = auth.verify_spf(spf_params).await;
    let mail_from_domain = match env.mail_from.rsplit_once('@') {
        Some((_, d)) => d.to_ascii_lowercase(),
        None => env.helo.to_ascii_lowercase(),
    };
    let mut spf = spf_outcome(spf_out.result());
    if spf == Outcome::None && dns_failed(auth, &mail_from_domain).await {
        spf = Outcome::TempError;
    }

    let Some(msg) = AuthenticatedMessage::parse(message) else {
        // Not a parseable message: nothing signed, no From domain.
        return Results {
            spf,
            spf_identity,
            dkim: Vec::new(),
            dmarc: Outcome::None,
            from_domain: String::new(),
            policy: None,
            pct: 100,
            arc: Outcome::None,
        };
    };
    let dkim_out = auth.verify_dkim(&msg).await;
    let mut dkim: Vec<DkimSignature> = dkim_out
        .iter()
        .map(|o| {
            let (domain, selector, b) = match o.signature() {
                Some(s) => (s.d.clone(), s.s.clone(), b_prefix(&s.b)),
                None => (String::new(), String::new(), String::new()),
            };
            DkimSignature { result: dkim_outcome(o.result()), domain, selector, b }
        })
        .collect();
    for sig in dkim.iter_mut().filter(|s| matches!(s.result, Outcome::PermError | Outcome::Neutral) && !s.domain.is_empty()) {
        if dns_failed(auth, &format!("{}._domainkey.{}", sig.selector, sig.domain)).await {
            sig.result = Outcome::TempError;
        }
    }
    let arc_out = auth.verify_arc(&msg).await;
    let arc = match arc_out.result() {
        DkimResult::None => Outcome::None,
        r => dkim_outcome(r),
    };

    let dmarc_out = auth
        .verify_dmarc(DmarcParameters::new(&msg, &dkim_out, &mail_from_domain, &spf_out).with_domain_suffix_fn(organizational_domain))
        .await;
    let from_domain = dmarc_out.domain().to_ascii_lowercase();
    let record = dmarc_out.dmarc_record();
    let (policy, pct) = match record {
        Some(rec) => {
            // §6.6.3: a record at the From domain itself gives p=; one
            // found above it (the organizational domain) gives sp=.
            let exact = format!("_dmarc.{from_domain}.");
            let at_domain = auth.txt_lookup::<Dmarc>(exact, None::<&NoCache<String, Txt>>).await.is_ok();
            let p = if at_domain { rec.p } else { rec.sp };
            (Some(policy_of(p)), rec.pct.min(100))
        }
        None => (None, 100),
    };
    let mut dmarc = dmarc_outcome(dmarc_out.spf_result(), dmarc_out.dkim_result(), record.is_some(), spf, &dkim);
    if dmarc == Outcome::None && !from_domain.is_empty() {
        let org = organizational_domain(&from_domain).to_string();
        if dns_failed(auth, &format!("_dmarc.{from_domain}")).await || dns_failed(auth, &format!("_dmarc.{org}")).await {
            dmarc = Outcome::TempError;
        }
    }
    Results { spf, spf_identity, dkim, dmarc, from_domain, policy, pct, arc }
}

/// Did the TXT lookup of `name` fail for another reason than "no such
/// record"? `mail-auth` 0.7 reads every empty answer, SERVFAIL included
/// (hickory 0.26 reports it as "no records"), as "not found": a DNS outage
/// would turn into `none`. Asked again only when a result came out
/// `none` (or a key was "missing"); the resolver's cache makes it cheap.
async fn dns_failed(auth: &MessageAuthenticator, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    // Not a host name (an address literal HELO, junk): nothing to ask.
    if !name.contains('.') || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
        return false;
    }
    let fqdn = format!("{name}.");
    match auth.resolver().txt_lookup(fqdn.as_str()).await {
        Ok(_) => false,
        Err(e) => match e.kind() {
            ProtoErrorKind::NoRecordsFound(nr) => !matches!(nr.response_code, ResponseCode::NXDomain | ResponseCode::NoError),
            _ => true,
        },
    }
}

/// `b=` as base64, first 8 characters (RFC 6008 §4).
fn b_prefix(b: &[u8]) -> String {
    use base64::Engine as _;
    let mut s = base64::engine::general_purpose::STANDARD.encode(b);
    s.truncate(8);
    s
}

fn spf_outcome(r: SpfResult) -> Outcome {
    match r {
        SpfResult::Pass => Outcome::Pass,
        SpfResult::Fail => Outcome::Fail,
        SpfResult::SoftFail => Outcome::SoftFail,
        SpfResult::Neutral => Outcome::Neutral,
        SpfResult::TempError => Outcome::TempError,
        SpfResult::PermError => Outcome::PermError,
        SpfResult::None => Outcome::None,
    }
}

fn dkim_outcome(r: &DkimResult) -> Outcome {
    match r {
        DkimResult::Pass => Outcome::Pass,
        // RFC 6376 §6.1.3: a body hash that does not match is a failed
        // verification (PERMFAIL); mail-auth 0.7 calls it neutral.
        DkimResult::Neutral(mail_auth::Error::FailedBodyHashMatch) => Outcome::Fail,
        DkimResult::Neutral(_) => Outcome::Neutral,
        DkimResult::Fail(_) => Outcome::Fail,
        DkimResult::PermError(_) => Outcome::PermError,
        DkimResult::TempError(_) => Outcome::TempError,
        DkimResult::None => Outcome::None,
    }
}

fn policy_of(p: MaPolicy) -> Policy {
    match p {
        MaPolicy::Reject => Policy::Reject,
        MaPolicy::Quarantine => Policy::Quarantine,
        MaPolicy::None | MaPolicy::Unspecified => Policy::None,
    }
}

/// The DMARC result (RFC 7489 §6.6.2): pass with one aligned pass;
/// temperror when a DNS error hid the record or could hide a pass;
/// fail when a record exists and nothing aligned passed.
fn dmarc_outcome(spf: &DmarcResult, dkim: &DmarcResult, has_record: bool, spf_raw: Outcome, sigs: &[DkimSignature]) -> Outcome {
    if *spf == DmarcResult::Pass || *dkim == DmarcResult::Pass {
        return Outcome::Pass;
    }
    let temp = |r: &DmarcResult| matches!(r, DmarcResult::TempError(_));
    let perm = |r: &DmarcResult| matches!(r, DmarcResult::PermError(_));
    if !has_record {
        return if temp(spf) || temp(dkim) {
            Outcome::TempError
        } else if perm(spf) || perm(dkim) {
            Outcome::PermError
        } else {
            Outcome::None
        };
    }
    if spf_raw == Outcome::TempError || sigs.iter().any(|s| s.result == Outcome::TempError) {
        Outcome::TempError
    } else {
        Outcome::Fail
    }
}
