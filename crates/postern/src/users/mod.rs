//! The user database: `DATA/users.json`, mode 0600, rewritten atomically
//! (temp file, fsync, rename, directory fsync), re-read by the server when
//! it changes. Format in `docs/auth.md`.
//!
//! May touch: `DATA/users.json` and files given to the import commands.
//!
//! Each user has an argon2id hash (PLAIN, LOGIN) and SCRAM stored keys
//! (SCRAM-SHA-256, SCRAM-SHA-1). A plaintext-equivalent secret (for
//! CRAM-MD5) is kept only while CRAM-MD5 is enabled. Imported users may
//! carry a foreign hash (bcrypt, SHA512-CRYPT, SHA256-CRYPT, argon2) that is
//! verified natively until the password is next set.

//!
//! Layout: this file (the database, password checks, the server's
//! [`UserStore`] with its verified-password cache), [`single_flight`]
//! (concurrent checks of the same password share one argon2 run),
//! [`sasldb`] (Cyrus sasldb2 / Berkeley DB import), [`import`]
//! (passwd-file import).

pub mod import;
pub mod sasldb;
mod single_flight;
#[cfg(test)]
mod single_flight_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use postern_wire::sasl::{ScramHash, ScramKeys};

/// SCRAM iteration count for new keys (RFC 7677 §4 recommends ≥ 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A user-database error; each names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A file (the database or an import source) could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `users.json` is not valid JSON of the expected shape.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said.
        source: serde_json::Error,
    },
    /// `users.json` has a format version this build does not know.
    #[error("{}: unknown version {version}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// Writing `users.json` (temp file, fsync, rename) failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be serialised.
    #[error("{0}")]
    Serialize(#[source] serde_json::Error),
    /// Hashing a password failed.
    #[error("{0}")]
    Hash(argon2::password_hash::Error),
    /// A sasldb2 file is not a Berkeley DB hash file we can read.
    #[error("{}: {source}", path.display())]
    Sasldb {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: sasldb::BdbError,
    },
}

/// SCRAM keys as stored (base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramRecord {
    /// Salt, base64.
    pub salt: String,
    /// Iterations.
    pub iterations: u32,
    /// StoredKey, base64.
    pub stored_key: String,
    /// ServerKey, base64.
    pub server_key: String,
}

impl ScramRecord {
    fn from_keys(k: &ScramKeys) -> ScramRecord {
        ScramRecord {
            salt: B64.encode(&k.salt),
            iterations: k.iterations,
            stored_key: B64.encode(&k.stored_key),
            server_key: B64.encode(&k.server_key),
        }
    }

    fn keys(&self) -> Option<ScramKeys> {
        Some(ScramKeys {
            salt: B64.decode(&self.salt).ok()?,
            iterations: self.iterations,
            stored_key: B64.decode(&self.stored_key).ok()?,
            server_key: B64.decode(&self.server_key).ok()?,
        })
    }
}

/// One user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// argon2id PHC string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2: Option<String>,
    /// SCRAM-SHA-256 keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha256: Option<ScramRecord>,
    /// SCRAM-SHA-1 keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha1: Option<ScramRecord>,
    /// Plaintext-equivalent secret, only while CRAM-MD5 is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
    /// A foreign hash from an import (`$2b$…`, `$6$…`, `$5$…`, `$argon2…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_hash: Option<String>,
    /// MAIL FROM addresses this user may use (`auth.sender_login_match`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// SHA-256 fingerprints of client certificates that log in as this
    /// user with EXTERNAL (`auth.external_identity = "fingerprint"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}

/// The file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDb {
    /// Format version (1).
    pub version: u32,
    /// Users by lower-case name.
    pub users: BTreeMap<String, UserRecord>,
}

/// A hash that never verifies, used for unknown users so a failed login
/// takes as long whether the user exists or not.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn argon2_hash(password: &str) -> Result<String, UserError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(UserError::Hash)?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(UserError::Hash)
}

/// Work memory for argon2 checks, reused: allocating 19 MiB per check
/// makes glibc raise its mmap threshold and then keep that memory in every
/// thread's arena (hundreds of MB after a burst of logins).
static ARGON2_MEMORY: Mutex<Vec<Vec<argon2::Block>>> = Mutex::new(Vec::new());

