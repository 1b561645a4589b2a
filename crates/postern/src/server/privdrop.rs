//! Dropping root after the listeners are bound: hand the data directory to
//! the configured `user`, then setgroups/setgid/setuid.
//!
//! May touch: process credentials; ownership of files under the data
//! directory (never through a symbolic link). No RFCs.

use std::path::Path;

use nix::unistd::{setgid, setgroups, setuid, Gid, Uid, User};

use crate::maillog;
use crate::settings::Settings;

/// Why the daemon could not become the configured user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user database lookup failed.
    #[error("user {name:?}: {source}")]
    Lookup {
        /// The configured `user`.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// No such user.
    #[error("key `user`: no such user {0:?}")]
    NoSuchUser(String),
    /// A credential change failed.
    #[error("{call}: {source}")]
    Switch {
        /// "setgroups", "setgid" or "setuid".
        call: &'static str,
        /// Why.
        source: nix::Error,
    },
}

/// Switches to `user` when running as root (after binding).
pub(super) fn drop_privileges(settings: &Settings) -> Result<(), PrivilegeError> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let Some(name) = &settings.config.user else {
        maillog::start(&[("warning", "running as root; set `user` in the config to drop privileges")]);
        return Ok(());
    };
    let user = User::from_name(name)
        .map_err(|source| PrivilegeError::Lookup { name: name.clone(), source })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(name.clone()))?;
    // The data directory must belong to the user we become.
    chown_tree(&settings.data_dir, &settings.maildir_root, user.uid, user.gid);
    setgroups(&[user.gid]).map_err(|source| PrivilegeError::Switch { call: "setgroups", source })?;
    setgid(user.gid).map_err(|source| PrivilegeError::Switch { call: "setgid", source })?;
    setuid(user.uid).map_err(|source| PrivilegeError::Switch { call: "setuid", source })?;
    maillog::start(&[("user", name), ("uid", &user.uid.to_string())]);
    Ok(())
}

/// Gives what postern made under the data directory `root` to `uid:gid`,
/// best effort. `root` itself is the configured data directory and may be
/// a symbolic link to it. Below it, only directories and regular files are
/// changed (`lchown`, i.e. `fchownat(AT_SYMLINK_NOFOLLOW)`, so a file
/// swapped for a link meanwhile is not followed either); symbolic links,
/// FIFOs, sockets and devices are left alone and never followed (review
/// F7). Inside the Maildir root (`maildirs`, when it lies under `root`)
/// only the directories postern makes are changed (the root, each mailbox
/// and its `tmp`, `new`, `cur`), never messages or folders someone else made.
/// In `DATA/maildrop`, files keep their owner (the submitter) and only get
/// the group.
pub(super) fn chown_tree(root: &Path, maildirs: &Path, uid: Uid, gid: Gid) {
    let _ = std::os::unix::fs::chown(root, Some(uid.as_raw()), Some(gid.as_raw()));
    // Compare real paths, so `maildirs` is recognised however it is spelled.
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let maildirs = maildirs.canonicalize().unwrap_or_else(|_| maildirs.to_path_buf());
    if root.is_dir() {
        chown_below(&root, &maildirs, uid, gid);
    }
}

/// What the chown walk does with one entry.
#[derive(Debug, PartialEq, Eq)]
enum Visit {
    /// Change it and descend (a directory of ours).
    Descend,
    /// Change it only.
    Change,
    /// Leave it alone.
    Skip,
}

/// The decision for an entry of type `t`, `depth` levels below the Maildir
/// root (`None` outside it): pure, table-tested.
fn visit(t: std::fs::FileType, maildir_depth: Option<usize>) -> Visit {
    match maildir_depth {
        _ if !(t.is_dir() || t.is_file()) => Visit::Skip,
        None if t.is_dir() => Visit::Descend,
        None => Visit::Change,
        // The root's children: mailboxes.
        Some(0) if t.is_dir() => Visit::Descend,
        // A mailbox's tmp/new/cur: the caller checks the name.
        Some(1) if t.is_dir() => Visit::Change,
        Some(_) => Visit::Skip,
    }
}

fn chown_below(dir: &Path, maildirs: &Path, uid: Uid, gid: Gid) {
    let depth = if dir == maildirs { Some(0) } else { None };
    chown_walk(dir, dir, maildirs, depth, uid, gid);
}

