//! `tlsrpt show|send [YYYY-MM-DD]`: what the control socket (and, with no
//! daemon running, `postern tlsrpt` itself) answers, as one line:
//! `ok <JSON>` or `error <text>`. `show` (default today) gives the reports
//! as they would be sent; `send` (default yesterday) queues them now.
//!
//! May touch: through `send.rs`, DNS, the spool and `DATA/tlsrpt/`. RFCs: 8460.

use chrono::NaiveDate;

use super::report::{day_of, parse_day};
use super::send::{queued_ids, send_day, show_day};
use super::store::Reporter;
use crate::settings::Settings;
use crate::spool::{QueueId, Spool};

/// The parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the reports of a day.
    Show(NaiveDate),
    /// Queue the reports of a day.
    Send(NaiveDate),
}

/// Parses `show|send [DAY]` at `now`. Pure.
pub fn parse(args: &[&str], now: u64) -> Result<Command, String> {
    let today = day_of(now);
    let day = |d: Option<&&str>, default: NaiveDate| match d {
        None => Ok(default),
        Some(s) => parse_day(s).ok_or_else(|| format!("bad day {s:?} (YYYY-MM-DD)")),
    };
    match args {
        ["show", rest @ ..] if rest.len() <= 1 => Ok(Command::Show(day(rest.first(), today)?)),
        ["send", rest @ ..] if rest.len() <= 1 => Ok(Command::Send(day(rest.first(), today.pred_opt().unwrap_or(today))?)),
        _ => Err("usage: tlsrpt show|send [YYYY-MM-DD]".into()),
    }
}

/// Runs `args`; the answer line and the ids of queued reports.
pub async fn run(reporter: &Reporter, s: &Settings, spool: &Spool, args: &[&str], now: u64) -> (String, Vec<QueueId>) {
    let cmd = match parse(args, now) {
        Ok(c) => c,
        Err(e) => return (format!("error {e}"), Vec::new()),
    };
    // Today's counts so far go to disk first, so what is shown is what is kept.
    let _ = reporter.save_at(now);
    match cmd {
        Command::Show(day) => (format!("ok {}", serde_json::Value::Array(show_day(reporter, s, day))), Vec::new()),
        Command::Send(day) => {
            let sent = send_day(reporter, s, spool, day, now).await;
            let ids = queued_ids(&sent);
            (format!("ok {}", serde_json::to_string(&sent).unwrap_or_default()), ids)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::tlsrpt::report::day_start;

    #[test]
    fn arguments() {
        let now = day_start(parse_day("2026-12-05").unwrap()) + 100;
        let d = |s: &str| parse_day(s).unwrap();
        assert_eq!(parse(&["show"], now), Ok(Command::Show(d("2026-12-05"))));
        assert_eq!(parse(&["send"], now), Ok(Command::Send(d("2026-12-04"))));
        assert_eq!(parse(&["send", "2026-12-01"], now), Ok(Command::Send(d("2026-12-01"))));
        assert!(parse(&["send", "yesterday"], now).is_err());
        assert!(parse(&["send", "2026-12-01", "x"], now).is_err());
        assert!(parse(&["drop"], now).is_err());
        assert!(parse(&[], now).is_err());
    }
}