/// Verifies an argon2 PHC string, with pooled work memory.
fn verify_argon2(hash: &str, password: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(h) = PasswordHash::new(hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (argon2::Algorithm::try_from(h.algorithm), argon2::Params::try_from(&h)) else { return false };
    let version = match h.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let (Some(expected), Some(salt)) = (h.hash, h.salt) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let n = params.block_count();
    let mut blocks = {
        let mut pool = ARGON2_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
        pool.iter().position(|b| b.len() >= n).map(|i| pool.swap_remove(i))
    }
    .unwrap_or_else(|| vec![argon2::Block::default(); n]);
    let mut out = vec![0u8; expected.len()];
    let ok = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut blocks[..n])
        .is_ok();
    let mut pool = ARGON2_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) {
        pool.push(blocks);
    }
    ok && bool::from(out.ct_eq(expected.as_bytes()))
}

/// Verifies a password against a PHC/crypt string we understand.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        verify_argon2(hash, password)
    } else if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else if hash.starts_with("$6$") {
        sha_crypt::sha512_check(password, hash).is_ok()
    } else if hash.starts_with("$5$") {
        sha_crypt::sha256_check(password, hash).is_ok()
    } else {
        false
    }
}

impl UserDb {
    /// Reads the file; a missing file is an empty database.
    pub fn load(path: &Path) -> Result<UserDb, UserError> {
        match std::fs::read(path) {
            Ok(b) => {
                let db: UserDb = serde_json::from_slice(&b).map_err(|source| UserError::Parse { path: path.to_path_buf(), source })?;
                if db.version != 1 {
                    return Err(UserError::Version { path: path.to_path_buf(), version: db.version });
                }
                Ok(db)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserDb { version: 1, users: BTreeMap::new() }),
            Err(source) => Err(UserError::Read { path: path.to_path_buf(), source }),
        }
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), UserError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(UserError::Serialize)?;
        bytes.push(b'\n');
        crate::private_file::write(path, "json.tmp", &bytes).map_err(|source| UserError::Write { path: path.to_path_buf(), source })
    }

    /// Sets (or creates) a user's password: argon2id, SCRAM keys, and the
    /// plaintext secret only if `keep_plain`.
    pub fn set_password(&mut self, name: &str, password: &str, keep_plain: bool) -> Result<(), UserError> {
        let name = name.to_ascii_lowercase();
        let rec = self.users.entry(name).or_default();
        rec.argon2 = Some(argon2_hash(password)?);
        let salt: [u8; 16] = rand::random();
        rec.scram_sha256 = Some(ScramRecord::from_keys(&ScramKeys::derive(ScramHash::Sha256, password, &salt, SCRAM_ITERATIONS)));
        let salt1: [u8; 16] = rand::random();
        rec.scram_sha1 = Some(ScramRecord::from_keys(&ScramKeys::derive(ScramHash::Sha1, password, &salt1, SCRAM_ITERATIONS)));
        rec.plain = keep_plain.then(|| password.to_string());
        rec.imported_hash = None;
        Ok(())
    }

    /// Checks a password. Unknown users cost the same as known ones.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        match self.users.get(&name.to_ascii_lowercase()) {
            Some(rec) => {
                if let Some(h) = &rec.argon2 {
                    verify_hash(h, password)
                } else if let Some(h) = &rec.imported_hash {
                    verify_hash(h, password)
                } else if let Some(p) = &rec.plain {
                    use subtle::ConstantTimeEq;
                    bool::from(p.as_bytes().ct_eq(password.as_bytes()))
                } else {
                    false
                }
            }
            None => {
                let dummy = DUMMY_HASH.get_or_init(|| argon2_hash("postern-dummy-password").unwrap_or_default());
                let _ = verify_hash(dummy, password);
                false
            }
        }
    }

    /// SCRAM keys for a user.
    pub fn scram(&self, name: &str, hash: ScramHash) -> Option<ScramKeys> {
        let rec = self.users.get(&name.to_ascii_lowercase())?;
        match hash {
            ScramHash::Sha256 => rec.scram_sha256.as_ref()?.keys(),
            ScramHash::Sha1 => rec.scram_sha1.as_ref()?.keys(),
        }
    }

    /// The plaintext secret (CRAM-MD5).
    pub fn plain(&self, name: &str) -> Option<String> {
        self.users.get(&name.to_ascii_lowercase())?.plain.clone()
    }

    /// Drops every plaintext secret (when CRAM-MD5 is disabled). Returns how many.
    pub fn drop_plain(&mut self) -> usize {
        let mut n = 0;
        for r in self.users.values_mut() {
            if r.plain.take().is_some() {
                n += 1;
            }
        }
        n
    }
}

