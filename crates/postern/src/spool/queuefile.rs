//! The queue file (format 2): one file per message, `files/<ID>`,
//! holding the text exactly as it will be delivered, then the envelope as
//! it was when the message was accepted (compact JSON), then a fixed-size
//! trailer naming both lengths and their CRC-32s:
//!
//! ```text
//! <text: text_len octets><envelope: env_len octets>\n#PQF2 <text_len:16 hex> <env_len:8 hex> <text crc:8 hex> <env crc:8 hex>\n
//! ```
//!
//! A file is a message only when its trailer parses and its lengths add up
//! to the file's size: the trailer is the last thing written before the one
//! `fdatasync` that precedes the `250`, so an empty file (a name made ahead
//! of time, see `names.rs`) or a file cut short by a crash was never
//! acknowledged. The CRCs catch a torn write that left the trailer on disk
//! but not the blocks before it (possible on a file system without a
//! journal); such a file is reported corrupt, never delivered.
//!
//! Written by hand: no crate has this layout, and it is a few lines.
//!
//! May touch: reads queue files it is given. No RFCs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::envelope::parse_envelope;
use super::{io_err, Envelope, SpoolError};

/// Octets in the trailer.
pub(super) const TRAILER_LEN: usize = 51;
const MAGIC: &[u8] = b"\n#PQF2 ";
/// Written over [`MAGIC`] when a finished message's file is kept as a name
/// for the next message (`names.rs`, "recycled"): from then on the file is
/// not a message, whatever else it holds, and start-up removes it.
pub(super) const FREE_MAGIC: &[u8] = b"\n#FREE ";

/// What the trailer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trailer {
    pub text_len: u64,
    pub env_len: u32,
    pub text_crc: u32,
    pub env_crc: u32,
}

impl Trailer {
    /// The trailer's bytes.
    pub(super) fn encode(&self) -> Vec<u8> {
        let s = format!("\n#PQF2 {:016X} {:08X} {:08X} {:08X}\n", self.text_len, self.env_len, self.text_crc, self.env_crc);
        debug_assert_eq!(s.len(), TRAILER_LEN);
        s.into_bytes()
    }

    /// Parses the last [`TRAILER_LEN`] octets of a file of `file_len`
    /// octets; `None` if they are not a trailer or the lengths do not add up.
    pub(super) fn parse(bytes: &[u8], file_len: u64) -> Option<Trailer> {
        Trailer::parse_as(MAGIC, bytes, file_len)
    }

    /// [`Trailer::parse`] with another magic ([`FREE_MAGIC`]: a recycled name).
    fn parse_as(magic: &[u8], bytes: &[u8], file_len: u64) -> Option<Trailer> {
        if bytes.len() != TRAILER_LEN || !bytes.starts_with(magic) || bytes[TRAILER_LEN - 1] != b'\n' {
            return None;
        }
        let fields = std::str::from_utf8(&bytes[magic.len()..TRAILER_LEN - 1]).ok()?;
        let mut it = fields.split(' ');
        let mut hex = |n: usize| it.next().filter(|f| f.len() == n).and_then(|f| u64::from_str_radix(f, 16).ok());
        let t = Trailer {
            text_len: hex(16)?,
            env_len: u32::try_from(hex(8)?).ok()?,
            text_crc: u32::try_from(hex(8)?).ok()?,
            env_crc: u32::try_from(hex(8)?).ok()?,
        };
        let total = t.text_len.checked_add(t.env_len as u64)?.checked_add(TRAILER_LEN as u64)?;
        (total == file_len).then_some(t)
    }
}

/// The envelope bytes as stored in a queue file: compact JSON.
pub(super) fn embedded_envelope_bytes(env: &Envelope) -> io::Result<Vec<u8>> {
    Ok(serde_json::to_vec(env)?)
}

/// Reads the trailer of an open queue file: `None` if the file is not a
/// complete message (empty, being written, or cut short by a crash).
pub(super) fn read_trailer(f: &File) -> io::Result<Option<Trailer>> {
    let len = f.metadata()?.len();
    if len < TRAILER_LEN as u64 {
        return Ok(None);
    }
    let mut buf = [0u8; TRAILER_LEN];
    f.read_exact_at(&mut buf, len - TRAILER_LEN as u64)?;
    Ok(Trailer::parse(&buf, len))
}

/// Is this open file a recycled name (its trailer marked [`FREE_MAGIC`])?
/// The whole trailer is checked (fields, lengths adding up to the file's
/// size), not only the magic: a damaged message whose octets at that place
/// happen to read `#FREE` must not pass for a recycled name.
pub(super) fn is_free(f: &File) -> io::Result<bool> {
    let len = f.metadata()?.len();
    if len < TRAILER_LEN as u64 {
        return Ok(false);
    }
    let mut buf = [0u8; TRAILER_LEN];
    f.read_exact_at(&mut buf, len - TRAILER_LEN as u64)?;
    Ok(Trailer::parse_as(FREE_MAGIC, &buf, len).is_some())
}

