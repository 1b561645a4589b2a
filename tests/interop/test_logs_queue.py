"""Operator ergonomics of logs and queue (issue 15, points 5 and 6): mail
log reopen by SIGHUP and `postern log reopen`, the shipped logrotate
snippet run by the real logrotate, JSON log lines, the start banner, queue
selection (`ALL`, `--from`, `--domain`, `--held`...), flush counts,
`--json-lines`, a closed stdout (`mailq | head -1`) and usage exit codes."""

import json
import os
import signal
import smtplib
import stat
import subprocess

from conftest import BIN, BASE_CONFIG, ROOT, free_port, require, wait_for


def logged_config(log, extra=""):
    return BASE_CONFIG + f'\n[log]\nmail_log = "{log}"\n' + extra


def send(p, sender, rcpt, subject="x"):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail(sender, [rcpt], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def read(path):
    return path.read_text(errors="replace") if path.exists() else ""


def test_sighup_and_log_reopen_after_mv(postern_factory, tmp_path):
    log = tmp_path / "logs" / "mail.log"
    log.parent.mkdir()
    old = os.umask(0o022)
    try:
        p = postern_factory(logged_config(log))
    finally:
        os.umask(old)
    wait_for(lambda: " start " in read(log), what="start lines")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    banner = next(line for line in read(log).splitlines() if " start " in line)
    for key in ("version=", f"config={p.cfg}", f"data_dir={p.data}", "hostname=mx.test", "local_domains=localhost,mx.test",
                f"listeners=smtp:127.0.0.1:{p.port}"):
        assert key in banner, banner
    # mv + SIGHUP: a new mail.log, new lines there, none in the old one.
    log.rename(log.with_name("mail.log.1"))
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log.exists(), what="a new mail.log after SIGHUP")
    send(p, "alice@mx.test", "bob@mx.test", "after hup")
    wait_for(lambda: "delivered " in read(log), what="delivery logged in the new file")
    assert "delivered " not in read(log.with_name("mail.log.1"))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # mv + `postern log reopen`.
    log.rename(log.with_name("mail.log.2"))
    r = p.cli("log", "reopen")
    assert r.returncode == 0, r.stderr
    assert log.exists()
    send(p, "alice@mx.test", "carol@mx.test", "after reopen")
    wait_for(lambda: "delivered " in read(log), what="delivery logged after log reopen")
    assert "carol@mx.test" not in read(log.with_name("mail.log.2"))
    # A new log.mail_log takes effect on reload; the old file says where it went.
    moved = tmp_path / "logs" / "moved.log"
    p.cfg.write_text(p.cfg.read_text().replace(str(log), str(moved)))
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "mail log switched" in read(moved), what="the new log file after reload")
    assert "switching mail log" in read(log) and str(moved) in read(log)
    send(p, "alice@mx.test", "bob@mx.test", "after switch")
    wait_for(lambda: "delivered " in read(moved), what="delivery logged in the new path")
    p.stop()
    # Without a daemon, reopen says so (69).
    r = p.cli("log", "reopen")
    assert r.returncode == 69 and b"cannot reach the daemon" in r.stderr


