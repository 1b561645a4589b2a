"""Milters: postern as the MTA side of the sendmail milter protocol, driven
against real milters: a pymilter (libmilter) test milter that exercises every
reply and modification, and Debian's opendkim signing submitted mail, checked
by a separate verifier (dkimpy)."""

import email
import email.policy
import json
import os
import pathlib
import re
import smtplib
import subprocess

import pytest

from conftest import BASE_CONFIG, free_port, require, wait_for, wait_port, swaks_full

SCRIPTED = pathlib.Path(__file__).parent / "milters" / "scripted.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3 with python3-milter (pymilter on libmilter)


def milter_config(milters, listener_milters=None, extra=""):
    """BASE_CONFIG with milters: a list of (name, port or socket, extra keys)."""
    names = listener_milters if listener_milters is not None else [m[0] for m in milters]
    listener = 'address = "127.0.0.1:{port}"\n'
    assert listener in BASE_CONFIG
    text = BASE_CONFIG.replace(listener, listener + f"milters = {json.dumps(names)}\n") + extra
    for name, port, keys in milters:
        socket = port if isinstance(port, str) else f"inet:127.0.0.1:{port}"
        text += f'\n[[milter]]\nname = "{name}"\nsocket = "{socket}"\n{keys}\n'
    return text


class ScriptedMilter:
    def __init__(self, tmp, name="scripted", unix=False):
        assert pathlib.Path(SYSTEM_PYTHON).exists(), "Debian python3 is missing: run scripts/install-test-deps"
        r = subprocess.run([SYSTEM_PYTHON, "-c", "import Milter"], capture_output=True)
        assert r.returncode == 0, "python3-milter (pymilter) is missing: run scripts/install-test-deps"
        self.port = free_port()
        self.log = pathlib.Path(tmp) / f"{name}-events.jsonl"
        self.out = open(pathlib.Path(tmp) / f"{name}.out", "wb")
        self.path = pathlib.Path(tmp) / f"{name}.sock"
        sock = f"unix:{self.path}" if unix else f"inet:{self.port}@127.0.0.1"
        self.socket = f"unix:{self.path}" if unix else f"inet:127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SCRIPTED), sock, str(self.log)],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        if unix:
            wait_for(lambda: self.path.exists() or self.proc.poll() is not None, what="milter unix socket")
            assert self.proc.poll() is None, "milter exited"
        else:
            wait_port(self.port, proc=self.proc)

    def events(self, kind=None):
        if not self.log.exists():
            return []
        evs = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [e for e in evs if kind is None or e["event"] == kind]

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)
        self.out.close()


@pytest.fixture
def scripted(tmp_path):
    made = []

    def make(name="scripted", unix=False):
        m = ScriptedMilter(tmp_path, name, unix)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


def parse(raw):
    return email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.compat32)


def queued_id(reply_text):
    m = re.search(r"queued as ([0-9A-F]{16})", reply_text)
    assert m, reply_text
    return m.group(1)


