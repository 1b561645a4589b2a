"""Shared fixtures for the interop tests.

Every test drives the real `postern` binary (POSTERN_BIN, built by
scripts/test) with real peers installed by scripts/install-test-deps:
swaks, Python smtplib, aiosmtpd (a real SMTP receiver used as smarthost),
Dovecot LMTP. A missing peer is an error, never a skip.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from aiosmtpd.controller import Controller

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("POSTERN_BIN") or str(ROOT / "target" / "release" / "postern")


def require(tool):
    path = shutil.which(tool)
    assert path, f"{tool} is not installed: run scripts/install-test-deps"
    return path


_HANDED_OUT = set()


def free_port():
    """A free loopback port, never the same twice in one test run, and below
    the kernel's ephemeral range (32768-60999) so that outgoing connections
    made meanwhile cannot take it before the server binds it."""
    import random
    for _ in range(1000):
        port = random.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise AssertionError("no free port found")


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_for(pred, timeout=15.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


BASE_CONFIG = """
hostname = "mx.test"
[[listener]]
address = "127.0.0.1:{port}"
[local]
domains = ["mx.test", "localhost"]
users = ["alice", "bob", "carol"]
[queue]
retry_min = "1s"
retry_max = "2s"
[limits]
shutdown_timeout = "5s"
"""


class Postern:
    """One postern daemon in a temp dir, started and stopped by PID."""

    def __init__(self, tmp, config=None, aliases=None):
        self.dir = pathlib.Path(tmp)
        self.port = free_port()
        self.ports = {f"port{i}": free_port() for i in range(2, 8)}
        self.data = self.dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.cfg = self.dir / "postern.toml"
        text = (config or BASE_CONFIG).replace("{port}", str(self.port))
        for k, v in self.ports.items():
            text = text.replace("{" + k + "}", str(v))
        self.cfg.write_text(text)
        if aliases is not None:
            (self.data / "aliases").write_text(aliases)
        self.logfile = self.dir / "postern.log"
        self.proc = None
        # Where `serve` records itself (crate::locate); per test, never the
        # machine's /run/postern.
        self.run_dir = self.dir / "run"

    def start(self):
        self.log_handle = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", str(self.cfg), "--data-dir", str(self.data)],
            env={**os.environ, "POSTERN_RUN_DIR": str(self.run_dir)},
            stdout=self.log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("postern did not stop on SIGTERM")
        finally:
            self.log_handle.close()
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait(5)
        self.log_handle.close()

    def log(self):
        return self.logfile.read_text(errors="replace")

    def cli(self, *args, input=None, env=None, argv0=None):
        e = dict(os.environ)
        e["POSTERN_RUN_DIR"] = str(self.run_dir)
        e.update(env or {})
        cmd = [argv0 or BIN, *args]
        if argv0 is None:
            cmd = [BIN, "--config", str(self.cfg), "--data-dir", str(self.data), *args]
        else:
            e["POSTERN_CONFIG"] = str(self.cfg)
            e["POSTERN_DATA_DIR"] = str(self.data)
        return subprocess.run(cmd, input=input, capture_output=True, env=e, timeout=60)

    def maildir(self, user):
        new = self.data / "mail" / user / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def wait_mail(self, user, n=1, timeout=15):
        return wait_for(lambda: len(self.maildir(user)) >= n and self.maildir(user), timeout, f"{n} message(s) for {user}")

    def queue_files(self):
        return queue_view(self.data / "queue")


QUEUE_TRAILER_LEN = 51


def queue_file_envelope(path):
    """The envelope stored in a queue file (docs/queue-format.md, format 2),
    or None when the file is not a complete message (a name made ahead of
    time, or a file being written)."""
    b = path.read_bytes()
    t = b[-QUEUE_TRAILER_LEN:]
    if len(b) < QUEUE_TRAILER_LEN or not t.startswith(b"\n#PQF2 "):
        return None
    text_len, env_len = int(t[7:23], 16), int(t[24:32], 16)
    if text_len + env_len + QUEUE_TRAILER_LEN != len(b):
        return None
    return json.loads(b[text_len:text_len + env_len])


def queue_view(q):
    """The queue as messages, by directory name: "messages" lists the complete
    queue files in files/ (and old-format texts in messages/), "active"/"hold"
    the ids of the messages in that state (envelope file, else the envelope in
    the queue file), "tmp" the files being written. Names made ahead of time
    (empty files) are not messages."""
    def names(d):
        return sorted(p.name for p in (q / d).iterdir()) if (q / d).is_dir() else []
    view = {"tmp": names("tmp"), "messages": [], "active": [], "hold": []}
    held = {n[:-5] for n in names("hold") if n.endswith(".json")}
    active = {n[:-5] for n in names("active") if n.endswith(".json")}
    for n in names("files"):
        try:
            env = queue_file_envelope(q / "files" / n)
        except (FileNotFoundError, ValueError):
            env = None
        if env is None:
            continue
        view["messages"].append(n)
        if n in held or (n not in active and env.get("quarantine")):
            view["hold"].append(n)
        else:
            view["active"].append(n)
    legacy = {n[:-4] for n in names("messages") if n.endswith(".eml")}
    view["messages"] += sorted(f"{n}.eml" for n in legacy)
    view["hold"] += sorted(held & legacy)
    view["active"] += sorted((active - held) & legacy)
    return {k: sorted(v) for k, v in view.items()}


def queue_envelopes(q):
    """The current envelope of every message in the active state."""
    out = []
    for n in queue_view(q)["active"]:
        f = q / "active" / f"{n}.json"
        out.append(json.loads(f.read_text()) if f.exists() else queue_file_envelope(q / "files" / n))
    return out


@pytest.fixture
def postern_factory(tmp_path):
    started = []

    def make(config=None, aliases=None, start=True, name="p"):
        d = tmp_path / f"{name}{len(started)}"
        d.mkdir()
        p = Postern(d, config, aliases)
        started.append(p)
        return p.start() if start else p

    yield make
    for p in started:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(5)


@pytest.fixture
def postern(postern_factory):
    return postern_factory()


class SinkHandler:
    """A real SMTP receiver (aiosmtpd) that records what it is given.
    Recipients starting with `reject` get 550, with `defer` get 450."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()
        self.ehlos = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        if address.startswith("defer"):
            return "450 4.2.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(
                {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos), "data": envelope.original_content}
            )
        return "250 2.0.0 Ok: captured"

    def wait(self, n=1, timeout=15):
        return wait_for(lambda: len(self.messages) >= n and self.messages, timeout, f"{n} message(s) at the sink")


@pytest.fixture
def sink():
    handler = SinkHandler()
    port = free_port()
    c = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False, enable_SMTPUTF8=True)
    c.start()
    handler.port = port
    yield handler
    c.stop()


def smarthost_config(sink_port, extra=""):
    return BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{sink_port}"\n' + extra


def swaks(*args, timeout=60):
    require("swaks")
    return subprocess.run(["swaks", "--hide-all", *args], capture_output=True, timeout=timeout, text=True)


def swaks_full(*args, timeout=60):
    require("swaks")
    return subprocess.run(["swaks", *args], capture_output=True, timeout=timeout, text=True)
