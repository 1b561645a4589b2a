"""Several nodes (docs/scaling.md): two postern daemons sharing a private
redis-server (`[cluster] redis`) for the AUTH throttle, the fallback to
local counters when Redis dies, and `postern queue move` draining one
node's queue into the other with nothing lost.

Every peer is real and private: redis-server on a loopback port with no
persistence, started here and stopped by PID."""

import json
import signal
import smtplib
import ssl
import subprocess
import time

import pytest

from conftest import BASE_CONFIG, free_port, require, swaks, wait_for, wait_port


class Redis:
    """A private redis-server: loopback port, no persistence, own directory."""

    def __init__(self, tmp):
        self.dir = tmp / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.dir)],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cli(self, *args):
        r = subprocess.run([require("redis-cli"), "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def cluster_config(redis_port, prefix, auth=""):
    return BASE_CONFIG.replace("[queue]", f"""[auth]
ban_exempt_networks = []
delay_after = 100
ban_time = "60s"
{auth}
[cluster]
redis = "redis://127.0.0.1:{redis_port}/0"
key_prefix = "{prefix}"
timeout = "200ms"
[queue]""")


def add_user(p, name, pw):
    r = p.cli("user", "add", name, "--password-stdin", input=(pw + "\n").encode())
    assert r.returncode == 0, r.stderr


def attempt(p, user, pw):
    """One AUTH PLAIN over STARTTLS; the reply code."""
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("c.example")
        s.user, s.password = user, pw
        try:
            return s.auth("PLAIN", s.auth_plain)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


def two_nodes(postern_factory, redis, prefix, auth):
    cfg = cluster_config(redis.port, prefix, auth)
    a = postern_factory(cfg, name="a")
    b = postern_factory(cfg, name="b")
    for p in (a, b):
        add_user(p, "bob", "right")
    return a, b


def test_failures_on_two_nodes_make_one_ban(postern_factory, redis):
    a, b = two_nodes(postern_factory, redis, "t1", "max_failures_per_ip = 5\n")
    for _ in range(3):
        assert attempt(a, "bob", "wrong") == 535
    assert attempt(b, "bob", "wrong") == 535
    # Neither node alone has 5 failures: the 5th, counted in Redis, bans.
    assert attempt(b, "bob", "wrong") == 535
    assert "result=ban" in b.log()
    assert attempt(b, "bob", "right") == 454
    assert attempt(a, "bob", "right") == 454, "node A sees the ban node B set"
    assert "auth" in a.log() and "result=banned" in a.log()
    keys = redis.cli("--scan", "--pattern", "postern:t1:*").split()
    assert "postern:t1:auth:ban:127.0.0.1" in keys, keys
    assert int(redis.cli("GET", "postern:t1:auth:fail:ip:127.0.0.1")) == 5
    ttl = int(redis.cli("TTL", "postern:t1:auth:ban:127.0.0.1"))
    assert 50 <= ttl <= 60, ttl


def test_without_redis_each_node_counts_alone(postern_factory, redis):
    """The control: the same failures without [cluster] ban nobody."""
    cfg = BASE_CONFIG.replace("[queue]", '[auth]\nban_exempt_networks = []\ndelay_after = 100\nmax_failures_per_ip = 5\n[queue]')
    a = postern_factory(cfg, name="a")
    b = postern_factory(cfg, name="b")
    for p in (a, b):
        add_user(p, "bob", "right")
    for p in (a, a, a, b, b):
        assert attempt(p, "bob", "wrong") == 535
    assert attempt(a, "bob", "right") == 235
    assert attempt(b, "bob", "right") == 235


def test_redis_dies_logins_go_on_with_local_counters(postern_factory, redis):
    a, b = two_nodes(postern_factory, redis, "t2", "max_failures_per_ip = 3\n")
    assert attempt(a, "bob", "right") == 235
    assert attempt(b, "bob", "right") == 235
    redis.stop()
    for p in (a, b):
        t = time.time()
        assert attempt(p, "bob", "right") == 235, "a login must not depend on Redis"
        assert time.time() - t < 5
        wait_for(lambda: 'cluster redis=unreachable action="local counters"' in p.log(), 5, "the outage line")
        assert p.log().count("cluster redis=unreachable") == 1, "logged once per outage"
    # Local counters still protect: 3 failures on A ban the address on A
    # (bob, remembered there, still gets in; carol does not).
    add_user(a, "carol", "c-right")
    for _ in range(3):
        assert attempt(a, "carol", "wrong") == 535
    assert attempt(a, "carol", "c-right") == 454
    assert attempt(a, "bob", "right") == 235
    assert a.log().count("cluster redis=unreachable") == 1
    # Redis is back: the next request says so.
    redis.start()
    assert attempt(b, "bob", "right") == 235
    wait_for(lambda: "cluster redis=ok" in b.log() or attempt(b, "bob", "right") != 235, 10, "the recovery line")
    assert "cluster redis=ok" in b.log()


NODE_B = BASE_CONFIG.replace('hostname = "mx.test"', 'hostname = "b.test"').replace(
    'domains = ["mx.test", "localhost"]', 'domains = ["b.test"]') + """
[relay]
smarthost = "127.0.0.1:{port2}"
"""


def test_queue_move_drains_a_node(postern_factory):
    a = postern_factory(name="a")
    # B relays to a closed port: its mail stays queued.
    b = postern_factory(NODE_B, name="b")
    n = 6
    for i in range(n):
        r = swaks("--server", f"127.0.0.1:{b.port}", "--from", f"sender{i}@b.test", "--to", "alice@mx.test,bob@mx.test",
                  "--header", f"Subject: move {i}", "--body", f"message {i}")
        assert r.returncode == 0, r.stdout + r.stderr
    def tried():
        r = b.cli("queue", "list", "--json")
        q = json.loads(r.stdout)
        return len(q) == n and all(rc["attempts"] >= 1 for m in q for rc in m["recipients"])
    wait_for(tried, 20, "B's first attempts (deferred)")
    assert len(b.queue_files()["active"]) == n

    # Not while B's daemon runs (its scheduler would race the move).
    r = b.cli("queue", "move", "--to", f"127.0.0.1:{a.port}", "--all")
    assert r.returncode == 75, r
    assert b"daemon is running" in r.stderr
    assert b.stop() == 0
    # Unknown target port: nothing lost, everything stays, exit 75.
    closed = free_port()
    r = b.cli("queue", "move", "--to", f"127.0.0.1:{closed}", "--all")
    assert r.returncode == 75, r
    assert len(b.queue_files()["active"]) == n
    assert a.maildir("alice") == []

    r = b.cli("queue", "move", "--to", f"127.0.0.1:{a.port}", "--all")
    out = r.stdout.decode()
    assert r.returncode == 0, (out, r.stderr)
    assert f"{n} messages moved to 127.0.0.1:{a.port}, 0 still queued here" in out
    assert b.queue_files()["active"] == [] and b.queue_files()["messages"] == []
    got_alice = a.wait_mail("alice", n)
    got_bob = a.wait_mail("bob", n)
    assert len(got_alice) == n and len(got_bob) == n
    subjects = sorted(m.split(b"Subject: ")[1].split(b"\r\n")[0].split(b"\n")[0] for m in got_alice)
    assert subjects == sorted(f"move {i}".encode() for i in range(n))
    # The envelope sender travelled too.
    assert any(b"Return-Path: <sender0@b.test>" in m for m in got_alice)
    # One mail log line per message (log.mail_log is standard error here).
    moved_lines = [line for line in r.stderr.decode().splitlines() if " moved " in line and "result=moved" in line]
    assert len(moved_lines) == n, r.stderr
    assert all("nrcpt=2" in line for line in moved_lines)
    # Nothing left: an empty queue moves nothing and succeeds.
    r = b.cli("queue", "move", "--to", f"127.0.0.1:{a.port}", "--all")
    assert r.returncode == 0 and b"0 messages moved" in r.stdout
