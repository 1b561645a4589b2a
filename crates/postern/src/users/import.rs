//! Import from a Dovecot or htpasswd passwd-file. Hashes postern can
//! verify natively (bcrypt, SHA512-CRYPT, SHA256-CRYPT, argon2) are kept
//! as `imported_hash` until the password is next set; other lines are
//! reported, not imported.
//!
//! May touch: the passwd-file named (read).

use std::path::Path;

use super::{UserDb, UserError, UserRecord};

impl UserDb {
    /// Imports a Dovecot/htpasswd passwd-file: `user:{SCHEME}hash:...` or
    /// `user:$2y$...`. Hashes we can verify natively are kept as
    /// `imported_hash`; lines with other schemes are reported.
    pub fn import_passwd_file(&mut self, path: &Path) -> Result<(Vec<String>, Vec<String>), UserError> {
        let text = std::fs::read_to_string(path).map_err(|source| UserError::Read { path: path.to_path_buf(), source })?;
        let mut ok = Vec::new();
        let mut skipped = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.splitn(3, ':');
            let (Some(user), Some(hash)) = (f.next(), f.next()) else {
                skipped.push(format!("{}:{}: no `user:hash`", path.display(), i + 1));
                continue;
            };
            let hash = match hash.strip_prefix('{').and_then(|h| h.split_once('}')) {
                Some((scheme, rest)) => match scheme.to_ascii_uppercase().as_str() {
                    "BLF-CRYPT" | "SHA512-CRYPT" | "SHA256-CRYPT" | "ARGON2ID" | "ARGON2I" | "CRYPT" => rest.to_string(),
                    other => {
                        skipped.push(format!("{}:{}: {user}: scheme {{{other}}} is not supported", path.display(), i + 1));
                        continue;
                    }
                },
                None => hash.to_string(),
            };
            if !["$2a$", "$2b$", "$2y$", "$6$", "$5$", "$argon2"].iter().any(|p| hash.starts_with(p)) {
                skipped.push(format!("{}:{}: {user}: hash format not supported", path.display(), i + 1));
                continue;
            }
            let rec = self.users.entry(user.to_ascii_lowercase()).or_default();
            *rec = UserRecord {
                imported_hash: Some(hash),
                addresses: rec.addresses.clone(),
                certificates: rec.certificates.clone(),
                ..Default::default()
            };
            ok.push(user.to_ascii_lowercase());
        }
        Ok((ok, skipped))
    }
}
