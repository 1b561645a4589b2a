"""The workloads: W1/W2 (workload), W1-DNSBL, W1-lat/W3 (loadgen), W4/W4-TLS
(idle_connections), W5 (drain), W6 (local_delivery). Each takes a system class from peers.py
or debpeers.py, starts a fresh instance (and sink), measures, and stops everything by PID."""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from common import (BENCH_PASSWORD, device_flushes, BENCH_USER, LOCAL_DOMAIN, LOCAL_USERS, POSTERN, ROOT, cpu_of,
                    current_rss_kb, free_port, settle, shim, smtp_source, stop_proc)
from common import sink as start_sink
from peers import DKIM_DOMAIN, DNSBL_CLIENT, DNSBL_LISTS, Postern

DNSBL_CLIENT_NAME = "client.bench.test"


def signed_at_sink(dump):
    """(messages with a DKIM-Signature for DKIM_DOMAIN, messages) in an smtp-sink -D dump."""
    signed = sent = 0
    field = None  # the DKIM-Signature field being read (unfolded), or None
    with open(dump, "rb") as f:
        for line in f:
            if field is not None and line[:1] in (b" ", b"\t"):
                field += line
                continue
            if field is not None:
                tags = b"".join(field.split(b":", 1)[1].split()).split(b";")
                if f"d={DKIM_DOMAIN}".encode() in tags:
                    signed += 1
                field = None
            if line.startswith(b"X-Mail-Args:"):  # the sink's first record of each message
                sent += 1
            elif line.lower().startswith(b"dkim-signature:"):
                field = line
    return signed, sent


def workload(system_cls, n, size, conc, timeout=300, dkim=False, fast_sink=False):
    """dkim (W1-DKIM): the system signs; the sink appends every message to one dump file (-D),
    which is checked for DKIM-Signature fields afterwards. fast_sink: bench/sink.c instead of
    smtp-sink (W2)."""
    settle()
    sink_port = free_port()
    dump = []
    if dkim:
        dumpdir = tempfile.mkdtemp(prefix="bench-sink-")
        os.chown(dumpdir, pwd.getpwnam("postfix").pw_uid, -1)
        dump = ["-D", f"{dumpdir}/dump"]
    sink = start_sink(sink_port, n, dump[1] if dump else None, fast=fast_sink)
    max_conn = max(2000, conc + 100)
    system = system_cls(sink_port, dkim=True, max_conn=max_conn) if dkim else system_cls(sink_port, max_conn=max_conn)
    perf = start_perf(system, f"{size // 1024}k-c{conc}")
    try:
        cpu0, flush0 = system.cpu(), device_flushes(system.dir)
        t0 = time.time()
        try:
            smtp_source(system.port, n, conc, size, timeout=timeout)
        except subprocess.TimeoutExpired:
            # The system did not take the load in time: a row that says so, not an aborted run.
            return {"accept_rate": 0.0, "e2e_rate": 0.0, "cpu_per_1k": (system.cpu() - cpu0) * 1000 / n,
                    "rss_kb": system.rss(), "all_arrived": False,
                    "error": f"smtp-source did not finish {n} messages in {timeout} s"}
        t_acc = time.time() - t0
        try:
            sink.wait(timeout)
            t_e2e = time.time() - t0
            arrived = True
        except subprocess.TimeoutExpired:
            t_e2e = float("nan")
            arrived = False
        cpu = system.cpu() - cpu0
        rss = system.rss()
        res = {"accept_rate": n / t_acc, "e2e_rate": n / t_e2e if arrived else 0.0, "cpu_per_1k": cpu * 1000 / n,
               "rss_kb": rss, "all_arrived": arrived}
        flush1 = device_flushes(system.dir)
        if flush0 is not None and flush1 is not None:
            res["flushes_per_msg"] = (flush1 - flush0) / n
        if dkim:
            signed, sent = signed_at_sink(f"{dumpdir}/dump")
            res["signed"] = f"{signed}/{sent}"
            if not signed:
                raise SystemExit(f"W1-DKIM: {system_cls.name} delivered no message with a DKIM-Signature d={DKIM_DOMAIN}")
        return res
    finally:
        if perf:
            stop_proc(perf)
        system.stop()
        if dkim:
            shutil.rmtree(dumpdir, ignore_errors=True)
        if sink.poll() is None:
            sink.kill()
            sink.wait()


