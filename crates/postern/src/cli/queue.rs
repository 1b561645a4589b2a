//! `postern queue …` (and `mailq`, `sendmail -bp`): list, show, flush,
//! delete, hold, release, bounce. Reads the spool directly; flush, release
//! and bounce ask a running daemon (control socket) to act now. Each
//! command prints its result and returns a sysexits(3) code.
//!
//! May touch: the spool, the control socket, standard output.

use clap::Subcommand;
use serde_json::json;

use super::sysexits as exit;
use crate::bounce::unix_to_rfc5322;
use crate::control;
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{Envelope, Listing, Place, QueueId, RcptStatus, Spool};

/// `postern queue ...`.
#[derive(Subcommand)]
pub enum QueueCmd {
    /// List queued messages (same as `mailq`). `!` after the id marks a held message.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, per-recipient state and text.
    Show {
        /// Queue id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to try all (or one) queued messages now.
    Flush {
        /// Queue id; all messages when omitted.
        id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete messages from the queue without bouncing them.
    Delete {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Put messages on hold: kept, never tried, until released.
    Hold {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Return messages to their senders now (pending recipients fail with a bounce).
    Bounce {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Release held messages and try them now.
    Release {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `postern queue ACTION`; returns the exit code.
pub(super) fn run(s: &Settings, action: QueueCmd) -> i32 {
    match action {
        QueueCmd::List { json } => list(s, json),
        QueueCmd::Show { id, json } => show(s, &id, json),
        QueueCmd::Flush { id, json } => flush(s, id.as_deref(), json),
        QueueCmd::Delete { ids, json } => change(s, Change::Delete, &ids, json),
        QueueCmd::Hold { ids, json } => change(s, Change::Hold, &ids, json),
        QueueCmd::Release { ids, json } => change(s, Change::Release, &ids, json),
        QueueCmd::Bounce { ids, json } => change(s, Change::Bounce, &ids, json),
    }
}

/// What `queue delete|hold|release|bounce` does to each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Remove the message without a bounce.
    Delete,
    /// Move it to `hold/`: kept, never tried.
    Hold,
    /// Move it back to `active/` and try it now.
    Release,
    /// Fail every pending recipient (the scheduler then bounces) and try now.
    Bounce,
}

impl Change {
    /// The word used in the mail log, the JSON output and the messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Delete => "delete",
            Change::Hold => "hold",
            Change::Release => "release",
            Change::Bounce => "bounce",
        }
    }
}

fn open(settings: &Settings) -> Result<Spool, i32> {
    let root = settings.data_dir.join("queue");
    if !root.exists() {
        eprintln!("postern: no queue at {} (wrong --data-dir?)", root.display());
        return Err(exit::CONFIG);
    }
    Spool::open(&root).map_err(|e| {
        eprintln!("postern: {e}");
        exit::CANTCREAT
    })
}

fn env_json(e: &Envelope, place: Place) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["place"] = json!(place);
    v
}

/// `queue list` / `mailq`.
pub fn list(settings: &Settings, as_json: bool) -> i32 {
    let spool = match open(settings) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let Listing { envelopes: list, corrupt: bad } = match spool.list() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postern: {e}");
            return exit::TEMPFAIL;
        }
    };
    for e in &bad {
        eprintln!("postern: warning: {e}");
    }
    if as_json {
        let v: Vec<_> = list.iter().map(|(e, p)| env_json(e, *p)).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return exit::OK;
    }
    if list.is_empty() {
        println!("Mail queue is empty");
        return exit::OK;
    }
    println!("-Queue ID-------- --Size-- ----Arrival Time---- -Sender/Recipient-------");
    let mut total = 0;
    for (e, place) in &list {
        total += e.size;
        let mark = if *place == Place::Hold { '!' } else { ' ' };
        let sender = if e.sender.is_empty() { "MAILER-DAEMON" } else { &e.sender };
        let when = chrono::DateTime::from_timestamp(e.created as i64, 0)
            .map(|d| d.with_timezone(&chrono::Local).format("%a %b %e %H:%M:%S").to_string())
            .unwrap_or_default();
        println!("{}{mark} {:>8} {:<20} {}", e.id, e.size, when, sender);
        if let Some(q) = e.quarantine.as_ref().filter(|_| *place == Place::Hold) {
            println!("{:>20}(hold: {})", "", q);
        }
        for r in &e.recipients {
            if r.status == RcptStatus::Delivered {
                continue;
            }
            if let Some(reply) = &r.last_reply {
                println!("{:>20}({})", "", reply);
            }
            let state = match r.status {
                RcptStatus::Failed => " (failed)",
                _ => "",
            };
            println!("{:>40}{}{}", "", r.address, state);
        }
        println!();
    }
    println!("-- {} Kbytes in {} Request{}.", total.div_ceil(1024), list.len(), if list.len() == 1 { "" } else { "s" });
    exit::OK
}

fn parse_id(s: &str) -> Result<QueueId, i32> {
    QueueId::parse(s).ok_or_else(|| {
        eprintln!("postern: {s:?} is not a queue id (16 hex digits)");
        exit::USAGE
    })
}

/// `queue show ID`.
pub fn show(settings: &Settings, id: &str, as_json: bool) -> i32 {
    let spool = match open(settings) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let id = match parse_id(id) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let (env, place) = match spool.load(&id) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postern: {e}");
            return exit::NOINPUT;
        }
    };
    let body = spool.read_body(&id).unwrap_or_default();
    if as_json {
        let mut v = env_json(&env, place);
        v["message"] = json!(String::from_utf8_lossy(&body));
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return exit::OK;
    }
    println!("*** ENVELOPE RECORDS {id} ***");
    println!("place: {}", if place == Place::Hold { "hold" } else { "active" });
    if let Some(q) = &env.quarantine {
        println!("quarantine: {q}");
    }
    println!("arrival: {}", unix_to_rfc5322(env.created));
    println!("sender: <{}>", env.sender);
    println!("client: {}{}", env.client, env.helo.as_ref().map(|h| format!(" (helo {h})")).unwrap_or_default());
    println!("size: {}", env.size);
    for r in &env.recipients {
        println!(
            "recipient: <{}> (orig <{}>) status={:?} attempts={} next={} last={}",
            r.address,
            r.original,
            r.status,
            r.attempts,
            if r.status == RcptStatus::Pending { unix_to_rfc5322(r.next_attempt) } else { "-".into() },
            r.last_reply.as_deref().unwrap_or("-")
        );
    }
    println!("*** MESSAGE CONTENTS {id} ***");
    print!("{}", String::from_utf8_lossy(&body).replace("\r\n", "\n"));
    exit::OK
}

