//! Unit tests of the LDAP directory that need no LDAP server: what never
//! reaches the network, and outages (refused, silent server) that must be
//! "unavailable", never "no such user". The real server: tests/interop/test_ldap.py.

use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::settings::{Settings, Source};

fn directory(extra: &str) -> LdapDirectory {
    let text = format!("[ldap]\nbase = \"dc=example,dc=org\"\ntimeout = \"300ms\"\n{extra}");
    let config = Config::parse(&text, "t.toml").unwrap();
    let source = Source { config: None, data_dir: Some(std::env::temp_dir()) };
    let settings = Settings::from_config(config, &source).unwrap();
    LdapDirectory::new(settings.config.ldap.as_ref().unwrap(), &settings)
}

fn is_unavailable<T: std::fmt::Debug>(r: &Lookup<T>, want: &str) {
    match r {
        Err(DirectoryError::Unavailable { backend: "ldap", reason }) => assert!(reason.contains(want), "{reason}"),
        other => panic!("want unavailable ({want}), got {other:?}"),
    }
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn empty_login_or_password_never_binds() {
    // The URL is unreachable: an answer proves nothing was asked.
    let d = directory(&format!("url = \"ldap://127.0.0.1:{}\"", closed_port()));
    for (login, password) in [("alice", ""), ("", "secret"), ("", "")] {
        assert_eq!(d.verify(login, password).unwrap().await, Ok(None), "{login:?} {password:?}");
    }
}

#[tokio::test]
async fn refused_connection_is_unavailable_for_every_lookup() {
    let d = directory(&format!(
        "url = \"ldap://127.0.0.1:{}\"\ndomain_filter = \"(dc=%d)\"\nalias_filter = \"(mailAlternateAddress=%s)\"\nsender_login_filter = \"(mail=%s)\"",
        closed_port()
    ));
    is_unavailable(&d.verify("alice", "pw").unwrap().await, "connect to ldap://127.0.0.1");
    is_unavailable(&d.password("alice").await, "user lookup");
    is_unavailable(&d.domain("a.example").await, "domain lookup");
    is_unavailable(&d.mailbox("alice@a.example").await, "mailbox lookup");
    is_unavailable(&d.alias("x@a.example").await, "alias lookup");
    is_unavailable(&d.sender_logins("x@a.example").await, "sender login lookup");
}

#[tokio::test]
async fn silent_server_times_out_as_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and never answers (holds the sockets open).
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let d = directory(&format!("url = \"ldap://127.0.0.1:{port}\"\nbind_dn = \"cn=svc\"\nbind_password_file = \"/dev/null\""));
    let started = std::time::Instant::now();
    is_unavailable(&d.mailbox("alice@a.example").await, "within 300ms");
    is_unavailable(&d.verify("alice", "pw").unwrap().await, "within 300ms");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

#[tokio::test]
async fn unconfigured_lookups_answer_nothing_without_asking() {
    let d = directory(&format!("url = \"ldap://127.0.0.1:{}\"", closed_port()));
    assert_eq!(d.domain("a.example").await, Ok(false));
    assert_eq!(d.alias("x@a.example").await, Ok(Vec::new()));
    assert_eq!(d.sender_logins("x@a.example").await, Ok(Vec::new()));
}

#[tokio::test]
async fn bad_ca_file_is_unavailable_not_unknown() {
    let d = directory("url = \"ldaps://127.0.0.1:1\"\nca_files = [\"/nonexistent/ca.pem\"]");
    is_unavailable(&d.mailbox("a@b.example").await, "TLS setup");
}
