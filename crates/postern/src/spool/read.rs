//! Reading queued messages: the envelope and place of a message, its text,
//! and both with one read of its queue file (the delivery path). Format 2
//! and the older two-file format alike (docs/queue-format.md).
//!
//! May touch: reads the spool's files. No RFCs.

use std::fs;
use std::io;

use super::envelope::parse_envelope;
use super::{io_err, queuefile, Envelope, Place, QueueId, Spool, SpoolError};

impl Spool {
    /// The envelope file of a message (hold wins), read and parsed; `None`
    /// if it has none (format 2, never changed since it was accepted).
    ///
    /// `hold/` is looked at again after `active/`: `postern queue hold`
    /// renames `active/<ID>.json` into `hold/` while the daemon runs, and a
    /// rename between the first two looks would make both miss, so delivery
    /// would fall back to the envelope as accepted and could deliver again
    /// to recipients already done. The third look finds the moved file.
    fn stored_envelope(&self, id: &QueueId) -> Result<Option<(Envelope, Place)>, SpoolError> {
        for place in [Place::Hold, Place::Active, Place::Hold] {
            let path = self.env_path(id, place);
            match fs::read(&path) {
                Ok(bytes) => return parse_envelope(&path, &bytes).map(|e| Some((e, place))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &path)(e)),
            }
        }
        Ok(None)
    }

    /// What a delivery attempt needs, reading the queue file once: the
    /// current envelope and the text (checked against its CRC) of an active
    /// message; `Ok(None)` if it is held (its text is then not checked).
    /// ([`Spool::load`] then [`Spool::read_body`] open the file twice.)
    pub fn load_active_with_text(&self, id: &QueueId) -> Result<Option<(Envelope, Vec<u8>)>, SpoolError> {
        let stored = match self.stored_envelope(id)? {
            Some((_, Place::Hold)) => return Ok(None),
            Some((env, Place::Active)) => Some(env),
            None => None,
        };
        let p = self.body_path(id);
        match fs::read(&p) {
            Ok(bytes) => {
                let Some(t) = queuefile::trailer_of(&bytes) else {
                    return Err(match stored {
                        // A name made ahead, or a file being written: not a message.
                        None => SpoolError::NotFound(id.clone()),
                        // An acknowledged message (it has an envelope file) cut short.
                        Some(_) => SpoolError::Damaged { path: p, message: "incomplete queue file (no trailer)".into() },
                    });
                };
                let env = match stored {
                    Some(env) => env,
                    None => {
                        let env = queuefile::embedded_of(&p, &bytes, &t)?;
                        if Place::at_arrival(&env) == Place::Hold {
                            return Ok(None);
                        }
                        env
                    }
                };
                Ok(Some((env, queuefile::into_text(&p, bytes, &t)?)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A message queued before format 2 (its envelope file is
                // required), or one removed meanwhile.
                let Some(env) = stored else { return Err(SpoolError::NotFound(id.clone())) };
                let legacy = self.legacy_body_path(id);
                match fs::read(&legacy) {
                    Ok(text) => Ok(Some((env, text))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpoolError::NotFound(id.clone())),
                    Err(e) => Err(io_err("read", &legacy)(e)),
                }
            }
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    /// Reads a message's current envelope and its place.
    pub fn load(&self, id: &QueueId) -> Result<(Envelope, Place), SpoolError> {
        if let Some((env, place)) = self.stored_envelope(id)? {
            if !self.body_path(id).exists() && !self.legacy_body_path(id).exists() {
                // Left by a removal a crash cut short.
                return Err(SpoolError::NotFound(id.clone()));
            }
            return Ok((env, place));
        }
        let path = self.body_path(id);
        match queuefile::read_embedded(&path) {
            Ok(Some(env)) => {
                let place = Place::at_arrival(&env);
                Ok((env, place))
            }
            Ok(None) => Err(SpoolError::NotFound(id.clone())),
            Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Err(SpoolError::NotFound(id.clone())),
            Err(e) => Err(e),
        }
    }

    /// Reads a message's text (checked against its CRC).
    pub fn read_body(&self, id: &QueueId) -> Result<Vec<u8>, SpoolError> {
        let p = self.body_path(id);
        match fs::read(&p) {
            Ok(bytes) => queuefile::text_of(&p, bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let legacy = self.legacy_body_path(id);
                fs::read(&legacy).map_err(io_err("read", &legacy))
            }
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }
}
