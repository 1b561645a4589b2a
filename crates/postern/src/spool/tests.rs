//! Spool unit tests: commit, update, hold, remove, recovery, group commit.
//!
//! May touch: temporary directories. No RFCs.

use super::*;
use crate::time::now_unix;

pub(super) const FILES_DIR: &str = FILES;

pub(super) fn env(id: &QueueId) -> Envelope {
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
    for d in ["", "tmp", "messages", FILES_DIR, "active", "hold", CORRUPT] {
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

/// Waits (bounded) until the name pool has made its first batch.
pub(super) fn wait_for_pool(spool: &Spool) {
    for _ in 0..500 {
        if spool.pool.len() >= names::POOL_SIZE / 2 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the name pool made no names");
}

/// A spool in a temporary directory with its name pool running (as the daemon's).
pub(super) fn pooled_spool() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    spool.start_name_pool();
    wait_for_pool(&spool);
    (dir, spool)
}

pub(super) fn commit_one(spool: &Spool, text: &[u8]) -> QueueId {
    let mut d = spool.draft().unwrap();
    d.write(text);
    let id = d.id.clone();
    let mut e = env(&id);
    e.size = text.len() as u64;
    spool.commit(d, &e).unwrap();
    id
}

/// With the pool, a commit is the queue file's own fdatasync: no directory
/// fsync (the group is never asked), one file per message, and the names
/// made ahead are neither listed nor kept by recovery.
#[test]
fn pooled_names_commit_with_one_flush_and_are_not_messages() {
    let (dir, spool) = pooled_spool();
    let ids: Vec<_> = (0..10).map(|i| commit_one(&spool, format!("text {i}\r\n").as_bytes())).collect();
    assert_eq!(spool.group.state.lock().unwrap().requested, 0, "a directory fsync was asked for");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(spool.read_body(id).unwrap(), format!("text {i}\r\n").as_bytes());
        assert_eq!(spool.load(id).unwrap().1, Place::Active);
    }
    // Ids taken from the pool keep arrival order.
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
    let listed: Vec<_> = spool.list().unwrap().envelopes.into_iter().map(|(e, _)| e.id).collect();
    assert_eq!(listed, ids);
    for d in ["active", "hold", "tmp"] {
        assert_eq!(fs::read_dir(dir.path().join(d)).unwrap().count(), 0, "{d}/");
    }
    let in_messages = fs::read_dir(dir.path().join(FILES_DIR)).unwrap().count();
    assert!(in_messages > ids.len(), "the pool's names are files in files/");
    let fresh = Spool::open(dir.path()).unwrap();
    assert_eq!(fresh.recover().unwrap(), in_messages - ids.len());
    assert_eq!(fs::read_dir(dir.path().join(FILES_DIR)).unwrap().count(), ids.len());
    assert_eq!(fresh.list().unwrap().envelopes.len(), ids.len());
    // A clean stop removes the unused names.
    fresh.start_name_pool();
    wait_for_pool(&fresh);
    fresh.stop_name_pool();
    assert_eq!(fs::read_dir(dir.path().join(FILES_DIR)).unwrap().count(), ids.len());
}

/// A queue file cut short anywhere (a crash before the fdatasync finished)
/// is not a message: never listed, removed at start-up. One whose trailer
/// survived but whose text did not is reported corrupt, never delivered.
#[test]
fn torn_queue_files_are_never_messages() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = commit_one(&spool, b"Subject: t\r\n\r\nbody\r\n");
    let path = spool.body_path(&id);
    let full = fs::read(&path).unwrap();
    for cut in 0..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))), "cut at {cut}");
        assert!(spool.list().unwrap().envelopes.is_empty(), "cut at {cut}");
    }
    assert_eq!(spool.recover().unwrap(), 1);
    assert!(!path.exists());
    assert!(dir.path().join(CORRUPT).join(id.as_str()).exists(), "a file cut short is set aside, not deleted");
    // Trailer intact, text damaged (zeroed blocks): corrupt, not delivered.
    let mut torn = full.clone();
    torn[3] = 0;
    fs::write(&path, &torn).unwrap();
    assert!(matches!(spool.read_body(&id), Err(SpoolError::Damaged { .. })));
    // Envelope damaged: the listing reports it and leaves it alone.
    let mut torn = full.clone();
    let at = full.len() - queuefile::TRAILER_LEN - 5;
    torn[at] ^= 1;
    fs::write(&path, &torn).unwrap();
    let l = spool.list().unwrap();
    assert!(l.envelopes.is_empty() && l.corrupt.len() == 1, "{l:?}");
    assert_eq!(spool.recover().unwrap(), 0);
    assert!(path.exists(), "a complete but corrupt file is kept for the operator");
}