def test_logrotate_with_shipped_snippet(postern_factory, tmp_path):
    logrotate = require("logrotate")
    log = tmp_path / "logs" / "mail.log"
    log.parent.mkdir()
    p = postern_factory(logged_config(log))
    wait_for(lambda: " start " in read(log), what="start lines")
    shipped = (ROOT / "contrib" / "logrotate.d" / "postern").read_text()
    assert "/var/log/postern/mail.log" in shipped and "log reopen" in shipped
    conf = shipped.replace("/var/log/postern/mail.log", str(log)).replace(
        "/usr/local/bin/postern --config /etc/postern/postern.toml",
        f"{BIN} --config {p.cfg} --data-dir {p.data}")
    conf_file = tmp_path / "logrotate.conf"
    conf_file.write_text(conf)
    os.chmod(conf_file, 0o644)
    state = tmp_path / "logrotate.state"
    for round_ in (1, 2):
        r = subprocess.run([logrotate, "-v", "-f", "-s", str(state), str(conf_file)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert log.with_name("mail.log.1").exists()
        wait_for(lambda: log.exists(), what="the daemon's new mail.log")
        send(p, "alice@mx.test", "bob@mx.test", f"rotation {round_}")
        wait_for(lambda: "delivered " in read(log), what=f"delivery logged after rotation {round_}")
    # delaycompress: the second rotation compressed the first one.
    assert log.with_name("mail.log.2.gz").exists()
    assert "delivered " in read(log.with_name("mail.log.1"))


def test_json_log_lines(postern_factory, tmp_path):
    log = tmp_path / "mail.json"
    p = postern_factory(logged_config(log).replace("[log]\n", '[log]\nformat = "json"\n'))
    send(p, "alice@mx.test", "bob@mx.test", 'quote " and \\ backslash')
    wait_for(lambda: '"event":"delivered"' in read(log), what="delivered in JSON")
    events = [json.loads(line) for line in read(log).splitlines()]
    assert all(set(e) >= {"time", "event"} and all(isinstance(v, str) for v in e.values()) for e in events)
    start = events[0]
    assert start["event"] == "start", start
    assert start["hostname"] == "mx.test" and start["config"] == str(p.cfg)
    queued = next(e for e in events if e["event"] == "queued")
    assert queued["from"] == "alice@mx.test" and queued["size"].isdigit()


def deferred_queue(postern_factory):
    down = free_port()  # nothing listens here: every attempt defers
    p = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{down}"\n')
    send(p, "alice@mx.test", "far1@far.example")
    send(p, "alice@mx.test", "far2@far.example")
    send(p, "bob@mx.test", "x@other.example")
    def all_tried():
        q = json.loads(p.cli("queue", "list", "--json").stdout)
        return len(q) == 3 and all(r["attempts"] >= 1 for e in q for r in e["recipients"])
    wait_for(all_tried, what="three deferred messages")
    return p


def listing(p, *args):
    r = p.cli("queue", "list", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_queue_selection_hold_and_delete_all(postern_factory):
    p = deferred_queue(postern_factory)
    assert len(listing(p)) == 3
    assert [e["recipients"][0]["address"] for e in listing(p, "--domain", "other.example")] == ["x@other.example"]
    assert len(listing(p, "--deferred")) == 3 and listing(p, "--younger-than", "1h") and not listing(p, "--older-than", "1h")
    # hold by sender
    r = p.cli("queue", "hold", "--from", "alice@mx.test")
    assert r.returncode == 0, r.stderr
    assert b"2 messages held" in r.stdout
    places = {e["sender"] + e["recipients"][0]["address"]: e["place"] for e in listing(p)}
    assert places == {"alice@mx.testfar1@far.example": "hold", "alice@mx.testfar2@far.example": "hold",
                      "bob@mx.testx@other.example": "active"}
    lines = p.cli("queue", "list", "--held", "--json-lines").stdout.decode().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["place"] == "hold" for line in lines)
    # flush counts are numbers
    r = p.cli("queue", "flush", "--json")
    assert r.returncode == 0 and isinstance(json.loads(r.stdout)["flushed"], int), r.stdout
    r = p.cli("queue", "flush", "--to", "other.example", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["flushed"] == 1, r.stdout
    # nothing matches: said, rc 0
    r = p.cli("queue", "release", "--from", "nobody@nowhere")
    assert r.returncode == 0 and b"no queued message matches" in r.stderr
    # no id, no ALL, no selector: usage error
    assert p.cli("queue", "delete").returncode == 64
    assert p.cli("queue", "delete", "ALL", "0123456789ABCDEF").returncode == 64
    # delete ALL
    r = p.cli("queue", "delete", "ALL", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 3 and all(x["changed"] for x in json.loads(r.stdout))
    assert listing(p) == []
    r = p.cli("queue", "delete", "ALL")
    assert r.returncode == 0 and b"no queued message matches" in r.stderr and b"0 messages deleted" in r.stdout


def test_closed_stdout_is_quiet(postern_factory, tmp_path):
    p = deferred_queue(postern_factory)
    mailq = tmp_path / "mailq"
    mailq.symlink_to(BIN)
    env = dict(os.environ, POSTERN_CONFIG=str(p.cfg), POSTERN_DATA_DIR=str(p.data))
    for cmd in ([BIN, "--config", str(p.cfg), "--data-dir", str(p.data), "queue", "list"],
                [BIN, "--config", str(p.cfg), "--data-dir", str(p.data), "queue", "list", "--json-lines"],
                [str(mailq)]):
        # `| head -0`: the reader is gone before the first line is written.
        r_fd, w_fd = os.pipe()
        os.close(r_fd)
        proc = subprocess.run(cmd, stdout=w_fd, stderr=subprocess.PIPE, env=env, timeout=30)
        os.close(w_fd)
        assert proc.returncode in (0, 141), (cmd, proc.returncode, proc.stderr)
        assert b"panicked" not in proc.stderr, proc.stderr
        # and `| head -1` through a real shell pipeline
        sh = subprocess.run(["bash", "-c", 'set -o pipefail; "$@" | head -1', "sh", *cmd], capture_output=True, env=env, timeout=30)
        assert sh.returncode in (0, 141) and b"panicked" not in sh.stderr, sh.stderr
        assert sh.stdout.strip(), cmd


def test_usage_errors_exit_64():
    r = subprocess.run([BIN, "frobnicate"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 64, r
    assert "frobnicate" in r.stderr and "--help" in r.stderr and "Commands:" not in r.stderr
    r = subprocess.run([BIN, "queue", "list", "--bogus"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 64, r
    assert subprocess.run([BIN, "--help"], capture_output=True, timeout=30).returncode == 0
    assert subprocess.run([BIN, "--version"], capture_output=True, timeout=30).returncode == 0
