"""Durability and robustness: kill -9 under load, full disk, smuggling
through a real relay, shutdown draining, connection limits and timeouts."""

import concurrent.futures
import os
import random
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import BASE_CONFIG, free_port, require, smarthost_config, wait_for


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_crash_kill9_loses_nothing(postern_factory, sink, sync):
    """A few hundred messages in parallel while the server is killed with
    SIGKILL at random points: every message that got 250 is delivered
    (with either queue.sync mode)."""
    p = postern_factory(smarthost_config(sink.port).replace("[queue]", f'[queue]\nsync = "{sync}"'))
    total = 300
    acked = set()
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def send(i):
        body = f"Subject: crash {i}\r\nX-Test-Id: crash-{i}\r\n\r\nmessage {i}\r\n".encode()
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
                    s.sendmail("load@client.example", [f"rcpt{i % 7}@far.example"], body)
                with lock:
                    acked.add(i)
                return
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05 + random.random() * 0.2)

    def killer():
        # Kill when the number of acknowledged messages passes random
        # thresholds, so the kills land while the load is running.
        thresholds = sorted(random.sample(range(10, total - 20), 5))
        kills = 0
        for t in thresholds:
            while sending.is_set() and len(acked) < t:
                time.sleep(0.002)
            if not sending.is_set():
                break
            time.sleep(random.random() * 0.02)
            p.kill9()
            kills += 1
            time.sleep(random.random() * 0.2)
            p.start()
        return kills

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        k = pool.submit(killer)
        list(pool.map(send, range(total)))
        sending.clear()
        kills = k.result()
    assert kills >= 3, f"only {kills} kills happened"
    assert len(acked) == total, f"{total - len(acked)} messages never got a 250 within the time limit"

    def delivered_ids():
        ids = []
        for m in sink.messages:
            found = re.search(rb"X-Test-Id: crash-(\d+)", m["data"])
            if found:
                ids.append(int(found.group(1)))
        return ids

    wait_for(lambda: acked <= set(delivered_ids()), timeout=60, what="every acknowledged message at the sink")
    ids = delivered_ids()
    # Queue files are reused for later messages (recycled names): every
    # message arrives with exactly its own text, nothing of an older one.
    for m in sink.messages:
        found = re.search(rb"X-Test-Id: crash-(\d+)", m["data"])
        if found:
            tail = f"\r\n\r\nmessage {int(found.group(1))}\r\n".encode()
            assert m["data"].endswith(tail), m["data"][-200:]
    duplicates = len(ids) - len(set(ids))
    print(f"\ncrash test: {total} acknowledged, {kills} SIGKILLs, {len(set(ids))} delivered, {duplicates} duplicates")
    wait_for(lambda: p.queue_files()["messages"] == [], timeout=30, what="queue to drain")
    assert p.queue_files()["tmp"] == []
    # After a restart nothing is left but names made ahead (empty files):
    # no torn queue file, no envelope without its message.
    p.stop()
    p.start()
    q = p.data / "queue"
    assert [f for f in (q / "files").iterdir() if f.stat().st_size > 0] == []
    assert list((q / "active").iterdir()) == [] and list((q / "hold").iterdir()) == []


def test_one_device_flush_per_message(postern_factory, sink):
    """docs/queue-format.md: with the default queue.sync = "fsync" accepting a
    message costs one flush: strace on the running server sees exactly one
    fdatasync per message, on its queue file, and no directory fsync (the
    file's name was made and fsynced ahead of time). Counted in system
    calls, not timed."""
    require("strace")
    p = postern_factory(smarthost_config(sink.port))
    q = p.data / "queue"
    # The first batch of names exists once the server is up; wait for it.
    wait_for(lambda: sum(1 for f in (q / "files").iterdir() if f.stat().st_size == 0) >= 64, what="names made ahead")
    log = p.data.parent / "strace.log"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,syncfs,sync,sync_file_range",
                               "-o", str(log), "-p", str(p.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: log.exists(), what="strace attached")
        time.sleep(1)  # strace attaches to every thread before it writes anything: let it settle
        n = 40  # fewer than the 64 names handed out before the pool makes more (whose directory fsync is one flush per 64)
        ids = []
        with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
            s.ehlo("client.example")
            for i in range(n):
                assert s.mail("flush@client.example")[0] == 250
                assert s.rcpt(f"r{i}@far.example")[0] == 250
                code, msg = s.data(f"Subject: flush {i}\r\n\r\nbody {i}\r\n".encode())
                assert code == 250, (code, msg)
                ids.append(re.search(rb"queued as ([0-9A-F]{16})", msg).group(1).decode())
        wait_for(lambda: len(sink.messages) >= n, what="every message at the sink")
        wait_for(lambda: p.queue_files()["messages"] == [], what="queue drained")
    finally:
        tracer.send_signal(signal.SIGINT)
        _, err = tracer.communicate(timeout=15)
    calls = [l for l in log.read_text().splitlines() if re.search(r"\b(fsync|fdatasync|syncfs|sync|sync_file_range)\(", l)]
    per_file = {}
    for l in calls:
        m = re.search(r"fdatasync\(\d+<[^>]*/queue/files/([0-9A-F]{16})>\) = 0", l)
        if m:
            per_file[m.group(1)] = per_file.get(m.group(1), 0) + 1
    assert sorted(per_file) == sorted(ids), (calls, ids)
    assert set(per_file.values()) == {1}, per_file
    others = [l for l in calls if not re.search(r"fdatasync\(\d+<[^>]*/queue/files/[0-9A-F]{16}>\)", l)]
    assert others == [], f"other flushes while {n} messages were accepted and delivered: {others}"
    print(f"\nflushes: {len(calls)} for {n} messages")


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    assert r.returncode == 0, f"cannot mount a tmpfs for the full-disk test (need root): {r.stderr!r}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk(postern_factory, small_fs):
    down = free_port()
    cfg = BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{down}"\n'
    # 1. The configured reserve: 100 MiB by default, the 4 MiB disk is "full" at MAIL.
    p = postern_factory(cfg)
    p.kill9()
    p.data = small_fs / "data"
    p.start()
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.ehlo("c.example")
        code, msg = s.mail("x@c.example")
        assert (code, msg[:5]) == (452, b"4.3.1"), (code, msg)
    p.kill9()
    # 2. With no reserve, a real ENOSPC while writing: 452 4.3.1 after DATA,
    #    and the message accepted before is intact.
    p.cfg.write_text(p.cfg.read_text().replace("[queue]", "[queue]\nmin_free_space = 0"))
    p.start()
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("x@c.example", ["keep@far.example"], b"Subject: keep me\r\n\r\nprecious\r\n")
    before = p.queue_files()
    body_file = p.data / "queue" / "files" / before["messages"][0]
    kept = body_file.read_bytes()
    filler = small_fs / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    os.truncate(filler, os.path.getsize(filler) - 64 * 1024)  # leave a little room
    big = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 600
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        # Declared with SIZE: refused at MAIL, before any data is sent.
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("x@c.example", ["big@far.example"], big)
        assert e.value.smtp_code == 452 and e.value.smtp_error.startswith(b"4.3.1"), e.value
        # Undeclared: the write fails with ENOSPC; 452 4.3.1 after DATA.
        s.rset()
        assert s.mail("x@c.example")[0] == 250
        assert s.rcpt("big@far.example")[0] == 250
        code, msg = s.data(big)
        assert (code, msg[:5]) == (452, b"4.3.1"), (code, msg)
    after = p.queue_files()
    assert after["tmp"] == [] and len(after["messages"]) == 1 and len(after["active"]) == 1, after
    assert body_file.read_bytes() == kept
    os.unlink(filler)
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("x@c.example", ["big@far.example"], big)
    assert len(p.queue_files()["active"]) == 2
    p.stop()


