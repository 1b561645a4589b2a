"""The sendmail modes that software calls: -bs (SMTP on stdin/stdout, with
swaks --pipe and a pipelining Python client), -q/-qR (flush through the
running daemon), -bv/-bt (address test), -v (delivery transcript), and
newaliases/-bi with the daemon's aliases reload and file watch."""

import os
import shlex
import smtplib
import subprocess

from conftest import BIN, BASE_CONFIG, free_port, require, swaks_full, wait_for

SLOW_RETRY = BASE_CONFIG.replace('retry_min = "1s"', 'retry_min = "1h"').replace('retry_max = "2s"', 'retry_max = "2h"')


def sendmail_cmd(p, *args):
    return [BIN, "--config", str(p.cfg), "--data-dir", str(p.data), "sendmail", *args]


def replies(out):
    """The final line of each reply, as (code, text)."""
    lines = out.decode().split("\r\n")
    return [(l[:3], l[4:]) for l in lines if len(l) >= 4 and l[3] == " "]


def rcpt_code(p, addr):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.ehlo("me.test")
        s.mail("x@far.example")
        return s.rcpt(addr)[0]


def test_bs_with_swaks_pipe_two_messages(postern):
    require("swaks")
    cmd = shlex.join(sendmail_cmd(postern, "-bs"))
    for i in (1, 2):
        r = swaks_full("--pipe", cmd, "--from", "app@mx.test", "--to", "alice@mx.test",
                       "--header", f"Subject: swaks -bs {i}", "--body", f"body {i}\n.dot line\n")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "250 2.0.0 Ok: queued as" in r.stdout, r.stdout
        assert "STARTTLS" not in r.stdout and "AUTH" not in r.stdout
    got = postern.wait_mail("alice", 2)
    # Maildir files have LF line ends.
    subjects = sorted(m.split(b"Subject: ")[1].split(b"\n")[0] for m in got)
    assert subjects == [b"swaks -bs 1", b"swaks -bs 2"]
    assert all(b"\n.dot line\n" in m and b"..dot" not in m for m in got)


