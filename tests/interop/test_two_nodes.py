"""Two postern nodes sharing one account directory and one throttle, as
docs/scaling.md lays out (issue 16's two-node check): a private PostgreSQL
(the accounts, with virtual domains a.example and b.example), a private
Redis (the AUTH failure counters and bans), and a private Dovecot taking
local delivery over LMTP. Each postern has its own data directory and port.

Checked, each against the real servers:
- a user INSERTed into PostgreSQL while both nodes run logs in on both;
- failed logins spread over both nodes make one ban, seen by both;
- mail for a virtual-domain mailbox accepted by node A lands in Dovecot's
  Maildir for that domain (alice@a.example and alice@b.example stay apart);
- node B, whose LMTP target is down, drains its queue to node A with
  `postern queue move --to`, and every message reaches Dovecot: 0 lost.
"""

import os
import pathlib
import pwd
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time

import pytest

from conftest import free_port, require, swaks_full as swaks, wait_for, wait_port
from test_cluster import Redis
from test_sql import PASSWORDS, hash_pw, mail_db

DOVECOT_CONF = """
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:{dir}/mail/%d/%n
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
  default_fields = uid={uid} gid={gid} home={dir}/home/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
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
lmtp_save_to_detail_mailbox = no
auth_username_format = %Lu
"""

NODE = """
hostname = "{name}.mx.test"
[[listener]]
address = "127.0.0.1:{port}"
[local]
domains = ["mx.test"]
delivery = "lmtp"
lmtp = "127.0.0.1:{lmtp}"
[relay]
networks = []
[auth]
backend = "sql"
plaintext_networks = ["127.0.0.1/32"]
ban_exempt_networks = []
delay_after = 100
max_failures_per_ip = 5
ban_time = "60s"
[queue]
retry_min = "1s"
retry_max = "2s"
[limits]
shutdown_timeout = "5s"
[cluster]
redis = "redis://127.0.0.1:{redis}/0"
key_prefix = "two-nodes"
[sql]
url = "host=127.0.0.1 port={pgport} user=postern dbname=mail"
password_file = "{pwfile}"
timeout = "2s"
cache_ttl = "2s"
negative_cache_ttl = "1s"
password_query = "SELECT password FROM users WHERE email = :login AND active"
domain_query = "SELECT 1 FROM domains WHERE domain = :domain"
mailbox_query = "SELECT 1 FROM users WHERE email = :local || '@' || :domain"
alias_query = "SELECT goto FROM aliases WHERE address = :address"
"""


@pytest.fixture
def pg():
    require("swaks")
    with mail_db() as db:
        yield db


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


@pytest.fixture
def dovecot():
    """Dovecot LMTP with full addresses as user names (virtual domains)."""
    require("dovecot")
    assert os.path.exists("/usr/lib/dovecot/lmtp"), "dovecot-lmtpd is not installed"
    nobody = pwd.getpwnam("nobody")
    d = pathlib.Path(tempfile.mkdtemp(prefix="postern-dovecot2-"))
    os.chmod(d, 0o755)
    for sub in ("run", "state", "mail", "home"):
        (d / sub).mkdir(parents=True)
    for sub in ("mail", "home"):
        os.chown(d / sub, nobody.pw_uid, nobody.pw_gid)
    (d / "users").write_text("".join(f"{who}:{{PLAIN}}x::::::\n" for who in ["alice@a.example", "alice@b.example", "carol@a.example"]))
    port = free_port()
    (d / "dovecot.conf").write_text(DOVECOT_CONF.format(dir=d, port=port, uid=nobody.pw_uid, gid=nobody.pw_gid))
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(d / "dovecot.conf")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        proc.port, proc.dir = port, d
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)


def node(postern_factory, tmp_path, name, pg, redis, lmtp_port):
    pwfile = tmp_path / f"{name}.db.password"
    pwfile.write_text("db-secret\n")
    cfg = (NODE.replace("{name}", name).replace("{lmtp}", str(lmtp_port)).replace("{redis}", str(redis.port))
           .replace("{pgport}", str(pg.port)).replace("{pwfile}", str(pwfile)))
    return postern_factory(cfg, name=name)


