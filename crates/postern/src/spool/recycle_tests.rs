//! Unit tests of recycled names (`names.rs`): a finished message's queue
//! file reused for a later message, removal, and start-up recovery.
//!
//! May touch: temporary directories. No RFCs.

use super::tests::{commit_one, env, pooled_spool, FILES_DIR};
use super::*;

/// Takes drafts from the pool (dropping the fresh ones) until one is a
/// recycled name; bounded.
fn recycled_draft(spool: &Spool) -> Draft {
    for _ in 0..2000 {
        let d = spool.draft().unwrap();
        if d.stale > 0 {
            return d;
        }
        drop(d);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("no recycled name was handed out");
}

/// The daemon keeps a finished message's queue file as a name for a later
/// one: the recycled name is not a message (not listed, not removable, not
/// loadable), and a shorter, a longer or a read-back message written into
/// it holds exactly its own octets.
#[test]
fn finished_messages_files_are_recycled_as_names() {
    let (dir, spool) = pooled_spool();
    let long = vec![b'x'; 10_000];
    for (i, next) in [b"short\r\n".to_vec(), vec![b'y'; 20_000], b"read back\r\n".to_vec()].into_iter().enumerate() {
        let old = commit_one(&spool, &long);
        let old_len = fs::metadata(spool.body_path(&old)).unwrap().len();
        spool.remove(&old).unwrap();
        assert!(!spool.body_path(&old).exists());
        assert_eq!(free_names(&spool), 1, "kept under a new name, marked free");
        assert_eq!(spool.pool.recycled(), 1);
        assert_eq!(spool.list().unwrap().envelopes.len(), i, "a recycled name is not a message");
        let mut d = recycled_draft(&spool);
        assert_eq!(d.stale, old_len);
        let id = d.id.clone();
        assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))));
        assert!(matches!(spool.remove(&id), Err(SpoolError::NotFound(_))));
        d.write(&next);
        if i == 2 {
            // A milter or DKIM reads the text back: only this message's.
            let mut back = Vec::new();
            io::Read::read_to_end(&mut d.reader().unwrap(), &mut back).unwrap();
            assert_eq!(back, next);
        }
        let mut e = env(&id);
        e.size = next.len() as u64;
        spool.commit(d, &e).unwrap();
        assert_eq!(spool.read_body(&id).unwrap(), next, "message {i}");
        assert_eq!(spool.load(&id).unwrap(), (e, Place::Active));
    }
    // Stopped: the recycled names go with the others; the messages stay.
    let last = commit_one(&spool, &long);
    spool.remove(&last).unwrap();
    spool.stop_name_pool();
    for _ in 0..500 {
        if !spool.pool.refilling() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(fs::read_dir(dir.path().join(FILES_DIR)).unwrap().count(), 3);
}

/// Queue files marked free (recycled names).
fn free_names(spool: &Spool) -> usize {
    let files = fs::read_dir(spool.root().join(FILES_DIR)).unwrap();
    files.filter(|f| fs::File::open(f.as_ref().unwrap().path()).is_ok_and(|f| queuefile::is_free(&f).unwrap())).count()
}

/// After a crash: a recycled name not used yet is removed (not set aside),
/// and so is one whose free mark never reached the disk (a complete file
/// whose envelope names another id); messages stay.
#[test]
fn recovery_removes_recycled_names() {
    let (dir, spool) = pooled_spool();
    let kept = commit_one(&spool, b"kept\r\n");
    let done = commit_one(&spool, b"delivered\r\n");
    // The free mark lost: the old file under a new name, trailer intact.
    let lost_mark = QueueId::generate();
    fs::copy(spool.body_path(&done), spool.body_path(&lost_mark)).unwrap();
    spool.remove(&done).unwrap();
    assert_eq!(spool.pool.recycled(), 1);
    // A finished message whose rename a crash undid but whose free mark
    // reached the disk, with an envelope file left: removed with it, not
    // set aside as a damaged acknowledged message.
    let undone = commit_one(&spool, b"delivered, with an envelope file\r\n");
    spool.update(&env(&undone), Place::Active).unwrap();
    let f = fs::OpenOptions::new().write(true).open(spool.body_path(&undone)).unwrap();
    queuefile::mark_free(&f, f.metadata().unwrap().len()).unwrap();
    // A crash: no clean stop of the pool.
    let fresh = Spool::open(dir.path()).unwrap();
    fresh.recover().unwrap();
    let left: Vec<_> = fs::read_dir(dir.path().join(FILES_DIR)).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from(kept.as_str())]);
    assert_eq!(fs::read_dir(dir.path().join(CORRUPT)).unwrap().count(), 0, "nothing set aside");
    assert_eq!(fs::read_dir(dir.path().join("active")).unwrap().count(), 0, "the envelope file went with it");
    assert_eq!(fresh.read_body(&kept).unwrap(), b"kept\r\n");
}

