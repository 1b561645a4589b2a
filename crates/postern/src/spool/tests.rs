//! Spool unit tests: commit, update, hold, remove, recovery, group commit.
//!
//! May touch: temporary directories. No RFCs.

use super::*;
use crate::time::now_unix;

fn env(id: &QueueId) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        id: id.clone(),
        created: now_unix(),
        sender: "a@b.example".into(),
        recipients: vec![Recipient::pending("c@d.example", "c@d.example")],
        size: 5,
        eight_bit: false,
        smtputf8: false,
        client: "local".into(),
        helo: None,
        ret: None,
        envid: None,
        quarantine: None,
        requiretls: false,
    }
}

#[test]
fn commit_load_update_hold_remove() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut d = spool.draft().unwrap();
    d.write(b"hello");
    let id = d.id.clone();
    let mut e = env(&id);
    spool.commit(d, &e).unwrap();
    assert_eq!(spool.read_body(&id).unwrap(), b"hello");
    assert_eq!(spool.load(&id).unwrap(), (e.clone(), Place::Active));
    assert!(fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());

    e.recipients[0].attempts = 1;
    spool.update(&e, Place::Active).unwrap();
    assert_eq!(spool.load(&id).unwrap().0.recipients[0].attempts, 1);

    assert!(spool.move_to(&id, Place::Hold).unwrap());
    assert!(matches!(spool.update(&e, Place::Active), Err(SpoolError::NotFound(_))));
    assert_eq!(spool.load(&id).unwrap().1, Place::Hold);
    assert_eq!(spool.list().unwrap().envelopes.len(), 1);
    spool.remove(&id).unwrap();
    assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))));
    assert!(!spool.body_path(&id).exists());
}

#[test]
fn dropped_draft_leaves_nothing_and_recover_cleans() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut d = spool.draft().unwrap();
    d.write(b"partial");
    drop(d);
    assert!(fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());
    fs::write(dir.path().join("tmp/junk.eml"), b"x").unwrap();
    fs::write(dir.path().join("messages/0000000000000000.eml"), b"orphan").unwrap();
    assert_eq!(spool.recover().unwrap(), 2);
}

#[test]
fn group_commit_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let mut d = spool.draft().unwrap();
                    d.write(b"x");
                    let e = env(&d.id);
                    spool.commit(d, &e).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(spool.list().unwrap().envelopes.len(), 160);
    let st = spool.group.state.lock().unwrap();
    assert_eq!((st.requested, st.completed), (160, 160));
}

#[test]
fn ids_are_unique_and_parse() {
    let a = QueueId::generate();
    let b = QueueId::generate();
    assert_ne!(a, b);
    assert_eq!(QueueId::parse(&a.as_str().to_lowercase()), Some(a));
    assert_eq!(QueueId::parse("../../etc/passwd"), None);
}

/// Runs `f` with a permissive umask (000), restoring the old one after.
pub(crate) fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(mask));
    let out = f();
    umask(old);
    out
}

#[test]
fn spool_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("queue");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (spool, id) = with_umask(0, || {
        let spool = Spool::open(&root).unwrap();
        let mut d = spool.draft().unwrap();
        assert_eq!(mode(&d.path), 0o600, "draft");
        d.write(b"Subject: x\r\n\r\nhi\r\n");
        d.rewrite(|w| w.write_all(b"Subject: y\r\n\r\nhi\r\n")).unwrap();
        assert_eq!(mode(&d.path), 0o600, "rewritten draft");
        let id = d.id.clone();
        let e = env(&id);
        spool.commit(d, &e).unwrap();
        spool.update(&e, Place::Active).unwrap();
        (spool, id)
    });
    for d in ["", "tmp", "messages", "active", "hold"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}/");
    }
    assert_eq!(mode(&spool.env_path(&id, Place::Active)), 0o600, "envelope");
    assert_eq!(mode(&spool.body_path(&id)), 0o600, "message");
    // A spool made earlier under a wide umask is narrowed when opened.
    fs::set_permissions(root.join("active"), fs::Permissions::from_mode(0o755)).unwrap();
    Spool::open(&root).unwrap();
    assert_eq!(mode(&root.join("active")), 0o700);
}

#[test]
fn failed_update_leaves_no_temp_file() {
    // On a full disk every retry's envelope update fails; each used to leave
    // a `tmp/<id>.json.<n>` behind until the next start (bench/soak
    // --full-disk). A directory in the envelope's place makes the rename fail.
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = QueueId::generate();
    let path = spool.env_path(&id, Place::Active);
    fs::create_dir(&path).unwrap();
    fs::write(path.join("x"), b"x").unwrap();
    assert!(spool.update(&env(&id), Place::Active).is_err());
    let left: Vec<_> = fs::read_dir(dir.path().join("tmp")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}
