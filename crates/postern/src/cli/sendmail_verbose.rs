//! `sendmail -v`: the message is queued as by `-bm`, and a transcript goes
//! to standard error: the resolved recipients, the queue id, then, if a
//! daemon is running, each recipient's first delivery result (delivered,
//! deferred or failed, with the reply), waiting at most [`WAIT`]. The
//! message is never held back for the transcript: it is queued first.
//!
//! May touch: standard input/error, the spool (through `submit`), the
//! control socket (`status ID`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::sendmail::{self, Options, Submitted};
use super::sysexits as exit;
use crate::control;
use crate::settings::Settings;
use crate::spool::QueueId;

/// How long `-v` waits for the delivery results.
pub const WAIT: Duration = Duration::from_secs(30);

/// `sendmail -v [options] rcpt...`: queue from standard input with a transcript.
pub fn submit(s: &Settings, o: &Options) -> i32 {
    let max = s.config.limits.max_message_size;
    let text = match sendmail::read_message(std::io::stdin().lock(), o.ignore_dots, max) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern sendmail: {e}");
            return e.exit_code();
        }
    };
    let (_, header_rcpts) = crate::maildrop::compose::prepare(
        &text,
        crate::maildrop::compose::Headers { from_headers: o.from_headers, full_name: o.full_name.as_deref(), uid: 0 },
        "",
        "",
        "",
        "",
    );
    let mut all = o.recipients.clone();
    all.extend(header_rcpts);
    if let Ok(rcpts) = sendmail::resolve(s, &all) {
        for r in rcpts {
            eprintln!("{r}... Recipient ok");
        }
    }
    match sendmail::submit(s, o, &text[..]) {
        Ok(Submitted::Queued(id)) => {
            eprintln!("Queued as {id}");
            wait(s, &id, WAIT);
            exit::OK
        }
        Ok(Submitted::Dropped(name)) => {
            eprintln!("Submitted to the maildrop as {name}");
            if let Some(id) = picked_up(s, &name, WAIT) {
                eprintln!("Queued as {id}");
                wait(s, &id, WAIT);
            }
            exit::OK
        }
        Ok(Submitted::Discarded) => {
            eprintln!("Discarded by a milter (local.sendmail_milters)");
            exit::OK
        }
        Err(e) => {
            eprintln!("postern sendmail: {e}");
            e.exit_code()
        }
    }
}

/// Waits until the daemon's pickup has queued drop file `name`; its queue
/// id, or `None` (said on stderr) if the daemon cannot be asked or is late.
fn picked_up(s: &Settings, name: &str, limit: Duration) -> Option<QueueId> {
    let deadline = Instant::now() + limit;
    loop {
        match control::request(&s.data_dir, &format!("dropped {name}")) {
            Ok(a) => {
                if let Some(id) = a.strip_prefix("ok ").and_then(QueueId::parse) {
                    return Some(id);
                }
            }
            Err(e) => {
                eprintln!("No delivery transcript: the daemon is not reachable ({e}); the message waits in the maildrop");
                return None;
            }
        }
        if Instant::now() >= deadline {
            eprintln!("The daemon has not picked the message up yet; it waits in the maildrop");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One recipient's line, once it has a result: `None` while untried.
pub fn result_line(r: &serde_json::Value) -> Option<String> {
    let to = r["to"].as_str().unwrap_or("?");
    let reply = r["reply"].as_str().unwrap_or("");
    let what = match (r["status"].as_str(), r["attempts"].as_u64().unwrap_or(0)) {
        (Some("delivered"), _) => "delivered",
        (Some("failed"), _) => "failed",
        (Some("pending"), n) if n > 0 => "deferred",
        _ => return None,
    };
    Some(if reply.is_empty() { format!("{to}... {what}") } else { format!("{to}... {what}: {reply}") })
}

/// Polls the daemon for `id` and prints each recipient's result once.
fn wait(s: &Settings, id: &QueueId, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut shown: HashSet<String> = HashSet::new();
    let mut announced = false;
    loop {
        let answer = match control::request(&s.data_dir, &format!("status {id}")) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("No delivery transcript: the daemon is not reachable ({e}); the message waits in the queue");
                return;
            }
        };
        let Some(v) = answer.strip_prefix("ok ").and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()) else {
            eprintln!("No delivery transcript: the daemon says {answer}");
            return;
        };
        if !announced {
            eprintln!("Waiting up to {} s for the delivery result...", limit.as_secs());
            announced = true;
        }
        let rcpts = v["recipients"].as_array().cloned().unwrap_or_default();
        for r in &rcpts {
            let to = r["to"].as_str().unwrap_or("?").to_string();
            if !shown.contains(&to) {
                if let Some(line) = result_line(r) {
                    eprintln!("{line}");
                    shown.insert(to);
                }
            }
        }
        if v["place"] == "hold" {
            eprintln!("The message is on hold (`postern queue show {id}`)");
            return;
        }
        if v["place"] == "done" || shown.len() >= rcpts.len() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("Still queued after {} s; the queue keeps trying (`postern queue show {id}`)", limit.as_secs());
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_lines() {
        let cases = [
            (json!({"to": "a@x", "status": "pending", "attempts": 0, "reply": null}), None),
            (
                json!({"to": "a@x", "status": "pending", "attempts": 1, "reply": "451 4.4.1 no answer"}),
                Some("a@x... deferred: 451 4.4.1 no answer"),
            ),
            (json!({"to": "a@x", "status": "delivered", "attempts": 1, "reply": "250 2.0.0 ok"}), Some("a@x... delivered: 250 2.0.0 ok")),
            (
                json!({"to": "a@x", "status": "failed", "attempts": 1, "reply": "550 5.1.1 unknown"}),
                Some("a@x... failed: 550 5.1.1 unknown"),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(result_line(&v).as_deref(), want, "{v}");
        }
    }
}
