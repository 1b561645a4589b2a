//! The sendmail milter protocol, MTA side, without I/O.
//!
//! Protocol version 6 as spoken by sendmail 8.14+ and Postfix 2.6+
//! (`libmilter/mfdef.h`, `docs/milter-protocol.txt` of sendmail; there is no
//! RFC). Every packet is a 4-octet big-endian length (counting the command
//! octet), one command octet, and data. Strings are NUL-terminated.
//!
//! No maintained Rust crate implements the MTA side (`indymilter` is the
//! filter side), so this codec is ours: [`Command::encode`] builds what the
//! MTA sends, [`parse_frame`] cuts packets out of a byte buffer and
//! [`Response::parse`] turns one into a typed value.
//!
//! May touch: nothing (bytes in, values out).
//!
//! Files: this one holds the constants, stages and errors; `encode.rs` the
//! MTA's commands, `decode.rs` framing and the milter's responses,
//! `header.rs` the header list a milter edits.

mod decode;
mod encode;
mod header;
#[cfg(test)]
mod tests;

pub use decode::{parse_frame, Frame, Response};
pub use encode::Command;
pub use header::{apply_header_change, split_headers, Header};

/// The protocol version we speak.
pub const VERSION: u32 = 6;

/// Body chunks sent to a milter are at most this long (`MILTER_CHUNK_SIZE`).
pub const CHUNK_SIZE: usize = 65535;

/// The largest packet we accept from a milter: 1 MiB of data (what
/// `SMFIP_MDS_1M` allows) plus headroom for the command and length.
pub const MAX_PACKET: usize = 1024 * 1024 + 1024;

/// Actions a milter may take (`SMFIF_*`), offered in option negotiation.
pub mod action {
    /// Add headers.
    pub const ADDHDRS: u32 = 0x01;
    /// Replace the body.
    pub const CHGBODY: u32 = 0x02;
    /// Add recipients.
    pub const ADDRCPT: u32 = 0x04;
    /// Delete recipients.
    pub const DELRCPT: u32 = 0x08;
    /// Change or delete headers.
    pub const CHGHDRS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
    /// Change the envelope sender.
    pub const CHGFROM: u32 = 0x40;
    /// Add recipients with ESMTP parameters.
    pub const ADDRCPT_PAR: u32 = 0x80;
    /// Ask for a list of macros per stage.
    pub const SETSYMLIST: u32 = 0x100;
    /// Everything above: what postern offers.
    pub const ALL: u32 = 0x1ff;
}

/// Protocol steps (`SMFIP_*`): what the milter does not want to see, and
/// where it will not reply.
pub mod proto {
    /// No CONNECT.
    pub const NOCONNECT: u32 = 0x01;
    /// No HELO.
    pub const NOHELO: u32 = 0x02;
    /// No MAIL.
    pub const NOMAIL: u32 = 0x04;
    /// No RCPT.
    pub const NORCPT: u32 = 0x08;
    /// No body.
    pub const NOBODY: u32 = 0x10;
    /// No headers.
    pub const NOHDRS: u32 = 0x20;
    /// No end-of-headers.
    pub const NOEOH: u32 = 0x40;
    /// No reply to HEADER.
    pub const NR_HDR: u32 = 0x80;
    /// No unknown commands.
    pub const NOUNKNOWN: u32 = 0x100;
    /// No DATA.
    pub const NODATA: u32 = 0x200;
    /// The MTA understands SKIP.
    pub const SKIP: u32 = 0x400;
    /// Also send rejected recipients.
    pub const RCPT_REJ: u32 = 0x800;
    /// No reply to CONNECT.
    pub const NR_CONN: u32 = 0x1000;
    /// No reply to HELO.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to MAIL.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to RCPT.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to DATA.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to unknown commands.
    pub const NR_UNKN: u32 = 0x20000;
    /// No reply to EOH.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to BODY chunks.
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space.
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Larger data sizes (256 KiB / 1 MiB) are fine with us.
    pub const MDS_256K: u32 = 0x1000_0000;
    /// See [`MDS_256K`].
    pub const MDS_1M: u32 = 0x2000_0000;
    /// Every step and no-reply flag postern honours: what it offers.
    pub const OFFERED: u32 = 0x1f_ffff | MDS_256K | MDS_1M;
}

/// The SMTP stage a command or a macro list belongs to (`SMFIM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// CONNECT.
    Connect,
    /// HELO/EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// End of message.
    Eom,
    /// End of headers.
    Eoh,
}

impl Stage {
    /// The stage for an `SMFIM_*` index.
    pub fn from_index(i: u32) -> Option<Stage> {
        Some(match i {
            0 => Stage::Connect,
            1 => Stage::Helo,
            2 => Stage::Mail,
            3 => Stage::Rcpt,
            4 => Stage::Data,
            5 => Stage::Eom,
            6 => Stage::Eoh,
            _ => return None,
        })
    }

    /// The command octet the macros of this stage are attached to.
    fn command(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Eom => b'E',
            Stage::Eoh => b'N',
        }
    }
}

/// The client's address family in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// IPv4 address and port.
    Inet(std::net::Ipv4Addr, u16),
    /// IPv6 address and port.
    Inet6(std::net::Ipv6Addr, u16),
    /// Unknown (local submission).
    Unknown,
}

/// A packet that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MilterError {
    /// The length field is zero or larger than [`MAX_PACKET`].
    #[error("bad packet length {0}")]
    Length(usize),
    /// The command octet is not one we know.
    #[error("unknown response {0:?}")]
    Unknown(char),
    /// The data does not fit the command.
    #[error("malformed {0} response")]
    Malformed(&'static str),
}
