//! Tests of the start-up checks: one case per finding, each on a config
//! written into a temporary directory.
//!
//! May touch: a temporary directory.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::settings::Source;

/// Loads `config` (with `DIR` replaced by a fresh temporary directory that
/// holds a valid certificate pair `good.crt`/`good.key`, a second key
/// `other.key` and a plain file `plain`) and runs the checks.
fn run(config: &str) -> (Report, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, cn) in [("good", "a.example"), ("other", "b.example")] {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(d.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(d.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    std::fs::write(d.join("plain"), "x").unwrap();
    let text =
        format!("hostname = \"mail.example.org\"\ndata_dir = \"{}\"\n{}", d.display(), config.replace("DIR", &d.display().to_string()));
    let file = d.join("postern.toml");
    std::fs::write(&file, text).unwrap();
    let s = Settings::load(&Source { config: Some(file), data_dir: None }).unwrap();
    (check(&s), dir)
}

fn lines(ps: &[Problem]) -> String {
    ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn findings() {
    // (config, expected error substring or "", expected warning substring or "")
    let table = [
        ("", "", ""),
        ("[tls]\ncertificate = \"DIR/good.crt\"\nkey = \"DIR/good.key\"\n", "", ""),
        ("[tls]\ncertificate = \"DIR/missing.crt\"\nkey = \"DIR/good.key\"\n", ":4:15: key `tls.certificate`: cannot read", ""),
        ("[tls]\ncertificate = \"DIR/good.crt\"\nkey = \"DIR/nokey.pem\"\n", ":5:7: key `tls.key`: cannot read", ""),
        ("[tls]\ncertificate = \"DIR/good.crt\"\nkey = \"DIR/other.key\"\n", "key `tls.certificate`:", ""),
        ("[tls]\ncertificate = \"DIR\"\nkey = \"DIR/good.key\"\n", "is a directory", ""),
        ("user = \"nosuchuser-postern\"\n", ":3:8: key `user`: no such user \"nosuchuser-postern\"", ""),
        (
            "[relay]\nsmarthost_username = \"u\"\nsmarthost_password_file = \"DIR/nopass\"\n",
            "key `relay.smarthost_password_file`: cannot read",
            "",
        ),
        (
            "[[route]]\ndomains = [\"a.example\"]\ntransport = \"smtp\"\nnext_hop = \"h:25\"\n\
             [[route]]\nsenders = [\"b.example\"]\ntransport = \"smtp\"\nnext_hop = \"h:25\"\n\
             username = \"u\"\npassword_file = \"DIR/nopass\"\n",
            ":12:17: key `route[2].password_file`: cannot read",
            "",
        ),
        ("[log]\nmail_log = \"DIR/nodir/mail.log\"\n", ":4:12: key `log.mail_log`: directory ", ""),
        ("[log]\nmail_log = \"DIR\"\n", "is a directory", ""),
        ("[[milter]]\nname = \"m\"\nsocket = \"unix:DIR/plain\"\n", "", "key `milter.socket`: milter \"m\": "),
        (
            "[[dkim]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey_file = \"DIR/nokey.pem\"\n",
            ":6:12: key `dkim.key_file`: DKIM key s1@example.org: ",
            "",
        ),
        (
            "[[dkim]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey_file = \"DIR/good.key\"\n",
            "good.key: neither an Ed25519 nor a usable RSA key",
            "",
        ),
    ];
    for (config, error, warning) in table {
        let (r, _dir) = run(config);
        let (e, w) = (lines(&r.errors), lines(&r.warnings));
        if error.is_empty() {
            assert!(e.is_empty(), "{config}: unexpected errors:\n{e}");
        } else {
            assert!(e.contains(error), "{config}: want {error:?} in:\n{e}");
        }
        if warning.is_empty() {
            assert!(!w.contains("milter"), "{config}: unexpected warnings:\n{w}");
        } else {
            assert!(w.contains(warning), "{config}: want {warning:?} in:\n{w}");
        }
    }
}

#[test]
fn short_host_name_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, format!("hostname = \"vm\"\ndata_dir = \"{}\"\n", dir.path().display())).unwrap();
    let s = Settings::load(&Source { config: Some(file), data_dir: None }).unwrap();
    let r = check(&s);
    assert!(r.errors.is_empty());
    let w = lines(&r.warnings);
    assert!(w.contains(":1:12: key `hostname`: host name \"vm\" is not a fully qualified domain name"), "{w}");
}

#[test]
fn readable_by_follows_modes_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("live");
    std::fs::create_dir(&sub).unwrap();
    let f = sub.join("key.pem");
    std::fs::write(&f, "k").unwrap();
    let md = std::fs::metadata(&f).unwrap();
    let (owner, group) = (md.uid(), md.gid());
    let other = owner.wrapping_add(12345);
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    set(dir.path(), 0o755);
    // (directory mode, file mode, uid, gid, readable)
    let table = [
        (0o755, 0o644, other, group.wrapping_add(1), true),
        (0o755, 0o600, other, group.wrapping_add(1), false),
        (0o755, 0o640, other, group, true),
        (0o750, 0o640, other, group, true),
        (0o700, 0o644, other, group, false),
        (0o711, 0o604, other, group.wrapping_add(1), true),
    ];
    for (dm, fm, uid, gid, want) in table {
        set(&sub, dm);
        set(&f, fm);
        assert_eq!(readable_by(&f, uid, gid), want, "dir {dm:o} file {fm:o} uid {uid} gid {gid}");
    }
}
