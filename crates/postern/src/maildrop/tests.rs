use super::pickup::{read_drop, take, Picked};
use super::*;
use crate::config::Config;
use crate::settings::{Settings, Source};

fn env(rcpts: &[&str]) -> DropEnvelope {
    DropEnvelope { recipients: rcpts.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

/// The parser, one case per line: (name, file bytes, expected result).
#[test]
fn parse_table() {
    let good = encode(&env(&["root"]), b"Subject: x\r\n\r\nbody\r\n").unwrap();
    let mut cut = good.clone();
    cut.truncate(cut.len() - 3);
    let mut longer = good.clone();
    longer.extend_from_slice(b"more");
    let table: Vec<(&str, Vec<u8>, Result<(), &str>)> = vec![
        ("good", good, Ok(())),
        ("truncated body", cut, Err("truncated")),
        ("truncated envelope", b"POSTERN-DROP 1\nsize 3\nrcpt a".to_vec(), Err("truncated")),
        ("longer than size", longer, Err("bad field \"size\"")),
        ("oversized", encode(&env(&["a"]), &[b'x'; 200]).unwrap(), Err("larger than limits.max_message_size (100 bytes)")),
        ("no magic", b"HELLO\nsize 0\n\n".to_vec(), Err("not a drop file")),
        ("forged uid", b"POSTERN-DROP 1\nsize 0\nuid 0\nrcpt a\n\n".to_vec(), Err("unknown field \"uid\"")),
        ("two senders", b"POSTERN-DROP 1\nsize 0\nsender a\nsender b\n\n".to_vec(), Err("bad field \"sender\"")),
        ("empty rcpt", b"POSTERN-DROP 1\nsize 0\nrcpt\n\n".to_vec(), Err("bad field \"rcpt\"")),
        ("no size", b"POSTERN-DROP 1\nrcpt a\n\n".to_vec(), Err("bad field \"size\"")),
        ("not utf-8", b"POSTERN-DROP 1\nsize 0\nrcpt \xff\n\n".to_vec(), Err("bad field \"not UTF-8\"")),
    ];
    for (name, bytes, want) in table {
        let got = parse(&bytes, 100);
        match (want, got) {
            (Ok(()), Ok(d)) => assert_eq!(d.envelope.recipients, vec!["root"], "{name}"),
            (Err(w), Err(e)) => assert!(e.to_string().starts_with(w), "{name}: {e}"),
            (w, g) => panic!("{name}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn encode_refuses_line_breaks_and_round_trips() {
    let e = DropEnvelope {
        sender: Some(String::new()),
        full_name: Some("Cron Daemon".into()),
        from_headers: true,
        recipients: vec!["root".into(), "a@b.example".into()],
    };
    let d = parse(&encode(&e, b"x\r\n").unwrap(), 100).unwrap();
    assert_eq!((d.envelope, d.message), (e, b"x\r\n".to_vec()));
    assert!(encode(&env(&["a\nuid 0"]), b"").is_err());
    assert!(encode(&DropEnvelope { full_name: Some("x\r".into()), ..env(&["a"]) }, b"").is_err());
}

fn settings(data: &std::path::Path) -> Settings {
    let config = Config::parse("hostname = \"mx.test\"\n[local]\ndomains = [\"mx.test\"]\nusers = [\"alice\"]\n", "t").unwrap();
    Settings::from_config(config, &Source { config: None, data_dir: Some(data.into()) }).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The owner is the submitter; a file is queued, then removed; bad ones are refused.
#[test]
fn pickup_queues_with_the_owner_uid_and_refuses_bad_files() {
    let data = tempfile::tempdir().unwrap();
    let s = settings(data.path());
    prepare_dirs(data.path()).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(data.path()), 0o711);
    assert_eq!(mode(&dir(data.path())), 0o3733);
    assert_eq!(mode(&bad_dir(data.path())), 0o700);
    let spool = crate::spool::Spool::open(&data.path().join("queue")).unwrap();
    let rt = runtime();
    let cron = DropEnvelope { full_name: Some("CronDaemon".into()), ..env(&["root"]) };
    let name = write(data.path(), &cron, b"Subject: cron\r\n\r\nout\r\n").unwrap();
    assert!(is_drop_name(&name));
    let path = dir(data.path()).join(&name);
    assert_eq!(mode(&path), 0o640);
    let me = nix::unistd::getuid().as_raw();
    assert_eq!(read_drop(&path, 1000).unwrap().0, me);
    let id = match take(&s, &spool, &name, rt.handle()) {
        Picked::Queued(id) => id,
        other => panic!("{other:?}"),
    };
    assert!(!path.exists(), "the drop file is removed after the commit");
    let (envelope, _) = spool.load(&id).unwrap();
    assert_eq!(envelope.recipients[0].address, "postmaster@mx.test", "root reaches postmaster");
    let body = String::from_utf8(spool.read_body(&id).unwrap()).unwrap();
    assert!(body.contains(&format!("from userid {me});")), "{body}");
    assert!(body.contains("From: \"CronDaemon\" <"), "{body}");
    let log = crate::maillog::CAPTURED.lock().unwrap().join("");
    assert!(log.contains(&format!("queued id={id} ")) && log.contains(&format!("client=local uid={me}")), "{log}");

    // (name, content, why it is refused)
    let bad: [(&str, Vec<u8>, &str); 3] = [
        ("unknown user", encode(&env(&["nosuch"]), b"x\r\n").unwrap(), "no such local user"),
        ("bad address", encode(&env(&["a@@b"]), b"x\r\n").unwrap(), "bad address"),
        ("forged uid", b"POSTERN-DROP 1\nsize 0\nuid 0\nrcpt alice\n\n".to_vec(), "unknown field"),
    ];
    for (what, bytes, why) in bad {
        let name = format!("{:032x}", rand::random::<u128>());
        std::fs::write(dir(data.path()).join(&name), bytes).unwrap();
        match take(&s, &spool, &name, rt.handle()) {
            Picked::Bad(e) => assert!(e.contains(why), "{what}: {e}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // A link to someone else's file is not taken (the owner would be forged).
    let target = data.path().join("victim");
    std::fs::write(&target, encode(&env(&["alice"]), b"x\r\n").unwrap()).unwrap();
    let linked = format!("{:032x}", 7u128);
    std::fs::hard_link(&target, dir(data.path()).join(&linked)).unwrap();
    assert!(matches!(take(&s, &spool, &linked, rt.handle()), Picked::Bad(e) if e.contains("one link")));
    let symlinked = format!("{:032x}", 8u128);
    std::os::unix::fs::symlink(&target, dir(data.path()).join(&symlinked)).unwrap();
    assert!(matches!(take(&s, &spool, &symlinked, rt.handle()), Picked::Bad(_)));
}

#[test]
fn write_needs_a_maildrop() {
    let data = tempfile::tempdir().unwrap();
    assert!(matches!(write(data.path(), &env(&["a"]), b""), Err(DropError::NoMaildrop(_))));
}
