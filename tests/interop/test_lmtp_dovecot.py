"""LMTP delivery into a real Dovecot LMTP server (Debian dovecot-lmtpd),
started on a loopback port with a throwaway configuration. Dovecot knows
alice only, so bob gets a per-recipient 5xx from LMTP and is bounced."""

import email
import os
import pathlib
import pwd
import shutil
import tempfile
import smtplib
import subprocess

import pytest

from conftest import BASE_CONFIG, free_port, require, wait_for, wait_port

DOVECOT_CONF = """
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:{dir}/mail/%n
default_login_user = root
default_internal_user = root
default_internal_group = root
passdb {{
  driver = passwd-file
  args = {dir}/users
}}
userdb {{
  driver = passwd-file
  args = {dir}/users
  default_fields = uid={uid} gid={gid} home={dir}/home/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0600
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
lmtp_save_to_detail_mailbox = no
auth_username_format = %Ln
"""


@pytest.fixture
def dovecot(tmp_path):
    require("dovecot")
    assert os.path.exists("/usr/lib/dovecot/lmtp"), "dovecot-lmtpd is not installed"
    # Dovecot never delivers as root: the mailbox belongs to `nobody`, in a
    # directory nobody can reach (pytest's tmp_path is private to root).
    nobody = pwd.getpwnam("nobody")
    d = pathlib.Path(tempfile.mkdtemp(prefix="postern-dovecot-"))
    os.chmod(d, 0o755)
    for sub in ("run", "state", "mail", "home"):
        (d / sub).mkdir(parents=True)
    for sub in ("mail", "home"):
        os.chown(d / sub, nobody.pw_uid, nobody.pw_gid)
    (d / "users").write_text("alice:{PLAIN}x::::::\n")
    port = free_port()
    conf = d / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(dir=d, port=port, uid=nobody.pw_uid, gid=nobody.pw_gid))
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
    except AssertionError:
        proc.kill()
        out = proc.communicate(timeout=5)[0]
        log = (d / "dovecot.log").read_text() if (d / "dovecot.log").exists() else ""
        raise AssertionError(f"dovecot did not start: {out!r} {log}")
    proc.port = port
    proc.dir = d
    yield proc
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_lmtp_into_dovecot(postern_factory, dovecot):
    cfg = BASE_CONFIG.replace('users = ["alice", "bob", "carol"]',
                              f'users = ["alice", "bob", "carol"]\ndelivery = "lmtp"\nlmtp = "127.0.0.1:{dovecot.port}"')
    cfg += '\n[relay]\nsmarthost = "127.0.0.1:9"\n'
    p = postern_factory(cfg)
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("carol@far.example", ["alice@mx.test", "bob@mx.test"],
                   b"Subject: via lmtp\r\nMessage-ID: <lmtp-1@client.example>\r\n\r\nhello dovecot\r\n")
    new = dovecot.dir / "mail" / "alice" / "new"
    files = wait_for(lambda: new.is_dir() and list(new.iterdir()), what="message in Dovecot's Maildir")
    m = email.message_from_bytes(files[0].read_bytes())
    assert m["Subject"] == "via lmtp"
    assert m["Message-ID"] == "<lmtp-1@client.example>"
    assert "by mx.test (postern)" in m.get_all("Received")[-1]
    log = wait_for(lambda: "to=bob@mx.test" in p.log() and p.log(), what="bob's LMTP outcome")
    assert "delivered id=" in log and "relay=lmtp:127.0.0.1" in log
    # Dovecot refused bob per recipient (RFC 2033): a permanent failure, bounced
    # to the remote sender through the (unreachable) smarthost queue.
    bob = [l for l in log.splitlines() if "to=bob@mx.test" in l][-1]
    assert bob.split()[1] == "failed", bob
    assert " 5." in bob or "550" in bob, bob
    wait_for(lambda: "bounced id=" in p.log(), what="bounce queued")


def test_lmtp_over_unix_socket(postern_factory, dovecot):
    sock = dovecot.dir / "run" / "lmtp"
    wait_for(lambda: sock.exists(), what="Dovecot's LMTP unix socket")
    cfg = BASE_CONFIG.replace('users = ["alice", "bob", "carol"]',
                              f'users = ["alice", "bob", "carol"]\ndelivery = "lmtp"\nlmtp = "unix:{sock}"')
    p = postern_factory(cfg)
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("x@far.example", ["alice@mx.test"], b"Subject: via unix lmtp\r\n\r\nhi\r\n")
    new = dovecot.dir / "mail" / "alice" / "new"
    files = wait_for(lambda: new.is_dir() and list(new.iterdir()), what="message in Dovecot's Maildir")
    assert email.message_from_bytes(files[0].read_bytes())["Subject"] == "via unix lmtp"
    assert f"relay=lmtp:unix:{sock}" in p.log()