/// Messages queued before format 2 (messages/<ID>.eml + active/<ID>.json)
/// are still listed, read, updated, held and removed.
#[test]
fn old_format_messages_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = QueueId::generate();
    let mut e = env(&id);
    fs::write(dir.path().join(format!("messages/{id}.eml")), b"hello").unwrap();
    fs::write(spool.env_path(&id, Place::Active), envelope_bytes(&e).unwrap()).unwrap();
    assert_eq!(spool.recover().unwrap(), 0);
    assert_eq!(spool.list().unwrap().envelopes, vec![(e.clone(), Place::Active)]);
    assert_eq!(spool.read_body(&id).unwrap(), b"hello");
    e.recipients[0].attempts = 3;
    spool.update(&e, Place::Active).unwrap();
    assert!(spool.move_to(&id, Place::Hold).unwrap());
    assert_eq!(spool.load(&id).unwrap(), (e.clone(), Place::Hold));
    spool.remove(&id).unwrap();
    assert!(fs::read_dir(dir.path().join("messages")).unwrap().next().is_none());
    assert!(fs::read_dir(dir.path().join("hold")).unwrap().next().is_none());
}

/// A quarantined message is held by its envelope alone; released, it gets
/// an envelope file without the reason; an envelope whose queue file a
/// crash removed is not a message and goes at start-up.
#[test]
fn quarantine_release_and_orphan_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut d = spool.draft().unwrap();
    d.write(b"x");
    let id = d.id.clone();
    let mut e = env(&id);
    e.quarantine = Some("milter said so".into());
    spool.commit_to(d, &e, Place::Hold).unwrap();
    assert_eq!(spool.load(&id).unwrap().1, Place::Hold);
    assert!(matches!(spool.update(&e, Place::Active), Err(SpoolError::NotFound(_))));
    assert!(spool.move_to(&id, Place::Active).unwrap());
    let (released, place) = spool.load(&id).unwrap();
    assert_eq!((released.quarantine, place), (None, Place::Active));
    assert!(spool.move_to(&id, Place::Hold).unwrap());
    assert_eq!(spool.load(&id).unwrap().1, Place::Hold);
    // A removal cut short: the queue file went, the envelope stayed.
    fs::remove_file(spool.body_path(&id)).unwrap();
    assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))));
    assert!(spool.list().unwrap().envelopes.is_empty());
    assert_eq!(spool.recover().unwrap(), 1);
    assert!(fs::read_dir(dir.path().join("hold")).unwrap().next().is_none());
}

/// A name removed while the message was written (a clean-up script that
/// deletes empty files) fails the commit instead of acknowledging a file
/// with no name; removing a name made ahead is refused.
#[test]
fn a_removed_name_fails_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut d = spool.draft().unwrap();
    assert!(matches!(spool.remove(&d.id), Err(SpoolError::NotFound(_))), "an empty name is not a message");
    d.write(b"x");
    fs::remove_file(spool.body_path(&d.id)).unwrap();
    let e = env(&d.id);
    assert!(spool.commit(d, &e).is_err());
    assert!(spool.list().unwrap().envelopes.is_empty());
}

/// A flush that failed fails every writer that began before it, even one
/// a later, good flush covered (the kernel reports the error only once).
#[test]
fn a_failed_flush_fails_every_writer_that_began_before_it() {
    let g = GroupSync::default();
    let gen = g.generation();
    assert!(g.sync(gen, &|| Err(SpoolError::NotFound(QueueId::generate()))).is_err());
    assert!(g.sync(gen, &|| Ok(())).is_err());
    assert!(g.sync(g.generation(), &|| Ok(())).is_ok());
}

