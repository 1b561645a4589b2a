"""DKIM signing by postern (issue 18 point 1), checked by real verifiers:
mail submitted with AUTH (swaks) and with `sendmail` is dual-signed
(RSA-2048 + Ed25519, keys made by `postern dkim keygen`), captured at the
sink, and verified by dkimpy (each signature, keys from a dnsfunc) and by
opendkim itself (`opendkim -t`, the real libopendkim, with the published
records given through `TestPublicKeys`). A message changed after signing
fails both. Inbound mail from an unauthenticated client is not signed."""

import re
import shutil
import signal
import subprocess

import dkim
import pytest

from conftest import BASE_CONFIG, require, swaks, wait_for

PASSWORD = "dkim pass 1"

CONFIG = BASE_CONFIG + """
[relay]
networks = []
smarthost = "127.0.0.1:{sink}"
"""


def keygen(p, alg, sel):
    r = p.cli("dkim", "keygen", "mx.test", "--algorithm", alg, "--selector", sel)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    # The zone line: name, IN TXT, then the record in <=255-octet strings.
    m = re.search(r"^(\S+)\. IN TXT (.+)$", out, re.M)
    assert m, out
    strings = re.findall(r'"([^"]*)"', m.group(2))
    assert all(len(s) <= 255 for s in strings)
    table = out[out.index("[[dkim]]"):]
    return m.group(1), "".join(strings), table


@pytest.fixture
def signer(postern_factory, sink):
    p = postern_factory(CONFIG.replace("{sink}", str(sink.port)), start=False)
    records = {}
    tables = []
    for alg, sel in (("rsa", "r1"), ("ed25519", "e1")):
        name, txt, table = keygen(p, alg, sel)
        records[name] = txt
        tables.append(table)
    p.cfg.write_text(p.cfg.read_text() + "\n" + "\n".join(tables) + "\n")
    check = p.cli("config", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    p.start()
    r = p.cli("user", "add", "alice", "--password-stdin", input=(PASSWORD + "\n").encode())
    assert r.returncode == 0, r.stderr
    p.sink = sink
    p.records = records
    return p


def dkimpy_verify(p, msg):
    """dkimpy's verdict for each DKIM-Signature, keys from our records."""

    def dnsfunc(name, timeout=5):
        return p.records.get(name.decode().rstrip("."), "").encode()

    d = dkim.DKIM(msg)
    n = len(re.findall(rb"^DKIM-Signature:", msg, re.M | re.I))
    return [d.verify(idx=i, dnsfunc=dnsfunc) for i in range(n)]


def opendkim_verify(p, tmp_path, msg):
    """The lines opendkim's test mode logs about each signature."""
    require("opendkim")
    keys = tmp_path / "testkeys"
    keys.write_text("".join(f"{name} {txt}\n" for name, txt in p.records.items()))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nTestPublicKeys {keys}\nSyslog no\nLogWhy yes\n")
    f = tmp_path / "msg.eml"
    f.write_bytes(msg)
    r = subprocess.run([shutil.which("opendkim"), "-x", str(conf), "-t", str(f), "-vvv"], capture_output=True, timeout=30, text=True)
    return r.returncode, r.stdout + r.stderr


def check_both(p, tmp_path, msg):
    assert msg.count(b"DKIM-Signature:") == 2, msg.decode(errors="replace")
    assert b"a=rsa-sha256" in msg and b"a=ed25519-sha256" in msg
    assert dkimpy_verify(p, msg) == [True, True]
    rc, out = opendkim_verify(p, tmp_path, msg)
    assert rc == 0, out
    # opendkim's own Authentication-Results: a pass for each signature.
    for a, sel in (("rsa-sha256", "r1"), ("ed25519-sha256", "e1")):
        assert re.search(rf"dkim=pass .*header\.d=mx\.test .*header\.a={a} header\.s={sel}", out), out
    # Changed after signing: both verifiers fail every signature.
    bad = msg.replace(b"Subject: ", b"Subject: changed ", 1)
    assert dkimpy_verify(p, bad) == [False, False]
    rc, out = opendkim_verify(p, tmp_path, bad)
    assert "dkim=pass" not in out and len(re.findall(r"dkim=fail", out)) == 2, out


def test_authenticated_submission_is_dual_signed_and_verifies(signer, tmp_path):
    r = swaks("--server", f"127.0.0.1:{signer.port}", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
              "--auth-password", PASSWORD, "--from", "alice@mx.test", "--to", "friend@far.example",
              "--header", "Subject: signed by postern", "--body", "Hello,\r\n\r\n  spaced  line \t\r\n\r\n\r\n")
    assert r.returncode == 0, r.stdout + r.stderr
    msg = signer.sink.wait(1)[0]["data"]
    check_both(signer, tmp_path, msg)
    assert wait_for(lambda: "dkim=r1@mx.test,e1@mx.test" in signer.log(), what="dkim= on the queued line")


def test_sendmail_is_dual_signed_and_verifies(signer, tmp_path):
    text = b"From: Alice <alice@mx.test>\nTo: friend@far.example\nSubject: local\n\nfrom cron\n"
    r = signer.cli("sendmail", "-f", "alice@mx.test", "friend@far.example", input=text)
    assert r.returncode == 0, r.stderr
    msg = signer.sink.wait(1)[0]["data"]
    check_both(signer, tmp_path, msg)


def test_inbound_mail_is_not_signed(signer):
    r = swaks("--server", f"127.0.0.1:{signer.port}", "--from", "someone@mx.test", "--to", "bob@mx.test")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = signer.wait_mail("bob")
    assert b"DKIM-Signature" not in msgs[0]


def test_reload_with_a_bad_key_keeps_the_old_keys(signer, tmp_path):
    cfg = signer.cfg.read_text()
    signer.cfg.write_text(re.sub(r'key_file = "[^"]*e1\.pem"', 'key_file = "/nonexistent/e1.pem"', cfg))
    signer.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload result=error" in signer.log() and "DKIM key e1@mx.test" in signer.log(), what="reload refused")
    r = swaks("--server", f"127.0.0.1:{signer.port}", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
              "--auth-password", PASSWORD, "--from", "alice@mx.test", "--to", "friend@far.example")
    assert r.returncode == 0, r.stdout + r.stderr
    check_both(signer, tmp_path, signer.sink.wait(1)[0]["data"])