/// Marks the complete queue file `f` of `len` octets free: its trailer's
/// magic is overwritten (a page-cache write, no flush: see `names.rs` for
/// why a crash that loses it loses nothing).
pub(super) fn mark_free(f: &File, len: u64) -> io::Result<()> {
    f.write_all_at(FREE_MAGIC, len - TRAILER_LEN as u64)
}

/// The envelope stored in the queue file at `path`: `Ok(None)` if the file
/// is not a complete message, `Err(NotFound)`-kind I/O errors pass through.
pub(super) fn read_embedded(path: &Path) -> Result<Option<Envelope>, SpoolError> {
    let f = File::open(path).map_err(io_err("read", path))?;
    let Some(t) = read_trailer(&f).map_err(io_err("read", path))? else { return Ok(None) };
    embedded_in(&f, path, &t).map(Some)
}

/// The envelope of the open, complete queue file `f` (trailer `t`),
/// checked against its CRC (a mismatch is `Corrupt`).
pub(super) fn embedded_in(f: &File, path: &Path, t: &Trailer) -> Result<Envelope, SpoolError> {
    let mut env = vec![0u8; t.env_len as usize];
    f.read_exact_at(&mut env, t.text_len).map_err(io_err("read", path))?;
    if crc32fast::hash(&env) != t.env_crc {
        return Err(SpoolError::Corrupt { path: path.to_path_buf(), message: "envelope checksum mismatch".into() });
    }
    parse_envelope(path, &env)
}

/// The text of a whole queue file read into `bytes` (cut to the text in
/// place, no copy), checked against its CRC.
pub(super) fn text_of(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, SpoolError> {
    match trailer_of(&bytes) {
        Some(t) => into_text(path, bytes, &t),
        None => Err(SpoolError::Damaged { path: path.to_path_buf(), message: "incomplete queue file (no trailer)".into() }),
    }
}

/// The trailer of a whole queue file read into memory; `None` if it is not
/// a complete message (a name made ahead, a file being written or cut short).
pub(super) fn trailer_of(bytes: &[u8]) -> Option<Trailer> {
    let len = bytes.len();
    (len >= TRAILER_LEN).then(|| Trailer::parse(&bytes[len - TRAILER_LEN..], len as u64)).flatten()
}

/// The envelope embedded in a whole queue file, checked against its CRC
/// (a mismatch or an unreadable envelope is `Corrupt`: left in place).
pub(super) fn embedded_of(path: &Path, bytes: &[u8], t: &Trailer) -> Result<Envelope, SpoolError> {
    let raw = &bytes[t.text_len as usize..t.text_len as usize + t.env_len as usize];
    if crc32fast::hash(raw) != t.env_crc {
        return Err(SpoolError::Corrupt { path: path.to_path_buf(), message: "envelope checksum mismatch".into() });
    }
    parse_envelope(path, raw)
}

/// The text of a whole queue file: `bytes` cut in place (no copy), checked
/// against its CRC (a mismatch is `Damaged`: never delivered).
pub(super) fn into_text(path: &Path, mut bytes: Vec<u8>, t: &Trailer) -> Result<Vec<u8>, SpoolError> {
    bytes.truncate(t.text_len as usize);
    if crc32fast::hash(&bytes) != t.text_crc {
        return Err(SpoolError::Damaged { path: path.to_path_buf(), message: "message text checksum mismatch".into() });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trip_and_rejects() {
        let t = Trailer { text_len: 1234, env_len: 99, text_crc: 0xDEADBEEF, env_crc: 7 };
        let b = t.encode();
        assert_eq!(b.len(), TRAILER_LEN);
        let total = 1234 + 99 + TRAILER_LEN as u64;
        assert_eq!(Trailer::parse(&b, total), Some(t));
        // Lengths that do not add up to the file's size: not a message.
        assert_eq!(Trailer::parse(&b, total + 1), None);
        assert_eq!(Trailer::parse(&b, total - 1), None);
        // Any damaged byte of the frame.
        for i in [0, 1, 5, 6, 22, TRAILER_LEN - 1] {
            let mut d = b.clone();
            d[i] = b'z';
            assert_eq!(Trailer::parse(&d, total), None, "byte {i}");
        }
        assert_eq!(Trailer::parse(&[0u8; TRAILER_LEN], total), None);
        // Overflowing lengths are refused, not wrapped.
        let huge = Trailer { text_len: u64::MAX, env_len: 1, text_crc: 0, env_crc: 0 }.encode();
        assert_eq!(Trailer::parse(&huge, 10), None);
    }
}
