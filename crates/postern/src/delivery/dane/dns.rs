//! DNS queries whose DNSSEC status we need (DANE): MX, A/AAAA and TLSA
//! asked of the configured validating resolver with the DO and AD bits
//! set; the answer's AD bit says whether the resolver validated it.
//!
//! Postfix's approach (`smtp_dns_support_level = dnssec`): we do not
//! validate signatures ourselves; we trust the AD bit, and only from
//! resolvers on loopback (or when `mx.dnssec_trust_remote_ad` says the path
//! to a remote one is trusted). A validating resolver answers SERVFAIL for
//! a bogus answer: that is a temporary failure, never "no records".
//!
//! May touch: DNS (UDP, then TCP when truncated) to the given resolvers.
//! RFCs: 1035 §4.2 (UDP/TCP framing), 4035 §3.2.3 (AD), 6840 §5.7 (AD in
//! queries), 6891 (EDNS, DO bit).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::tls::dane::Tlsa;

/// How long one resolver gets for one query (UDP, or TCP after truncation).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// EDNS payload size we offer (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// The records of one answer and whether the resolver validated them.
/// No records: NXDOMAIN or NODATA (its denial is secure or not, too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secured<T> {
    /// The records of the asked type (CNAMEs followed by the resolver).
    pub records: Vec<T>,
    /// The AD bit: the whole answer (or denial) validated.
    pub secure: bool,
}

/// Why a query has no answer: a temporary failure. SERVFAIL from a
/// validating resolver is how a bogus (badly signed) answer looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFailure {
    /// The question, "_25._tcp.mx.example. TLSA".
    pub question: String,
    /// What went wrong ("SERVFAIL", "timed out").
    pub reason: String,
    /// True for SERVFAIL: the resolver could not validate (bogus), or the
    /// zone's servers failed; RFC 8460 counts it as `dnssec-invalid`.
    pub servfail: bool,
}

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DNS lookup of {}: {}", self.question, self.reason)
    }
}

/// Queries the validating resolvers in order.
#[derive(Debug, Clone)]
pub struct SecureDns {
    servers: Vec<SocketAddr>,
}

impl SecureDns {
    /// The resolvers to ask (already checked to be trusted).
    pub fn new(servers: Vec<SocketAddr>) -> SecureDns {
        SecureDns { servers }
    }

    /// MX records of `domain` as (preference, host without the dot).
    pub async fn mx(&self, domain: &str) -> Result<Secured<(u16, String)>, DnsFailure> {
        self.query(domain, RecordType::MX, |d| match d {
            RData::MX(mx) => Some((mx.preference(), mx.exchange().to_ascii().trim_end_matches('.').to_string())),
            _ => None,
        })
        .await
    }

    /// Is `host`'s address RRset secure? Asks A, then AAAA when there is
    /// no A record (RFC 7672 §2.2.2: TLSA records are used only when the
    /// host's addresses are secure).
    pub async fn addresses_secure(&self, host: &str) -> Result<bool, DnsFailure> {
        let a = self.query(host, RecordType::A, |d| matches!(d, RData::A(_)).then_some(())).await?;
        if !a.records.is_empty() {
            return Ok(a.secure);
        }
        let aaaa = self.query(host, RecordType::AAAA, |d| matches!(d, RData::AAAA(_)).then_some(())).await?;
        Ok(aaaa.secure)
    }

    /// TLSA records at `_PORT._tcp.HOST` (RFC 7672 §2.2.3).
    pub async fn tlsa(&self, port: u16, host: &str) -> Result<Secured<Tlsa>, DnsFailure> {
        let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        self.query(&name, RecordType::TLSA, |d| match d {
            RData::TLSA(t) => Some(Tlsa {
                usage: t.cert_usage().into(),
                selector: t.selector().into(),
                matching: t.matching().into(),
                data: t.cert_data().to_vec(),
            }),
            _ => None,
        })
        .await
    }

    async fn query<T>(&self, name: &str, rtype: RecordType, pick: impl Fn(&RData) -> Option<T>) -> Result<Secured<T>, DnsFailure> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let fail = |reason: String, servfail: bool| DnsFailure { question: format!("{fqdn} {rtype}"), reason, servfail };
        let qname = Name::from_ascii(&fqdn).map_err(|e| fail(format!("bad name: {e}"), false))?;
        let mut last = fail("no name server configured".into(), false);
        for server in &self.servers {
            match ask(*server, &qname, rtype).await {
                Ok(m) => match m.response_code() {
                    ResponseCode::NoError | ResponseCode::NXDomain => {
                        let records = m.answers().iter().filter(|r| r.record_type() == rtype).filter_map(|r| pick(r.data())).collect();
                        return Ok(Secured { records, secure: m.authentic_data() });
                    }
                    // A validating resolver's answer for bogus data: do not
                    // ask the next one (it would validate the same way).
                    ResponseCode::ServFail => return Err(fail(format!("SERVFAIL from {server} (DNSSEC validation failure?)"), true)),
                    code => last = fail(format!("{code} from {server}"), false),
                },
                Err(e) => last = fail(format!("{server}: {e}"), false),
            }
        }
        Err(last)
    }
}

/// One query to one server: UDP, then TCP if the answer was truncated.
async fn ask(server: SocketAddr, name: &Name, rtype: RecordType) -> Result<Message, String> {
    let id: u16 = rand::random();
    let mut q = Message::new();
    q.set_id(id).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    // AD in the query (RFC 6840 §5.7) and DO in EDNS: "tell me whether you validated".
    q.set_authentic_data(true);
    q.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD).set_dnssec_ok(true);
    q.set_edns(edns);
    let wire = q.to_vec().map_err(|e| e.to_string())?;
    let m = tokio::time::timeout(QUERY_TIMEOUT, udp(server, &wire, id)).await.map_err(|_| "timed out".to_string())??;
    if !m.truncated() {
        return Ok(m);
    }
    tokio::time::timeout(QUERY_TIMEOUT, tcp(server, &wire, id)).await.map_err(|_| "timed out (TCP)".to_string())?
}

async fn udp(server: SocketAddr, wire: &[u8], id: u16) -> Result<Message, String> {
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    sock.send(wire).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // Ignore stray datagrams (a late answer to another query).
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.id() == id && m.message_type() == MessageType::Response {
                return Ok(m);
            }
        }
    }
}

async fn tcp(server: SocketAddr, wire: &[u8], id: u16) -> Result<Message, String> {
    let mut s = TcpStream::connect(server).await.map_err(|e| e.to_string())?;
    let len = u16::try_from(wire.len()).map_err(|_| "query too long".to_string())?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(wire);
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut lb = [0u8; 2];
    s.read_exact(&mut lb).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lb))];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    let m = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if m.id() != id {
        return Err("answer with another id".into());
    }
    Ok(m)
}