def raw_session(port, chunks, read_after_each=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    out = [f.readline()]
    for c in chunks:
        s.sendall(c)
        if read_after_each:
            line = f.readline()
            out.append(line)
            while line[3:4] == b"-":
                line = f.readline()
                out.append(line)
    s.close()
    return out


def test_smuggling_does_not_split_through_a_relay(postern_factory, sink):
    cfg = smarthost_config(sink.port).replace("[limits]", '[limits]\nbare_newline = "normalize"')
    p = postern_factory(cfg)
    probe = (b"Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@far.example>\r\n"
             b"DATA\r\nFrom: ceo@bank.example\r\n\r\nsmuggled\r\n\r.\r\n.\r\n")
    out = raw_session(p.port, [b"EHLO c.example\r\n", b"MAIL FROM:<a@c.example>\r\n", b"RCPT TO:<real@far.example>\r\n",
                               b"DATA\r\n", probe, b"QUIT\r\n"])
    assert out[-2].startswith(b"250 2.0.0 Ok: queued as"), out
    msgs = sink.wait()
    time.sleep(1.5)
    assert len(sink.messages) == 1, [m["rcpt_tos"] for m in sink.messages]
    m = sink.messages[0]
    assert m["rcpt_tos"] == ["real@far.example"] and m["mail_from"] == "a@c.example"
    assert b"MAIL FROM:<evil@evil.example>" in m["data"] and b"smuggled" in m["data"]
    # The default (reject) refuses the probe outright.
    p2 = postern_factory(smarthost_config(sink.port))
    out = raw_session(p2.port, [b"EHLO c.example\r\n", b"MAIL FROM:<a@c.example>\r\n", b"RCPT TO:<real@far.example>\r\n",
                                b"DATA\r\n", probe, b"QUIT\r\n"])
    assert out[-2].startswith(b"550 5.6.0"), out
    time.sleep(1)
    assert len(sink.messages) == 1


def test_sigterm_lets_open_session_finish(postern):
    s = socket.create_connection(("127.0.0.1", postern.port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"HELO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\n")
    for _ in range(4):
        f.readline()
    s.sendall(b"Subject: during shutdown\r\n\r\npart one\r\n")
    postern.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", postern.port), timeout=2)
    s.sendall(b"part two\r\n.\r\n")
    assert f.readline().startswith(b"250 2.0.0 Ok: queued as")
    assert f.readline().startswith(b"421 4.3.0")
    assert postern.proc.wait(15) == 0
    assert "stop result=clean" in postern.log()
    p2 = postern  # the message survives the restart and is delivered
    p2.start()
    p2.wait_mail("alice")
    p2.stop()


def test_connection_limits_and_timeouts(postern_factory):
    cfg = BASE_CONFIG.replace("[limits]", '[limits]\nmax_connections_per_ip = 2\ncommand_timeout = "1s"')
    p = postern_factory(cfg)
    time.sleep(0.5)  # let the start-up probe connection close
    a = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    b = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    assert a.makefile("rb").readline().startswith(b"220 ")
    assert b.makefile("rb").readline().startswith(b"220 ")
    c = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    assert c.makefile("rb").readline() == b"421 4.7.0 Too many connections, try again later\r\n"
    c.close()
    # Idle clients are dropped after command_timeout.
    assert a.makefile("rb").readline() == b"421 4.4.2 Timeout exceeded, closing connection\r\n"
    a.close()
    b.close()
