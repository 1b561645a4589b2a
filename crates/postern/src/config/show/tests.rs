//! Tests of the effective-config table: round trip, `-n`, flattening,
//! diffs and redaction.
//!
//! May touch: nothing.

use super::*;

#[test]
fn the_whole_table_loads_again_to_the_same_config() {
    for text in ["", super::super::EXAMPLE, "[limits]\nmax_message_size = \"10MB\"\n[queue]\nretry_min = \"90s\"\n"] {
        let c = Config::parse(text, "f.toml").unwrap();
        let shown = toml::to_string(&table(&c)).unwrap();
        let again = Config::parse(&shown, "shown.toml").unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(flatten(&table(&c)), flatten(&table(&again)), "{shown}");
    }
}

#[test]
fn non_default_keeps_only_what_differs() {
    // (config, the `-n` output)
    let table = [
        ("", ""),
        ("[limits]\nmax_message_size = 26214400\n", ""),
        ("[limits]\nmax_message_size = \"10M\"\n", "[limits]\nmax_message_size = \"10M\"\n"),
        (
            "hostname = \"mx.example.org\"\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n",
            "hostname = \"mx.example.org\"\n\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n",
        ),
    ];
    for (text, want) in table {
        let c = Config::parse(text, "f.toml").unwrap();
        assert_eq!(toml::to_string(&non_default(&c)).unwrap(), want, "{text}");
    }
}

#[test]
fn changes_name_keys_and_restarts() {
    let base = "[limits]\nmax_message_size = \"25M\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n";
    // (new config, changed, restart_needed)
    let table: &[(&str, &[&str], &[&str])] = &[
        (base, &[], &[]),
        (
            "[limits]\nmax_message_size = \"10M\"\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n[[listener]]\naddress = \"127.0.0.1:25\"\n",
            &["limits.max_message_size", "relay.networks"],
            &[],
        ),
        ("[limits]\nmax_message_size = \"25M\"\n[[listener]]\naddress = \"127.0.0.1:26\"\n", &["listener.address"], &["listener"]),
        (
            "user = \"mail\"\n[log]\nmail_log = \"/tmp/x\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:27\"\n",
            &[
                "listener.address",
                "listener.client_certificates",
                "listener.milters",
                "listener.never_request_client_certificates_from",
                "listener.request_client_certificates_from",
                "listener.require_client_certificates_from",
                "listener.role",
                "log.mail_log",
                "user",
            ],
            &["listener", "user"],
        ),
    ];
    let old = Config::parse(base, "f.toml").unwrap();
    for (text, changed, restart) in table {
        let got = changes(&old, &Config::parse(text, "f.toml").unwrap());
        assert_eq!(got.changed, changed.to_vec(), "{text}");
        assert_eq!(got.restart_needed, restart.to_vec(), "{text}");
    }
}

#[test]
fn secrets_are_redacted() {
    let mut t: Table = toml::from_str(
        "password = \"hunter2\"\nsmarthost_password_file = \"/etc/p\"\n[a]\nsecret = \"s\"\nname = \"n\"\n[[b]]\nclient_secret = 1\n",
    )
    .unwrap();
    redact(&mut t);
    let f = flatten(&t);
    let v = |k: &str| f.get(k).cloned().unwrap();
    assert_eq!(v("password"), Value::String(REDACTED.into()));
    assert_eq!(v("a.secret"), Value::String(REDACTED.into()));
    assert_eq!(v("b[0].client_secret"), Value::String(REDACTED.into()));
    assert_eq!(v("smarthost_password_file"), Value::String("/etc/p".into()));
    assert_eq!(v("a.name"), Value::String("n".into()));
}