/// The user database as the server sees it: re-read when the file changes.
pub struct UserStore {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Arc<UserDb>)>,
    verified: VerifiedCache,
    /// Slow password checks (argon2: 19 MiB and tens of milliseconds each)
    /// run at most this many at once, one per CPU, so a burst of logins
    /// cannot take all memory or starve the other sessions.
    slow_checks: Arc<tokio::sync::Semaphore>,
    /// Full checks running or waiting for a CPU, shared by concurrent
    /// checks of the same user, stored hash and password.
    in_flight: Arc<single_flight::InFlight>,
    /// Full checks run (argon2 or a foreign hash), since start.
    full_checks: AtomicU64,
}

/// Passwords that verified recently, as HMAC-SHA-256 tags under a key that
/// lives only in this process: a tag covers the user, the stored hash and
/// the password, so a changed password (new stored hash) never matches an
/// old entry. Only successes are kept; failures always pay the full cost.
struct VerifiedCache {
    key: [u8; 32],
    tags: Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
}

/// Entries kept at most; when full, expired ones go, then everything.
const VERIFIED_CACHE_MAX: usize = 10_000;

impl VerifiedCache {
    /// The tag, `None` (no caching) should HMAC refuse the key, which it
    /// never does: it takes any key length.
    fn tag(&self, user: &str, stored: &str, password: &str) -> Option<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        for part in [user.as_bytes(), stored.as_bytes(), password.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Some(mac.finalize().into_bytes().into())
    }

    fn hit(&self, tag: &[u8; 32], ttl: std::time::Duration) -> bool {
        let tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        tags.get(tag).is_some_and(|t| t.elapsed() < ttl)
    }

    fn insert(&self, tag: [u8; 32], ttl: std::time::Duration) {
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        if tags.len() >= VERIFIED_CACHE_MAX {
            tags.retain(|_, t| t.elapsed() < ttl);
            if tags.len() >= VERIFIED_CACHE_MAX {
                tags.clear();
            }
        }
        tags.insert(tag, std::time::Instant::now());
    }
}

