"""The command-line faces: `postern sendmail` (also as a `sendmail`
symlink), `mailq`, `postern queue …`, `postern config …`."""

import email
import json
import os
import smtplib

from conftest import BIN, BASE_CONFIG, free_port, smarthost_config, wait_for


def test_sendmail_t_with_bcc_and_daemon_running(postern):
    msg = (b"From: Alice <alice@mx.test>\n"
           b"To: Bob <bob@mx.test>\n"
           b"Cc: postmaster@mx.test\n"
           b"Bcc: Carol <carol@mx.test>,\n"
           b"  alice@mx.test\n"
           b"Subject: sendmail -t\n\n"
           b"line one\n.\nline after a lone dot\n")
    r = postern.cli("sendmail", "-t", "-i", "-f", "alice@mx.test", input=msg)
    assert r.returncode == 0, r.stderr
    for user in ("bob", "postmaster", "carol", "alice"):
        got = postern.wait_mail(user)[0]
        m = email.message_from_bytes(got)
        assert m["Subject"] == "sendmail -t"
        assert m["Bcc"] is None, f"Bcc leaked to {user}"
        assert b"Carol <carol@mx.test>" not in got and b"\nBcc:" not in got
        assert b"line after a lone dot" in got
        assert m["Return-Path"] == "<alice@mx.test>"
        assert m["Message-ID"] and m["Date"]


def test_sendmail_symlink_and_exit_codes(postern, tmp_path):
    link = tmp_path / "sendmail"
    os.symlink(BIN, link)
    # Without -i a lone dot ends the message (classic sendmail).
    r = postern.cli("bob", input=b"Subject: via symlink\n\nbefore\n.\nafter\n", argv0=str(link))
    assert r.returncode == 0, r.stderr
    got = postern.wait_mail("bob")[0]
    assert b"before" in got and b"after" not in got
    assert email.message_from_bytes(got)["From"].endswith("@mx.test")
    assert postern.cli("nosuchuser", input=b"x\n", argv0=str(link)).returncode == 67
    assert postern.cli(input=b"Subject: none\n\nx\n", argv0=str(link)).returncode == 65
    assert postern.cli("-bd", input=b"", argv0=str(link)).returncode == 64
    mailq = tmp_path / "mailq"
    os.symlink(BIN, mailq)
    r = postern.cli(argv0=str(mailq))
    assert r.returncode == 0 and b"Mail queue is empty" in r.stdout, r.stdout + r.stderr


def test_sendmail_without_daemon_waits_in_maildrop(postern_factory):
    """With no daemon, the message waits in DATA/maildrop (not the queue)
    and the daemon picks it up at start; sendmail itself prints nothing."""
    p = postern_factory(start=False)
    r = p.cli("sendmail", "alice", input=b"Subject: queued offline\n\nx\n")
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b"", r
    drops = [f for f in os.listdir(p.data / "maildrop") if not f.startswith(".")]
    assert len(drops) == 1, drops
    assert not (p.data / "queue").exists(), "sendmail does not write the queue"
    p.start()
    got = p.wait_mail("alice")[0]
    assert b"Subject: queued offline" in got
    wait_for(lambda: [f for f in os.listdir(p.data / "maildrop") if not f.startswith(".")] == [], what="maildrop to drain")
    wait_for(lambda: "client=local uid=0" in p.log(), what="queued line in the daemon's log")
    wait_for(lambda: p.queue_files()["active"] == [], what="queue to drain")


def test_sendmail_bp_is_mailq_and_newaliases_face(postern_factory, tmp_path):
    # A smarthost that is down keeps the message in the queue.
    p = postern_factory(smarthost_config(free_port()))
    assert p.cli("sendmail", "far@far.example", input=b"Subject: listed\n\nx\n").returncode == 0
    wait_for(lambda: p.queue_files()["active"], what="message queued by the pickup")
    wait_for(lambda: "deferred id=" in p.log(), what="first attempt deferred")
    mailq = p.cli("queue", "list")
    bp = p.cli("sendmail", "-bp")
    assert bp.returncode == 0 and bp.stdout == mailq.stdout and b"far@far.example" in bp.stdout, bp.stderr
    link = tmp_path / "sendmail"
    os.symlink(BIN, link)
    assert p.cli("-bp", argv0=str(link)).stdout == mailq.stdout
    # A usage error names the problem, then prints the option summary.
    r = p.cli("sendmail", "-bx", input=b"")
    assert r.returncode == 64, r.stderr
    assert r.stderr.startswith(b"postern sendmail: unsupported mode -bx\nUsage: postern sendmail"), r.stderr
    newaliases = tmp_path / "newaliases"
    os.symlink(BIN, newaliases)
    r = p.cli(argv0=str(newaliases))
    # The daemon is running (found through the data directory): it reloads them.
    assert r.returncode == 0 and b"0 aliases, active in the running daemon" in r.stdout, r.stdout + r.stderr


