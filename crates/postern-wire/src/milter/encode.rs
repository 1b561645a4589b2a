//! The commands the MTA sends to a milter, encoded as packets.
//!
//! May touch: nothing (values in, bytes out).

use super::{Family, Stage};

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Option negotiation: version, actions offered, protocol steps offered.
    OptNeg {
        /// Our protocol version ([`super::VERSION`]).
        version: u32,
        /// The actions (`SMFIF_*`) we allow.
        actions: u32,
        /// The protocol steps (`SMFIP_*`) we can leave out.
        protocol: u32,
    },
    /// Macros for the next command of `stage`.
    Macros {
        /// The stage (command) the macros belong to.
        stage: Stage,
        /// `(name, value)` pairs.
        pairs: &'a [(&'a str, String)],
    },
    /// A new connection.
    Connect {
        /// The client's host name (`[ip]` when unresolved).
        hostname: &'a str,
        /// The client's address.
        family: Family,
    },
    /// HELO/EHLO argument.
    Helo(&'a str),
    /// MAIL FROM: the `<path>` and ESMTP parameters.
    Mail(&'a [String]),
    /// RCPT TO: the `<path>` and ESMTP parameters.
    Rcpt(&'a [String]),
    /// DATA was given.
    Data,
    /// One header field, name and value (folded lines joined with `\n`).
    Header {
        /// Field name.
        name: &'a str,
        /// Field value in milter form.
        value: &'a str,
    },
    /// End of headers.
    Eoh,
    /// A body chunk (at most [`CHUNK_SIZE`]).
    Body(&'a [u8]),
    /// End of message.
    BodyEob,
    /// The transaction is over (RSET, or after EOM): forget message state.
    Abort,
    /// Close.
    Quit,
}

impl Command<'_> {
    /// Appends the packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Command::OptNeg { version, actions, protocol } => {
                out.push(b'O');
                for v in [version, actions, protocol] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Command::Macros { stage, pairs } => {
                out.push(b'D');
                out.push(stage.command());
                for (k, v) in pairs.iter() {
                    push_str(out, k.as_bytes());
                    push_str(out, v.as_bytes());
                }
            }
            Command::Connect { hostname, family } => {
                out.push(b'C');
                push_str(out, hostname.as_bytes());
                match family {
                    Family::Inet(a, p) => {
                        out.push(b'4');
                        out.extend_from_slice(&p.to_be_bytes());
                        push_str(out, a.to_string().as_bytes());
                    }
                    Family::Inet6(a, p) => {
                        out.push(b'6');
                        out.extend_from_slice(&p.to_be_bytes());
                        push_str(out, a.to_string().as_bytes());
                    }
                    Family::Unknown => out.push(b'U'),
                }
            }
            Command::Helo(h) => {
                out.push(b'H');
                push_str(out, h.as_bytes());
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                out.push(if matches!(self, Command::Mail(_)) { b'M' } else { b'R' });
                for a in args.iter() {
                    push_str(out, a.as_bytes());
                }
            }
            Command::Data => out.push(b'T'),
            Command::Header { name, value } => {
                out.push(b'L');
                push_str(out, name.as_bytes());
                push_str(out, value.as_bytes());
            }
            Command::Eoh => out.push(b'N'),
            Command::Body(b) => {
                out.push(b'B');
                out.extend_from_slice(b);
            }
            Command::BodyEob => out.push(b'E'),
            Command::Abort => out.push(b'A'),
            Command::Quit => out.push(b'Q'),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// NUL is the string terminator, so a value cannot carry one.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(s.iter().map(|&b| if b == 0 { b' ' } else { b }));
    out.push(0);
}
