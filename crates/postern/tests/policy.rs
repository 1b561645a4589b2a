//! The relay/recipient policy as case files (Postfix `smtpd_check.in/.ref`
//! style): `tests/policy/*.case`, one line per case over
//! `policy::check_rcpt`, the same pure function the session and `postern
//! explain` use.
//!
//! File format: a `[config]` section (postern TOML), an optional
//! `[aliases]` section (aliases(5) text), then `[cases]`, one case per line,
//! columns separated by `|`:
//!
//! `listener | client IP | tls | cert | auth user | sender | rcpt | reply | rule`
//!
//! - `tls`: `tls` or `-`;
//! - `cert`: `-`, or `;`-separated `subject=DN`, `issuer=DN`, `san=X`
//!   (repeatable), `sha256=HEX`, and `verified=ANCHOR DN` or `error=WHY`;
//!   `subject` and `issuer` are RFC 4514 text parsed into the RDNs policy
//!   matches (`CN=evil\, O=Partner` is one CN whose value holds a comma);
//!   the log string and the CN list are derived from them;
//! - `auth user`: `-` or the SASL user;
//! - `sender`, `rcpt`: SMTP paths (`<>` for the null sender);
//! - `reply`: `250` for accept, else a prefix of the reply (`550 5.7.1`);
//! - `rule`: the name of the deciding rule.
//!
//! A failure names the file and line of the case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path as FsPath;

use postern::auth::Authenticated;
use postern::config::Config;
use postern::dn::Dn;
use postern::policy::{check_rcpt, Facts, RcptDecision};
use postern::settings::{Settings, Source};
use postern::tls::{CertInfo, ClientCertIdentity};
use postern::users::UserDb;
use postern_wire::Path;

fn path(s: &str) -> Result<Path, String> {
    postern_wire::address::parse_path(s, true, true, true).map(|(p, _)| p).map_err(|e| format!("bad path {s:?}: {e:?}"))
}

fn cert(spec: &str) -> Result<Option<ClientCertIdentity>, String> {
    if spec == "-" {
        return Ok(None);
    }
    let mut info = CertInfo {
        subject: String::new(),
        issuer: String::new(),
        sans: Vec::new(),
        sha256: String::new(),
        spki_sha256: String::new(),
        not_after: 0,
        subject_cns: Vec::new(),
        subject_dn: Dn::default(),
        issuer_dn: Dn::default(),
    };
    let mut verified = Err("not verified".to_string());
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("cert part {part:?} is not key=value"))?;
        match k {
            "subject" => info.subject_dn = Dn::parse(v).map_err(|e| format!("subject: {e}"))?,
            "issuer" => info.issuer_dn = Dn::parse(v).map_err(|e| format!("issuer: {e}"))?,
            "san" => info.sans.push(v.into()),
            "sha256" => info.sha256 = v.into(),
            "verified" => verified = Ok(v.to_string()),
            "error" => verified = Err(v.to_string()),
            _ => return Err(format!("unknown cert key {k:?}")),
        }
    }
    info.spki_sha256 = format!("spki-{}", info.sha256);
    info.subject = info.subject_dn.to_string();
    info.issuer = info.issuer_dn.to_string();
    info.subject_cns = info.subject_dn.values("CN").map(String::from).collect();
    Ok(Some(ClientCertIdentity { cert: info, verified }))
}

struct CaseFile {
    config: String,
    aliases: String,
    cases: Vec<(usize, String)>,
}

fn split_sections(text: &str) -> CaseFile {
    let mut f = CaseFile { config: String::new(), aliases: String::new(), cases: Vec::new() };
    let mut section = "";
    for (i, line) in text.lines().enumerate() {
        match line.trim() {
            "[config]" | "[aliases]" | "[cases]" => {
                section = line.trim();
                // Keep config line numbers meaningful for rule origins.
                f.config.push('\n');
                continue;
            }
            _ => {}
        }
        match section {
            "[config]" => {
                f.config.push_str(line);
                f.config.push('\n');
            }
            "[aliases]" => {
                f.aliases.push_str(line);
                f.aliases.push('\n');
                f.config.push('\n');
            }
            "[cases]" => {
                f.config.push('\n');
                let t = line.trim();
                if !t.is_empty() && !t.starts_with('#') {
                    f.cases.push((i + 1, t.to_string()));
                }
            }
            _ => f.config.push('\n'),
        }
    }
    f
}

/// Runs one case line; `Err` says what went wrong.
fn run_case(s: &Settings, db: &UserDb, line: &str) -> Result<(), String> {
    let cols: Vec<&str> = line.split('|').map(str::trim).collect();
    let [listener, ip, tls, cert_spec, user, sender, rcpt, want, rule] = cols.as_slice() else {
        return Err(format!("expected 9 columns, got {}", cols.len()));
    };
    let client_ip = ip.parse().map_err(|e| format!("bad IP {ip:?}: {e}"))?;
    let who = (*user != "-").then(|| Authenticated::dangerous_assume(user));
    let cert = cert(cert_spec)?;
    let rcpt = path(rcpt)?;
    let sender = match path(sender)? {
        Path::Mailbox(m) => Some(m),
        _ => None,
    };
    let facts = Facts {
        listener,
        client_ip,
        tls: match *tls {
            "tls" => true,
            "-" => false,
            other => return Err(format!("tls column must be `tls` or `-`, not {other:?}")),
        },
        authenticated: who.as_ref(),
        cert: cert.as_ref(),
        sender: sender.as_ref(),
        rcpt: &rcpt,
        user_db: Some(db),
        client_resolve: None,
        directory: None,
    };
    let d = check_rcpt(s, &facts);
    let got = match &d {
        RcptDecision::Accept { .. } => "250".to_string(),
        RcptDecision::Reject { reply, .. } => reply.to_wire().trim_end().to_string(),
    };
    if !got.starts_with(want) || d.rule() != *rule {
        return Err(format!("got {got:?} by rule {:?}, want {want:?} by rule {rule:?}", d.rule()));
    }
    Ok(())
}

fn run_file(file: &FsPath) -> Vec<String> {
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let f = split_sections(&text);
    let cfg = match Config::parse(&f.config, &name) {
        Ok(c) => c,
        Err(e) => return vec![format!("{name}: config: {e}")],
    };
    let mut s = match Settings::from_config(cfg, &Source { config: None, data_dir: Some("/nonexistent".into()) }) {
        Ok(s) => s,
        Err(e) => return vec![format!("{name}: settings: {e}")],
    };
    match postern::aliases::Aliases::parse(&f.aliases, &name) {
        Ok(a) => s.aliases = a,
        Err(e) => return vec![format!("{name}: aliases: {e}")],
    }
    let mut db = UserDb::default();
    db.users.insert("dbuser".into(), Default::default());
    let mut failures = Vec::new();
    for (line_no, line) in &f.cases {
        if let Err(e) = run_case(&s, &db, line) {
            failures.push(format!("{name}:{line_no}: {line}\n    {e}"));
        }
    }
    assert!(!f.cases.is_empty(), "{name}: no cases");
    failures
}

#[test]
fn policy_case_files() {
    let dir = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/policy")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "case"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", dir.display());
    let failures: Vec<String> = files.iter().flat_map(|f| run_file(f)).collect();
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n"));
}
