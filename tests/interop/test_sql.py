"""The [sql] account directory against a real PostgreSQL: a private cluster
(initdb/pg_ctl as the `postgres` OS user, in a temp dir, on a loopback port),
stopped by PID in a finalizer. Passwords are Dovecot's own (`doveadm pw`):
ARGON2ID, BLF-CRYPT, SHA512-CRYPT, SSHA512. Clients are swaks.

Checked: AUTH PLAIN/LOGIN per scheme, a wrong password (535), two virtual
domains with the same local part delivered to two Maildirs, an unknown
mailbox (550 5.1.1), an alias, a user added while postern runs, the
database stopped (RCPT 451 4.3.0, AUTH 454 4.7.0) and started again,
sender_login_match from the table, `postern user verify` and `explain`.
"""

import contextlib
import glob
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import free_port, require, swaks_full as swaks, wait_for

PASSWORDS = {
    "alice@a.example": ("ARGON2ID", "argon-pw"),
    "alice@b.example": ("BLF-CRYPT", "blf-pw"),
    "carol@a.example": ("SHA512-CRYPT", "sha-pw"),
    "dave@b.example": ("SSHA512", "ssha-pw"),
}


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"postgresql {name} is not installed: run scripts/install-test-deps"
    return found[-1]


def hash_pw(scheme, pw):
    require("doveadm")
    r = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", pw], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class Pg:
    """A private PostgreSQL cluster owned by the `postgres` OS user."""

    def __init__(self):
        require("runuser")
        require("psql")
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="postern-pg-"))
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        r = self.as_pg(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        assert r.returncode == 0, r.stderr

    def as_pg(self, *cmd, input=None):
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, input=input, timeout=60)

    def start(self):
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        r = self.as_pg(pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w", "-t", "30", "start")
        assert r.returncode == 0, r.stderr + r.stdout + (self.dir / "pg.log").read_text(errors="replace")

    def pid(self):
        f = self.data / "postmaster.pid"
        return int(f.read_text().split("\n")[0]) if f.exists() else None

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)  # fast shutdown
        except ProcessLookupError:
            return
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "postgres to stop")

    def sql(self, text):
        r = self.as_pg("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "mail", "-v", "ON_ERROR_STOP=1", "-q",
                       input=text)
        assert r.returncode == 0, r.stderr
        return r.stdout


SCHEMA = """
CREATE TABLE domains (domain text PRIMARY KEY);
CREATE TABLE users (email text PRIMARY KEY, password text NOT NULL, active boolean NOT NULL DEFAULT true);
CREATE TABLE aliases (address text NOT NULL, goto text NOT NULL);
CREATE TABLE sender_logins (sender text NOT NULL, login text NOT NULL);
INSERT INTO domains VALUES ('a.example'), ('b.example');
INSERT INTO aliases VALUES ('sales@a.example', 'alice@a.example, alice@b.example');
INSERT INTO sender_logins VALUES ('boss@a.example', 'carol@a.example');
"""

CONFIG = """
hostname = "mx.test"
[[listener]]
address = "127.0.0.1:{port}"
[local]
domains = ["mx.test"]
[relay]
networks = []
[auth]
backend = "sql"
plaintext_networks = ["127.0.0.1/32"]
sender_login_match = true
[queue]
retry_min = "1s"
retry_max = "2s"
[limits]
shutdown_timeout = "5s"
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
sender_login_query = "SELECT login FROM sender_logins WHERE sender = :address UNION SELECT email FROM users WHERE email = :address"
"""