def test_every_modification_is_applied(postern_factory, scripted):
    m = scripted()
    p = postern_factory(milter_config([("scripted", m.port, "")]))
    msg = (b"From: a@example.org\r\nTo: alice@mx.test\r\n"
           b"Subject: add-header insert-header change-header delete-header change-from add-rcpt del-rcpt\r\n"
           b"X-Delete-Me: bye\r\n\r\nhello body\r\n")
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        s.ehlo("client.test")
        s.mail("sender@example.org", ["SIZE=300"])
        s.rcpt("alice@mx.test")
        s.rcpt("bob@mx.test")
        code, text = s.data(msg)
        assert code == 250, text
        qid = queued_id(text.decode())
    got = p.wait_mail("alice")[0]
    carol = p.wait_mail("carol")[0]
    wait_for(lambda: p.queue_files()["active"] == [], what="queue to drain")
    assert p.maildir("bob") == [], "bob was deleted by the milter"
    h = parse(got)
    assert h["Return-Path"] == "<new-sender@example.net>"
    assert h["Subject"] == "changed by milter"
    assert "X-Delete-Me" not in h
    assert h["X-Milter-Added"].replace("\n", "").replace("\r", "") == "yes\tfolded"
    keys = [k for k in h.keys() if k not in ("Return-Path", "Delivered-To")]
    assert keys[0] == "X-Milter-Top" and keys[1] == "Received", keys
    assert h.get_payload() == "hello body\n"
    assert parse(carol)["Subject"] == "changed by milter"
    # What the milter saw: our Received header first, the body with CRLF,
    # macros per stage, the queue id as `i`.
    eom = m.events("eom")[0]
    assert eom["headers"][0][0] == "Received" and "by mx.test (postern)" in eom["headers"][0][1]
    assert ["X-Delete-Me", "bye"] in eom["headers"]
    assert eom["body"] == "hello body\r\n"
    assert eom["macros"]["i"] == qid
    conn = m.events("connect")[0]
    assert conn["macros"]["j"] == "mx.test" and conn["macros"]["{client_addr}"] == "127.0.0.1"
    assert conn["macros"]["{daemon_name}"] == "smtp" and conn["addr"] == "127.0.0.1"
    assert m.events("helo")[0]["name"] == "client.test"
    mail = m.events("mail")[0]
    assert mail["sender"] == "<sender@example.org>" and "SIZE=300" in mail["params"]
    assert mail["macros"]["{mail_addr}"] == "sender@example.org"
    rcpts = [e["rcpt"] for e in m.events("rcpt")]
    assert rcpts == ["<alice@mx.test>", "<bob@mx.test>"]
    rcpt_macros = m.events("rcpt")[0]["macros"]
    assert rcpt_macros["{rcpt_addr}"] == "alice@mx.test" and rcpt_macros["{rcpt_mailer}"] == "local"
    assert "{rcpt_host}" not in rcpt_macros, "the milter asked (SETSYMLIST) for two RCPT macros only"
    # One log line per modification, naming the milter and the queue id.
    log = p.log()
    for action in ("add_header", "insert_header", "change_header", "delete_header", "change_from", "add_rcpt", "delete_rcpt"):
        assert re.search(rf"milter client=\S+ id={qid} milter=scripted stage=eom action={action}", log), action
    assert re.search(rf"milter client=\S+ id={qid} milter=scripted stage=eom action=accept\n", log)


def test_chain_second_milter_sees_first_ones_changes(postern_factory, scripted):
    first, second = scripted("first"), scripted("second")
    p = postern_factory(milter_config([("first", first.port, ""), ("second", second.port, "")]))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        s.sendmail("sender@example.org", ["alice@mx.test"],
                   b"Subject: replace-body add-header\r\n\r\noriginal body line\r\n" + (b"x" * 98 + b"\r\n") * 2000)
    got = parse(p.wait_mail("alice")[0])
    assert got.get_payload() == "replaced by the milter\nsecond line\n"
    # The body went in 64 KiB chunks; the second milter got the new body and
    # header (added twice: each milter adds one).
    assert len(first.events("eom")[0]["body"]) == len("original body line\r\n") + 200000
    seen = second.events("eom")[0]
    assert seen["body"] == "replaced by the milter\r\nsecond line\r\n"
    assert any(h[0] == "X-Milter-Added" for h in seen["headers"])
    assert len(got.get_all("X-Milter-Added")) == 2


