"""SMTP AUTH through a real Dovecot auth server (`auth.backend = "dovecot"`,
Postfix's `smtpd_sasl_type = dovecot`): a private Dovecot (Debian
dovecot-core) started by the test with its own base_dir and a passwd-file,
its auth-client socket in a temp dir. Clients: swaks (PLAIN, LOGIN,
CRAM-MD5), gsasl (SCRAM-SHA-256), Python smtplib. Dovecot stopped mid-run
(by PID) must give 454 4.7.0, never 535 and never an accepted login."""

import base64
import os
import pathlib
import pwd
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile

import pytest

from conftest import BASE_CONFIG, free_port, require, swaks, wait_for, wait_port

PASSWORD = 'pa ss:wörd "#1"!'

DOVECOT_CONF = """
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
auth_verbose = yes
protocols =
listen = 127.0.0.1
ssl = no
default_login_user = root
default_internal_user = root
default_internal_group = root
auth_mechanisms = plain login scram-sha-256 cram-md5
auth_username_format = %Lu
passdb {{
  driver = passwd-file
  args = {dir}/users
}}
userdb {{
  driver = passwd-file
  args = {dir}/users
  default_fields = uid={uid} gid={gid} home={dir}/home/%n
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
  inet_listener {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


def doveadm_pw(scheme, pw):
    r = subprocess.run([require("doveadm"), "pw", "-s", scheme, "-p", pw], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def dovecot():
    require("dovecot")
    nobody = pwd.getpwnam("nobody")
    d = pathlib.Path(tempfile.mkdtemp(prefix="postern-dovecot-auth-"))
    os.chmod(d, 0o755)
    for sub in ("run", "state", "home"):
        (d / sub).mkdir(parents=True)
    # alice: a SHA512-CRYPT hash (PLAIN, LOGIN); sam: SCRAM-SHA-256 keys;
    # carol: a {PLAIN} entry (CRAM-MD5 needs the secret); dave: nologin.
    (d / "users").write_text(
        f"alice:{doveadm_pw('SHA512-CRYPT', PASSWORD)}::::::\n"
        f"sam:{doveadm_pw('SCRAM-SHA-256', PASSWORD)}::::::\n"
        "carol:{PLAIN}carolpw::::::\n"
        "dave:{PLAIN}davepw::::::nologin reason=account_closed\n"
    )
    port = free_port()
    conf = d / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(dir=d, port=port, uid=nobody.pw_uid, gid=nobody.pw_gid))
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        wait_for(lambda: (d / "run" / "auth-client").exists(), what="Dovecot's auth-client socket")
    except AssertionError:
        proc.kill()
        out = proc.communicate(timeout=5)[0]
        log = (d / "dovecot.log").read_text() if (d / "dovecot.log").exists() else ""
        raise AssertionError(f"dovecot did not start: {out!r} {log}")
    proc.port = port
    proc.dir = d
    proc.socket = d / "run" / "auth-client"
    yield proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    shutil.rmtree(d, ignore_errors=True)


def config(socket, sink_port):
    auth = f"""[auth]