def start_perf(system, label):
    """BENCH_PERF=DIR: `perf record -g` of postern (one process; the peers are not profiled)
    while the workload runs, into DIR/postern-<label>.data (read it with `perf report -i FILE --no-children`). The
    figures of a profiled run are not comparable with the others."""
    out = os.environ.get("BENCH_PERF")
    if not out or system.name != "postern":
        return None
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, f"{system.name}-{label}.data")
    return subprocess.Popen(["perf", "record", "-q", "-F", "1999", "-g", "-p", str(system.pids[0]), "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def srcaddr_preload():
    """bench/srcaddr.c built once per run into /tmp (LD_PRELOAD for smtp-source)."""
    out = os.path.join(tempfile.gettempdir(), f"bench-srcaddr-{os.getpid()}.so")
    if not os.path.exists(out):
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", out, os.path.join(ROOT, "bench", "srcaddr.c"), "-ldl"],
                       check=True)
    return out


def w1dnsbl(n, size, conc, dnsbl, rdns, timeout=300):
    """W1-DNSBL: W1 from DNSBL_CLIENT to postern with (dnsbl, rdns) against bench/dnszone.py.
    Returns workload()'s figures plus the DNS queries answered, the DNS server's CPU and the
    mail-log counts. Both switches off: the same config with no lookups (the baseline)."""
    settle()
    sink_port, dns_port = free_port(), free_port()
    dns = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "dnszone.py"), str(dns_port), DNSBL_CLIENT,
                            DNSBL_CLIENT_NAME, *DNSBL_LISTS], stdout=subprocess.PIPE, text=True)
    sink = None
    system = None
    try:
        if dns.stdout.readline().strip() != "ready":
            raise SystemExit("W1-DNSBL: the DNS server did not start (pip install dnslib)")
        sink = start_sink(sink_port, n)
        system = Postern(sink_port, screen=(dns_port, dnsbl, rdns))
        env = {**os.environ, "LD_PRELOAD": srcaddr_preload(), "BENCH_SOURCE_ADDR": DNSBL_CLIENT}
        cpu0, dns_cpu0 = system.cpu(), cpu_of(dns.pid)
        t0 = time.time()
        smtp_source(system.port, n, conc, size, timeout=timeout, env=env)
        t_acc = time.time() - t0
        try:
            sink.wait(timeout)
            t_e2e, arrived = time.time() - t0, True
        except subprocess.TimeoutExpired:
            t_e2e, arrived = float("nan"), False
        cpu = system.cpu() - cpu0
        res = {"accept_rate": n / t_acc, "e2e_rate": n / t_e2e if arrived else 0.0, "cpu_per_1k": cpu * 1000 / n,
               "rss_kb": system.rss(), "all_arrived": arrived, "dns_cpu": cpu_of(dns.pid) - dns_cpu0,
               "log": system.log_counts()}
    finally:
        if system:
            system.stop()
        if sink and sink.poll() is None:
            sink.kill()
            sink.wait()
        dns.terminate()  # by its PID; it prints its counts and exits
        try:
            out = dns.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            dns.kill()
            out = dns.communicate()[0]
    res["dns"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    log = res["log"]
    if log["connect"] != n or log["reject"] or log["dnsbl"]:  # the client bound, checked, not refused
        raise SystemExit(f"W1-DNSBL: expected {n} connections from {DNSBL_CLIENT}, none refused: {log}")
    if dnsbl and not res["dns"]:
        raise SystemExit("W1-DNSBL: the lists were never asked")
    return res


def loadgen(system_cls, n, conc, auth, timeout=600):
    """W3 (and latency figures): `postern bench` as the client for both systems, a new
    connection per message; with auth: STARTTLS + AUTH PLAIN each time."""
    settle()
    sink_port = free_port()
    sink = start_sink(sink_port, n)
    system = system_cls(sink_port, auth=auth)
    pwfile = os.path.join(system.dir, "bench-password")
    open(pwfile, "w").write(BENCH_PASSWORD + "\n")
    try:
        cpu0 = system.cpu()
        t0 = time.time()
        cmd = [POSTERN, "bench", "--server", f"127.0.0.1:{system.port}", "--messages", str(n), "--concurrency",
               str(conc), "--size", "4096", "--json", "--deadline", f"{timeout}s"]
        if auth:
            cmd += ["--starttls", "--auth-user", BENCH_USER, "--password-file", pwfile]
        # netshim's half-close after a plaintext QUIT, as for smtp-source (no effect inside TLS)
        env = {**os.environ, "LD_PRELOAD": shim(), "BENCH_QUIT_SHUTDOWN": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, env=env)
        report = json.loads(out.stdout)
        try:
            if report["failed"]:  # the sink would wait for messages that were never accepted
                raise subprocess.TimeoutExpired(cmd, 0)
            sink.wait(timeout)
            t_e2e = time.time() - t0
            arrived = report["failed"] == 0
        except subprocess.TimeoutExpired:
            t_e2e, arrived = float("nan"), False
        cpu = system.cpu() - cpu0
        return {"accept_rate": report["rate"], "e2e_rate": n / t_e2e if arrived else 0.0,
                "cpu_per_1k": cpu * 1000 / n, "rss_kb": system.rss(), "all_arrived": arrived,
                "p50": report["p50_ms"], "p99": report["p99_ms"], "error": report.get("first_error")}
    finally:
        system.stop()
        if sink.poll() is None:
            sink.kill()
            sink.wait()


def drain(system_cls, n, timeout=900, stats=None):
    """W5: n messages queued while the sink is down, then the sink comes up. stats (a dict,
    growth.py): accept_rate, pss_queued_kb (current PSS summed over the system's processes, queue
    full), rss_kb (peak RSS summed over them), cpu_per_1k
    of the drain."""
    settle()
    sink_port = free_port()
    system = system_cls(sink_port)
    sink = None
    try:
        t0 = time.time()
        smtp_source(system.port, n, 20, timeout=timeout)
        accept = n / (time.time() - t0)
        time.sleep(2)
        queued_pss = system.pss()  # shared pages counted once, as W4 does for forking peers
        sink = start_sink(sink_port, n)
        cpu0 = system.cpu()
        t0 = time.time()
        system.flush()
        try:
            sink.wait(timeout)
            rate, ok = n / (time.time() - t0), True
        except subprocess.TimeoutExpired:
            rate, ok = 0.0, False
        if stats is not None:
            stats.update(accept_rate=accept, pss_queued_kb=queued_pss, rss_kb=system.rss(),
                         cpu_per_1k=(system.cpu() - cpu0) * 1000 / n)
        return rate, ok
    finally:
        system.stop()
        stop_proc(sink, 5)


def raise_nofile(want):
    """The soft limit on open files up to want (the hard limit only if allowed); inherited by
    the systems started afterwards."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def read_reply(f):
    """One SMTP reply (all its lines) from a file object; the last line."""
    while True:
        line = f.readline(1024)
        if not line:
            raise OSError("connection closed")
        if line[3:4] != b"-":
            return line


def idle_connections(system_cls, n=10000, tls=False, timeout=120):
    """W4 / W4-TLS: up to n connections held open after EHLO (W4-TLS: after STARTTLS and a
    second EHLO inside TLS), at most system_cls.max_idle for a process-per-connection peer.
    Memory per connection: the growth of the PSS summed over the system's processes (shared
    pages counted once), and for postern (one process) also of its RSS, the earlier W4 figure."""
    import resource
    import ssl
    raise_nofile(n + 1000)
    settle()
    system = system_cls(free_port(), max_conn=n + 100, tls=tls)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    want = min(n, system_cls.max_idle or n)
    socks, error = [], None
    try:
        time.sleep(0.5)
        base_pss = system.pss()
        root = getattr(system, "master", None) or system.proc.pid
        base_rss = current_rss_kb(root)
        end = time.time() + timeout
        for _ in range(want):
            if time.time() > end:
                error = "timeout"
                break
            try:
                s = socket.create_connection(("127.0.0.1", system.port), timeout=10)
                f = s.makefile("rb")
                read_reply(f)
                s.sendall(b"EHLO idle.test\r\n")
                read_reply(f)
                if tls:
                    s.sendall(b"STARTTLS\r\n")
                    if not read_reply(f).startswith(b"220"):
                        raise OSError("STARTTLS refused")
                    f.close()
                    s = ctx.wrap_socket(s, server_hostname="bench.test")
                    f = s.makefile("rb")
                    s.sendall(b"EHLO idle.test\r\n")
                    read_reply(f)
                f.close()  # the socket stays open
                socks.append(s)
            except OSError as e:
                error = str(e)
                break
        time.sleep(1)
        held = max(len(socks), 1)
        return {"held": len(socks), "wanted": want, "pss_kb_per_conn": (system.pss() - base_pss) / held,
                "rss_kb_per_conn": (current_rss_kb(root) - base_rss) / held, "error": error}
    finally:
        for s in socks:
            s.close()
        system.stop()


def local_delivery(system_cls, n, conc=20, timeout=600):
    """W6: n messages (a multiple of len(LOCAL_USERS)) from outside to the local users'
    Maildirs, conc connections at a time, a new connection per message: conc slots, each
    running smtp-source for one user after the other (user k, k+conc, ...), n/100 messages
    each. End to end: until the last file is in a Maildir's new/ (polled every 20 ms)."""
    settle()
    system = system_cls(free_port(), local=True)
    per_user = n // len(LOCAL_USERS)
    errors = []

    def slot(k):
        try:
            for u in LOCAL_USERS[k::conc]:
                smtp_source(system.port, per_user, 1, to=f"{u}@{LOCAL_DOMAIN}", timeout=timeout)
        except Exception as e:  # reported below, the run fails
            errors.append(f"{type(e).__name__}: {e}")

    def delivered():
        total = 0
        for u in LOCAL_USERS:
            try:
                total += len(os.listdir(os.path.join(system.mail_dir, u, "new")))
            except OSError:
                pass
        return total

    try:
        cpu0, flush0 = system.cpu(), device_flushes(system.mail_dir)
        t0 = time.time()
        threads = [threading.Thread(target=slot, args=(k,)) for k in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        t_acc = time.time() - t0
        if errors:
            raise SystemExit(f"W6 {system_cls.name}: {errors[0]}")
        end = time.time() + timeout
        got = delivered()
        while got < n and time.time() < end:
            time.sleep(0.02)
            got = delivered()
        t_e2e = time.time() - t0
        arrived = got == n
        cpu = system.cpu() - cpu0
        res = {"accept_rate": n / t_acc, "e2e_rate": n / t_e2e if arrived else 0.0, "cpu_per_1k": cpu * 1000 / n,
               "rss_kb": system.rss(), "all_arrived": arrived, "delivered": got}
        flush1 = device_flushes(system.mail_dir)
        if flush0 is not None and flush1 is not None:
            res["flushes_per_msg"] = (flush1 - flush0) / n
        return res
    finally:
        system.stop()
