//! Config value types that have their own syntax: networks (`Cidr`),
//! endpoints (`Endpoint`, `MilterSocket`), SASL mechanism names, socket
//! addresses and durations. Each parses from a string with a typed
//! [`ValueError`].
//!
//! May touch: nothing (pure parsing).
//!
//! While a file is loaded (see `load.rs`), a value that does not parse does
//! not stop the load: the error is set aside with the value's position, a
//! placeholder takes its place, and loading goes on, so that one run reports
//! every bad value. The placeholders never escape: a load with any set-aside
//! error fails as a whole.

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A config value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not an IP address (in a CIDR).
    #[error("bad IP address {0:?}")]
    IpAddress(String),
    /// A CIDR prefix length that is not a number or too long for the address.
    #[error("bad prefix length {0:?}")]
    PrefixLength(String),
    /// `unix:` followed by a relative path.
    #[error("unix: path must be absolute")]
    RelativeUnixPath,
    /// An endpoint without `:port`.
    #[error("expected host:port or unix:/path")]
    NoPort,
    /// A port that is not a number from 0 to 65535.
    #[error("bad port {0:?}")]
    Port(String),
    /// An endpoint with an empty host.
    #[error("empty host")]
    EmptyHost,
    /// A milter socket in none of the accepted forms.
    #[error("milter socket {0:?}: expected inet:host:port, inet:port@host or unix:/path")]
    MilterSocket(String),
    /// An `address:port` that does not parse (the message is Rust's).
    #[error("invalid socket address syntax {0:?} (expected address:port, e.g. \"0.0.0.0:25\" or \"[::]:25\")")]
    SocketAddr(String),
    /// A duration that does not parse.
    #[error("bad duration {text:?}: {reason} (use e.g. \"30s\", \"5m\", \"5d\")")]
    Duration {
        /// What the file says.
        text: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A size that is neither a number of bytes nor a number with a suffix.
    #[error("bad size {0:?} (use bytes, e.g. 26214400, or a number with K, M or G: \"512K\", \"25M\", \"1G\"; K = 1024)")]
    Size(String),
    /// A SASL mechanism postern does not implement.
    #[error("unknown mechanism {0:?} (PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5, SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, EXTERNAL)")]
    Mechanism(String),
    /// An `[inbound.dnsbl] lists` entry that does not parse.
    #[error("bad DNSBL site {text:?}: {reason} (use e.g. \"zen.example=127.0.0.[2..11]*3\")")]
    DnsblSite {
        /// What the file says.
        text: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// A network endpoint: TCP `host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP host and port.
    Tcp(String, u16),
    /// A unix-domain socket path.
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(h, p) if h.contains(':') => write!(f, "[{h}]:{p}"),
            Endpoint::Tcp(h, p) => write!(f, "{h}:{p}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if let Some(p) = s.strip_prefix("unix:") {
            return if p.starts_with('/') { Ok(Endpoint::Unix(p.into())) } else { Err(ValueError::RelativeUnixPath) };
        }
        let (host, port) = s.rsplit_once(':').ok_or(ValueError::NoPort)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| ValueError::Port(port.into()))?;
        if host.is_empty() {
            return Err(ValueError::EmptyHost);
        }
        Ok(Endpoint::Tcp(host.to_string(), port))
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d, str::parse, || Endpoint::Unix("/".into()))
    }
}

/// A milter's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSocket(pub Endpoint);

impl FromStr for MilterSocket {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::MilterSocket(s.into());
        if let Some(p) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            return if p.starts_with('/') { Ok(MilterSocket(Endpoint::Unix(p.into()))) } else { Err(bad()) };
        }
        let rest = s.strip_prefix("inet:").or_else(|| s.strip_prefix("inet6:")).ok_or_else(bad)?;
        let (host, port) = match rest.split_once('@') {
            // sendmail: inet:8891@localhost
            Some((port, host)) => (host.to_string(), port.to_string()),
            None => {
                let (h, p) = rest.rsplit_once(':').ok_or_else(bad)?;
                (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.to_string())
            }
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(MilterSocket(Endpoint::Tcp(host, port)))
    }
}

