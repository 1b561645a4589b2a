//! What one MX connection attempt means for TLS reporting when no policy
//! (DANE, MTA-STS) applied: RFC 8460 "no-policy-found" sessions. A session
//! that negotiated TLS is a success; one that went on in plaintext, or
//! where STARTTLS was missing or refused although required, is
//! `starttls-not-supported`; a failed handshake is classified by its error.
//! Attempts that never reached the TLS step (connection refused, a 4xx
//! greeting) are not TLS sessions and are not counted. With `mx.tls =
//! "none"` nothing is counted: no TLS was tried.
//!
//! May touch: nothing (pure, apart from the `record` call). RFCs: 8460 §4.3.

use std::net::IpAddr;

use super::{FailureType, PolicyType, SessionResult, TlsReports};
use crate::delivery::smtp::ConnError;
use crate::delivery::Attempt;

/// The TLS result of one attempt: `None` when it is not a TLS session.
pub fn outcome(tls_tried: bool, r: &Result<Attempt, ConnError>) -> Option<(Result<(), FailureType>, String)> {
    if !tls_tried {
        return None;
    }
    match r {
        // `Attempt::tls` is "none" for plaintext, else "TLSv1.3 … verified|unverified (…)".
        Ok(a) => match a.tls.as_deref() {
            Some("none") => Some((Err(FailureType::StarttlsNotSupported), "delivered without TLS: STARTTLS not offered".into())),
            Some(_) => Some((Ok(()), String::new())),
            None => None,
        },
        Err(e @ (ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. })) => {
            Some((Err(FailureType::StarttlsNotSupported), e.to_string()))
        }
        Err(e @ ConnError::Handshake { reason, .. }) => Some((Err(handshake_failure(reason)), e.to_string())),
        Err(_) => None,
    }
}

/// The RFC 8460 result type of a failed handshake, from rustls' error text.
pub fn handshake_failure(reason: &str) -> FailureType {
    let r = reason.to_ascii_lowercase();
    if r.contains("expired") {
        FailureType::CertificateExpired
    } else if r.contains("notvalidforname") || r.contains("not valid for name") {
        FailureType::CertificateHostMismatch
    } else if r.contains("unknownissuer") || r.contains("unknown issuer") || r.contains("badsignature") || r.contains("self-signed") {
        FailureType::CertificateNotTrusted
    } else {
        FailureType::ValidationFailure
    }
}

/// Records one MX connection attempt to `host` (`ip`) for `domain` as a
/// "no-policy-found" session, if it was a TLS session at all.
pub fn record_no_policy(reports: &dyn TlsReports, domain: &str, host: &str, ip: IpAddr, tls_tried: bool, r: &Result<Attempt, ConnError>) {
    let Some((result, detail)) = outcome(tls_tried, r) else { return };
    reports.record(&SessionResult {
        policy_domain: domain,
        policy_type: PolicyType::NoPolicyFound,
        policy_strings: &[],
        mx_patterns: &[],
        mx_host: host,
        ip: Some(ip),
        result,
        detail: &detail,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use crate::delivery::Outcome;

    fn attempt(tls: Option<&str>) -> Result<Attempt, ConnError> {
        Ok(Attempt {
            outcomes: vec![Outcome::Deferred(crate::delivery::reply::made::no_outcome())],
            tls: tls.map(str::to_string),
            dsn: false,
            relay: None,
        })
    }

    #[test]
    fn attempts_to_results() {
        let ep = || Endpoint::Tcp("192.0.2.1".into(), 25);
        let hs = |r: &str| Err(ConnError::Handshake { ep: ep(), reason: r.into() });
        let s = FailureType::StarttlsNotSupported;
        type Row = (bool, Result<Attempt, ConnError>, Option<Result<(), FailureType>>);
        let table: Vec<Row> = vec![
            (true, attempt(Some("TLSv1.3 TLS13_AES_256_GCM_SHA384 verified")), Some(Ok(()))),
            (true, attempt(Some("TLSv1.2 X unverified (unknown issuer), auth PLAIN")), Some(Ok(()))),
            (true, attempt(Some("none")), Some(Err(s))),
            (false, attempt(Some("none")), None),
            (true, attempt(None), None),
            (true, Err(ConnError::NoStartTls(ep())), Some(Err(s))),
            (true, Err(ConnError::StartTlsRefused { ep: ep(), reply: "454 no".into() }), Some(Err(s))),
            (true, hs("invalid peer certificate: Expired"), Some(Err(FailureType::CertificateExpired))),
            (true, hs("invalid peer certificate: certificate not valid for name \"mx\""), Some(Err(FailureType::CertificateHostMismatch))),
            (true, hs("invalid peer certificate: UnknownIssuer"), Some(Err(FailureType::CertificateNotTrusted))),
            (true, hs("timed out"), Some(Err(FailureType::ValidationFailure))),
            (true, Err(ConnError::Connect { ep: ep(), reason: "refused".into() }), None),
            (true, Err(ConnError::Greeting { ep: ep(), reply: "421".into() }), None),
        ];
        for (tried, r, want) in table {
            assert_eq!(outcome(tried, &r).map(|(x, _)| x), want, "{r:?}");
        }
    }
}
