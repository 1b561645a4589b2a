"""Real SMTP clients (swaks, Python smtplib) against postern: local
delivery to Maildir, relaying through a real smarthost (aiosmtpd), the
relay refusal, and the embedded default configuration."""

import email
import smtplib
import socket
import subprocess
import time

from conftest import BIN, BASE_CONFIG, free_port, queue_view, smarthost_config, swaks, swaks_full, wait_for, wait_port


def test_swaks_local_delivery_to_maildir(postern):
    r = swaks("--server", f"127.0.0.1:{postern.port}", "--from", "sender@client.example",
              "--to", "alice@mx.test", "--header", "Subject: swaks test", "--body", "hello from swaks")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = postern.wait_mail("alice")
    m = email.message_from_bytes(msgs[0])
    assert m["Subject"] == "swaks test"
    assert m["Return-Path"] == "<sender@client.example>"
    assert m["Delivered-To"] == "alice@mx.test"
    assert "by mx.test (postern) with ESMTP id" in m["Received"]
    assert b"hello from swaks" in msgs[0]
    # The Maildir file appears just before the scheduler writes its log line.
    log = wait_for(lambda: "delivered id=" in postern.log() and postern.log(), what="the delivered log line")
    assert "queued id=" in log and "relay=maildir" in log


def test_swaks_pipelining_and_postmaster(postern):
    r = swaks_full("--server", f"127.0.0.1:{postern.port}", "--pipeline", "--from", "s@client.example",
                   "--to", "postmaster@mx.test,bob@mx.test", "--body", "pipelined")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PIPELINING" in r.stdout
    postern.wait_mail("postmaster")
    postern.wait_mail("bob")


def test_swaks_unknown_user_refused(postern):
    r = swaks("--server", f"127.0.0.1:{postern.port}", "--from", "s@client.example", "--to", "nobody@mx.test")
    assert r.returncode != 0
    r = swaks_full("--server", f"127.0.0.1:{postern.port}", "--from", "s@client.example", "--to", "nobody@mx.test")
    assert "550 5.1.1 <nobody@mx.test>: No such user here" in r.stdout
    assert "rule=local-unknown" in postern.log()


def test_no_open_relay(postern_factory):
    p = postern_factory(BASE_CONFIG + '\n[relay]\nnetworks = ["192.0.2.0/24"]\n')
    r = swaks_full("--server", f"127.0.0.1:{p.port}", "--from", "s@client.example", "--to", "victim@elsewhere.example")
    assert "550 5.7.1 <victim@elsewhere.example>: Relay access denied" in r.stdout, r.stdout


def test_smtplib_relay_via_smarthost(postern_factory, sink):
    p = postern_factory(smarthost_config(sink.port))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.ehlo("client.example")
        assert s.has_extn("pipelining") and s.has_extn("chunking") and s.has_extn("enhancedstatuscodes")
        refused = s.sendmail("me@client.example", ["one@far.example", "two@far.example", "alice@mx.test"],
                             b"Subject: via smarthost\r\nMessage-ID: <relay-1@client.example>\r\n\r\nline\r\n.dot line\r\n")
        assert refused == {}
    msgs = sink.wait()
    assert msgs[0]["mail_from"] == "me@client.example"
    assert sorted(msgs[0]["rcpt_tos"]) == ["one@far.example", "two@far.example"]
    data = msgs[0]["data"]
    assert b"Message-ID: <relay-1@client.example>" in data
    assert b"\r\n.dot line\r\n" in data, data
    assert data.startswith(b"Received: from client.example ([127.0.0.1])")
    p.wait_mail("alice")
    log = wait_for(lambda: "relay=smtp:127.0.0.1" in p.log() and p.log(), what="smarthost delivery log")
    assert "delivered id=" in log


