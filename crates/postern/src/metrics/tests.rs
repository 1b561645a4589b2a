//! The observer (log lines -> counters) and the encodings, on a private
//! set of metrics so parallel tests that log do not interfere.

use super::*;

/// The value of the sample line starting with `sample ` (name and labels exactly).
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

type Line = (&'static str, &'static [(&'static str, &'static str)]);

#[test]
fn log_lines_move_counters() {
    // (log lines, sample, expected value)
    let cases: &[(&[Line], &str, f64)] = &[
        (&[("connect", &[("client", "[192.0.2.1]:1000"), ("listener", "smtp")])], "postern_connections_total{listener=\"smtp\"}", 1.0),
        (&[("connect", &[("client", "[192.0.2.1]:1000"), ("listener", "smtp")])], "postern_sessions", 1.0),
        (
            &[("connect", &[("client", "[192.0.2.1]:1000"), ("listener", "smtp")]), ("disconnect", &[("client", "[192.0.2.1]:1000")])],
            "postern_sessions",
            0.0,
        ),
        (
            &[
                ("connect", &[("client", "[192.0.2.1]:1000"), ("listener", "submission")]),
                ("queued", &[("id", "A"), ("client", "[192.0.2.1]:1000")]),
                ("queued", &[("id", "B"), ("client", "[192.0.2.1]:1000")]),
            ],
            "postern_messages_received_total{listener=\"submission\"}",
            2.0,
        ),
        (&[("queued", &[("id", "A"), ("client", "local"), ("uid", "33")])], "postern_messages_received_total{listener=\"local\"}", 1.0),
        (&[("queued", &[("id", "A"), ("client", "[192.0.2.9]:1")])], "postern_messages_received_total{listener=\"unknown\"}", 1.0),
        (
            &[("delivered", &[("relay", "smtp:smarthost.example:587"), ("delay", "3s")])],
            "postern_recipients_delivered_total{transport=\"smtp\"}",
            1.0,
        ),
        (&[("delivered", &[("relay", "maildir"), ("delay", "3s")])], "postern_delivery_delay_seconds_sum{transport=\"maildir\"}", 3.0),
        (
            &[("delivered", &[("relay", "maildir"), ("delay", "3s")])],
            "postern_delivery_delay_seconds_bucket{le=\"5.0\",transport=\"maildir\"}",
            1.0,
        ),
        (&[("deferred", &[("relay", "mx:example.org")])], "postern_recipients_deferred_total{transport=\"mx\"}", 1.0),
        (&[("failed", &[("relay", "lmtp:[127.0.0.1]:24")])], "postern_recipients_failed_total{transport=\"lmtp\"}", 1.0),
        (&[("failed", &[("relay", "weird thing")])], "postern_recipients_failed_total{transport=\"other\"}", 1.0),
        (&[("bounced", &[("id", "A"), ("bounce_id", "B"), ("to", "x@y")])], "postern_bounces_total{result=\"queued\"}", 1.0),
        (&[("bounced", &[("id", "A"), ("result", "suppressed: null sender")])], "postern_bounces_total{result=\"suppressed\"}", 1.0),
        (&[("expired", &[("id", "A")])], "postern_recipients_expired_total", 1.0),
        (
            &[("tls", &[("client", "[192.0.2.1]:1"), ("version", "TLSv1.3"), ("cipher", "X")])],
            "postern_tls_handshakes_total{version=\"TLSv1.3\"}",
            1.0,
        ),
        (&[("tls", &[("client", "[192.0.2.1]:1"), ("error", "handshake timeout")])], "postern_tls_handshake_failures_total", 1.0),
        // Certificate and reload lines are not handshakes.
        (&[("tls", &[("reload", "ok"), ("fingerprint", "ab")])], "postern_tls_handshake_failures_total", f64::NAN),
        (&[("auth", &[("mechanism", "PLAIN"), ("user", "a"), ("result", "ok")])], "postern_auth_successes_total{mechanism=\"PLAIN\"}", 1.0),
        (
            &[("auth", &[("mechanism", "login"), ("result", "fail")]), ("auth", &[("mechanism", "LOGIN"), ("result", "fail")])],
            "postern_auth_failures_total{mechanism=\"LOGIN\",result=\"fail\"}",
            2.0,
        ),
        // A client-chosen mechanism name cannot create a series.
        (
            &[("auth", &[("mechanism", "X-EVIL-1"), ("result", "refused")])],
            "postern_auth_failures_total{mechanism=\"other\",result=\"refused\"}",
            1.0,
        ),
        (&[("auth", &[("ip", "192.0.2.1"), ("result", "ban")])], "postern_auth_failures_total", f64::NAN),
        (
            &[("reject", &[("command", "RCPT"), ("reply", "554 5.7.1"), ("rule", "no-relay"), ("origin", "built-in")])],
            "postern_rejects_total{stage=\"rcpt\",rule=\"no-relay\",origin=\"built-in\"}",
            1.0,
        ),
        (
            &[("reject", &[("command", "RCPT"), ("rule", "spam-block"), ("origin", "/etc/postern/postern.toml:40")])],
            "postern_rejects_total{stage=\"rcpt\",rule=\"spam-block\",origin=\"config\"}",
            1.0,
        ),
        (
            &[("reject", &[("client", "[192.0.2.1]:1"), ("reason", "connection limit")])],
            "postern_rejects_total{stage=\"connect\",rule=\"connection limit\",origin=\"session\"}",
            1.0,
        ),
        (
            &[("reject", &[("command", "XYZZY"), ("reply", "500")])],
            "postern_rejects_total{stage=\"other\",rule=\"-\",origin=\"session\"}",
            1.0,
        ),
    ];
    for (i, (lines, sample, want)) in cases.iter().enumerate() {
        let m = Metrics::new();
        for (event, fields) in lines.iter() {
            m.observe(event, fields);
        }
        let text = m.render(&Snapshot::default(), false);
        let got = value(&text, sample);
        if want.is_nan() {
            assert_eq!(got, None, "case {i}: {sample} should not exist:\n{text}");
        } else {
            assert_eq!(got, Some(*want), "case {i}: {sample}:\n{text}");
        }
    }
}

