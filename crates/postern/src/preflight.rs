//! Start-up checks on a config that loaded: everything `serve` would
//! refuse (or trip over later) that needs more than the text: the `user`,
//! the files the config names (readable now, and readable by `user` after
//! the privilege drop when they are read again later), the server
//! certificate and its key, milter sockets, the host name. `postern config
//! check` and `postern serve` call the same [`check`], so they cannot drift.
//!
//! May touch: the files the config names (read, to check them); the user
//! database (getpwnam). No RFCs beyond RFC 5321 §4.1.1.1 (a FQDN in EHLO).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};

use crate::config::{Endpoint, KeyPath, Problem, ProblemKind};
use crate::settings::Settings;
use crate::tls::{self, ServerTls};

/// What the checks found: errors (serve refuses to start) and warnings.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems serve refuses to start with.
    pub errors: Vec<Problem>,
    /// Problems it starts with, but that bite later or elsewhere.
    pub warnings: Vec<Problem>,
}

/// Who the daemon runs as after the privilege drop, when it drops.
struct Target {
    name: String,
    uid: u32,
    gid: u32,
}

/// Runs every check on loaded settings.
pub fn check(s: &Settings) -> Report {
    let mut r = Report::default();
    let at = |k: &str| KeyPath::root().keys(k);
    let target = user(s, &mut r);
    hostname(s, &mut r);
    server_tls(s, target.as_ref(), &mut r);
    // Read later, as `user`: at delivery (smarthost files) or on reload (aliases).
    let relay = &s.config.relay;
    let later: Vec<(&str, PathBuf)> = [
        ("relay.smarthost_password_file", relay.smarthost_password_file.as_ref()),
        ("relay.smarthost_client_certificate", relay.smarthost_client_certificate.as_ref()),
        ("relay.smarthost_client_key", relay.smarthost_client_key.as_ref()),
        ("local.aliases", s.config.local.aliases.as_ref()),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.map(|p| (k, s.resolve(p))))
    .chain(relay.smarthost_ca_files.iter().map(|p| ("relay.smarthost_ca_files", s.resolve(p))))
    .chain(s.config.mta_sts.ca_files.iter().map(|p| ("mta_sts.ca_files", s.resolve(p))))
    // [ldap]: the password file is read again at each reconnection.
    .chain(s.config.ldap.iter().flat_map(|l| l.bind_password_file.iter().map(|p| ("ldap.bind_password_file", s.resolve(p)))))
    .chain(s.config.ldap.iter().flat_map(|l| l.ca_files.iter().map(|p| ("ldap.ca_files", s.resolve(p)))))
    .collect();
    // The config file itself is read again on every reload.
    if let Some(f) = &s.config_file {
        after_drop(Path::new(f), target.as_ref(), &mut r, s, "");
    }
    for (k, p) in later {
        if readable(&p, &mut r, s, &at(k), k) {
            after_drop(&p, target.as_ref(), &mut r, s, k);
        }
    }
    // [[route]] smtp next hops: TLS material and password files, read at delivery.
    for (i, route) in s.config.routes.iter().enumerate() {
        let one =
            [("password_file", &route.password_file), ("client_certificate", &route.client_certificate), ("client_key", &route.client_key)];
        let files = one.into_iter().filter_map(|(k, p)| p.as_ref().map(|p| (k, None, p)));
        for (k, j, p) in files.chain(route.ca_files.iter().enumerate().map(|(j, p)| ("ca_files", Some(j), p))) {
            let (p, name) = (s.resolve(p), format!("route[{}].{k}", i + 1));
            let place = at("route").index(i).key(k);
            let place = j.map_or(place.clone(), |j| place.index(j));
            if readable(&p, &mut r, s, &place, &name) {
                after_drop(&p, target.as_ref(), &mut r, s, &name);
            }
        }
    }
    for (i, m) in s.config.milters.iter().enumerate() {
        if let Endpoint::Unix(p) = &m.socket.0 {
            if std::fs::metadata(p).is_ok_and(|md| !md.file_type().is_socket()) {
                let text = format!("milter {:?}: {} exists but is not a socket", m.name, p.display());
                r.warnings.push(s.config.problem_at(&at("milter").index(i).key("socket"), "milter.socket", ProblemKind::Check(text)));
            }
        }
    }
    dkim_keys(s, target.as_ref(), &mut r);
    listeners(s, &mut r);
    paths(s, &mut r);
    r.errors.sort_by_key(|p| p.position);
    r.warnings.sort_by_key(|p| p.position);
    r
}