def test_replies_at_every_stage(postern_factory, scripted):
    m = scripted()
    p = postern_factory(milter_config([("scripted", m.port, "")]))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        code, text = s.ehlo("reject.helo.test")
        assert (code, text) == (550, b"5.7.1 Command rejected")
        assert s.ehlo("client.test")[0] == 250
        assert s.mail("milter-tempfail@example.org") == (451, b"4.7.1 Service unavailable - try again later")
        assert s.mail("milter-reject@example.org") == (550, b"5.7.26 Sender refused by milter")
        s.rset()
        assert s.mail("sender@example.org")[0] == 250
        # A reject at RCPT gives the milter's exact reply for that recipient only.
        assert s.rcpt("milter-reject@example.com") == (553, b"5.7.9 Recipient refused by milter")
        assert s.rcpt("milter-tempfail@example.com") == (451, b"4.7.1 Service unavailable - try again later")
        assert s.rcpt("alice@mx.test")[0] == 250
        assert s.data(b"Subject: reject-eom\r\n\r\nx\r\n") == (550, b"5.7.1 Content refused by milter")
        s.mail("sender@example.org")
        s.rcpt("alice@mx.test")
        assert s.data(b"Subject: tempfail-eom\r\n\r\nx\r\n") == (451, b"4.7.1 Service unavailable - try again later")
        # Discard at end of data and at RCPT: 250 to the client, nothing queued.
        s.mail("sender@example.org")
        s.rcpt("alice@mx.test")
        code, text = s.data(b"Subject: discard\r\n\r\nx\r\n")
        assert code == 250 and b"queued as" in text
        s.mail("sender@example.org")
        assert s.rcpt("milter-discard@example.com")[0] == 250
        s.rcpt("alice@mx.test")
        assert s.data(b"Subject: plain\r\n\r\nx\r\n")[0] == 250
        # Quarantine: queued on hold with the reason, delivered after release.
        s.mail("sender@example.org")
        s.rcpt("alice@mx.test")
        code, text = s.data(b"Subject: quarantine\r\n\r\nx\r\n")
        assert code == 250
        qid = queued_id(text.decode())
    assert p.log().count("discarded id=") == 2
    listing = json.loads(p.cli("queue", "list", "--json").stdout)
    assert [(e["id"], e["place"]) for e in listing] == [(qid, "hold")]
    assert listing[0]["quarantine"] == "quarantined by milter scripted: suspicious test content"
    assert "(hold: quarantined by milter scripted" in p.cli("queue", "list").stdout.decode()
    assert p.maildir("alice") == []
    assert p.cli("queue", "release", qid).returncode == 0
    got = p.wait_mail("alice")
    assert len(got) == 1 and b"Subject: quarantine" in got[0]
    log = p.log()
    assert 'milter=scripted stage=rcpt action=reject reply="553 5.7.9 Recipient refused by milter"' in log
    assert f'id={qid} milter=scripted stage=eom action=quarantine detail="suspicious test content"' in log
    assert f'hold id={qid} reason="quarantined by milter scripted: suspicious test content"' in log
    # Every rejected or finished transaction was aborted or ended cleanly.
    assert len(m.events("abort")) >= 1


def smtp_lines(sock, n=1):
    """Reads n replies (multi-line ones joined with \\n) from a raw socket."""
    buf, replies, current = b"", [], []
    while len(replies) < n:
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {replies!r}"
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        current.append(line)
        if line[3:4] != b"-":
            replies.append(b"\n".join(current))
            current = []
    return replies


def test_connect_refused_and_bdat_over_unix_socket(postern_factory, scripted):
    import socket as sk
    m = scripted(unix=True)
    p = postern_factory(milter_config([("scripted", m.socket, "")]))
    # BDAT (CHUNKING) goes through the same milter stages as DATA.
    with sk.create_connection(("127.0.0.1", p.port), timeout=10) as c:
        assert smtp_lines(c)[0].startswith(b"220 ")
        body = b"Subject: add-header via bdat\r\n\r\nchunked body\r\n"
        c.sendall(b"EHLO client.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@mx.test>\r\n"
                  + b"BDAT %d LAST\r\n" % len(body) + body)
        r = smtp_lines(c, 4)
        assert r[1].startswith(b"250 ") and r[2].startswith(b"250 ") and r[3].startswith(b"250 2.0.0 Ok: queued as"), r
        c.sendall(b"QUIT\r\n")
    got = p.wait_mail("alice")[0]
    assert b"X-Milter-Added: yes" in got and b"chunked body" in got
    assert m.events("eom")[0]["body"] == "chunked body\r\n"
    # A milter that refuses the connection: 554 greeting, 503 until QUIT (RFC 5321 3.1).
    pathlib.Path(f"{m.log}.connect-reject").touch()
    with sk.create_connection(("127.0.0.1", p.port), timeout=10) as c:
        assert smtp_lines(c)[0] == b"554 5.7.1 Connection rejected"
        c.sendall(b"EHLO client.test\r\nMAIL FROM:<s@example.org>\r\nQUIT\r\n")
        r = smtp_lines(c, 3)
        assert r[0].startswith(b"503 5.5.1") and r[1].startswith(b"503 5.5.1") and r[2].startswith(b"221 "), r
    # Tempfail at connect: 421 and the connection is closed.
    pathlib.Path(f"{m.log}.connect-reject").unlink()
    pathlib.Path(f"{m.log}.connect-tempfail").touch()
    with sk.create_connection(("127.0.0.1", p.port), timeout=10) as c:
        assert smtp_lines(c)[0] == b"421 4.7.1 Service unavailable - try again later"
        assert c.recv(100) == b""