#[test]
fn timed_histograms() {
    let m = Metrics::new();
    m.commit_seconds.observe(0.002);
    m.attempt_seconds.get_or_create(&vec![("transport", transport_of("smtp:x:25"))]).observe(0.3);
    let text = m.render(&Snapshot::default(), false);
    assert_eq!(value(&text, "postern_queue_commit_duration_seconds_bucket{le=\"0.0025\"}"), Some(1.0), "{text}");
    assert_eq!(value(&text, "postern_queue_commit_duration_seconds_count"), Some(1.0));
    assert_eq!(value(&text, "postern_delivery_attempt_duration_seconds_bucket{le=\"0.5\",transport=\"smtp\"}"), Some(1.0), "{text}");
}

fn transport_of(relay: &str) -> String {
    observe::transport(relay)
}

#[test]
fn scrape_time_gauges() {
    let m = Metrics::new();
    let snap = Snapshot {
        queue_messages: [1, 2, 3],
        queue_bytes: [10, 20, 30],
        oldest_age_seconds: 99,
        corrupt: 0,
        certificates: vec![("server".into(), "/etc/ssl/a.pem".into(), 1_900_000_000)],
    };
    let text = m.render(&snap, false);
    assert_eq!(value(&text, "postern_queue_messages{state=\"deferred\"}"), Some(2.0), "{text}");
    assert_eq!(value(&text, "postern_queue_size_bytes{state=\"hold\"}"), Some(30.0));
    assert_eq!(value(&text, "postern_queue_oldest_message_age_seconds"), Some(99.0));
    assert_eq!(
        value(&text, "postern_certificate_expiry_timestamp_seconds{kind=\"server\",name=\"/etc/ssl/a.pem\"}"),
        Some(1_900_000_000.0)
    );
    // A certificate that is gone is gone from the next scrape.
    let text = m.render(&Snapshot::default(), false);
    assert!(!text.contains("/etc/ssl/a.pem"), "{text}");
}

#[test]
fn text_format_names_counters_by_their_samples() {
    let m = Metrics::new();
    m.observe("connect", &[("client", "[192.0.2.1]:1"), ("listener", "smtp")]);
    let text = m.render(&Snapshot::default(), false);
    assert!(text.contains("# TYPE postern_connections_total counter\n"), "{text}");
    assert!(text.contains("# HELP postern_connections_total "), "{text}");
    assert!(text.contains("# TYPE postern_sessions gauge\n"), "{text}");
    assert!(!text.contains("# EOF"));
    let om = m.render(&Snapshot::default(), true);
    assert!(om.contains("# TYPE postern_connections counter\n"), "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(value(&text, "postern_build_info{version=\"0.1.0\"}"), Some(1.0), "{text}");
}

/// Every metric family, with every label family populated.
fn every_family() -> Vec<String> {
    let m = Metrics::new();
    let lines: &[Line] = &[
        ("connect", &[("client", "c"), ("listener", "smtp")]),
        ("queued", &[("client", "c")]),
        ("delivered", &[("relay", "maildir"), ("delay", "1s")]),
        ("deferred", &[("relay", "mx:x")]),
        ("failed", &[("relay", "smtp:x")]),
        ("bounced", &[("bounce_id", "B")]),
        ("expired", &[("id", "A")]),
        ("tls", &[("client", "c"), ("version", "TLSv1.3")]),
        ("tls", &[("client", "c"), ("error", "x")]),
        ("auth", &[("mechanism", "PLAIN"), ("result", "ok")]),
        ("auth", &[("mechanism", "PLAIN"), ("result", "fail")]),
        ("reject", &[("command", "RCPT")]),
    ];
    for (event, fields) in lines {
        m.observe(event, fields);
    }
    m.commit_seconds.observe(0.1);
    m.attempt_seconds.get_or_create(&vec![("transport", "mx".to_string())]).observe(0.1);
    let snap = Snapshot { certificates: vec![("server".into(), "a".into(), 1)], ..Snapshot::default() };
    let text = m.render(&snap, false);
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).map(String::from).collect()
}

/// docs/operations.md lists every metric, and the Grafana dashboard uses
/// only metrics that exist.
#[test]
fn docs_and_dashboard_match_the_metrics() {
    let families = every_family();
    assert_eq!(families.len(), 23, "{families:?}");
    let doc = include_str!("../../../../docs/operations.md");
    for f in &families {
        assert!(doc.contains(&format!("`{f}`")), "docs/operations.md does not list {f}");
    }
    let dash: serde_json::Value = serde_json::from_str(include_str!("../../../../contrib/grafana/postern.json")).unwrap();
    let text = dash.to_string();
    let mut used: Vec<&str> = text
        .match_indices("postern_")
        .map(|(i, _)| &text[i..])
        .map(|s| s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""))
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() > 10, "{used:?}");
    for u in used {
        let base = u.strip_suffix("_bucket").unwrap_or(u);
        assert!(families.iter().any(|f| f == base), "contrib/grafana/postern.json uses unknown metric {u}");
    }
}
