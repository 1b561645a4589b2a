//! Reading the whole queue back: the listing the scheduler and `mailq`
//! use, and start-up recovery after a crash (docs/queue-format.md,
//! "Durability").
//!
//! May touch: `DATA/queue/` (reads; removes files no client was ever told
//! about; renames envelopes without a body aside).

use std::fs;

use super::envelope::parse_envelope;
use super::{io_err, Envelope, Place, Spool, SpoolError};

/// What [`Spool::list`] finds.
#[derive(Debug)]
pub struct Listing {
    /// Every envelope with its place, oldest first.
    pub envelopes: Vec<(Envelope, Place)>,
    /// Envelopes that cannot be read, left alone for the operator.
    pub corrupt: Vec<SpoolError>,
}

impl Spool {
    /// Lists every envelope with its place, oldest first. Corrupt envelopes
    /// are reported separately and left alone for the operator.
    pub fn list(&self) -> Result<Listing, SpoolError> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for (d, place) in [("active", Place::Active), ("hold", Place::Hold)] {
            let dir = self.dir(d);
            for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
                let entry = entry.map_err(io_err("read directory", &dir))?;
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                match fs::read(&path).map_err(io_err("read", &path)).and_then(|b| parse_envelope(&path, &b)) {
                    Ok(env) => out.push((env, place)),
                    Err(e) => bad.push(e),
                }
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(Listing { envelopes: out, corrupt: bad })
    }

    /// Start-up recovery: empties `tmp/` (nothing there was ever
    /// acknowledged) and removes bodies without an envelope, and envelopes
    /// without a body (both can only be left by a crash before the 250).
    /// Returns how many files were removed.
    pub fn recover(&self) -> Result<usize, SpoolError> {
        let mut removed = 0;
        let tmp = self.dir("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err("read directory", &tmp))?.flatten() {
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        let envs = self.list()?.envelopes;
        let known: std::collections::HashSet<String> = envs.iter().map(|(e, _)| e.id.0.clone()).collect();
        let msgs = self.dir("messages");
        for entry in fs::read_dir(&msgs).map_err(io_err("read directory", &msgs))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let id = name.trim_end_matches(".eml");
            if !known.contains(id) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        for (env, place) in envs {
            if !self.body_path(&env.id).exists() {
                let p = self.env_path(&env.id, place);
                // Cannot happen with our commit order unless files were
                // removed by hand; keep the envelope aside for the operator.
                let aside = p.with_extension("json.nobody");
                if fs::rename(&p, &aside).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}