backend = "dovecot"
dovecot_socket = "{socket}"
dovecot_timeout = "6s"
mechanisms = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5"]
[queue]"""
    return BASE_CONFIG.replace("[queue]", auth) + f'\n[relay]\nnetworks = []\nsmarthost = "127.0.0.1:{sink_port}"\n'


@pytest.fixture
def dp(postern_factory, dovecot, sink):
    p = postern_factory(config(f"unix:{dovecot.socket}", sink.port))
    p.sink = sink
    p.dovecot = dovecot
    return p


def tls_smtp(port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=15)
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.example")
    return s


def plain(user, pw):
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def test_auth_offered_only_after_starttls(dp):
    with smtplib.SMTP("127.0.0.1", dp.port, timeout=15) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth"), s.esmtp_features
        assert s.docmd("AUTH", f"PLAIN {plain('alice', PASSWORD)}")[0] == 538
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("client.example")
        # Dovecot's list in postern's order; no -PLUS (no channel bindings in the protocol).
        assert s.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5"]


@pytest.mark.parametrize("mech,user,pw", [("PLAIN", "alice", PASSWORD), ("LOGIN", "alice", PASSWORD), ("CRAM-MD5", "carol", "carolpw")])
def test_swaks_through_dovecot(dp, mech, user, pw):
    r = swaks("--server", f"127.0.0.1:{dp.port}", "--tls", "--auth", mech, "--auth-user", user, "--auth-password", pw,
              "--from", f"{user}@mx.test", "--to", "friend@far.example", "--header", f"Subject: dovecot {mech}")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = dp.sink.wait(1)
    assert msgs[0]["rcpt_tos"] == ["friend@far.example"]
    assert b"with ESMTPSA id" in msgs[0]["data"]
    assert f"mechanism={mech} user={user} result=ok backend=dovecot" in dp.log()


def test_gsasl_scram_through_dovecot(dp):
    require("gsasl")

    def gsasl(pw):
        return subprocess.run(["gsasl", "--client", "--smtp", f"--connect=127.0.0.1:{dp.port}", "--mechanism=SCRAM-SHA-256",
                               "--authentication-id=sam", f"--password={pw}", "--x509-ca-file=", "--no-cb"],
                              capture_output=True, timeout=30, stdin=subprocess.DEVNULL)

    r = gsasl(PASSWORD)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "mechanism=SCRAM-SHA-256 user=sam result=ok backend=dovecot" in dp.log()
    assert gsasl("wrong").returncode != 0
    assert "mechanism=SCRAM-SHA-256 user=sam result=fail" in dp.log() or "mechanism=SCRAM-SHA-256 user= result=fail" in dp.log()


def test_wrong_password_and_nologin_535(dp):
    with tls_smtp(dp.port) as s:
        code, text = s.docmd("AUTH", f"PLAIN {plain('alice', 'wrong')}")
        assert (code, text[:5]) == (535, b"5.7.8"), (code, text)
        code, text = s.docmd("AUTH", f"PLAIN {plain('dave', 'davepw')}")
        assert code == 535, (code, text)
        # Still not authenticated: relaying is refused.
        s.docmd("MAIL", "FROM:<alice@mx.test>")
        assert s.docmd("RCPT", "TO:<friend@far.example>")[0] == 550
    log = dp.log()
    assert "mechanism=PLAIN user=alice result=fail" in log, log
    assert 'user=dave result=fail reason="nologin: account_closed"' in log, log


def test_dovecot_stopped_gives_454_not_535(dp):
    with tls_smtp(dp.port) as s:
        assert s.docmd("AUTH", f"PLAIN {plain('alice', PASSWORD)}")[0] == 235
    # A connection that saw AUTH offered while Dovecot was up...
    s = tls_smtp(dp.port)
    assert "PLAIN" in s.esmtp_features["auth"]
    # Kill Dovecot by PID: the master and its children (the auth process
    # would otherwise go on serving connections it already has).
    children = [int(p) for p in pathlib.Path(f"/proc/{dp.dovecot.pid}/task/{dp.dovecot.pid}/children").read_text().split()]
    dp.dovecot.kill()
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    dp.dovecot.wait(10)
    # ...gets 454 for the right and for a wrong password, never 535 or 235.
    for pw in (PASSWORD, "wrong"):
        code, text = s.docmd("AUTH", f"PLAIN {plain('alice', pw)}")
        assert code == 454 and text.startswith(b"4.7.0 Temporary authentication failure"), (code, text)
    s.docmd("MAIL", "FROM:<alice@mx.test>")
    assert s.docmd("RCPT", "TO:<friend@far.example>")[0] == 550
    s.quit()
    assert "result=tempfail" in dp.log()
    assert "result=fail" not in dp.log()


def test_inet_socket(postern_factory, dovecot, sink):
    p = postern_factory(config(f"inet:127.0.0.1:{dovecot.port}", sink.port))
    with tls_smtp(p.port) as s:
        assert s.docmd("AUTH", f"PLAIN {plain('alice', PASSWORD)}")[0] == 235
    assert "mechanism=PLAIN user=alice result=ok backend=dovecot" in p.log()


def test_config_check_needs_the_socket(postern_factory):
    p = postern_factory(BASE_CONFIG.replace("[queue]", '[auth]\nbackend = "dovecot"\n[queue]'), start=False)
    r = p.cli("config", "check")
    assert r.returncode != 0
    assert b"auth.dovecot_socket" in r.stdout + r.stderr, r.stdout + r.stderr
