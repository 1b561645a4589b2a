//! Private files that the CLI and the daemon both write (keys, the CA's
//! files, `users.json`): mode 0600 whatever the umask, replaced atomically
//! (temporary file, fsync, rename, directory fsync), and owned by the owner
//! of the directory they live in.
//!
//! The ownership rule matters because the admin runs `postern user add` or
//! `postern ca issue` as root while the daemon runs as `user` after its
//! privilege drop and owns the data directory: a root-owned 0600 file would
//! be unreadable to the daemon, which would then keep its old users or
//! certificates without the admin noticing. Postfix avoids this with
//! setgid helpers; here root simply hands the file to the directory's owner.
//!
//! May touch: the file named and its directory.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Writes `bytes` to `path` as described in the module documentation.
/// `tmp_extension` names the temporary file beside it (`path.with_extension`).
pub fn write(path: &Path, tmp_extension: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(tmp_extension);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if nix::unistd::geteuid().is_root() {
        let meta = std::fs::metadata(dir)?;
        if meta.uid() != 0 {
            std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        }
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents with mode 0700, each owned (when
/// running as root) by the owner of the nearest directory that already exists.
pub fn create_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur);
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => break,
        }
    }
    let owner = if cur.exists() { Some(std::fs::metadata(cur)?) } else { None };
    for d in missing.into_iter().rev() {
        std::fs::DirBuilder::new().mode(0o700).create(d)?;
        if let Some(m) = owner.as_ref().filter(|m| m.uid() != 0 && nix::unistd::geteuid().is_root()) {
            std::os::unix::fs::chown(d, Some(m.uid()), Some(m.gid()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.json");
        super::write(&p, "json.tmp", b"one").unwrap();
        super::write(&p, "json.tmp", b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join("secret.json.tmp").exists());
    }

    #[test]
    fn root_hands_the_file_to_the_directory_owner() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root can chown; the CI runs as root
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let p = dir.path().join("users.json");
        super::write(&p, "json.tmp", b"{}").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), 65534);
        let sub = dir.path().join("ca/issued");
        super::create_dirs(&sub).unwrap();
        assert_eq!(std::fs::metadata(&sub).unwrap().uid(), 65534);
        assert_eq!(std::fs::metadata(dir.path().join("ca")).unwrap().uid(), 65534);
    }
}
