//! `postern queue …` (and `mailq`, `sendmail -bp`): list, show, flush,
//! delete, hold, release, bounce, move (`queue_move.rs`). Reads the spool directly; flush, release
//! and bounce ask a running daemon (control socket) to act now. Each
//! command prints its result and returns a sysexits(3) code.
//!
//! May touch: the spool, the control socket, standard output.

use clap::Subcommand;
use serde_json::json;

use super::select::{Filter, Selection};
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
    ///
    /// Selectors narrow the list (all must match); a selection that matches nothing says so and
    /// exits 0.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Machine-readable output: one JSON array.
        #[arg(long, conflicts_with = "json_lines")]
        json: bool,
        /// Machine-readable output: one JSON object per line, streamed (like `postqueue -j`).
        #[arg(long)]
        json_lines: bool,
    },
    /// Show one message: envelope, per-recipient state and text.
    Show {
        /// Queue id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to try queued messages now.
    ///
    /// All of them when no id or selector is given, else the selected ones. Prints `ok N`;
    /// `--json` prints `{"flushed": N, "result": "ok N"}`. Exit 69 when no daemon runs.
    Flush {
        /// Queue ids, or ALL.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete messages from the queue without bouncing them.
    ///
    /// `postern queue delete ALL` empties the queue; `postern queue delete ALL --deferred` keeps
    /// held mail; `postern queue delete --from spammer@` deletes by sender. Prints one line per
    /// message and a count; a selection that matches nothing says so and exits 0.
    Delete {
        /// Queue ids, or ALL; with selectors only the matching messages.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Put messages on hold: kept, never tried, until released.
    Hold {
        /// Queue ids, or ALL; with selectors only the matching messages.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Return messages to their senders now (pending recipients fail with a bounce).
    Bounce {
        /// Queue ids, or ALL; with selectors only the matching messages.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Relay queued messages to another node and remove them here (drain a node before retiring it).
    ///
    /// Each message goes over SMTP (STARTTLS when offered) with its envelope: sender, pending
    /// recipients, DSN parameters. It is removed here only after the target's 250; refused or
    /// deferred recipients stay queued here and are listed. Held messages stay. Stop the daemon
    /// first: the move takes the spool lock the daemon holds. The target must accept the mail
    /// (its local domains, or relay for this node's address). Exit 0 when everything moved, 75
    /// when something stayed. See docs/scaling.md.
    Move {
        /// The node to move to, HOST:PORT (e.g. mx2.example.org:25, [2001:db8::2]:25).
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        /// Every queued message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Queue ids to move.
        ids: Vec<String>,
        /// Machine-readable output: one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Release held messages and try them now.
    Release {
        /// Queue ids, or ALL; with selectors only the matching messages.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// How `queue list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The `mailq` table.
    Text,
    /// One pretty JSON array.
    Json,
    /// One compact JSON object per line.
    JsonLines,
}

/// Runs `postern queue ACTION`; returns the exit code.
pub(super) fn run(s: &Settings, action: QueueCmd) -> i32 {
    if let QueueCmd::Move { to, all, ids, json } = &action {
        return super::queue_move::run(s, to, *all, ids, *json);
    }
    let (ids, filter, need_some) = match &action {
        QueueCmd::Show { .. } => (Vec::new(), Filter::default(), false),
        QueueCmd::List { filter, .. } => (Vec::new(), filter.clone(), false),
        QueueCmd::Move { .. } => (Vec::new(), Filter::default(), false),
        QueueCmd::Flush { ids, filter, .. } => (ids.clone(), filter.clone(), false),
        QueueCmd::Delete { ids, filter, .. }
        | QueueCmd::Hold { ids, filter, .. }
        | QueueCmd::Release { ids, filter, .. }
        | QueueCmd::Bounce { ids, filter, .. } => (ids.clone(), filter.clone(), true),
    };
    let sel = match Selection::new(&ids, filter, need_some) {
        Ok(sel) => sel,
        Err(e) => {
            eprintln!("postern: {e}\nFor more information, try '--help'.");
            return exit::USAGE;
        }
    };
    match action {
        QueueCmd::List { json, json_lines, .. } => {
            let out = if json_lines {
                Output::JsonLines
            } else if json {
                Output::Json
            } else {
                Output::Text
            };
            list_selected(s, &sel, out)
        }
        QueueCmd::Show { id, json } => show(s, &id, json),
        QueueCmd::Move { .. } => exit::SOFTWARE,
        QueueCmd::Flush { json, .. } => flush(s, &sel, sel.selects_all(), json),
        QueueCmd::Delete { json, .. } => change(s, Change::Delete, &sel, json),
        QueueCmd::Hold { json, .. } => change(s, Change::Hold, &sel, json),
        QueueCmd::Release { json, .. } => change(s, Change::Release, &sel, json),
        QueueCmd::Bounce { json, .. } => change(s, Change::Bounce, &sel, json),
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

    /// What was done, for the count line ("3 messages deleted").
    pub fn past(self) -> &'static str {
        match self {
            Change::Delete => "deleted",
            Change::Hold => "held",
            Change::Release => "released",
            Change::Bounce => "returned to sender",
        }
    }
}

pub(super) fn open(settings: &Settings) -> Result<Spool, i32> {
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

pub(super) fn env_json(e: &Envelope, place: Place) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["place"] = json!(place);
    v
}

/// `mailq` and `sendmail -bp`: every message.
pub fn list(settings: &Settings, as_json: bool) -> i32 {
    match Selection::new(&[], Filter::default(), false) {
        Ok(sel) => list_selected(settings, &sel, if as_json { Output::Json } else { Output::Text }),
        Err(_) => exit::USAGE,
    }
}

/// The queued messages `sel` selects, in queue order; `Err` is the exit code.
pub(super) fn selected(settings: &Settings, sel: &Selection) -> Result<(Spool, Vec<(Envelope, Place)>), i32> {
    let spool = open(settings)?;
    let Listing { envelopes, corrupt: bad } = spool.list().map_err(|e| {
        eprintln!("postern: {e}");
        exit::TEMPFAIL
    })?;
    for e in &bad {
        eprintln!("postern: warning: {e}");
    }
    let now = crate::time::now_unix();
    let list = envelopes.into_iter().filter(|(e, p)| sel.matches(e, *p, now)).collect();
    Ok((spool, list))
}

/// `queue list [selectors]`.
pub fn list_selected(settings: &Settings, sel: &Selection, out: Output) -> i32 {
    let list = match selected(settings, sel) {
        Ok((_, list)) => list,
        Err(c) => return c,
    };
    match out {
        Output::Json => {
            let v: Vec<_> = list.iter().map(|(e, p)| env_json(e, *p)).collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            return exit::OK;
        }
        Output::JsonLines => {
            for (e, p) in &list {
                println!("{}", env_json(e, *p));
            }
            return exit::OK;
        }
        Output::Text => {}
    }
    if list.is_empty() {
        println!("{}", if sel.selects_all() { "Mail queue is empty" } else { "No queued message matches the selection" });
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
    if env.requiretls {
        println!("requiretls: yes (verified TLS to a next hop that offers REQUIRETLS, or a 5.7.30 bounce)");
    }
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

/// `queue flush [ID...|ALL] [selectors] [--json]`: asks the running daemon
/// to try now: everything (`flush`, one request) when `everything`, else
/// each selected message. Prints `ok N` or `{"flushed": N, "result": "ok N"}`.
pub fn flush(settings: &Settings, sel: &Selection, everything: bool, as_json: bool) -> i32 {
    let cmds: Vec<String> = if everything {
        vec!["flush".to_string()]
    } else {
        let ids = match ids_of(settings, sel) {
            Ok((_, ids)) => ids,
            Err(c) => return c,
        };
        if ids.is_empty() {
            eprintln!("postern: no queued message matches the selection");
        }
        ids.iter().map(|id| format!("flush {id}")).collect()
    };
    let mut flushed = 0usize;
    let mut failure = None;
    for cmd in &cmds {
        match control::request(&settings.data_dir, cmd) {
            Ok(a) if a == "ok" => flushed += 1,
            Ok(a) if a.starts_with("ok ") => flushed += a[3..].trim().parse::<usize>().unwrap_or(0),
            other => {
                failure = Some(other);
                break;
            }
        }
    }
    let code = match &failure {
        None => exit::OK,
        Some(Ok(_)) => exit::TEMPFAIL,
        Some(Err(_)) => exit::UNAVAILABLE,
    };
    match (failure, as_json) {
        (None, true) => println!("{}", json!({"flushed": flushed, "result": format!("ok {flushed}")})),
        (None, false) => println!("ok {flushed}"),
        (Some(Ok(a)), true) => println!("{}", json!({"error": a, "flushed": flushed})),
        (Some(Err(e)), true) => println!("{}", json!({"error": format!("daemon not reachable: {e}"), "flushed": flushed})),
        (Some(Ok(a)), false) => eprintln!("postern: daemon says: {a}"),
        (Some(Err(e)), false) => eprintln!(
            "postern: cannot reach the daemon at {}: {e}\n(queued mail is delivered when `postern serve` runs)",
            control::socket_path(&settings.data_dir).display()
        ),
    }
    code
}

/// The spool and the ids `sel` names: plain ids as given (missing ones are
/// reported by the action), else the matching messages in queue order.
fn ids_of(settings: &Settings, sel: &Selection) -> Result<(Spool, Vec<QueueId>), i32> {
    match sel.plain_ids() {
        Some(ids) => Ok((open(settings)?, ids)),
        None => {
            let (spool, list) = selected(settings, sel)?;
            Ok((spool, list.into_iter().map(|(e, _)| e.id).collect()))
        }
    }
}

/// `queue delete|hold|release|bounce ID...|ALL [selectors]`: acts on each
/// selected message, prints one line per message and a count (or a JSON
/// array, one object per message). No match: a notice on stderr, exit 0.
pub fn change(settings: &Settings, change: Change, sel: &Selection, as_json: bool) -> i32 {
    let action = change.as_str();
    let (spool, ids) = match ids_of(settings, sel) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if ids.is_empty() {
        eprintln!("postern: no queued message matches the selection");
    }
    let mut code = exit::OK;
    let mut results = Vec::new();
    let mut done = 0usize;
    for id in ids {
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
                done += usize::from(changed);
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
    } else {
        println!("{done} message{} {}", if done == 1 { "" } else { "s" }, change.past());
    }
    code
}