/// `[[dkim]]` keys: each must have loaded (file and reason otherwise), and
/// be readable by `user`, who reads them again on every reload.
fn dkim_keys(s: &Settings, target: Option<&Target>, r: &mut Report) {
    for (i, k) in s.dkim.entries().iter().enumerate() {
        let at = KeyPath::root().key("dkim").index(i).key("key_file");
        match &k.key {
            Ok(_) => after_drop(&k.file, target, r, s, "dkim.key_file"),
            Err(e) => {
                let text = format!("DKIM key {}: {e}", k.label());
                r.errors.push(s.config.problem_at(&at, "dkim.key_file", ProblemKind::Check(text)));
            }
        }
    }
}

fn user(s: &Settings, r: &mut Report) -> Option<Target> {
    let name = s.config.user.as_ref()?;
    let key = KeyPath::root().key("user");
    match User::from_name(name) {
        Ok(Some(u)) => Some(Target { name: name.clone(), uid: u.uid.as_raw(), gid: u.gid.as_raw() }),
        Ok(None) => {
            let text = format!("no such user {name:?} (create it, e.g. `useradd --system --no-create-home postern`, or fix the name)");
            r.errors.push(s.config.problem_at(&key, "user", ProblemKind::Check(text)));
            None
        }
        Err(e) => {
            r.errors.push(s.config.problem_at(&key, "user", ProblemKind::Check(format!("cannot look up user {name:?}: {e}"))));
            None
        }
    }
}

/// RFC 5321 §4.1.1.1: EHLO names a FQDN; Postfix refuses to start without one.
fn hostname(s: &Settings, r: &mut Report) {
    let h = &s.hostname;
    if !h.contains('.') || h.ends_with('.') {
        let text = format!(
            "host name {h:?} is not a fully qualified domain name: it goes into the greeting, EHLO, Received: and MAILER-DAEMON@{h}, \
             and receivers refuse it (set `hostname = \"mail.example.org\"`)"
        );
        r.warnings.push(s.config.problem_at(&KeyPath::root().key("hostname"), "hostname", ProblemKind::Check(text)));
    }
}

/// The server certificate, key, client CAs and CRLs: readable now (serve
/// reads them before dropping root), loadable together (a key that matches
/// the certificate), and readable by `user` for reloads and renewals.
fn server_tls(s: &Settings, target: Option<&Target>, r: &mut Report) {
    let (cert, key) = tls::files::server_paths(s);
    let configured = s.config.tls.certificate.is_some();
    // Without a configured certificate, serve generates one on first start.
    if !configured && !cert.exists() && !key.exists() {
        return;
    }
    let (ck, kk) = if configured { ("tls.certificate", "tls.key") } else { ("tls", "tls") };
    let mut files = vec![(ck, cert), (kk, key)];
    files.extend(tls::files::client_ca_paths(s).into_iter().map(|p| ("tls.client_ca_files", p)));
    files.extend(tls::files::crl_paths(s).into_iter().map(|p| ("tls.crl_files", p)));
    let before = r.errors.len();
    for (k, p) in &files {
        if readable(p, r, s, &KeyPath::root().keys(k), k) {
            after_drop(p, target, r, s, k);
        }
    }
    if r.errors.len() == before {
        if let Err(e) = ServerTls::load(s) {
            r.errors.push(s.config.problem_at(&KeyPath::root().keys(ck), ck, ProblemKind::Check(e.to_string())));
        }
    }
}