impl<'de> Deserialize<'de> for MilterSocket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d, str::parse, || MilterSocket(Endpoint::Unix("/".into())))
    }
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True if `ip` is inside this network (IPv4-mapped IPv6 is unmapped first).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// The loopback networks, the default of `relay.networks`.
    pub(super) fn loopback() -> Vec<Cidr> {
        vec![Cidr { addr: Ipv4Addr::LOCALHOST.into(), prefix: 8 }, Cidr { addr: std::net::Ipv6Addr::LOCALHOST.into(), prefix: 128 }]
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| ValueError::IpAddress(a.into()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| ValueError::PrefixLength(p.into()))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The placeholder matches nothing useful: a host route to 0.0.0.0.
        lenient(d, str::parse, || Cidr { addr: Ipv4Addr::UNSPECIFIED.into(), prefix: 32 })
    }
}

/// A SASL mechanism named in `auth.mechanisms` or `listener.auth_mechanisms`
/// (the IANA name, upper-case, e.g. "SCRAM-SHA-256").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMechanism(pub postern_wire::sasl::Mechanism);

impl FromStr for AuthMechanism {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        // SASL mechanism names compare case-insensitively (RFC 4422 §3.1).
        postern_wire::sasl::Mechanism::parse(&s.to_ascii_uppercase()).map(AuthMechanism).ok_or_else(|| ValueError::Mechanism(s.into()))
    }
}

impl<'de> Deserialize<'de> for AuthMechanism {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d, str::parse, || AuthMechanism(postern_wire::sasl::Mechanism::Plain))
    }
}

impl From<postern_wire::sasl::Mechanism> for AuthMechanism {
    fn from(m: postern_wire::sasl::Mechanism) -> Self {
        AuthMechanism(m)
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, ValueError> {
    s.parse().map_err(|_| ValueError::SocketAddr(s.into()))
}

fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s).map_err(|e| ValueError::Duration { text: s.into(), reason: e.to_string() })
}

/// Parses a size: plain bytes (`26214400`) or a number with a binary
/// suffix, K = 1024, M = 1024², G = 1024³, case-insensitive, optionally
/// followed by `B` or `iB` (`"512k"`, `"25M"`, `"10MB"`, `"1GiB"`).
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::Size(s.to_string());
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Prints a size the way [`parse_size`] reads it back: the largest unit
/// that divides it exactly (`"25M"`), plain bytes otherwise.
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A size as written in the file: an integer or a string with a suffix.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

/// `deserialize_with` for a size in bytes: `26214400`, `"25M"`, `"512K"`, `"1G"`.
pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let parse = |t: &str| parse_size(t);
    if SET_ASIDE.with(|c| c.borrow().is_none()) {
        return match SizeText::deserialize(d)? {
            SizeText::Bytes(n) => Ok(n),
            SizeText::Text(t) => parse(&t).map_err(de::Error::custom),
        };
    }
    let v = toml::Spanned::<SizeText>::deserialize(d)
        .map_err(|_| de::Error::custom("expected a size: bytes (26214400) or \"25M\", \"512K\", \"1G\""))?;
    let span = v.span();
    match v.into_inner() {
        SizeText::Bytes(n) => Ok(n),
        SizeText::Text(t) => match parse(&t) {
            Ok(n) => Ok(n),
            Err(e) => {
                SET_ASIDE.with(|c| {
                    if let Some(list) = c.borrow_mut().as_mut() {
                        list.push((span, e));
                    }
                });
                Ok(0)
            }
        },
    }
}

/// `deserialize_with` for a size that is a `usize` (see [`size`]).
pub(super) fn size_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    size(d).and_then(|n| usize::try_from(n).map_err(|_| de::Error::custom("size too large")))
}

