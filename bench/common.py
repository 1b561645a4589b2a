"""Helpers shared by bench.py, peers.py, debpeers.py, workloads.py and growth.py: ports,
process accounting, the settle rule, the LD_PRELOAD shims and smtp-source."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# POSTERN_BIN: a postern binary built elsewhere (bench/run then builds nothing).
POSTERN = os.environ.get("POSTERN_BIN") or os.path.join(ROOT, "target", "release", "postern")
# Exim and OpenSMTPD, unpacked by bench/run from their Debian packages (apt-get download + dpkg -x).
PEER_ROOT = os.environ.get("BENCH_PEER_ROOT") or os.path.join(ROOT, "target", "bench-root")

BENCH_USER, BENCH_PASSWORD = "load", "bench password"
# W1-DKIM: the domain of smtp-source's -f sender, which it also writes as "From: <...>".
SENDER = "load@src.test"
# W6: the local domain and its users (Maildirs under each system's mail directory).
LOCAL_DOMAIN = "local.test"
LOCAL_USERS = [f"u{i}" for i in range(100)]


def arg(name, default=None):
    """The value after `name` on the command line, else default."""
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def scaled(n, unit=100):
    """--scale F: message and connection counts times F (a multiple of unit, at least unit), for
    functional checks with tiny runs; 1 for the figures."""
    f = float(arg("--scale", "1"))
    return max(unit, int(n * f) // unit * unit)


def device_flushes(path=None):
    """Flush requests the block device under `path` (default: this checkout) has completed:
    field 16 of /sys/block/DEV/stat (Linux 5.5+). None if unknown (a file system without a
    block device, an older kernel). Counted around each workload: flushes per message."""
    try:
        st = os.stat(path or ROOT)
        dev = os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
        if os.path.exists(os.path.join(dev, "partition")):
            dev = os.path.dirname(dev)
        with open(os.path.join(dev, "stat")) as f:
            fields = f.read().split()
        return int(fields[15]) if len(fields) >= 17 else None
    except (OSError, ValueError):
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


# ext4 without a journal (this VM's disk) scans recently deleted inodes
# (deleted within vm.dirty_expire_centisecs, 30 s) on every file creation;
# right after a run removed its queue, the next system's creations pay for
# that. Each system starts only once the previous clean-up has aged out.
LAST_CLEANUP = [0.0]


def settle():
    if "--no-settle" in sys.argv:  # functional checks only: the figures are then not comparable
        return
    try:
        expire = int(open("/proc/sys/vm/dirty_expire_centisecs").read()) / 100
    except OSError:
        expire = 30
    wait = LAST_CLEANUP[0] + expire + 1 - time.time()
    if wait > 0:
        time.sleep(wait)


def cleanup(path):
    shutil.rmtree(path, ignore_errors=True)
    LAST_CLEANUP[0] = time.time()


def cpu_of(pid):
    """utime+stime+cutime+cstime of a process, in seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in f[11:15]) / hz


def rss_kb(pid):
    """Peak RSS (VmHWM) of a process."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def current_rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kb(pid):
    """Proportional set size: shared pages divided among the processes sharing them, so a sum
    over a process tree counts each page once (W4's per-connection memory of forking peers)."""
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root):
    """root and every process below it (a forking daemon's children and grandchildren)."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_sum(pids, fn):
    total = 0
    for p in pids:
        try:
            total += fn(p)
        except OSError:
            pass
    return total


def shim():
    """bench/netshim.c built once per run into /tmp (see its header); removed by main()."""
    out = os.path.join(tempfile.gettempdir(), f"bench-netshim-{os.getpid()}.so")
    if not os.path.exists(out):
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", out, os.path.join(ROOT, "bench", "netshim.c"), "-ldl"],
                       check=True)
    return out


def remove_shims():
    for name in (f"bench-netshim-{os.getpid()}.so", f"bench-srcaddr-{os.getpid()}.so", f"bench-sink-{os.getpid()}"):
        try:
            os.remove(os.path.join(tempfile.gettempdir(), name))
        except OSError:
            pass


def smtp_source(port, n, conc, size=4096, to="rcpt@far.test", timeout=300, env=None):
    """Postfix's smtp-source, a new connection per message, with netshim's half-close after
    QUIT (the same for every system; see bench/netshim.c for why Exim needs it)."""
    env = {**os.environ, **(env or {}), "BENCH_QUIT_SHUTDOWN": "1"}
    env["LD_PRELOAD"] = " ".join(x for x in (env.get("LD_PRELOAD"), shim()) if x)
    subprocess.run(["smtp-source", "-s", str(conc), "-m", str(n), "-l", str(size), "-f", SENDER, "-t", to,
                    f"127.0.0.1:{port}"], check=True, timeout=timeout, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)


def discard_sink():
    """bench/sink.c built once per run into /tmp (see its header); removed by main()."""
    out = os.path.join(tempfile.gettempdir(), f"bench-sink-{os.getpid()}")
    if not os.path.exists(out):
        subprocess.run(["cc", "-O2", "-pthread", "-o", out, os.path.join(ROOT, "bench", "sink.c")], check=True)
    return out


def sink(port, n, dump=None, fast=False):
    """Postfix's smtp-sink, or with fast bench/sink.c (W2: smtp-sink reads 1 MB messages more
    slowly than the systems deliver them): exits after n messages (the end-to-end clock)."""
    if fast and not dump:
        cmd = [discard_sink(), f"127.0.0.1:{port}", str(n)]
    else:
        extra = ["-D", dump] if dump else []
        cmd = ["smtp-sink", "-u", "postfix", *extra, "-M", str(n), f"127.0.0.1:{port}", "1024"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def stop_proc(p, timeout=30):
    """Stop one child process by its PID: SIGTERM, then SIGKILL after timeout."""
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