/// Listener addresses this process could not bind (a privileged port
/// without root). The kernel has the last word; this is a warning.
fn listeners(s: &Settings, r: &mut Report) {
    if Uid::effective().is_root() {
        return;
    }
    for (i, l) in s.config.listeners.iter().enumerate() {
        let port = l.address.port();
        if port != 0 && port < 1024 {
            let text = format!("port {port} needs root (or CAP_NET_BIND_SERVICE) to bind; run serve as root with `user` set");
            r.warnings.push(s.config.problem_at(
                &KeyPath::root().key("listener").index(i).key("address"),
                "listener.address",
                ProblemKind::Check(text),
            ));
        }
    }
}

/// The data directory and the mail log: serve creates them, but not
/// through a file in the way or below a missing directory.
fn paths(s: &Settings, r: &mut Report) {
    if s.data_dir.exists() && !s.data_dir.is_dir() {
        let text = format!("{} exists and is not a directory", s.data_dir.display());
        r.errors.push(s.config.problem_at(&KeyPath::root().key("data_dir"), "data_dir", ProblemKind::Check(text)));
    }
    let log = Path::new(&s.config.log.mail_log);
    if s.config.log.mail_log != "-" {
        let parent = log.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let text = if log.is_dir() {
            Some(format!("{} is a directory", log.display()))
        } else if !parent.is_dir() {
            Some(format!("directory {} does not exist", parent.display()))
        } else {
            None
        };
        if let Some(text) = text {
            r.errors.push(s.config.problem_at(&KeyPath::root().keys("log.mail_log"), "log.mail_log", ProblemKind::Check(text)));
        }
    }
}

/// True if `p` can be read by this process; an error otherwise.
fn readable(p: &Path, r: &mut Report, s: &Settings, at: &KeyPath, k: &str) -> bool {
    match std::fs::File::open(p) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => {
            let text = format!("{} is a directory, not a file", p.display());
            r.errors.push(s.config.problem_at(at, k, ProblemKind::Check(text)));
            false
        }
        Ok(_) => true,
        Err(source) => {
            r.errors.push(s.config.problem_at(at, k, ProblemKind::Unreadable { path: p.to_path_buf(), source }));
            false
        }
    }
}

/// Warns when `p` will not be readable by `user` after the privilege drop.
fn after_drop(p: &Path, target: Option<&Target>, r: &mut Report, s: &Settings, k: &str) {
    let Some(t) = target else { return };
    if !Uid::effective().is_root() || readable_by(p, t.uid, t.gid) {
        return;
    }
    let hook = if k.starts_with("tls") { " or, for certbot, copy them with contrib/certbot/postern-deploy-hook (docs/tls.md)" } else { "" };
    let text = format!(
        "{} is not readable by user {:?} (uid {}, gid {}): start-up reads it as root, but reloads, renewals and deliveries read it after \
         the privilege drop and will fail. Fix: give the group read access (`chgrp {} FILE; chmod 0640 FILE`, and g+x on its \
         directories){hook}",
        p.display(),
        t.name,
        t.uid,
        t.gid,
        t.gid,
    );
    r.warnings.push(s.config.problem_at(&KeyPath::root().keys(k), k, ProblemKind::Check(text)));
}

/// Whether `uid` (with only its primary group `gid`, as after `privdrop`)
/// may open `p` for reading: search permission on every directory on the
/// way (of the path as written and of the path links resolve to, e.g.
/// certbot's `live/` links into `archive/`) and read permission on the file.
pub fn readable_by(p: &Path, uid: u32, gid: u32) -> bool {
    let allowed = |md: &std::fs::Metadata, bit: u32| {
        let mode = md.permissions().mode();
        if uid == 0 {
            return true;
        }
        let shift = if md.uid() == uid {
            6
        } else if md.gid() == gid {
            3
        } else {
            0
        };
        mode & (bit << shift) != 0
    };
    let dirs_ok = |path: &Path| {
        path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).all(|a| std::fs::metadata(a).is_ok_and(|md| allowed(&md, 0o1)))
    };
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let real = p.canonicalize().unwrap_or_else(|_| abs.clone());
    dirs_ok(&abs) && dirs_ok(&real) && std::fs::metadata(&real).is_ok_and(|md| allowed(&md, 0o4))
}

#[cfg(test)]
mod tests;