def test_smtplib_smtputf8_and_8bit(postern_factory, sink):
    p = postern_factory(smarthost_config(sink.port))
    body = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße aus Köln\r\n".encode()
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.ehlo("client.example")
        s.sendmail("jürgen@client.example", ["grüße@far.example"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    msgs = sink.wait()
    assert msgs[0]["rcpt_tos"] == ["grüße@far.example"]
    assert "Grüße aus Köln".encode() in msgs[0]["data"]
    assert b"with UTF8SMTP id" in msgs[0]["data"]


def test_smarthost_per_recipient_results_and_bounce(postern_factory, sink):
    p = postern_factory(smarthost_config(sink.port))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["ok@far.example", "reject-me@far.example"],
                   b"Subject: partly bad\r\nX-Marker: original-header\r\n\r\nsecret body text\r\n")
    sink.wait()
    bounce = email.message_from_bytes(p.wait_mail("alice")[0])
    assert bounce["Return-Path"] == "<>"
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    parts = list(bounce.walk())
    types = [x.get_content_type() for x in parts]
    assert "message/delivery-status" in types and "text/rfc822-headers" in types
    raw = p.maildir("alice")[0]
    assert b"Final-Recipient: rfc822; reject-me@far.example" in raw
    assert b"Status: 5.1.1" in raw
    assert b"Action: failed" in raw
    assert b"X-Marker: original-header" in raw
    assert b"secret body text" not in raw
    assert b"ok@far.example" not in raw.split(b"message/delivery-status")[1].split(b"text/rfc822-headers")[0]


def test_double_bounce_goes_to_postmaster(postern_factory, sink):
    """A bounce (null sender) that fails is not dropped: the report goes to
    postmaster (Postfix's 2bounce_notice_recipient), and is not bounced again."""
    p = postern_factory(smarthost_config(sink.port))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("<>", ["reject-bounce@far.example"], b"Subject: a bounce\r\n\r\nx\r\n")
    got = p.wait_mail("postmaster")[0]
    assert b"Undelivered Mail Returned to Sender" in got and b"reject-bounce@far.example" in got, got
    assert b"To: <postmaster@mx.test>" in got
    assert "to=postmaster@mx.test" in p.log()
    wait_for(lambda: p.queue_files()["active"] == [], what="queue to empty")


def test_embedded_default_config(tmp_path):
    """`postern serve` with no config and no flags: 127.0.0.1:2525, ./postern-data."""
    try:
        with socket.create_connection(("127.0.0.1", 2525), timeout=0.5):
            raise AssertionError("port 2525 is already in use; cannot test the embedded default")
    except OSError:
        pass
    env = {"PATH": "/usr/bin:/bin", "POSTERN_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen([BIN, "serve"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(2525, proc=proc)
        with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as s:
            code, banner = s.ehlo("client.example")
            assert code == 250
            s.sendmail("x@client.example", ["postmaster@localhost"], b"Subject: default\r\n\r\nok\r\n")
            # Loopback may relay by default (like Postfix mynetworks); no smarthost yet: it waits in the queue.
            s.sendmail("x@client.example", ["someone@far.example"], b"Subject: relay\r\n\r\nok\r\n")
        new = tmp_path / "postern-data" / "mail" / "postmaster" / "new"
        wait_for(lambda: new.is_dir() and list(new.iterdir()), what="default maildir delivery")
        # Relayed: it waits in the queue (the resolver gives no answer), or far.example is NXDOMAIN
        # and it bounces to x@client.example, NXDOMAIN too: the double bounce reaches postmaster.
        wait_for(lambda: queue_view(tmp_path / "postern-data" / "queue")["active"] or len(list(new.iterdir())) >= 2,
                 what="relayed mail queued or bounced")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert b"stop result=clean" in out


def test_smarthost_connection_reuse(postern_factory, sink):
    p = postern_factory(smarthost_config(sink.port))
    for i in range(3):
        with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
            s.sendmail("me@client.example", [f"r{i}@far.example"], f"Subject: reuse {i}\r\n\r\nx\r\n".encode())
        sink.wait(i + 1)
    assert len(sink.messages) == 3
    assert sink.ehlos == 1, f"{sink.ehlos} connections for 3 messages: idle connection not reused"


def test_expired_mail_bounces(postern_factory):
    down = free_port()
    cfg = BASE_CONFIG.replace('retry_max = "2s"', 'retry_max = "2s"\nmax_lifetime = "3s"')
    p = postern_factory(cfg + f'\n[relay]\nsmarthost = "127.0.0.1:{down}"\n')
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["stuck@far.example"], b"Subject: will expire\r\n\r\nx\r\n")
    raw = p.wait_mail("alice", timeout=20)[0]
    assert b"Status: 4.4.7" in raw, raw
    assert b"delivery time expired" in raw
    assert b"Final-Recipient: rfc822; stuck@far.example" in raw
    assert "expired id=" in p.log()
    wait_for(lambda: p.queue_files()["active"] == [], what="queue to empty")
