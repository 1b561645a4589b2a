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
    chown_tree(&settings.data_dir, user.uid, user.gid);
    setgroups(&[user.gid]).map_err(|source| PrivilegeError::Switch { call: "setgroups", source })?;
    setgid(user.gid).map_err(|source| PrivilegeError::Switch { call: "setgid", source })?;
    setuid(user.uid).map_err(|source| PrivilegeError::Switch { call: "setuid", source })?;
    maillog::start(&[("user", name), ("uid", &user.uid.to_string())]);
    Ok(())
}

/// Gives `root` and everything below it to `uid:gid`, best effort. `root`
/// itself is the configured data directory and may be a symbolic link to
/// it; below it, symbolic links are changed themselves (`lchown`, i.e.
/// `fchownat(AT_SYMLINK_NOFOLLOW)`) and never followed, so a link planted in
/// the data directory cannot make root chown a file elsewhere.
pub(super) fn chown_tree(root: &Path, uid: Uid, gid: Gid) {
    let _ = std::os::unix::fs::chown(root, Some(uid.as_raw()), Some(gid.as_raw()));
    if root.is_dir() {
        chown_below(root, uid, gid);
    }
}

fn chown_below(dir: &Path, uid: Uid, gid: Gid) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let _ = std::os::unix::fs::lchown(&p, Some(uid.as_raw()), Some(gid.as_raw()));
        // `DirEntry::file_type` does not follow links: a link to a
        // directory is not descended into.
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            chown_below(&p, uid, gid);
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
        chown_tree(data.path(), uid, gid);
        assert_eq!(ctime(&outside.path().join("secret")), before_file, "a symlinked file was chowned through the link");
        assert_eq!(ctime(outside.path()), before_dir, "a symlinked directory was chowned through the link");
        let inner = std::fs::metadata(data.path().join("queue/active/a.json")).unwrap();
        assert_eq!(inner.uid(), uid.as_raw());
    }
}