def test_bs_pipelined_python_client(postern):
    script = (
        b"EHLO app.test\r\n"
        b"MAIL FROM:<app@mx.test>\r\nRCPT TO:<nobody@mx.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n"
        b"Subject: first\r\n\r\n..stuffed\r\nplain\r\n.\r\n"
        b"DATA\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<carol@mx.test>\r\nDATA\r\n"
        b"Subject: second\r\n\r\nsecond body\r\n.\r\n"
        b"QUIT\r\n"
    )
    r = subprocess.run(sendmail_cmd(postern, "-bs"), input=script, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    codes = [c for c, _ in replies(r.stdout)]
    assert codes == ["220", "250", "250", "550", "250", "354", "250", "503", "250", "250", "354", "250", "221"], r.stdout
    assert b"550 5.1.1 <nobody@mx.test>" in r.stdout and b"503 5.5.1" in r.stdout
    first = postern.wait_mail("bob")[0]
    assert b"\n.stuffed\nplain\n" in first and b"..stuffed" not in first
    assert b"second body" in postern.wait_mail("carol")[0]
    # EOF without QUIT ends cleanly; an unfinished DATA is not queued.
    r = subprocess.run(sendmail_cmd(postern, "-bs"), input=b"MAIL FROM:<a@mx.test>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\nSubject: cut\r\n",
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and [c for c, _ in replies(r.stdout)] == ["220", "250", "250", "354"], r.stdout
    assert postern.maildir("alice") == []


def test_q_flushes_deferred_mail(postern_factory, sink):
    down = free_port()
    p = postern_factory(SLOW_RETRY + f'\n[relay]\nsmarthost = "127.0.0.1:{down}"\n')
    for to in ("one@a.example", "two@b.example"):
        assert subprocess.run(sendmail_cmd(p, to), input=b"Subject: q\n\nx\n", timeout=60).returncode == 0
    wait_for(lambda: p.log().count("deferred id=") >= 2, what="two deferrals")
    p.cfg.write_text(p.cfg.read_text().replace(f"127.0.0.1:{down}", f"127.0.0.1:{sink.port}"))
    p.proc.send_signal(1)
    wait_for(lambda: "reload result=ok" in p.log(), what="reload")
    r = subprocess.run(sendmail_cmd(p, "-qRb.example"), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sink.wait(1)[0]["rcpt_tos"] == ["two@b.example"]
    r = subprocess.run(sendmail_cmd(p, "-q1h"), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    msgs = sink.wait(2)
    assert sorted(m["rcpt_tos"][0] for m in msgs) == ["one@a.example", "two@b.example"]
    p.stop()
    r = subprocess.run(sendmail_cmd(p, "-q"), capture_output=True, timeout=60)
    assert r.returncode == 69 and b"no daemon is running" in r.stderr, r.stderr


def test_bv_and_bt(postern_factory):
    p = postern_factory(start=False, aliases="# staff\nteam: alice,\n  bob\nsales: team, far@remote.example\n")
    r = p.cli("sendmail", "-bv", "alice")
    assert r.returncode == 0 and r.stdout == b"alice@mx.test... deliverable: mailer local, user alice\n", r.stdout + r.stderr
    r = p.cli("sendmail", "-bv", "sales@mx.test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "alice@mx.test... deliverable: mailer local, user alice",
        "bob@mx.test... deliverable: mailer local, user bob",
        "far@remote.example... deliverable: mailer esmtp, MX of remote.example, user far@remote.example",
    ]
    r = p.cli("sendmail", "-bv", "someone@remote.example")
    assert r.returncode == 0 and b"mailer esmtp, MX of remote.example" in r.stdout
    r = p.cli("sendmail", "-bv", "alice", "nobody@mx.test")
    assert r.returncode == 67 and b"nobody@mx.test... User unknown" in r.stdout, r.stdout
    r = p.cli("sendmail", "-bt", input=b"sales\n/quit\nalice\n")
    out = r.stdout.decode()
    assert r.returncode == 0 and "not sendmail's rule-set debugger" in out, out
    assert f"alias sales ({p.data / 'aliases'}:4) -> team, far@remote.example" in out, out
    assert f"alias team ({p.data / 'aliases'}:2) -> alice, bob" in out
    assert f"bob@mx.test -> mailer local, Maildir {p.data / 'mail' / 'bob'}/" in out
    assert "relay: accepted from local sendmail" in out
    assert out.count("relay:") == 1  # /quit stopped before alice


def test_v_prints_delivery_results(postern_factory, sink):
    p = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{sink.port}"\n')
    r = subprocess.run(sendmail_cmd(p, "-v", "alice", "defer@far.example"), input=b"Subject: v\n\nx\n",
                       capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "alice@mx.test... Recipient ok" in err and "Queued as " in err, err
    assert "alice@mx.test... delivered: 250" in err, err
    assert "defer@far.example... deferred: 450 4.2.0" in err, err


def test_newaliases_reloads_the_running_daemon(postern_factory, tmp_path):
    p = postern_factory(aliases="sales: alice\n")
    assert rcpt_code(p, "newalias@mx.test") == 550
    (p.data / "aliases").write_text("sales: alice\nnewalias: bob\n")
    link = tmp_path / "newaliases"
    os.symlink(BIN, link)
    r = p.cli(argv0=str(link))
    assert r.returncode == 0 and b"2 aliases, active in the running daemon" in r.stdout, r.stdout + r.stderr
    assert rcpt_code(p, "newalias@mx.test") == 250  # at once, no waiting
    assert "reload aliases=2" in p.log()
    # -bi is the same; a broken file is refused with file:line and the daemon keeps the old aliases.
    assert p.cli("sendmail", "-bi").returncode == 0
    (p.data / "aliases").write_text("sales: alice\nbroken line\n")
    r = p.cli("sendmail", "-bi")
    assert r.returncode in (65, 78) and f"{p.data / 'aliases'}:2".encode() in r.stderr, r.stderr
    wait_for(lambda: 'reload aliases=error' in p.log(), what="watch error logged")
    assert rcpt_code(p, "newalias@mx.test") == 250


def test_daemon_notices_an_edited_aliases_file(postern_factory):
    p = postern_factory(aliases="sales: alice\n")
    assert rcpt_code(p, "watched@mx.test") == 550
    (p.data / "aliases").write_text("sales: alice\nwatched: carol\n")
    wait_for(lambda: rcpt_code(p, "watched@mx.test") == 250, timeout=10, what="aliases watch")
    assert "reload aliases=2" in p.log()
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("x@far.example", ["watched@mx.test"], b"Subject: w\r\n\r\nx\r\n")
    p.wait_mail("carol")