/// `deserialize_with` for a duration written like "30s", "5m", "5d".
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    lenient(d, parse_duration, || Duration::ZERO)
}

/// `deserialize_with` for an `address:port`.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    lenient(d, parse_socket_addr, placeholder_addr)
}

/// `deserialize_with` for a list of `address:port`.
pub(super) fn socket_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    struct One(SocketAddr);
    impl<'de> Deserialize<'de> for One {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            lenient(d, parse_socket_addr, placeholder_addr).map(One)
        }
    }
    Ok(Vec::<One>::deserialize(d)?.into_iter().map(|o| o.0).collect())
}

fn placeholder_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Values that did not parse during the current load: byte range in the
/// file and the error.
pub(super) type SetAside = Vec<(Range<usize>, ValueError)>;

thread_local! {
    /// `Some` while `load.rs` deserializes a file on this thread.
    static SET_ASIDE: RefCell<Option<SetAside>> = const { RefCell::new(None) };
}

/// Runs `f` (a deserialization from a `toml` document) with bad values set
/// aside instead of failing; returns its result and the values set aside.
pub(super) fn setting_aside<R>(f: impl FnOnce() -> R) -> (R, SetAside) {
    /// Restores the outer state even if `f` panics, so a thread can never
    /// stay in "set aside" mode and accept stand-in values afterwards.
    struct Restore(Option<Option<SetAside>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                SET_ASIDE.with(|c| c.replace(outer));
            }
        }
    }
    let mut guard = Restore(Some(SET_ASIDE.with(|c| c.replace(Some(Vec::new())))));
    let r = f();
    let outer = guard.0.take().unwrap_or_default();
    let got = SET_ASIDE.with(|c| c.replace(outer)).unwrap_or_default();
    (r, got)
}

/// Deserializes a string and parses it. Inside [`setting_aside`] a bad value
/// is recorded with its span (only `toml` deserializers give one) and
/// `placeholder` stands in; elsewhere it is a plain serde error.
pub(super) fn lenient<'de, D, T>(d: D, parse: impl Fn(&str) -> Result<T, ValueError>, placeholder: impl Fn() -> T) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    if SET_ASIDE.with(|c| c.borrow().is_none()) {
        let s = String::deserialize(d)?;
        return parse(&s).map_err(de::Error::custom);
    }
    let s = toml::Spanned::<String>::deserialize(d)?;
    match parse(s.get_ref()) {
        Ok(v) => Ok(v),
        Err(e) => {
            SET_ASIDE.with(|c| {
                if let Some(list) = c.borrow_mut().as_mut() {
                    list.push((s.span(), e));
                }
            });
            Ok(placeholder())
        }
    }
}

// Serializing (`postern config show`): every value as the file would spell
// it, so the output loads again.

/// Serializes a value through its `Display` (the config spelling).
fn show<S: Serializer>(v: &impl fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        show(self, s)
    }
}

impl Serialize for MilterSocket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Endpoint::Tcp(h, p) if h.contains(':') => s.collect_str(&format_args!("inet6:[{h}]:{p}")),
            Endpoint::Tcp(h, p) => s.collect_str(&format_args!("inet:{h}:{p}")),
            Endpoint::Unix(p) => s.collect_str(&format_args!("unix:{}", p.display())),
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        show(self, s)
    }
}

impl Serialize for AuthMechanism {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// `serialize_with` for a duration: "5m", "1h 30m", "5days".
pub(super) fn show_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    show(&humantime::format_duration(*d), s)
}

/// `serialize_with` for a size: "25M", or bytes when no unit divides it.
pub(super) fn show_size<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    match format_size(*n) {
        t if t.ends_with(|c: char| c.is_ascii_digit()) => s.serialize_u64(*n),
        t => s.serialize_str(&t),
    }
}

/// `serialize_with` for a `usize` size.
pub(super) fn show_size_usize<S: Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
    show_size(&(*n as u64), s)
}