impl UserStore {
    /// A store over `DATA/users.json`.
    pub fn new(data_dir: &Path) -> UserStore {
        UserStore {
            path: data_dir.join("users.json"),
            cache: Mutex::new((None, Arc::new(UserDb::default()))),
            verified: VerifiedCache { key: rand::random(), tags: Mutex::new(Default::default()) },
            slow_checks: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))),
            in_flight: Default::default(),
            full_checks: AtomicU64::new(0),
        }
    }

    /// What a check of `name` compares against, as [`UserDb::verify`]
    /// picks it, with its kind (so that a plaintext secret never shares a
    /// key with a hash string equal to it); `None` for unknown users.
    fn stored_secret(db: &UserDb, name: &str) -> Option<String> {
        let rec = db.users.get(name)?;
        Some(match (&rec.argon2, &rec.imported_hash, &rec.plain) {
            (Some(h), _, _) => format!("argon2:{h}"),
            (None, Some(h), _) => format!("imported:{h}"),
            (None, None, Some(p)) => format!("plain:{p}"),
            (None, None, None) => "none:".to_string(),
        })
    }

    /// The cache tag for a user's password, `None` for unknown users or a
    /// zero `ttl` (no caching).
    fn verified_tag(&self, db: &UserDb, name: &str, password: &str, ttl: std::time::Duration) -> Option<[u8; 32]> {
        let stored = Self::stored_secret(db, name)?;
        if ttl.is_zero() {
            return None;
        }
        self.verified.tag(name, &stored, password)
    }

    /// The single-flight key of a check: like the cache tag, and for
    /// unknown users too (they run the dummy hash, shared the same way).
    fn flight_key(&self, db: &UserDb, name: &str, password: &str) -> Option<single_flight::Key> {
        let stored = Self::stored_secret(db, name).unwrap_or_else(|| "unknown:".to_string());
        self.verified.tag(name, &stored, password)
    }

    /// Checks a password the way AUTH does: the verified cache, else the
    /// full check (argon2) off the async threads, at most one per CPU at a
    /// time; concurrent checks of the same user, stored hash and password
    /// share one run ([`single_flight`]). Failures are never remembered.
    pub async fn check_password(self: &Arc<Self>, db: Arc<UserDb>, name: &str, password: &str, ttl: std::time::Duration) -> bool {
        let name = name.to_ascii_lowercase();
        if self.verified_recently(&db, &name, password, ttl) {
            return true;
        }
        let Some(key) = self.flight_key(&db, &name, password) else {
            return self.full_check(db, name, password.to_string(), ttl, None).await;
        };
        // A check that ended without an answer (panic, cancelled session)
        // lets its waiters try again; a few rounds, then run alone.
        for _ in 0..3 {
            match self.in_flight.join(key) {
                single_flight::Join::Follow(rx) => {
                    if let Some(ok) = single_flight::wait(rx).await {
                        return ok;
                    }
                }
                single_flight::Join::Lead(leader) => {
                    return self.full_check(db, name, password.to_string(), ttl, Some(leader)).await;
                }
                single_flight::Join::Alone => break,
            }
        }
        self.full_check(db, name, password.to_string(), ttl, None).await
    }

    /// One full check on a blocking thread, holding a CPU permit; the
    /// permit and the leader guard move into that thread, so a session
    /// cancelled meanwhile neither frees the CPU early nor loses the answer
    /// for the others.
    async fn full_check(
        self: &Arc<Self>,
        db: Arc<UserDb>,
        name: String,
        password: String,
        ttl: std::time::Duration,
        leader: Option<single_flight::Leader>,
    ) -> bool {
        let Ok(permit) = self.slow_checks.clone().acquire_owned().await else { return false };
        let store = self.clone();
        let run = move || {
            let _permit = permit;
            store.full_checks.fetch_add(1, Ordering::Relaxed);
            let ok = store.verify_and_remember(&db, &name, &password, ttl);
            if let Some(leader) = leader {
                leader.finish(ok);
            }
            ok
        };
        tokio::task::spawn_blocking(run).await.unwrap_or(false)
    }

    /// Full checks run since start (argon2 or a foreign hash; unknown
    /// users' dummy hash included; cache hits and shared runs not).
    pub fn full_checks(&self) -> u64 {
        self.full_checks.load(Ordering::Relaxed)
    }

    /// Quick: did this password verify for this user within `ttl`?
    pub fn verified_recently(&self, db: &UserDb, name: &str, password: &str, ttl: std::time::Duration) -> bool {
        let name = name.to_ascii_lowercase();
        self.verified_tag(db, &name, password, ttl).is_some_and(|t| self.verified.hit(&t, ttl))
    }

    /// Checks a password like [`UserDb::verify`] and remembers a success
    /// for `ttl`. Blocking (argon2): the server calls it through
    /// [`UserStore::check_password`].
    pub fn verify_and_remember(&self, db: &UserDb, name: &str, password: &str, ttl: std::time::Duration) -> bool {
        let name = name.to_ascii_lowercase();
        let ok = db.verify(&name, password);
        if ok {
            if let Some(tag) = self.verified_tag(db, &name, password, ttl) {
                self.verified.insert(tag, ttl);
            }
        }
        ok
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current database (re-read if the file changed; a broken file
    /// keeps the last good copy and logs).
    pub fn get(&self) -> Arc<UserDb> {
        let meta = std::fs::metadata(&self.path);
        let missing = matches!(&meta, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        let mtime = meta.and_then(|m| m.modified()).ok();
        let mut g = match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // No file: the empty database, kept until the file appears (not
        // read again on every RCPT); an unreadable one is tried each time.
        if g.0 != mtime || (mtime.is_none() && !missing) {
            match UserDb::load(&self.path) {
                Ok(db) => *g = (mtime, Arc::new(db)),
                Err(e) => crate::maillog::error(&[("error", &e.to_string()), ("action", "keeping previous user database")]),
            }
        }
        g.1.clone()
    }
}