def test_tls_and_auth_macros(postern_factory, scripted):
    m = scripted()
    p = postern_factory(milter_config([("scripted", m.port, "")]))
    r = p.cli("user", "add", "alice", "--password-stdin", input=b"milter pw\n")
    assert r.returncode == 0, r.stderr
    r = swaks_full("--server", f"127.0.0.1:{p.port}", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                   "--auth-password", "milter pw", "--from", "alice@mx.test", "--to", "alice@mx.test",
                   "--header", "Subject: plain")
    assert r.returncode == 0, r.stdout + r.stderr
    p.wait_mail("alice")
    helos = m.events("helo")
    # EHLO before and after STARTTLS; the second one carries the TLS macros.
    assert len(helos) == 2
    assert "{tls_version}" not in helos[0]["macros"]
    assert helos[1]["macros"]["{tls_version}"].startswith("TLSv1.")
    assert helos[1]["macros"]["{verify}"] == "NO"
    mail = m.events("mail")[0]["macros"]
    assert "{cipher}" in mail
    assert (mail["{auth_type}"], mail["{auth_authen}"]) == ("PLAIN", "alice")


@pytest.mark.parametrize("action,expect", [
    ("tempfail", (451, b"4.7.1 Service unavailable - try again later")),
    ("reject", (550, b"5.7.1 Command rejected")),
    ("accept", (250, None)),
])
def test_milter_down_gets_its_default_action(postern_factory, action, expect):
    down = free_port()  # nothing listens there
    p = postern_factory(milter_config([("gone", down, f'default_action = "{action}"\nconnect_timeout = "2s"')]))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        assert s.ehlo("client.test")[0] == 250  # EHLO still works (STARTTLS/AUTH stay usable)
        code, text = s.mail("sender@example.org")
        if expect[1] is None:
            assert code == 250
            s.rcpt("alice@mx.test")
            assert s.data(b"Subject: x\r\n\r\nx\r\n")[0] == 250
        else:
            assert (code, text) == expect
    if action == "accept":
        p.wait_mail("alice")
    assert re.search(rf'milter client=\S+ milter=gone stage=connect error="connect: Connection refused[^"]*" default_action={action}', p.log())


def test_milter_timeout_and_progress(postern_factory, scripted):
    m = scripted()
    p = postern_factory(milter_config([("scripted", m.port, 'eom_timeout = "1500ms"\ncommand_timeout = "2s"')]))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=30) as s:
        s.ehlo("client.test")
        # "progress": the milter needs 1.8 s but sends progress every 0.6 s.
        s.mail("sender@example.org")
        s.rcpt("alice@mx.test")
        assert s.data(b"Subject: progress add-header\r\n\r\nx\r\n")[0] == 250
        # "slow": 4 s of silence > eom_timeout: the default action (tempfail).
        s.mail("sender@example.org")
        s.rcpt("alice@mx.test")
        assert s.data(b"Subject: slow\r\n\r\nx\r\n") == (451, b"4.7.1 Service unavailable - try again later")
        # The failed milter stays out of the session: later mail waits too.
        assert s.mail("sender@example.org") == (451, b"4.7.1 Service unavailable - try again later")
    got = p.wait_mail("alice")
    assert len(got) == 1 and b"X-Milter-Added: yes" in got[0]
    assert re.search(r"milter client=\S+ id=\S+ milter=scripted stage=eom error=timeout default_action=tempfail", p.log())