def login(p, user, pw):
    """AUTH PLAIN (plaintext_networks allows it on loopback); the reply code."""
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        s.ehlo("client.example")
        s.user, s.password = user, pw
        try:
            return s.auth("PLAIN", s.auth_plain)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


def dovecot_mail(dovecot, domain, local):
    new = dovecot.dir / "mail" / domain / local / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_two_nodes_share_accounts_bans_and_drain(postern_factory, tmp_path, pg, redis, dovecot):
    a = node(postern_factory, tmp_path, "a", pg, redis, dovecot.port)
    b = node(postern_factory, tmp_path, "b", pg, redis, free_port())  # B's LMTP target is down

    # A user inserted into PostgreSQL while both nodes run logs in on both.
    assert login(a, "frank@a.example", "frank-pw") == 535
    pg.sql(f"INSERT INTO users (email, password) VALUES ('frank@a.example', '{hash_pw('SHA512-CRYPT', 'frank-pw')}')")
    # Past the negative cache TTL (1 s; not polled: failures count toward the ban).
    time.sleep(2.5)
    assert login(a, "frank@a.example", "frank-pw") == 235
    assert login(b, "frank@a.example", "frank-pw") == 235

    # Failures spread over both nodes (frank's 1 + 2 + 2, max_failures_per_ip = 5) make
    # one ban of the client address that both nodes enforce, even for the
    # right password of a user who never logged in from there.
    scheme, dave_pw = PASSWORDS["dave@b.example"]
    for p in (a, b, a, b):
        assert login(p, "dave@b.example", "wrong") == 535
    assert login(a, "dave@b.example", dave_pw) == 454
    assert login(b, "dave@b.example", dave_pw) == 454
    assert "result=ban" in a.log() + b.log()
    keys = redis.cli("--scan", "--pattern", "postern:two-nodes:*")
    assert keys.strip(), "no shared throttle keys in Redis"

    # Node A delivers a virtual-domain mailbox into Dovecot over LMTP.
    for to, tag in [("alice@a.example", "for-a"), ("alice@b.example", "for-b")]:
        r = swaks("--server", f"127.0.0.1:{a.port}", "--from", "x@elsewhere.example", "--to", to, "--header", f"Subject: {tag}")
        assert r.returncode == 0, r.stdout + r.stderr
    got_a = wait_for(lambda: dovecot_mail(dovecot, "a.example", "alice"), 20, "alice@a.example in Dovecot")
    got_b = wait_for(lambda: dovecot_mail(dovecot, "b.example", "alice"), 20, "alice@b.example in Dovecot")
    assert b"Subject: for-a" in got_a[0].read_bytes() and b"Subject: for-b" in got_b[0].read_bytes()
    assert "relay=lmtp:127.0.0.1" in a.log()

    # Node B accepts mail it cannot deliver yet, then drains it to node A.
    n = 5
    for i in range(n):
        r = swaks("--server", f"127.0.0.1:{b.port}", "--from", f"s{i}@elsewhere.example", "--to", "carol@a.example",
                  "--header", f"Subject: drained {i}")
        assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: len(b.queue_files()["active"]) == n and "deferred" in b.log(), 30, "B's deferred attempts")
    assert b.stop() == 0
    r = b.cli("queue", "move", "--to", f"127.0.0.1:{a.port}", "--all")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"{n} messages moved" in r.stdout.decode()
    assert b.queue_files()["active"] == [] and b.queue_files()["messages"] == []
    got = wait_for(lambda: len(dovecot_mail(dovecot, "a.example", "carol")) >= n and dovecot_mail(dovecot, "a.example", "carol"),
                   30, "the drained messages in Dovecot")
    subjects = sorted(f.read_bytes().split(b"Subject: ")[1].split(b"\n")[0].strip() for f in got)
    assert subjects == sorted(f"drained {i}".encode() for i in range(n)), subjects