fn chown_walk(root: &Path, dir: &Path, maildirs: &Path, depth: Option<usize>, uid: Uid, gid: Gid) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        // `DirEntry::file_type` does not follow links.
        let Ok(t) = e.file_type() else { continue };
        let mut action = visit(t, depth);
        if depth == Some(1) && !matches!(e.file_name().to_str(), Some("tmp" | "new" | "cur")) {
            action = Visit::Skip;
        }
        // Drop files belong to their submitters: the owner is the identity
        // the pickup trusts (the maildrop directory itself is ours).
        if depth.is_none() && t.is_dir() && p == crate::maildrop::dir(root) {
            let _ = std::os::unix::fs::lchown(&p, Some(uid.as_raw()), Some(gid.as_raw()));
            // Files dropped before the daemon first ran: its group, so it can read them.
            for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if f.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::os::unix::fs::lchown(f.path(), None, Some(gid.as_raw()));
                }
            }
            continue;
        }
        if action == Visit::Skip {
            continue;
        }
        let _ = std::os::unix::fs::lchown(&p, Some(uid.as_raw()), Some(gid.as_raw()));
        if action == Visit::Descend {
            let next = match depth {
                Some(n) => Some(n + 1),
                None if p == maildirs => Some(0),
                None => None,
            };
            chown_walk(root, &p, maildirs, next, uid, gid);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn chown_tree_does_not_follow_symlinks() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::fs::create_dir_all(data.path().join("queue/active")).unwrap();
        std::fs::write(data.path().join("queue/active/a.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), data.path().join("link-to-file")).unwrap();
        std::os::unix::fs::symlink(outside.path(), data.path().join("link-to-dir")).unwrap();
        let (uid, gid) = (Uid::current(), Gid::current());
        // As an unprivileged user we can only chown to ourselves, so watch
        // ctime: a chown, even a no-op one, updates it on the target.
        let ctime = |p: &Path| std::fs::metadata(p).unwrap().ctime_nsec() + std::fs::metadata(p).unwrap().ctime() * 1_000_000_000;
        let before_file = ctime(&outside.path().join("secret"));
        let before_dir = ctime(outside.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        chown_tree(data.path(), &data.path().join("mail"), uid, gid);
        assert_eq!(ctime(&outside.path().join("secret")), before_file, "a symlinked file was chowned through the link");
        assert_eq!(ctime(outside.path()), before_dir, "a symlinked directory was chowned through the link");
        let inner = std::fs::metadata(data.path().join("queue/active/a.json")).unwrap();
        assert_eq!(inner.uid(), uid.as_raw());
    }

    #[test]
    fn chown_tree_touches_only_what_postern_made() {
        use std::os::unix::fs::FileTypeExt;
        let data = tempfile::tempdir().unwrap();
        let d = data.path();
        for dir in ["queue/active", "mail/alice/new", "mail/alice/cur", "mail/alice/tmp", "mail/alice/.Archive/cur"] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
        }
        std::fs::create_dir_all(d.join("maildrop")).unwrap();
        for f in ["queue/active/a.json", "users.json", "mail/alice/new/1.msg", "mail/alice/dovecot.index", "mail/stray", "maildrop/0123"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        nix::unistd::mkfifo(&d.join("queue/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(std::fs::symlink_metadata(d.join("queue/fifo")).unwrap().file_type().is_fifo());
        let ctime = |p: &str| {
            let m = std::fs::symlink_metadata(d.join(p)).unwrap();
            m.ctime() * 1_000_000_000 + m.ctime_nsec()
        };
        let all = [
            "queue",
            "queue/active",
            "queue/active/a.json",
            "users.json",
            "mail",
            "mail/alice",
            "mail/alice/new",
            "mail/alice/cur",
            "mail/alice/tmp",
            "mail/alice/new/1.msg",
            "mail/alice/dovecot.index",
            "mail/alice/.Archive",
            "mail/alice/.Archive/cur",
            "mail/stray",
            "queue/fifo",
            "maildrop",
            "maildrop/0123",
        ];
        let before: Vec<i64> = all.iter().map(|p| ctime(p)).collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        chown_tree(d, &d.join("mail"), Uid::current(), Gid::current());
        let changed: Vec<&str> = all.iter().zip(before).filter(|(p, t)| ctime(p) != *t).map(|(p, _)| *p).collect();
        assert_eq!(
            changed,
            [
                "queue",
                "queue/active",
                "queue/active/a.json",
                "users.json",
                "mail",
                "mail/alice",
                "mail/alice/new",
                "mail/alice/cur",
                "mail/alice/tmp",
                "maildrop",
                "maildrop/0123"
            ]
        );
    }

    /// A drop file gets the daemon's group but keeps its owner: the owner
    /// is the submitter the pickup trusts.
    #[test]
    fn drop_files_keep_their_owner() {
        use std::os::unix::fs::MetadataExt;
        let data = tempfile::tempdir().unwrap();
        let d = data.path();
        std::fs::create_dir_all(d.join("maildrop")).unwrap();
        let f = d.join("maildrop/0123");
        std::fs::write(&f, b"x").unwrap();
        let owner = if Uid::effective().is_root() { 33 } else { Uid::current().as_raw() };
        std::os::unix::fs::lchown(&f, Some(owner), None).unwrap();
        chown_tree(d, &d.join("mail"), Uid::current(), Gid::current());
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (owner, Gid::current().as_raw()));
    }
}