def opendkim_instance(tmp_path):
    require("opendkim")
    require("opendkim-genkey")
    keys = tmp_path / "dkim"
    keys.mkdir()
    subprocess.run(["opendkim-genkey", "-D", str(keys), "-d", "example.org", "-s", "test"], check=True)
    (keys / "test.private").chmod(0o600)
    port = free_port()
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"""Syslog no
Background no
Mode sv
Domain example.org
Selector test
KeyFile {keys}/test.private
Socket inet:{port}@127.0.0.1
Canonicalization relaxed/simple
InternalHosts 127.0.0.1
RequireSafeKeys false
PidFile {tmp_path}/opendkim.pid
""")
    out = open(tmp_path / "opendkim.out", "wb")
    proc = subprocess.Popen(["opendkim", "-f", "-x", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, proc=proc)
    txt = (keys / "test.txt").read_text()
    record = "".join(re.findall(r'"([^"]*)"', txt)).encode()
    return proc, port, record


def test_opendkim_signs_submitted_mail(postern_factory, sink, tmp_path):
    import dkim  # dkimpy, the independent verifier

    proc, port, record = opendkim_instance(tmp_path)
    try:
        cfg = milter_config([("opendkim", port, "")], extra=f'[relay]\nsmarthost = "127.0.0.1:{sink.port}"\n')
        p = postern_factory(cfg.replace("[local]\n", '[local]\nsendmail_milters = ["opendkim"]\n'))
        msg = (b"From: Sender <sender@example.org>\r\nTo: far@far.example\r\nSubject: signed by opendkim\r\n"
               b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <dkim-test@example.org>\r\n\r\n"
               b"A body line.\r\nAnother line.\r\n")
        with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
            s.sendmail("sender@example.org", ["far@far.example"], msg)
        data = sink.wait()[0]["data"]
        # Mail from the sendmail command (cron, scripts) is signed too.
        r = p.cli("sendmail", "-f", "sender@example.org", "far@far.example",
                  input=b"From: Cron <sender@example.org>\nSubject: from cron\n\nnightly report\n")
        assert r.returncode == 0, r.stderr
        local = sink.wait(2)[1]["data"]
    finally:
        proc.kill()
        proc.wait(5)
    assert b"DKIM-Signature:" in data, data[:2000]
    assert re.search(rb"DKIM-Signature:[^\r]*\r\n(\s[^\r]*\r\n)*", data)
    sig = email.message_from_bytes(data)["DKIM-Signature"]
    assert "d=example.org" in sig and "s=test" in sig

    def dns(name, timeout=5):
        assert name == b"test._domainkey.example.org.", name
        return record

    assert dkim.verify(data, dnsfunc=dns), "dkimpy does not accept opendkim's signature"
    assert b"DKIM-Signature:" in local and dkim.verify(local, dnsfunc=dns), local[:1500]
    tampered = data.replace(b"A body line.", b"A changed line.")
    assert not dkim.verify(tampered, dnsfunc=dns)
    assert re.search(r'milter client=\S+ id=\S+ milter=opendkim stage=eom action=insert_header detail="DKIM-Signature at 0"', p.log())


def test_sendmail_command_goes_through_milters(postern_factory, scripted):
    m = scripted()
    cfg = milter_config([("scripted", m.port, "")], listener_milters=[])
    p = postern_factory(cfg.replace("[local]\n", '[local]\nsendmail_milters = ["scripted"]\n'))
    r = p.cli("sendmail", "alice", input=b"Subject: add-header change-header\n\nlocal body\n")
    assert r.returncode == 0, r.stderr
    got = parse(p.wait_mail("alice")[0])
    assert got["X-Milter-Added"] and got["Subject"] == "changed by milter"
    conn = m.events("connect")[0]
    assert conn["macros"]["{daemon_name}"] == "sendmail" and conn["addr"] == "127.0.0.1"
    assert m.events("rcpt")[0]["rcpt"] == "<alice@mx.test>"
    # The daemon's pickup runs the milters: a 5xx refusal moves the drop
    # file aside with an error line, a 4xx leaves it for the next scan;
    # nothing is queued either way.
    drops = lambda: sorted(f for f in os.listdir(p.data / "maildrop") if not f.startswith("."))
    r = p.cli("sendmail", "alice", input=b"Subject: reject-eom\n\nx\n")
    assert r.returncode == 0, r
    wait_for(lambda: os.listdir(p.data / "maildrop" / ".bad"), what="refused drop file moved aside")
    assert "550 5.7.1 Content refused by milter" in p.log()
    r = p.cli("sendmail", "alice", input=b"Subject: tempfail-eom\n\nx\n")
    assert r.returncode == 0, r
    wait_for(lambda: 'action="will retry"' in p.log(), what="tempfail left in the maildrop")
    assert len(drops()) == 1
    os.remove(p.data / "maildrop" / drops()[0])
    r = p.cli("sendmail", "alice", input=b"Subject: quarantine\n\nx\n")
    assert r.returncode == 0
    wait_for(lambda: p.queue_files()["hold"], what="quarantined message")
    listing = json.loads(p.cli("queue", "list", "--json").stdout)
    assert [e["place"] for e in listing] == ["hold"], listing
    # The SMTP listener has no milters here: SMTP mail is not filtered.
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        s.sendmail("s@example.org", ["alice@mx.test"], b"Subject: reject-eom\r\n\r\nx\r\n")
    assert len(p.wait_mail("alice", 2)) == 2