/// A recycled name never replaces an existing file (ids can collide).
#[test]
fn recycling_never_renames_over_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::write(&a, b"a").unwrap();
    fs::write(&b, b"b").unwrap();
    let e = names::rename_noreplace(&a, &b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!((fs::read(&a).unwrap(), fs::read(&b).unwrap()), (b"a".to_vec(), b"b".to_vec()));
    let c = dir.path().join("c");
    names::rename_noreplace(&a, &c).unwrap();
    assert!(!a.exists() && fs::read(&c).unwrap() == b"a");
}

/// Only a whole `#FREE` trailer (fields, lengths adding up) marks a
/// recycled name: a damaged message whose octets there happen to read
/// `#FREE` is not one.
#[test]
fn only_a_whole_free_trailer_is_a_recycled_name() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = commit_one(&spool, b"text\r\n");
    let path = spool.body_path(&id);
    let f = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    assert!(!queuefile::is_free(&f).unwrap());
    queuefile::mark_free(&f, len).unwrap();
    assert!(queuefile::is_free(&f).unwrap());
    // The magic alone, lengths not adding up: not a recycled name.
    std::os::unix::fs::FileExt::write_all_at(&f, b"ZZ", len - 10).unwrap();
    assert!(!queuefile::is_free(&f).unwrap());
    f.set_len(len + 1).unwrap();
    assert!(!queuefile::is_free(&f).unwrap());
}

/// `remove` recycles only what is safe to reuse, and otherwise removes as
/// before: a damaged acknowledged message (`postern queue delete`) and a
/// file with a second hard link are unlinked, never recycled; a file
/// being written is not a message.
#[test]
fn remove_recycles_only_what_is_safe() {
    let (dir, spool) = pooled_spool();
    // Damaged, acknowledged (an envelope file): deleted by the operator.
    let damaged = commit_one(&spool, b"damaged\r\n");
    spool.update(&env(&damaged), Place::Active).unwrap();
    let path = spool.body_path(&damaged);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
    spool.remove(&damaged).unwrap();
    assert!(!path.exists() && !spool.env_path(&damaged, Place::Active).exists());
    // A second hard link (a backup made with `cp -al`): unlinked, the link keeps its text.
    let linked = commit_one(&spool, b"linked\r\n");
    let backup = dir.path().join("backup");
    fs::hard_link(spool.body_path(&linked), &backup).unwrap();
    let before = fs::read(&backup).unwrap();
    spool.remove(&linked).unwrap();
    assert_eq!(fs::read(&backup).unwrap(), before);
    assert_eq!(spool.pool.recycled(), 0);
    // Being written (no trailer, no envelope file): not a message.
    let mut d = spool.draft().unwrap();
    d.write(b"half a message");
    d.out.as_mut().unwrap().flush().unwrap();
    assert!(matches!(spool.remove(&d.id), Err(SpoolError::NotFound(_))));
    assert!(spool.body_path(&d.id).exists());
}

/// A complete file whose embedded envelope names another id is removed at
/// start-up even under an envelope file of its own id (a commit that
/// writes its hold/ envelope first, cut short by a crash, in a recycled
/// name whose free mark was lost): another message's text is never this one's.
#[test]
fn recovery_removes_another_ids_text_under_an_envelope_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let done = commit_one(&spool, b"an older message\r\n");
    let y = QueueId::generate();
    fs::copy(spool.body_path(&done), spool.body_path(&y)).unwrap();
    fs::write(spool.env_path(&y, Place::Hold), envelope_bytes(&env(&y)).unwrap()).unwrap();
    spool.recover().unwrap();
    assert!(!spool.body_path(&y).exists() && !spool.env_path(&y, Place::Hold).exists());
    assert_eq!(fs::read_dir(dir.path().join(CORRUPT)).unwrap().count(), 0);
    assert_eq!(spool.read_body(&done).unwrap(), b"an older message\r\n");
}
