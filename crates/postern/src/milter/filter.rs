//! One milter connection: connect, option negotiation, and sending
//! commands and reading responses with the configured timeouts; and one
//! milter's view of a message (headers, end of headers, body, end of
//! message).
//!
//! May touch: the milter's socket (TCP or unix); the message text through
//! the session's spool [`Draft`] (read only).
//! Protocol: the sendmail milter protocol v6 (codec in `postern_wire::milter`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use postern_wire::milter::{self as wire, action, proto, Command, Header, MilterError, Response, Stage};

use crate::config::{Endpoint, Milter as MilterConfig};
use crate::spool::Draft;

use super::Macros;

/// Modifications accepted from one milter for one message; more is a
/// protocol error (replacement body chunks count too, each up to 1 MiB,
/// and are capped by `limits.max_message_size` as well).
const MAX_MODIFICATIONS: usize = 10_000;

/// The modifications one milter sent for one message, counted in number
/// and in bytes (review F14: without a byte cap, 10,000 packets of up to
/// 1 MiB each could make postern buffer about 10 GB for one message).
pub(super) struct Mods {
    /// In the order received.
    pub(super) list: Vec<Response>,
    /// Bytes buffered so far.
    bytes: u64,
    /// Most bytes accepted (`limits.max_message_size`).
    limit: u64,
}

impl Mods {
    /// An empty set that may grow to `limit` bytes.
    pub(super) fn new(limit: u64) -> Mods {
        Mods { list: Vec::new(), bytes: 0, limit }
    }

    /// Buffers one; past [`MAX_MODIFICATIONS`] or `limit` bytes the milter failed.
    fn push(&mut self, r: Response) -> Result<(), Failure> {
        if self.list.len() >= MAX_MODIFICATIONS {
            return Err(Failure::TooManyModifications);
        }
        self.bytes = self.bytes.saturating_add(size(&r));
        if self.bytes > self.limit {
            return Err(Failure::ModificationsTooLarge(self.limit));
        }
        self.list.push(r);
        Ok(())
    }
}

/// The bytes a modification adds to the message (or to memory): a header
/// line with its `: ` and CRLF, a body chunk, an address with parameters.
fn size(m: &Response) -> u64 {
    let n = match m {
        Response::AddHeader { name, value } | Response::InsertHeader { name, value, .. } | Response::ChangeHeader { name, value, .. } => {
            name.len() + value.len() + 4
        }
        Response::ReplaceBody(c) => c.len(),
        Response::ChangeFrom { from: a, params } | Response::AddRcpt { rcpt: a, params } => {
            a.len() + params.as_ref().map_or(0, |p| p.len())
        }
        Response::DelRcpt(a) | Response::Quarantine(a) => a.len(),
        _ => 0,
    };
    n as u64
}

