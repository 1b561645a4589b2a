//! `postern tlsrpt show|send [--day YYYY-MM-DD]`: the TLS reports (RFC 8460)
//! of a day. Asks the running daemon (control socket `tlsrpt ...`), which
//! holds today's counts; with no daemon running, reads `DATA/tlsrpt/` and
//! queues into the spool itself (the daemon delivers them when it starts).
//!
//! May touch: the control socket; without a daemon `DATA/tlsrpt/`, DNS and
//! the spool; standard output and error. Exit codes: 0 done; 75 a
//! domain's report could not be queued now (DNS failure, spool error: the
//! daily run tries again); 69 the daemon does not answer or the control
//! socket is not ours; 64 a bad day.

use clap::Subcommand;
use serde_json::Value;

use super::sysexits as exit;
use crate::control;
use crate::delivery::tlsrpt::{command, Reporter};
use crate::settings::Settings;

/// `postern tlsrpt ...`.
#[derive(Subcommand)]
pub enum TlsrptCmd {
    /// Print a day's reports as JSON, one per policy domain, as they would be
    /// sent (the report ids are placeholders). Default: today so far (UTC).
    Show {
        /// The UTC day.
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
    },
    /// Queue a day's reports now, to each domain's `_smtp._tls` rua
    /// (mailto only). Default: yesterday (UTC). A past day's domains are
    /// then done: the daily run does not send them again. Today's reports
    /// are a preview: the daily run still sends the whole day.
    Send {
        /// The UTC day.
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command; returns the exit code.
pub fn run(s: &Settings, cmd: TlsrptCmd) -> i32 {
    let (words, json) = match &cmd {
        TlsrptCmd::Show { day } => (["show"].into_iter().map(String::from).chain(day.clone()).collect::<Vec<_>>(), true),
        TlsrptCmd::Send { day, json } => (["send"].into_iter().map(String::from).chain(day.clone()).collect(), *json),
    };
    let answer = match control::request(&s.data_dir, &format!("tlsrpt {}", words.join(" "))) {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => match local(s, &words) {
            Ok(a) => a,
            Err(code) => return code,
        },
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("postern tlsrpt: control socket: {e} (run as root or as the daemon's user)");
            return exit::UNAVAILABLE;
        }
        Err(e) => {
            eprintln!("postern tlsrpt: the daemon did not answer: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let Some(body) = answer.strip_prefix("ok ") else {
        let e = answer.strip_prefix("error ").unwrap_or(&answer);
        eprintln!("postern tlsrpt: {e}");
        return if e.starts_with("bad day") || e.starts_with("usage") { exit::USAGE } else { exit::SOFTWARE };
    };
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match cmd {
        TlsrptCmd::Show { .. } => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            exit::OK
        }
        TlsrptCmd::Send { .. } => {
            if json {
                println!("{v}");
            } else {
                print!("{}", render(&v));
            }
            let failed = v.as_array().map(|a| a.iter().any(|x| x["result"] == "failed")).unwrap_or(false);
            if failed {
                exit::TEMPFAIL
            } else {
                exit::OK
            }
        }
    }
}

/// One line per domain: `DOMAIN: queued as ID to ADDR (report id R)`,
/// `DOMAIN: skipped: WHY`, `DOMAIN: failed: WHY`. Pure.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out.push_str("nothing to send for that day (no TLS sessions counted, or every report already sent)\n");
    }
    for x in list {
        let s = |k: &str| x[k].as_str().unwrap_or("").to_string();
        let to: Vec<String> =
            x["to"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default();
        match s("result").as_str() {
            "queued" => {
                out.push_str(&format!("{}: queued as {} to {} (report id {})\n", s("domain"), s("id"), to.join(", "), s("report_id")))
            }
            r => out.push_str(&format!("{}: {r}: {}\n", s("domain"), s("reason"))),
        }
    }
    out
}

/// No daemon: the same command over the files and the spool, here.
fn local(s: &Settings, words: &[String]) -> Result<String, i32> {
    let rt = super::runtime()?;
    let spool = super::queue::open(s)?;
    let reporter = Reporter::open(s.data_dir.join("tlsrpt"), s.config.tls_rpt.max_domains);
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let (answer, _ids) = rt.block_on(command::run(&reporter, s, &spool, &args, crate::time::now_unix()));
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_output() {
        let v: Value = serde_json::from_str(
            r#"[{"domain":"a.example","result":"queued","id":"ID1","to":["t@a.example"],"report_id":"r@s"},
                {"domain":"b.example","result":"skipped","reason":"_smtp._tls.b.example: no TLSRPTv1 record"}]"#,
        )
        .unwrap();
        assert_eq!(
            render(&v),
            "a.example: queued as ID1 to t@a.example (report id r@s)\nb.example: skipped: _smtp._tls.b.example: no TLSRPTv1 record\n"
        );
        assert!(render(&Value::Array(vec![])).starts_with("nothing to send for that day"));
    }
}