@contextlib.contextmanager
def mail_db():
    """A private cluster with the `mail` database: SCHEMA, the PASSWORDS
    users, a `postern` role with a password (SCRAM) owning the tables."""
    db = Pg()
    db.start()
    try:
        r = db.as_pg("psql", "-h", "127.0.0.1", "-p", str(db.port), "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1",
                     input="CREATE ROLE postern LOGIN PASSWORD 'db-secret'; CREATE DATABASE mail OWNER postern;")
        assert r.returncode == 0, r.stderr
        # Password authentication for `postern` (trust stays for the test's psql).
        hba = db.data / "pg_hba.conf"
        hba.write_text("host mail postern 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        assert db.as_pg(pg_bin("pg_ctl"), "-D", str(db.data), "reload").returncode == 0
        db.sql(SCHEMA)
        rows = ",".join(f"('{who}', '{hash_pw(s, pw)}')" for who, (s, pw) in PASSWORDS.items())
        db.sql(f"INSERT INTO users (email, password) VALUES {rows}; ALTER TABLE users OWNER TO postern;"
               "ALTER TABLE domains OWNER TO postern; ALTER TABLE aliases OWNER TO postern; ALTER TABLE sender_logins OWNER TO postern;")
        yield db
    finally:
        db.stop()
        shutil.rmtree(db.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg():
    require("swaks")
    with mail_db() as db:
        yield db


@pytest.fixture
def mx(pg, postern_factory, tmp_path):
    pwfile = tmp_path / "db.password"
    pwfile.write_text("db-secret\n")
    cfg = CONFIG.replace("{pgport}", str(pg.port)).replace("{pwfile}", str(pwfile))
    return postern_factory(cfg)


def send(p, to, *extra, frm="someone@elsewhere.example"):
    return swaks("--server", f"127.0.0.1:{p.port}", "--from", frm, "--to", to, "--quit-after", "RCPT", *extra)


def auth(p, user, pw, mech="PLAIN", *extra):
    return swaks("--server", f"127.0.0.1:{p.port}", "--auth", mech, "--auth-user", user, "--auth-password", pw,
                 "--quit-after", "AUTH", *extra)


def maildir(p, *parts):
    new = p.data.joinpath("mail", *parts, "new")
    return sorted(new.iterdir()) if new.is_dir() else []


@pytest.mark.parametrize("who", sorted(PASSWORDS))
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_with_dovecot_hashes(mx, who, mech):
    scheme, pw = PASSWORDS[who]
    r = auth(mx, who, pw, mech)
    assert r.returncode == 0, f"{scheme}: {r.stdout}{r.stderr}"
    r = auth(mx, who, pw + "x", mech)
    assert r.returncode != 0 and "535 5.7.8" in r.stdout + r.stderr, r.stdout
    assert "auth" in mx.log() and f"user={who}" in mx.log()


def test_ehlo_offers_password_mechanisms_only(mx):
    r = swaks("--server", f"127.0.0.1:{mx.port}", "--quit-after", "EHLO")
    auth_line = [l for l in r.stdout.splitlines() if "250-AUTH" in l or "250 AUTH" in l]
    assert auth_line and "PLAIN" in auth_line[0] and "SCRAM" not in auth_line[0], r.stdout


def test_virtual_domains_keep_their_namespaces(mx):
    for to, tag in [("alice@a.example", "for-a"), ("alice@b.example", "for-b")]:
        r = swaks("--server", f"127.0.0.1:{mx.port}", "--from", "x@elsewhere.example", "--to", to, "--header", f"Subject: {tag}")
        assert r.returncode == 0, r.stdout + r.stderr
    a = wait_for(lambda: maildir(mx, "a.example", "alice"), 20, "a.example mail")
    b = wait_for(lambda: maildir(mx, "b.example", "alice"), 20, "b.example mail")
    assert b"Subject: for-a" in a[0].read_bytes() and b"Subject: for-b" in b[0].read_bytes()
    assert len(a) == 1 and len(b) == 1
    assert not (mx.data / "mail" / "alice").exists()


def test_unknown_mailbox_and_foreign_domain(mx):
    r = send(mx, "nobody@a.example")
    assert "550 5.1.1" in r.stdout, r.stdout
    r = send(mx, "someone@c.example")
    assert "550 5.7.1" in r.stdout, r.stdout


def test_alias_expands(mx):
    r = swaks("--server", f"127.0.0.1:{mx.port}", "--from", "x@elsewhere.example", "--to", "Sales@A.example", "--header", "Subject: alias")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: maildir(mx, "a.example", "alice"), 20, "alias target in a.example")
    wait_for(lambda: maildir(mx, "b.example", "alice"), 20, "alias target in b.example")


def test_user_added_while_running(mx, pg):
    r = auth(mx, "erin@b.example", "erin-pw")
    assert r.returncode != 0 and "535" in r.stdout
    assert "550 5.1.1" in send(mx, "erin@b.example").stdout
    pg.sql(f"INSERT INTO users (email, password) VALUES ('erin@b.example', '{hash_pw('SHA512-CRYPT', 'erin-pw')}')")
    # After the negative TTL (1 s) both see her.
    wait_for(lambda: auth(mx, "erin@b.example", "erin-pw").returncode == 0, 15, "erin to log in")
    assert "250 2.1.5" in send(mx, "erin@b.example").stdout
    pg.sql("DELETE FROM users WHERE email = 'erin@b.example'")


def test_sender_login_match_from_table(mx):
    scheme, pw = PASSWORDS["carol@a.example"]
    common = ["--server", f"127.0.0.1:{mx.port}", "--auth", "PLAIN", "--auth-user", "carol@a.example", "--auth-password", pw,
              "--to", "alice@b.example", "--quit-after", "RCPT"]
    assert swaks(*common, "--from", "boss@a.example").returncode == 0
    assert swaks(*common, "--from", "carol@a.example").returncode == 0
    r = swaks(*common, "--from", "alice@a.example")
    assert "553 5.7.1" in r.stdout, r.stdout


def test_cli_user_verify_and_explain(mx):
    scheme, pw = PASSWORDS["dave@b.example"]
    r = mx.cli("user", "verify", "dave@b.example", "--password-stdin", input=(pw + "\n").encode())
    assert r.returncode == 0, r.stderr
    r = mx.cli("user", "verify", "dave@b.example", "--password-stdin", input=b"nope\n")
    assert r.returncode == 1, r.stderr
    r = mx.cli("explain", "--ip", "203.0.113.5", "--rcpt", "alice@b.example")
    assert b"250 2.1.5" in r.stdout and b"recipient=local" in r.stdout, r.stdout
    r = mx.cli("explain", "--ip", "203.0.113.5", "--rcpt", "zed@b.example")
    assert b"550 5.1.1" in r.stdout, r.stdout


def test_database_outage_is_temporary(mx, pg):
    _, pw = PASSWORDS["alice@a.example"]
    assert auth(mx, "alice@a.example", pw).returncode == 0
    pg.stop()
    try:
        time.sleep(2.5)  # past cache_ttl: the answers must come from the database
        r = send(mx, "alice@a.example")
        assert "451 4.3.0" in r.stdout, r.stdout
        r = auth(mx, "alice@a.example", pw)
        assert "454 4.7.0" in r.stdout, r.stdout
        assert "state=unavailable" in mx.log()
        r = mx.cli("explain", "--ip", "203.0.113.5", "--rcpt", "alice@a.example")
        assert r.returncode == 75 and b"451 4.3.0" in r.stdout, r.stdout
    finally:
        pg.start()
    wait_for(lambda: "250 2.1.5" in send(mx, "alice@a.example").stdout, 20, "RCPT to work again")
    assert auth(mx, "alice@a.example", pw).returncode == 0
    assert "state=available" in mx.log()