def test_queue_commands(postern_factory, sink):
    down = free_port()  # nothing listens here: the smarthost is "down"
    p = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{down}"\n')
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["far1@far.example"], b"Subject: one\r\n\r\nx\r\n")
        s.sendmail("alice@mx.test", ["far2@far.example"], b"Subject: two\r\n\r\nx\r\n")
    wait_for(lambda: p.log().count("deferred id=") >= 2, what="deferrals")
    ids = [e["id"] for e in json.loads(p.cli("queue", "list", "--json").stdout)]
    assert len(ids) == 2
    text = p.cli("queue", "list").stdout.decode()
    assert ids[0] in text and "far1@far.example" in text and "connect to 127.0.0.1" in text
    shown = json.loads(p.cli("queue", "show", ids[0], "--json").stdout)
    assert shown["recipients"][0]["attempts"] >= 1 and "Subject: one" in shown["message"]
    assert "*** MESSAGE CONTENTS" in p.cli("queue", "show", ids[0]).stdout.decode()
    # hold / release / delete
    assert p.cli("queue", "hold", ids[0]).returncode == 0
    listing = json.loads(p.cli("queue", "list", "--json").stdout)
    assert {e["id"]: e["place"] for e in listing}[ids[0]] == "hold"
    assert "!" in p.cli("queue", "list").stdout.decode().split(ids[0])[1][:2]
    assert p.cli("queue", "delete", ids[1]).returncode == 0
    assert p.cli("queue", "delete", ids[1]).returncode == 66
    assert p.cli("queue", "show", "not-an-id").returncode == 64
    # Point the config at the live sink, reload with SIGHUP, release, flush.
    p.cfg.write_text(p.cfg.read_text().replace(f"127.0.0.1:{down}", f"127.0.0.1:{sink.port}"))
    p.proc.send_signal(1)
    wait_for(lambda: "reload result=ok" in p.log(), what="reload")
    r = p.cli("queue", "release", ids[0], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["changed"] is True
    msgs = sink.wait()
    assert msgs[0]["rcpt_tos"] == ["far1@far.example"]
    wait_for(lambda: p.queue_files()["active"] == [] and p.queue_files()["hold"] == [], what="empty queue")
    flushed = json.loads(p.cli("queue", "flush", "--json").stdout)
    assert flushed["result"].startswith("ok")
    assert "Mail queue is empty" in p.cli("queue", "list").stdout.decode()


def test_flush_without_daemon_fails_clearly(postern_factory):
    p = postern_factory(start=False)
    p.data.joinpath("queue").mkdir()
    r = p.cli("queue", "flush")
    assert r.returncode == 69
    assert b"cannot reach the daemon" in r.stderr


def test_config_example_and_check(tmp_path):
    import subprocess
    ex = subprocess.run([BIN, "config", "example"], capture_output=True, check=True).stdout
    f = tmp_path / "example.toml"
    f.write_bytes(ex)
    # The example names a `postern` user and files that do not exist here:
    # serve would refuse it, so check does too, naming each.
    r = subprocess.run([BIN, "config", "check", str(f)], capture_output=True)
    assert r.returncode == 78 and b"key `tls.certificate`: cannot read /etc/postern/tls/fullchain.pem" in r.stderr, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('hostname = "x"\n[limits]\nmax_recipients = 10\ncommand_timout = "5m"\n')
    r = subprocess.run([BIN, "config", "check", str(bad)], capture_output=True)
    assert r.returncode == 78
    assert f"{bad}:4:1: key `limits.command_timout`: unknown field `command_timout`".encode() in r.stderr, r.stderr
    r = subprocess.run([BIN, "serve", "--config", str(bad)], capture_output=True, timeout=10)
    assert r.returncode == 78 and b"command_timout" in r.stderr


def test_sighup_with_broken_config_keeps_old(postern):
    good = postern.cfg.read_text()
    postern.cfg.write_text(good + "\nbogus_key = 1\n")
    postern.proc.send_signal(1)
    wait_for(lambda: "reload result=error" in postern.log(), what="reload error line")
    assert "keeping old config" in postern.log()
    with smtplib.SMTP("127.0.0.1", postern.port, timeout=10) as s:
        s.sendmail("x@client.example", ["alice@mx.test"], b"Subject: still up\r\n\r\nx\r\n")
    postern.wait_mail("alice")
    # A valid change takes effect for new sessions: a new user.
    postern.cfg.write_text(good.replace('"carol"]', '"carol", "dave"]'))
    postern.proc.send_signal(1)
    wait_for(lambda: "reload result=ok" in postern.log(), what="reload ok")
    with smtplib.SMTP("127.0.0.1", postern.port, timeout=10) as s:
        s.sendmail("x@client.example", ["dave@mx.test"], b"Subject: new user\r\n\r\nx\r\n")
    postern.wait_mail("dave")
    assert postern.stop() == 0
    assert "stop result=clean" in postern.log()


def test_drops_privileges_after_bind(postern_factory):
    import pwd
    import shutil
    import tempfile
    nobody = pwd.getpwnam("nobody")
    # The data directory must be reachable by `nobody` (pytest's tmp is root-only).
    base = tempfile.mkdtemp(prefix="postern-privdrop-")
    os.chmod(base, 0o755)
    try:
        p = postern_factory(BASE_CONFIG.replace('hostname = "mx.test"', 'hostname = "mx.test"\nuser = "nobody"'), start=False)
        p.data = __import__("pathlib").Path(base) / "data"
        p.start()

        def uid_line():
            status = open(f"/proc/{p.proc.pid}/status").read()
            return [l for l in status.splitlines() if l.startswith("Uid:")][0]

        # The kernel accepts connections as soon as the listeners are bound;
        # the privilege drop follows right after (chown walk, setuid).
        wait_for(lambda: uid_line().split()[1:] == [str(nobody.pw_uid)] * 4, what="privilege drop")
        assert uid_line().split()[1:] == [str(nobody.pw_uid)] * 4, uid_line()
        assert os.stat(p.data / "queue" / "active").st_uid == nobody.pw_uid
        with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
            s.sendmail("x@c.example", ["alice@mx.test"], b"Subject: unprivileged\r\n\r\nx\r\n")
        p.wait_mail("alice")
        assert "start user=nobody" in p.log()
        assert p.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
