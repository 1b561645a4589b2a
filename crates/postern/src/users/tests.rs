//! Unit tests of the user database and the verified-password cache.

use super::*;

/// What the session does: the cache, else the full check.
struct CachedStore(UserStore);

impl CachedStore {
    fn verify_cached(&self, db: &UserDb, name: &str, password: &str, ttl: std::time::Duration) -> bool {
        self.0.verified_recently(db, name, password, ttl) || self.0.verify_and_remember(db, name, password, ttl)
    }
}

#[test]
fn verified_cache_follows_password_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = CachedStore(UserStore::new(dir.path()));
    let ttl = std::time::Duration::from_secs(60);
    let mut db = UserDb { version: 1, users: BTreeMap::new() };
    db.set_password("bob", "first", false).unwrap();
    assert!(!store.verify_cached(&db, "bob", "wrong", ttl));
    assert!(store.verify_cached(&db, "Bob", "first", ttl));
    assert_eq!(store.0.verified.tags.lock().unwrap().len(), 1, "only the success is cached");
    assert!(store.verify_cached(&db, "bob", "first", ttl));
    // A new password: the old one no longer verifies, cached or not.
    db.set_password("bob", "second", false).unwrap();
    assert!(!store.verify_cached(&db, "bob", "first", ttl));
    assert!(store.verify_cached(&db, "bob", "second", ttl));
    // Deleted user, zero TTL.
    let mut gone = db.clone();
    gone.users.remove("bob");
    assert!(!store.verify_cached(&gone, "bob", "second", ttl));
    assert!(store.verify_cached(&db, "bob", "second", std::time::Duration::ZERO));
    assert!(!store.verify_cached(&db, "bob", "first", std::time::Duration::ZERO));
}

#[test]
fn set_verify_scram_plain() {
    let mut db = UserDb { version: 1, users: BTreeMap::new() };
    db.set_password("Alice", "pa ss:wörd", false).unwrap();
    assert!(db.verify("alice", "pa ss:wörd"));
    assert!(!db.verify("alice", "pa ss:word"));
    assert!(!db.verify("nobody", "x"));
    assert!(db.scram("alice", ScramHash::Sha256).is_some());
    assert_eq!(db.plain("alice"), None);
    db.set_password("alice", "x", true).unwrap();
    assert_eq!(db.plain("alice").as_deref(), Some("x"));
    assert_eq!(db.drop_plain(), 1);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("users.json");
    db.save(&p).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(UserDb::load(&p).unwrap(), db);
}

#[test]
fn foreign_hashes() {
    let bc = bcrypt::hash("secret", 4).unwrap();
    assert!(verify_hash(&bc, "secret") && !verify_hash(&bc, "other"));
    let params = sha_crypt::Sha512Params::new(5000).unwrap();
    let s6 = sha_crypt::sha512_simple("secret", &params).unwrap();
    assert!(verify_hash(&s6, "secret") && !verify_hash(&s6, "nope"));
    let a2 = argon2_hash("secret").unwrap();
    assert!(verify_hash(&a2, "secret"));
    assert!(!verify_hash("{PLAIN}secret", "secret"));
}

#[test]
fn passwd_file_import() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("passwd");
    let bc = bcrypt::hash("b-pass", 4).unwrap();
    std::fs::write(&p, format!("bob:{{BLF-CRYPT}}{bc}::::\ncarl:{{PLAIN}}x\n# comment\ndan:{bc}\n")).unwrap();
    let mut db = UserDb { version: 1, users: BTreeMap::new() };
    let (ok, skipped) = db.import_passwd_file(&p).unwrap();
    assert_eq!(ok, vec!["bob", "dan"]);
    assert_eq!(skipped.len(), 1);
    assert!(db.verify("bob", "b-pass"));
}

/// `get` follows the file: none (the empty database, not read again on
/// every call), created, changed, removed.
#[test]
fn get_follows_the_file_appearing_and_going() {
    let dir = tempfile::tempdir().unwrap();
    let store = UserStore::new(dir.path());
    assert!(store.get().users.is_empty());
    assert!(store.get().users.is_empty());
    let mut db = UserDb { version: 1, users: BTreeMap::new() };
    db.set_password("alice", "pw", false).unwrap();
    db.save(store.path()).unwrap();
    assert!(store.get().users.contains_key("alice"));
    // A later mtime, as a second save would have.
    db.set_password("bob", "pw", false).unwrap();
    db.save(store.path()).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(store.path()).unwrap().set_modified(later).unwrap();
    assert!(store.get().users.contains_key("bob"));
    std::fs::remove_file(store.path()).unwrap();
    assert!(store.get().users.is_empty());
}