/// `load_active_with_text` (one read of the queue file, the delivery path)
/// agrees with `load` + `read_body` in every state a message can be in:
/// held messages are `None`, a damaged text is `Damaged` (set aside), a
/// damaged embedded envelope `Corrupt` (left in place), and a queue file
/// cut short is not a message unless an envelope file says it was one.
#[test]
fn load_active_with_text_agrees_with_load_and_read_body() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let active = |id: &QueueId| {
        let (env, text) = spool.load_active_with_text(id).unwrap().expect("active");
        assert_eq!((env, Place::Active), spool.load(id).unwrap());
        assert_eq!(text, spool.read_body(id).unwrap());
    };
    let held = |id: &QueueId| {
        assert!(spool.load_active_with_text(id).unwrap().is_none());
        assert_eq!(spool.load(id).unwrap().1, Place::Hold);
    };
    // As accepted (embedded envelope), updated (active/), held (hold/).
    let id = commit_one(&spool, b"Subject: a\r\n\r\nbody\r\n");
    active(&id);
    let mut e = spool.load(&id).unwrap().0;
    e.recipients[0].attempts = 2;
    spool.update(&e, Place::Active).unwrap();
    active(&id);
    assert_eq!(spool.load_active_with_text(&id).unwrap().unwrap().0.recipients[0].attempts, 2);
    spool.move_to(&id, Place::Hold).unwrap();
    held(&id);
    // Quarantined on arrival: held by its embedded envelope.
    let mut d = spool.draft().unwrap();
    d.write(b"q");
    let qid = d.id.clone();
    let mut qe = env(&qid);
    qe.quarantine = Some("milter".into());
    spool.commit_to(d, &qe, Place::Hold).unwrap();
    held(&qid);
    // Queued before format 2.
    let old = QueueId::generate();
    fs::write(dir.path().join(format!("messages/{old}.eml")), b"old text").unwrap();
    fs::write(spool.env_path(&old, Place::Active), envelope_bytes(&env(&old)).unwrap()).unwrap();
    active(&old);
    // Not messages: unknown, an empty name, a file cut short, an envelope
    // whose queue file is gone.
    let not_found = |id: &QueueId| assert!(matches!(spool.load_active_with_text(id), Err(SpoolError::NotFound(_))));
    let gone = QueueId::generate();
    not_found(&gone);
    fs::write(spool.body_path(&gone), b"").unwrap();
    not_found(&gone);
    let cut = commit_one(&spool, b"Subject: c\r\n\r\nbody\r\n");
    let full = fs::read(spool.body_path(&cut)).unwrap();
    fs::write(spool.body_path(&cut), &full[..full.len() - 1]).unwrap();
    not_found(&cut);
    fs::remove_file(spool.body_path(&qid)).unwrap();
    not_found(&qid);
    // Damaged text: Damaged; damaged embedded envelope: Corrupt; both at the queue file.
    for (at, text) in [(3, true), (full.len() - queuefile::TRAILER_LEN - 5, false)] {
        let mut torn = full.clone();
        torn[at] ^= 1;
        fs::write(spool.body_path(&cut), &torn).unwrap();
        match (spool.load_active_with_text(&cut), text) {
            (Err(SpoolError::Damaged { path, .. }), true) | (Err(SpoolError::Corrupt { path, .. }), false) => {
                assert_eq!(path, spool.body_path(&cut), "octet {at}")
            }
            (other, _) => panic!("octet {at}: {other:?}"),
        }
    }
    // An acknowledged message with an envelope file, its queue file cut
    // short after the 250: Damaged, not silently dropped.
    let acked = commit_one(&spool, b"Subject: d\r\n\r\nbody\r\n");
    let mut e = spool.load(&acked).unwrap().0;
    e.recipients[0].attempts = 1;
    spool.update(&e, Place::Active).unwrap();
    let full = fs::read(spool.body_path(&acked)).unwrap();
    fs::write(spool.body_path(&acked), &full[..10]).unwrap();
    assert!(matches!(spool.load_active_with_text(&acked), Err(SpoolError::Damaged { .. })));
    assert!(matches!(spool.read_body(&acked), Err(SpoolError::Damaged { .. })));
}

/// Start-up recovery: a queue file without its trailer under an envelope
/// file (so acknowledged, then damaged) is set aside with its envelope,
/// not deleted with it; without an envelope file an empty one is a name
/// made ahead (removed) and a non-empty one is set aside alone.
#[test]
fn recovery_keeps_the_envelope_of_a_damaged_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut acked = Vec::new();
    for cut in [0usize, 10] {
        let id = commit_one(&spool, b"Subject: r\r\n\r\nbody\r\n");
        let mut e = spool.load(&id).unwrap().0;
        e.recipients[0].attempts = 1;
        spool.update(&e, Place::Active).unwrap();
        let full = fs::read(spool.body_path(&id)).unwrap();
        fs::write(spool.body_path(&id), &full[..cut]).unwrap();
        acked.push(id);
    }
    let name = QueueId::generate();
    fs::write(spool.body_path(&name), b"").unwrap();
    spool.recover().unwrap();
    let corrupt = dir.path().join(CORRUPT);
    for id in &acked {
        assert!(corrupt.join(id.as_str()).exists(), "{id}: queue file set aside");
        assert!(corrupt.join(format!("{id}.json")).exists(), "{id}: envelope kept beside it");
        assert!(!spool.env_path(id, Place::Active).exists());
    }
    assert!(!spool.body_path(&name).exists(), "an unused name is removed");
    assert!(!corrupt.join(name.as_str()).exists());
}

/// `Draft::replace` (DKIM signing, the verification header) writes the new
/// text into the same file: exactly the new octets whether longer or
/// shorter, and the commit needs no directory fsync (one flush per
/// message), unlike a rewrite's new name.
#[test]
fn replacing_the_text_keeps_the_name_and_one_flush() {
    let (_dir, spool) = pooled_spool();
    for (first, parts) in [
        (&b"Subject: a\r\n\r\nbody\r\n"[..], vec![&b"DKIM-Signature: v=1\r\n"[..], &b"Subject: a\r\n\r\nbody\r\n"[..]]),
        (&b"Subject: a long one\r\n\r\nbody body body body\r\n"[..], vec![&b"Subject: b\r\n\r\nb\r\n"[..]]),
    ] {
        let mut d = spool.draft().unwrap();
        d.write(first);
        let mut back = Vec::new();
        io::Read::read_to_end(&mut d.reader().unwrap(), &mut back).unwrap();
        assert_eq!(back, first);
        d.replace(&parts).unwrap();
        let id = d.id.clone();
        let path = d.path.clone();
        let mut e = env(&id);
        e.size = d.written();
        spool.commit(d, &e).unwrap();
        assert_eq!(spool.read_body(&id).unwrap(), parts.concat());
        assert!(path.exists());
    }
    assert_eq!(spool.group.state.lock().unwrap().requested, 0, "a directory fsync was asked for");
}
