"""systemd readiness (Type=notify): `postern serve` started with
NOTIFY_SOCKET, as systemd starts it, sends READY=1 only once its listeners
answer, RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a SIGHUP
reload, and STOPPING=1 on SIGTERM. The socket is a real unix datagram
socket, by path and in the abstract namespace ('@' in NOTIFY_SOCKET)."""

import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN


def receive(sock, want, timeout=15.0):
    """Datagrams until one carries the line `want`; returns them all."""
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        sock.settimeout(max(0.1, deadline - time.time()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want in msg.split("\n"):
            return got
    raise AssertionError(f"no {want} from postern within {timeout}s; got {got}")


def banner(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.settimeout(5)
        return c.recv(512)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notify_ready_reload_stopping(postern_factory, tmp_path, kind):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        addr = str(tmp_path / "notify")
        sock.bind(addr)
        env_value = addr
    else:
        name = f"postern-interop-{os.getpid()}-{time.time_ns()}"
        sock.bind("\0" + name)
        env_value = "@" + name
    p = postern_factory(start=False)
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = env_value
    try:
        # Started here, not by Postern.start (which polls the port): the
        # test must see READY=1 before it ever connects.
        p.log_handle = open(p.logfile, "ab")
        p.proc = subprocess.Popen(
            [BIN, "serve", "--config", str(p.cfg), "--data-dir", str(p.data)],
            stdout=p.log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    finally:
        if old is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = old
    try:
        ready = receive(sock, "READY=1")
        # READY=1 means serving: the listener answers at once, no retry.
        assert banner(p.port).startswith(b"220 "), p.log()
        assert any(f"127.0.0.1:{p.port}" in m for m in ready), ready
        assert not any("STOPPING=1" in m for m in ready)

        p.proc.send_signal(signal.SIGHUP)
        reload_msgs = receive(sock, "READY=1")
        first = reload_msgs[0].split("\n")
        assert first[0] == "RELOADING=1", reload_msgs
        assert first[1].startswith("MONOTONIC_USEC=") and int(first[1].split("=", 1)[1]) > 0, reload_msgs
        assert "STATUS=reloaded" in reload_msgs[-1], reload_msgs

        p.proc.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1")
        p.proc.wait(15)
        assert p.proc.returncode == 0, p.log()
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(5)
        p.log_handle.close()
        sock.close()

