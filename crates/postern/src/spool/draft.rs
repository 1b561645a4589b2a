//! A message being received: its text goes straight into its queue file
//! `files/<ID>` (format 2, `queuefile.rs`); [`super::Spool::commit`]
//! appends the envelope and the trailer and makes it durable.
//!
//! May touch: the draft's own queue file, and `tmp/<ID>.new` while a
//! milter's rewrite is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::{io_err, QueueId, SpoolError, FILE_MODE};

/// A message being received.
#[derive(Debug)]
pub struct Draft {
    /// The queue id this message will get.
    pub id: QueueId,
    /// `files/<ID>`.
    pub(super) path: PathBuf,
    pub(super) out: Option<BufWriter<File>>,
    pub(super) written: u64,
    pub(super) crc: crc32fast::Hasher,
    pub(super) error: Option<io::Error>,
    /// Octets of an older message still in the file (a recycled name,
    /// `names.rs`): they are overwritten as the text is written, and what
    /// is left beyond the new message is cut off at the commit (or when
    /// the text is read back).
    pub(super) stale: u64,
    /// The file's directory entry is not known to be on disk yet (a name
    /// made on the spot, or a rewrite renamed into place): the commit must
    /// fsync `files/` too.
    pub(super) fresh_name: bool,
    /// The spool's flush-error generation when the draft began
    /// (`GroupSync::generation`).
    pub(super) sync_gen: u64,
}

impl Draft {
    /// Appends text. Errors are remembered and reported by
    /// [`super::Spool::commit`], so the SMTP session can keep reading the
    /// client's data.
    ///
    /// These are plain blocking writes into a 64 KiB buffer: page-cache
    /// writes that do not wait for the disk; the flush happens in `commit`,
    /// which callers run on a blocking thread.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write_all(bytes) {
                self.error = Some(e);
            } else {
                self.crc.update(bytes);
                self.written += bytes.len() as u64;
            }
        }
    }

    /// Octets written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes what was written and opens the text for reading (milters
    /// read the message back to send it in chunks).
    pub fn reader(&mut self) -> Result<File, SpoolError> {
        let path = self.path.clone();
        if let Some(e) = self.error.take() {
            return Err(SpoolError::Io { what: "write", path, source: e });
        }
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(io_err("write", &path))?;
            if self.stale > self.written {
                // Readers read to the end: only this message's text may be there.
                out.get_ref().set_len(self.written).map_err(io_err("truncate", &path))?;
                self.stale = 0;
            }
        }
        File::open(&path).map_err(io_err("read", &path))
    }

    /// Replaces the text with `parts`, one after the other, in the same
    /// file: no new name, so the commit still costs only the file's own
    /// flush (a rewrite's new name costs a directory fsync too). For callers
    /// that hold the whole new text in memory: DKIM signing, the
    /// verification header. A failure leaves the text half replaced, so the
    /// draft's commit fails with it (its callers refuse the message anyway).
    pub fn replace(&mut self, parts: &[&[u8]]) -> Result<(), SpoolError> {
        let path = self.path.clone();
        if let Some(e) = self.error.take() {
            return Err(SpoolError::Io { what: "write", path, source: e });
        }
        let Some(out) = self.out.as_mut() else {
            return Err(SpoolError::Io { what: "write", path, source: io::Error::other("draft already closed") });
        };
        let old_len = self.written.max(self.stale);
        let result = (|| -> io::Result<(u64, crc32fast::Hasher)> {
            out.seek(SeekFrom::Start(0))?; // flushes what is buffered first
            let (mut n, mut crc) = (0u64, crc32fast::Hasher::new());
            for p in parts {
                out.write_all(p)?;
                crc.update(p);
                n += p.len() as u64;
            }
            out.flush()?;
            if old_len > n {
                out.get_ref().set_len(n)?;
            }
            Ok((n, crc))
        })();
        match result {
            Ok((n, crc)) => {
                self.written = n;
                self.crc = crc;
                self.stale = 0;
                Ok(())
            }
            Err(e) => {
                self.error = Some(io::Error::new(e.kind(), format!("text half replaced: {e}")));
                Err(SpoolError::Io { what: "rewrite", path, source: e })
            }
        }
    }

    /// Replaces the text with what `fill` writes (a milter changed headers or
    /// the body). The new text goes to `tmp/<ID>.new`, renamed over the
    /// draft's file, so a failure leaves the old text in place; nothing is
    /// durable until [`super::Spool::commit`].
    pub fn rewrite(&mut self, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), SpoolError> {
        // queue/files/<ID> -> queue/tmp/<ID>.new
        let queue = self.path.parent().and_then(|m| m.parent()).unwrap_or(&self.path);
        let new_path = queue.join("tmp").join(format!("{}.new", self.id));
        let result = (|| {
            let f = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(&new_path)?;
            let mut out = BufWriter::with_capacity(64 * 1024, f);
            let mut counter = CountingWriter { inner: &mut out, count: 0, crc: crc32fast::Hasher::new() };
            fill(&mut counter)?;
            let (count, crc) = (counter.count, counter.crc);
            out.flush()?;
            fs::rename(&new_path, &self.path)?;
            Ok((out, count, crc))
        })();
        match result {
            Ok((out, count, crc)) => {
                self.out = Some(out);
                self.written = count;
                self.crc = crc;
                self.stale = 0;
                self.fresh_name = true;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&new_path);
                Err(SpoolError::Io { what: "rewrite", path: self.path.clone(), source: e })
            }
        }
    }
}

/// Counts (and checksums) octets on their way to a writer.
struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        // A draft that was not committed leaves no debris.
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}
