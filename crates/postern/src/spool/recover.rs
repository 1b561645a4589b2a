//! Reading the whole queue back: the listing the scheduler and `mailq`
//! use, and start-up recovery after a crash (docs/queue-format.md,
//! "Durability").
//!
//! May touch: `DATA/queue/` (reads; removes files no client was ever told
//! about and envelopes a removal left behind).

use std::collections::{HashMap, HashSet};
use std::fs;

use super::envelope::parse_envelope;
use super::{io_err, queuefile, Envelope, Place, QueueId, Spool, SpoolError, CORRUPT, FILES};

/// What [`Spool::list`] finds.
#[derive(Debug)]
pub struct Listing {
    /// Every envelope with its place, oldest first.
    pub envelopes: Vec<(Envelope, Place)>,
    /// Envelopes that cannot be read, left alone for the operator.
    pub corrupt: Vec<SpoolError>,
}

/// What `files/` and `messages/` hold, by id.
#[derive(Default)]
struct Names {
    /// Format 2 queue files.
    files: Vec<QueueId>,
    /// Texts of messages queued before format 2.
    legacy: HashSet<QueueId>,
}

impl Spool {
    fn names_in_messages(&self) -> Result<Names, SpoolError> {
        let mut names = Names::default();
        for (d, legacy) in [(FILES, false), ("messages", true)] {
            let dir = self.dir(d);
            for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
                let entry = entry.map_err(io_err("read directory", &dir))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                match (legacy, name.strip_suffix(".eml")) {
                    (true, Some(id)) => names.legacy.extend(QueueId::parse(id)),
                    (false, None) => names.files.extend(QueueId::parse(&name).filter(|id| id.as_str() == name)),
                    _ => {}
                }
            }
        }
        Ok(names)
    }

    /// Envelope files by id (hold wins over active when both exist).
    fn envelope_files(&self) -> Result<HashMap<QueueId, Place>, SpoolError> {
        let mut out = HashMap::new();
        for (d, place) in [("active", Place::Active), ("hold", Place::Hold)] {
            let dir = self.dir(d);
            for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
                let entry = entry.map_err(io_err("read directory", &dir))?;
                let name = entry.file_name();
                if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(QueueId::parse) {
                    out.insert(id, place);
                }
            }
        }
        Ok(out)
    }

    /// Lists every message with its current envelope and place, oldest
    /// first. Queue files still being written (or never finished) are not
    /// messages and are skipped; corrupt envelopes are reported separately
    /// and left alone for the operator.
    pub fn list(&self) -> Result<Listing, SpoolError> {
        let mut out = Vec::new();
        let bad = self.visit(|e, place| out.push((e, place)))?;
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(Listing { envelopes: out, corrupt: bad })
    }

    /// Hands every message's current envelope and place to `f`, one at a
    /// time and in no particular order (the scheduler's rescan: a queue of
    /// 100,000 messages is never all in memory at once); returns the
    /// corrupt envelopes, as [`Spool::list`] reports them.
    pub fn visit(&self, mut f: impl FnMut(Envelope, Place)) -> Result<Vec<SpoolError>, SpoolError> {
        let names = self.names_in_messages()?;
        let env_files = self.envelope_files()?;
        let mut bad = Vec::new();
        let read_file = |id: &QueueId, place: Place| {
            let path = self.env_path(id, place);
            fs::read(&path).map_err(io_err("read", &path)).and_then(|b| parse_envelope(&path, &b)).map(|e| (e, place))
        };
        for id in &names.files {
            let got = match env_files.get(id) {
                Some(&place) => read_file(id, place).map(Some),
                None => queuefile::read_embedded(&self.body_path(id)).map(|e| {
                    e.map(|e| {
                        let p = Place::at_arrival(&e);
                        (e, p)
                    })
                }),
            };
            match got {
                Ok(Some((e, place))) => f(e, place),
                Ok(None) => {}
                // Removed between the directory read and now.
                Err(SpoolError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bad.push(e),
            }
        }
        for id in &names.legacy {
            if let Some(&place) = env_files.get(id) {
                match read_file(id, place) {
                    Ok((e, place)) => f(e, place),
                    Err(SpoolError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => bad.push(e),
                }
            }
        }
        Ok(bad)
    }

    /// Start-up recovery (the daemon, before it accepts mail): empties
    /// `tmp/` (nothing there was ever acknowledged), removes empty queue
    /// files (names made ahead and not used), sets aside in `corrupt/` the
    /// ones without a valid trailer (a crash cut them short before their
    /// flush, so they were never acknowledged; kept anyway, since a damaged
    /// disk could do the same to a message; one that has an envelope file
    /// was acknowledged, and goes to `corrupt/` with it and an `error`
    /// line), removes texts of old-format
    /// messages without an envelope and envelopes whose message is gone (a
    /// removal a crash cut short). Files it cannot read are left alone.
    /// Returns how many files were removed or set aside.
    pub fn recover(&self) -> Result<usize, SpoolError> {
        let mut removed = 0;
        let tmp = self.dir("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err("read directory", &tmp))?.flatten() {
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        let names = self.names_in_messages()?;
        let env_files = self.envelope_files()?;
        let mut present: HashSet<&QueueId> = HashSet::new();
        for id in &names.files {
            let path = self.body_path(id);
            let Ok(f) = fs::File::open(&path) else {
                present.insert(id); // unreadable: not ours to judge
                continue;
            };
            match (queuefile::read_trailer(&f), f.metadata().map(|m| m.len())) {
                (Ok(None), Ok(len)) if len > 0 && queuefile::is_free(&f).unwrap_or(false) => {
                    // A recycled name not used (`names.rs`), or a new
                    // message cut short in one; or a finished message whose
                    // rename to a recycled name a crash undid, but not its
                    // free mark (its envelope file goes with it, below).
                    if fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
                (Ok(None), _) if env_files.contains_key(id) => {
                    // An envelope file says it was acknowledged: damaged
                    // since (a disk, a script), never a crash before its
                    // flush. Set aside with its envelope, and said so.
                    present.insert(id);
                    if self.set_aside_logged(id, "queue file without its trailer under an envelope file") {
                        removed += 1;
                    }
                }
                (Ok(None), Ok(0)) => {
                    // A name made ahead, not used.
                    if fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
                // With or without an envelope file: another id's text is
                // never this id's message (an envelope file can be there
                // when a commit that writes one first was cut short).
                (Ok(Some(t)), _) if recycled_before_crash(&path, &f, &t, id) => {
                    if fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
                (Ok(None), Ok(_)) => {
                    if fs::rename(&path, self.dir(CORRUPT).join(id.as_str())).is_ok() {
                        removed += 1;
                    }
                }
                _ => {
                    present.insert(id);
                }
            }
        }
        for id in &names.legacy {
            if env_files.contains_key(id) {
                present.insert(id);
            } else if fs::remove_file(self.legacy_body_path(id)).is_ok() {
                removed += 1;
            }
        }
        for id in env_files.keys() {
            if !present.contains(id) {
                for place in [Place::Active, Place::Hold] {
                    if fs::remove_file(self.env_path(id, place)).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// A recycled name whose free mark a crash lost (`names.rs`): the file
/// holds a complete message whose embedded envelope names another id, the
/// finished message it was before it was renamed. A message is only ever
/// written under its own id, so this is never one to deliver. An envelope
/// that cannot be read is not judged here (the listing reports it).
fn recycled_before_crash(path: &std::path::Path, f: &fs::File, t: &queuefile::Trailer, id: &QueueId) -> bool {
    queuefile::embedded_in(f, path, t).is_ok_and(|e| e.id != *id)
}