/// Why a milter failed; the caller applies its `default_action`.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// The socket could not be connected.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Reading or writing the socket (or the draft) failed, or the milter closed it.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The milter did not answer (or read) within its timeout.
    #[error("timeout")]
    Timeout,
    /// A packet that does not parse.
    #[error("protocol error: {0}")]
    Codec(#[from] MilterError),
    /// A milter speaking a protocol version older than 2.
    #[error("protocol error: milter speaks protocol version {0}")]
    OldVersion(u32),
    /// The milter wants protocol steps we did not offer.
    #[error("protocol error: milter wants protocol steps {0:#x} we do not offer")]
    UnofferedSteps(u32),
    /// The first response was not option negotiation.
    #[error("protocol error: expected option negotiation, got {0:?}")]
    NotOptNeg(Box<Response>),
    /// More than [`MAX_MODIFICATIONS`] modifications for one message.
    #[error("protocol error: more than {max} modifications", max = MAX_MODIFICATIONS)]
    TooManyModifications,
    /// The modifications of one message add up to more than this many bytes
    /// (`limits.max_message_size`).
    #[error("modifications exceed limits.max_message_size ({0} bytes)")]
    ModificationsTooLarge(u64),
    /// A modification before end of message, where none is allowed.
    #[error("protocol error: {0:?} before end of message")]
    EarlyModification(Box<Response>),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// One connected milter.
pub(super) struct Filter {
    pub(super) cfg: Arc<MilterConfig>,
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Actions the milter asked for (and we allow).
    pub(super) actions: u32,
    /// Steps it does not want and replies it will not send.
    pub(super) protocol: u32,
    /// Macros it asked for, per stage (none listed: all we have).
    wanted: Vec<(Stage, Vec<String>)>,
    /// Accepted at CONNECT/HELO: nothing more but QUIT.
    pub(super) done_conn: bool,
    /// Accepted (or decided) for the current message.
    pub(super) done_msg: bool,
}

impl Filter {
    /// Connects and negotiates options, within `connect_timeout`.
    pub(super) async fn connect(cfg: Arc<MilterConfig>) -> Result<Filter, Failure> {
        let deadline = Instant::now() + cfg.connect_timeout;
        let io: Box<dyn Io> = match &cfg.socket.0 {
            Endpoint::Tcp(host, port) => {
                let s = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect((host.as_str(), *port)))
                    .await
                    .map_err(|_| Failure::Timeout)?
                    .map_err(Failure::Connect)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(
                tokio::time::timeout_at(deadline, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| Failure::Timeout)?
                    .map_err(Failure::Connect)?,
            ),
        };
        let mut f = Filter {
            cfg,
            io,
            rbuf: Vec::with_capacity(512),
            wbuf: Vec::with_capacity(512),
            actions: 0,
            protocol: 0,
            wanted: Vec::new(),
            done_conn: false,
            done_msg: false,
        };
        Command::OptNeg { version: wire::VERSION, actions: action::ALL, protocol: proto::OFFERED }.encode(&mut f.wbuf);
        f.send(f.cfg.connect_timeout).await?;
        match f.read(deadline).await? {
            Response::OptNeg { version, actions, protocol, macros } => {
                if version < 2 {
                    return Err(Failure::OldVersion(version));
                }
                if protocol & !proto::OFFERED != 0 {
                    return Err(Failure::UnofferedSteps(protocol));
                }
                f.actions = actions & action::ALL;
                f.protocol = protocol;
                if actions & action::SETSYMLIST != 0 {
                    f.wanted = macros;
                }
                Ok(f)
            }
            other => Err(Failure::NotOptNeg(Box::new(other))),
        }
    }

    /// Writes what is buffered; a milter that stops reading gets the
    /// command timeout like one that stops answering.
    async fn send(&mut self, timeout: Duration) -> Result<(), Failure> {
        let r = tokio::time::timeout(timeout, self.io.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        r.map_err(|_| Failure::Timeout)??;
        Ok(())
    }

    /// Reads one response before `deadline`.
    async fn read(&mut self, deadline: Instant) -> Result<Response, Failure> {
        loop {
            if let Some((cmd, data, n)) = wire::parse_frame(&self.rbuf)? {
                let r = Response::parse(cmd, data);
                self.rbuf.drain(..n);
                return Ok(r?);
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(16 * 1024);
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends `cmd` (after its stage's macros) and, unless the milter said
    /// it will not reply, returns its final reply; modifications seen on
    /// the way go to `mods` (only at end of message).
    pub(super) async fn exchange(
        &mut self,
        macros: Option<(Stage, &Macros)>,
        cmd: Command<'_>,
        reply_expected: bool,
        timeout: Duration,
        mut mods: Option<&mut Mods>,
    ) -> Result<Option<Response>, Failure> {
        if let Some((stage, m)) = macros {
            let pairs: Macros = match self.wanted.iter().find(|(s, _)| *s == stage) {
                // SMFIR_SETSYMLIST: only what was asked for ("{x}" or "x").
                Some((_, names)) => m
                    .iter()
                    .filter(|(k, _)| {
                        names.iter().any(|n| {
                            n == k || n.trim_start_matches('{').trim_end_matches('}') == k.trim_start_matches('{').trim_end_matches('}')
                        })
                    })
                    .cloned()
                    .collect(),
                None => m.clone(),
            };
            if !pairs.is_empty() {
                Command::Macros { stage, pairs: &pairs }.encode(&mut self.wbuf);
            }
        }
        cmd.encode(&mut self.wbuf);
        self.send(timeout).await?;
        if !reply_expected {
            return Ok(None);
        }
        let mut deadline = Instant::now() + timeout;
        loop {
            let r = self.read(deadline).await?;
            match r {
                Response::Progress => deadline = Instant::now() + timeout,
                r if r.is_final() => return Ok(Some(r)),
                r => match mods.as_deref_mut() {
                    Some(m) => m.push(r)?,
                    None => return Err(Failure::EarlyModification(Box::new(r))),
                },
            }
        }
    }

    /// This milter's view of the message, ending with its final reply to
    /// EOM: the headers, end of headers, the body (`body`, or the draft's
    /// from `body_offset`) in chunks, end of message. Modifications go to
    /// `mods`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_message(
        &mut self,
        draft: &mut Draft,
        headers: &[Header],
        body: Option<&[u8]>,
        body_offset: u64,
        eoh: &Macros,
        eom: &Macros,
        mods: &mut Mods,
    ) -> Result<Response, Failure> {
        let t = self.cfg.command_timeout;
        let keep_space = self.protocol & proto::HDR_LEADSPC != 0;
        if self.protocol & proto::NOHDRS == 0 {
            for h in headers {
                let value = h.milter_value(keep_space);
                let r = self
                    .exchange(None, Command::Header { name: &h.name, value: &value }, self.protocol & proto::NR_HDR == 0, t, None)
                    .await?;
                if let Some(r) = r.filter(|r| !matches!(r, Response::Continue)) {
                    return Ok(r);
                }
            }
        }
        if self.protocol & proto::NOEOH == 0 {
            let r = self.exchange(Some((Stage::Eoh, eoh)), Command::Eoh, self.protocol & proto::NR_EOH == 0, t, None).await?;
            if let Some(r) = r.filter(|r| !matches!(r, Response::Continue)) {
                return Ok(r);
            }
        }
        if self.protocol & proto::NOBODY == 0 {
            let reply = self.protocol & proto::NR_BODY == 0;
            match body {
                Some(b) => {
                    for c in b.chunks(wire::CHUNK_SIZE) {
                        match self.exchange(None, Command::Body(c), reply, t, None).await? {
                            Some(Response::Skip) => break,
                            Some(r) if !matches!(r, Response::Continue) => return Ok(r),
                            _ => {}
                        }
                    }
                }
                None => {
                    let file = draft.reader().map_err(|e| Failure::Io(std::io::Error::other(e)))?;
                    let mut file = tokio::fs::File::from_std(file);
                    file.seek(std::io::SeekFrom::Start(body_offset)).await?;
                    let mut chunk = vec![0u8; wire::CHUNK_SIZE];
                    loop {
                        let n = read_full(&mut file, &mut chunk).await?;
                        if n == 0 {
                            break;
                        }
                        match self.exchange(None, Command::Body(&chunk[..n]), reply, t, None).await? {
                            Some(Response::Skip) => break,
                            Some(r) if !matches!(r, Response::Continue) => return Ok(r),
                            _ => {}
                        }
                    }
                }
            }
        }
        let r = self.exchange(Some((Stage::Eom, eom)), Command::BodyEob, true, self.cfg.eom_timeout, Some(mods)).await?;
        Ok(r.unwrap_or(Response::Continue))
    }
}

/// Fills `buf` as far as the file allows.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = file.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MilterDefault;

    /// A response packet as a milter sends it.
    fn frame(cmd: u8, data: &[u8]) -> Vec<u8> {
        let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(cmd);
        out.extend_from_slice(data);
        out
    }

    /// A negotiated filter over an in-memory pipe; the milter's side sends `script`.
    fn filter_sending(script: Vec<u8>) -> Filter {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let _ = theirs.write_all(&script).await;
            let mut sink = vec![0u8; 4096];
            while theirs.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        let cfg = MilterConfig {
            name: "test".into(),
            socket: "unix:/nonexistent".parse().unwrap(),
            default_action: MilterDefault::Tempfail,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            eom_timeout: Duration::from_secs(5),
        };
        Filter {
            cfg: Arc::new(cfg),
            io: Box::new(ours),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            actions: action::ALL,
            protocol: 0,
            wanted: Vec::new(),
            done_conn: false,
            done_msg: false,
        }
    }

    fn add_header(value_len: usize) -> Vec<u8> {
        let mut data = b"X-Big\0".to_vec();
        data.extend(std::iter::repeat_n(b'v', value_len));
        data.push(0);
        frame(b'h', &data)
    }

    #[tokio::test]
    async fn header_changes_are_capped_in_bytes() {
        // 40 header additions of 1000 bytes each: 40 KB against a 10 KB cap.
        let mut script: Vec<u8> = (0..40).flat_map(|_| add_header(1000)).collect();
        script.extend(frame(b'a', b""));
        let mut f = filter_sending(script);
        let mut mods = Mods::new(10_000);
        let r = f.exchange(None, Command::BodyEob, true, Duration::from_secs(5), Some(&mut mods)).await;
        assert!(matches!(r, Err(Failure::ModificationsTooLarge(10_000))), "{r:?}");
        assert!(mods.list.len() < 10, "buffered {} modifications past the cap", mods.list.len());
    }

    #[tokio::test]
    async fn changes_within_the_cap_are_kept() {
        let mut script: Vec<u8> = (0..5).flat_map(|_| add_header(1000)).collect();
        script.extend(frame(b'b', &[b'x'; 2000]));
        script.extend(frame(b'a', b""));
        let mut f = filter_sending(script);
        let mut mods = Mods::new(10_000);
        let r = f.exchange(None, Command::BodyEob, true, Duration::from_secs(5), Some(&mut mods)).await;
        assert!(matches!(r, Ok(Some(Response::Accept))), "{r:?}");
        assert_eq!(mods.list.len(), 6);
        assert_eq!(mods.bytes, 5 * (5 + 1000 + 4) + 2000);
    }

    #[test]
    fn every_modification_counts() {
        let mut m = Mods::new(100);
        m.push(Response::ChangeFrom { from: "<a@b.example>".into(), params: Some("SIZE=1".into()) }).unwrap();
        m.push(Response::AddRcpt { rcpt: "<c@d.example>".into(), params: None }).unwrap();
        m.push(Response::ChangeHeader { index: 1, name: "Subject".into(), value: "x".repeat(40) }).unwrap();
        assert_eq!(m.bytes, 13 + 6 + 13 + 7 + 40 + 4);
        assert!(matches!(m.push(Response::ReplaceBody(vec![0; 20])), Err(Failure::ModificationsTooLarge(100))));
    }

    /// A milter that stops reading gets the command timeout on our write,
    /// like one that stops answering (F2).
    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_milter_that_stops_reading_times_out() {
        let cfg = crate::config::Config::parse("[[milter]]\nname = \"m\"\nsocket = \"unix:/nonexistent\"\n", "t").expect("config");
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut f = Filter {
            cfg: Arc::new(cfg.milters[0].clone()),
            io: Box::new(ours),
            rbuf: Vec::new(),
            wbuf: vec![0; 64 * 1024],
            actions: 0,
            protocol: 0,
            wanted: Vec::new(),
            done_conn: false,
            done_msg: false,
        };
        let t = Instant::now();
        assert!(matches!(f.send(Duration::from_secs(30)).await, Err(Failure::Timeout)));
        assert_eq!(t.elapsed().as_secs(), 30);
    }
}