/// `queue flush [ID] [--json]`: asks the running daemon to try now.
pub fn flush(settings: &Settings, id: Option<&str>, as_json: bool) -> i32 {
    let cmd = match id.map(parse_id).transpose() {
        Ok(Some(id)) => format!("flush {id}"),
        Ok(None) => "flush".to_string(),
        Err(c) => return c,
    };
    let answer = control::request(&settings.data_dir, &cmd);
    let code = match &answer {
        Ok(a) if a.starts_with("ok") => exit::OK,
        Ok(_) => exit::TEMPFAIL,
        Err(_) => exit::UNAVAILABLE,
    };
    match (answer, as_json) {
        (Ok(a), true) if code == exit::OK => println!("{}", json!({"result": a})),
        (Ok(a), true) => println!("{}", json!({"error": a})),
        (Err(e), true) => println!("{}", json!({"error": format!("daemon not reachable: {e}")})),
        (Ok(a), false) if code == exit::OK => println!("{a}"),
        (Ok(a), false) => eprintln!("postern: daemon says: {a}"),
        (Err(e), false) => eprintln!(
            "postern: cannot reach the daemon at {}: {e}\n(queued mail is delivered when `postern serve` runs)",
            control::socket_path(&settings.data_dir).display()
        ),
    }
    code
}

/// `queue delete|hold|release|bounce ID...`.
pub fn change(settings: &Settings, change: Change, ids: &[String], as_json: bool) -> i32 {
    let action = change.as_str();
    let spool = match open(settings) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut code = exit::OK;
    let mut results = Vec::new();
    for raw in ids {
        let id = match parse_id(raw) {
            Ok(i) => i,
            Err(c) => return c,
        };
        let r = match change {
            Change::Delete => spool.remove(&id).map(|_| true),
            Change::Bounce => spool.load(&id).and_then(|(mut env, place)| {
                let mut changed = false;
                for r in env.recipients.iter_mut().filter(|r| r.status == RcptStatus::Pending) {
                    r.status = RcptStatus::Failed;
                    r.last_reply = Some("5.0.0 returned to sender on request of the postmaster".into());
                    changed = true;
                }
                spool.update(&env, place)?;
                if place == Place::Hold {
                    spool.move_to(&id, Place::Active)?;
                }
                Ok(changed)
            }),
            Change::Hold => spool.move_to(&id, Place::Hold),
            Change::Release => spool.move_to(&id, Place::Active),
        };
        match r {
            Ok(changed) => {
                if changed {
                    let fields = [("id", id.as_str()), ("by", "cli")];
                    match change {
                        Change::Delete => maillog::delete(&fields),
                        Change::Hold => maillog::hold(&fields),
                        Change::Release => maillog::release(&fields),
                        Change::Bounce => maillog::bounce(&fields),
                    }
                }
                if matches!(change, Change::Release | Change::Bounce) {
                    let _ = control::request(&settings.data_dir, &format!("kick {id}"));
                }
                results.push(json!({"id": id, "action": action, "changed": changed}));
                if !as_json {
                    println!("{id}: {}", if changed { format!("{action} done") } else { format!("already {action}d") });
                }
            }
            Err(e) => {
                results.push(json!({"id": id, "action": action, "error": e.to_string()}));
                if !as_json {
                    eprintln!("postern: {e}");
                }
                code = exit::NOINPUT;
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&results).unwrap_or_default());
    }
    code
}
