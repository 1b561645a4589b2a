"""postern vs Postfix, same machine, same run, same relay-to-sink set-up.

Load: Postfix's smtp-source; sink: Postfix's smtp-sink (exits after the
expected number of messages, which gives the end-to-end time). Every loop is
bounded in count and time; all traffic is on 127.0.0.1. Both systems keep
their default durability (postern fsyncs every message before 250; Postfix
fsyncs its queue file before 250).
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# POSTERN_BIN: a postern binary built elsewhere (bench/run then builds nothing).
POSTERN = os.environ.get("POSTERN_BIN") or os.path.join(ROOT, "target", "release", "postern")


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
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


BENCH_USER, BENCH_PASSWORD = "load", "bench password"
# queue.sync for postern: "fsync" (default) or "syncfs" (bench.py --sync syncfs).
SYNC = sys.argv[sys.argv.index("--sync") + 1] if "--sync" in sys.argv else "fsync"
# W1-DKIM: the domain of smtp-source's -f sender, which it also writes as "From: <...>".
SENDER = "load@src.test"
DKIM_DOMAIN, DKIM_SELECTOR = "src.test", "bench"
# W1-DNSBL: smtp-source connects from this address (bench/srcaddr.c, LD_PRELOAD), because the
# inbound defences skip 127.0.0.1; the local DNS server (bench/dnszone.py) names it and serves
# two block lists that do not list it. hickory-resolver answers PTR queries for 127.0.0.0/8
# itself ("localhost", RFC 6761 §6.3) without asking the DNS server, so with 127.0.0.2 the reverse
# lookup gives rdns=forged and sends no query; BENCH_DNSBL_CLIENT can name an address added to
# lo beforehand (e.g. `ip addr add 198.18.0.2/32 dev lo`, RFC 2544's benchmark range) to
# measure the round trips too.
DNSBL_CLIENT = os.environ.get("BENCH_DNSBL_CLIENT", "127.0.0.2")
DNSBL_CLIENT_NAME = "client.bench.test"
DNSBL_LISTS = ("bl1.bench.test", "bl2.bench.test")


class Postern:
    name = "postern"

    def __init__(self, sink_port, max_conn=2000, auth=False, dkim=False, screen=None):
        """screen (W1-DNSBL): (dns_port, dnsbl, rdns) — the client is not in relay.networks,
        far.test is a relay domain, SPF/DKIM/DMARC verification is off (not measured here),
        [inbound.dnsbl] with two lists when dnsbl, [inbound.rdns] lookup = rdns."""
        self.dir = tempfile.mkdtemp(prefix="bench-postern-")
        self.port = free_port()
        cfg = os.path.join(self.dir, "postern.toml")
        dkim_table = ""
        if dkim:  # W1-DKIM: RSA-2048 from `postern dkim keygen`; loopback is in relay.networks, so it signs
            subprocess.run([POSTERN, "--data-dir", os.path.join(self.dir, "data"), "dkim", "keygen", DKIM_DOMAIN,
                            "--selector", DKIM_SELECTOR, "--algorithm", "rsa", "--bits", "2048",
                            "--dir", os.path.join(self.dir, "dkim")], check=True, capture_output=True)
            dkim_table = f"""[[dkim]]
domain = "{DKIM_DOMAIN}"
selector = "{DKIM_SELECTOR}"
key_file = "{self.dir}/dkim/{DKIM_DOMAIN}.{DKIM_SELECTOR}.pem"
algorithm = "rsa-sha256"
"""
        relay_extra = screen_tables = ""
        if screen:
            dns_port, dnsbl, rdns = screen
            relay_extra = f"""networks = []
domains = ["far.test"]
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
[mail_auth]
verify = false
"""
            screen_tables = f"""[inbound.rdns]
lookup = {"true" if rdns else "false"}
"""
            if dnsbl:
                lists = ", ".join(f'"{z}=127.0.0.[2..11]*2"' for z in DNSBL_LISTS)
                screen_tables += f"""[inbound.dnsbl]
lists = [{lists}]
threshold = 2
stage = "rcpt"
exempt_networks = []
"""
        open(cfg, "w").write(f"""hostname = "bench.test"
[[listener]]
address = "127.0.0.1:{self.port}"
[relay]
smarthost = "127.0.0.1:{sink_port}"
smarthost_tls = "none"
{relay_extra}[limits]
max_connections_per_ip = {max_conn}
max_connections = {max_conn}
[queue]
concurrency = 20
sync = "{SYNC}"
[log]
mail_log = "{self.dir}/mail.log"
{dkim_table}{screen_tables}""")
        if auth:  # W3: AUTH needs TLS, which the listener offers with its generated certificate
            subprocess.run([POSTERN, "--config", cfg, "--data-dir", os.path.join(self.dir, "data"), "user", "add",
                            BENCH_USER, "--password-stdin"], input=(BENCH_PASSWORD + "\n").encode(), check=True,
                           capture_output=True)
        self.proc = subprocess.Popen([POSTERN, "serve", "--config", cfg, "--data-dir", os.path.join(self.dir, "data")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "POSTERN_RUN_DIR": self.dir})  # not /run/postern
        wait_port(self.port)
        self.pids = [self.proc.pid]

    def flush(self):
        subprocess.run([POSTERN, "--data-dir", os.path.join(self.dir, "data"), "queue", "flush"], capture_output=True)

    def cpu(self):
        return sum(cpu_of(p) for p in self.pids)

    def rss(self):
        return sum(rss_kb(p) for p in self.pids)

    def log_counts(self):
        """W1-DNSBL: connect lines (by their rdns= result), dnsbl lines (a list answered or
        failed) and refusals, from the mail log."""
        counts = {"connect": 0, "dnsbl": 0, "reject": 0}
        try:
            for line in open(os.path.join(self.dir, "mail.log"), errors="replace"):
                event = line.split(" ", 2)[1:2]  # "TIMESTAMP event key=value..."
                if event == ["connect"] and f"[{DNSBL_CLIENT}]" in line:  # not wait_port's probe
                    counts["connect"] += 1
                    rdns = [f for f in line.split() if f.startswith(("rdns=", "ptr="))]
                    if rdns:
                        counts[" ".join(rdns)] = counts.get(" ".join(rdns), 0) + 1
                elif event in (["dnsbl"], ["reject"]):
                    counts[event[0]] += 1
        except OSError:
            pass
        return counts

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        cleanup(self.dir)


class Postfix:
    name = "postfix"

    def __init__(self, sink_port, auth=False, dkim=False):
        self.dir = tempfile.mkdtemp(prefix="bench-postfix-")
        self.opendkim = None
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        pw = pwd.getpwnam("postfix")
        for sub in ("queue", "data"):
            os.mkdir(os.path.join(self.dir, sub))
        os.chown(os.path.join(self.dir, "data"), pw.pw_uid, pw.pw_gid)
        open(os.path.join(self.dir, "main.cf"), "w").write(f"""compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
alias_maps =
alias_database =
maillog_file_prefixes = /tmp
maillog_file = {self.dir}/maillog
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtp_tls_security_level = none
""")
        if auth:
            self.tls_auth(pw)
        if dkim:
            self.start_opendkim()
        lines = []
        for line in open("/usr/share/postfix/master.cf.dist").read().splitlines():
            if line.startswith("smtp      inet"):
                line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
            elif line and not line.startswith(("#", " ")):
                f = line.split()
                if len(f) >= 8:
                    f[4] = "n"
                    line = " ".join(f)
            lines.append(line)
        open(os.path.join(self.dir, "master.cf"), "w").write("\n".join(lines) + "\n")
        subprocess.run(["postfix", "-c", self.dir, "check"], check=True, capture_output=True)
        subprocess.run(["postfix", "-c", self.dir, "start"], check=True, capture_output=True)
        wait_port(self.port)
        self.master = int(open(os.path.join(self.dir, "data", "master.pid")).read().split()[0]) if os.path.exists(
            os.path.join(self.dir, "data", "master.pid")) else int(open(os.path.join(self.dir, "queue", "pid", "master.pid")).read().split()[0])

    def tls_auth(self, pw):
        """W3: STARTTLS with a self-signed P-256 certificate (like postern's default) and
        Cyrus SASL PLAIN from a sasldb, the classic sendmail/Postfix set-up."""
        d = self.dir
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "30", "-subj", "/CN=bench.test"],
                       check=True, capture_output=True)
        os.mkdir(f"{d}/sasl")
        open(f"{d}/sasl/smtpd.conf", "w").write(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {d}/sasldb2\n")
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", f"{d}/sasldb2", "-u", "bench.test", BENCH_USER],
                       input=BENCH_PASSWORD.encode(), check=True, capture_output=True)
        os.chown(f"{d}/sasldb2", pw.pw_uid, pw.pw_gid)
        with open(os.path.join(d, "main.cf"), "a") as f:
            f.write(f"""smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {d}/sasl
smtpd_sasl_local_domain = bench.test
""")

    def start_opendkim(self):
        """W1-DKIM: a private opendkim (RSA-2048 from opendkim-genkey) as Postfix's smtpd milter,
        signing mail from 127.0.0.1 (InternalHosts) for the sender's domain."""
        d = self.dir
        os.mkdir(f"{d}/dkim")
        subprocess.run(["opendkim-genkey", "-b", "2048", "-d", DKIM_DOMAIN, "-s", DKIM_SELECTOR, "-D", f"{d}/dkim"],
                       check=True, capture_output=True)
        port = free_port()
        open(f"{d}/opendkim.conf", "w").write(f"""Syslog no
Mode s
Domain {DKIM_DOMAIN}
Selector {DKIM_SELECTOR}
KeyFile {d}/dkim/{DKIM_SELECTOR}.private
RequireSafeKeys no
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
OversignHeaders From
InternalHosts 127.0.0.1
Socket inet:{port}@127.0.0.1
Background no
PidFile {d}/opendkim.pid
""")
        self.opendkim = subprocess.Popen(["opendkim", "-x", f"{d}/opendkim.conf"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        wait_port(port)
        with open(os.path.join(d, "main.cf"), "a") as f:
            f.write(f"smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = tempfail\n")

    def flush(self):
        subprocess.run(["postqueue", "-c", self.dir, "-f"], capture_output=True)

    def pids(self):
        """master and its children (they run as postfix)."""
        out = [self.master]
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    st = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                    if int(st[1]) == self.master:
                        out.append(int(p))
                except OSError:
                    pass
        if self.opendkim:  # W1-DKIM: the milter's CPU and memory count for Postfix
            out.append(self.opendkim.pid)
        return out

    def cpu(self):
        total = 0.0
        for p in self.pids():
            try:
                total += cpu_of(p)
            except OSError:
                pass
        return total

    def rss(self):
        total = 0
        for p in self.pids():
            try:
                total += rss_kb(p)
            except OSError:
                pass
        return total

    def stop(self):
        subprocess.run(["postfix", "-c", self.dir, "stop"], capture_output=True)
        if self.opendkim:
            self.opendkim.terminate()  # by its PID
            try:
                self.opendkim.wait(10)
            except subprocess.TimeoutExpired:
                self.opendkim.kill()
                self.opendkim.wait()
        time.sleep(1)
        cleanup(self.dir)


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


def workload(system_cls, n, size, conc, timeout=300, dkim=False):
    """dkim (W1-DKIM): the system signs; the sink appends every message to one dump file (-D),
    which is checked for DKIM-Signature fields afterwards."""
    settle()
    sink_port = free_port()
    dump = []
    if dkim:
        dumpdir = tempfile.mkdtemp(prefix="bench-sink-")
        os.chown(dumpdir, pwd.getpwnam("postfix").pw_uid, -1)
        dump = ["-D", f"{dumpdir}/dump"]
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", *dump, "-M", str(n), f"127.0.0.1:{sink_port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(sink_port)
    system = system_cls(sink_port, dkim=True) if dkim else system_cls(sink_port)
    try:
        cpu0 = system.cpu()
        t0 = time.time()
        subprocess.run(["smtp-source", "-s", str(conc), "-m", str(n), "-l", str(size), "-f", SENDER,
                        "-t", "rcpt@far.test", f"127.0.0.1:{system.port}"], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        if dkim:
            signed, sent = signed_at_sink(f"{dumpdir}/dump")
            res["signed"] = f"{signed}/{sent}"
            if not signed:
                raise SystemExit(f"W1-DKIM: {system_cls.name} delivered no message with a DKIM-Signature d={DKIM_DOMAIN}")
        return res
    finally:
        system.stop()
        if dkim:
            shutil.rmtree(dumpdir, ignore_errors=True)
        if sink.poll() is None:
            sink.kill()
            sink.wait()


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
        sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-M", str(n), f"127.0.0.1:{sink_port}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(sink_port)
        system = Postern(sink_port, screen=(dns_port, dnsbl, rdns))
        env = {**os.environ, "LD_PRELOAD": srcaddr_preload(), "BENCH_SOURCE_ADDR": DNSBL_CLIENT}
        cpu0, dns_cpu0 = system.cpu(), cpu_of(dns.pid)
        t0 = time.time()
        subprocess.run(["smtp-source", "-s", str(conc), "-m", str(n), "-l", str(size), "-f", SENDER,
                        "-t", "rcpt@far.test", f"127.0.0.1:{system.port}"], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
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
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-M", str(n), f"127.0.0.1:{sink_port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(sink_port)
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
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
        report = json.loads(out.stdout)
        try:
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


def drain(system_cls, n, timeout=900):
    """W5: n messages queued while the sink is down, then the sink comes up."""
    settle()
    sink_port = free_port()
    system = system_cls(sink_port)
    try:
        subprocess.run(["smtp-source", "-s", "20", "-m", str(n), "-l", "4096", "-f", "load@src.test",
                        "-t", "rcpt@far.test", f"127.0.0.1:{system.port}"], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-M", str(n), f"127.0.0.1:{sink_port}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(sink_port)
        t0 = time.time()
        system.flush()
        try:
            sink.wait(timeout)
            return n / (time.time() - t0), True
        except subprocess.TimeoutExpired:
            sink.kill()
            return 0.0, False
    finally:
        system.stop()


def idle_connections(n=10000, timeout=120):
    """W4: n connections held open after EHLO; postern's RSS per connection."""
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1000, n + 1000))
    system = Postern(free_port(), max_conn=n + 100)
    socks = []
    try:
        time.sleep(0.5)
        base = rss_kb(system.proc.pid)
        end = time.time() + timeout
        for _ in range(n):
            if time.time() > end:
                break
            s = socket.create_connection(("127.0.0.1", system.port), timeout=10)
            s.recv(512)
            s.sendall(b"EHLO idle.test\r\n")
            socks.append(s)
        for s in socks:
            s.recv(4096)
        time.sleep(1)
        current = int([l for l in open(f"/proc/{system.proc.pid}/status") if l.startswith("VmRSS:")][0].split()[1])
        return len(socks), (current - base) / max(len(socks), 1)
    finally:
        for s in socks:
            s.close()
        system.stop()


def show(label, name, r):
    extra = f"  p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms" if "p50" in r else ""
    if "signed" in r:
        extra += f"  signed at the sink {r['signed']}"
    if r.get("error"):
        extra += f"  first error: {r['error']}"
    print(f"{label:10} {name:8} {r['accept_rate']:9.0f} {r['e2e_rate']:9.0f} {r['cpu_per_1k']:9.2f} "
          f"{r['rss_kb'] / 1024:7.1f} {r['all_arrived']}{extra}", flush=True)


def ratio_line(label, a, b):
    if not b["e2e_rate"]:
        return None
    ratio = a["e2e_rate"] / b["e2e_rate"]
    print(f"{label:10} ratio    e2e {ratio:.2f}  cpu {a['cpu_per_1k'] / max(b['cpu_per_1k'], 1e-9):.2f}", flush=True)
    return ratio


def main():
    """bench.py [--quick] [--only w1,w1dkim,w1dnsbl,w2,w3,w4,w5]"""
    quick = "--quick" in sys.argv
    only = {"w1"} if quick else {"w1", "w1dkim", "w2", "w3", "w4", "w5"}
    if "--w45" in sys.argv:  # older spelling of --only w4,w5
        only = {"w4", "w5"}
    if "--only" in sys.argv:
        only = set(sys.argv[sys.argv.index("--only") + 1].lower().split(","))
    runs = []
    if "w1" in only:
        runs += [("W1", 4096, 20, 2000)] if quick else [("W1-c1", 4096, 1, 2000), ("W1", 4096, 20, 10000),
                                                        ("W1-c100", 4096, 100, 10000)]
    if "w2" in only:
        runs += [("W2-100k", 100 * 1024, 20, 2000), ("W2-1M", 1024 * 1024, 20, 300)]
    if "w1dkim" in only:  # W1 with DKIM signing: postern [[dkim]] vs Postfix + opendkim milter
        runs += [("W1-DKIM", 4096, 20, 10000)]
    print(f"{'workload':10} {'system':8} {'accept/s':>9} {'e2e/s':>9} {'cpu s/1k':>9} {'rss MB':>7} arrived")
    ratios = {}
    for name, size, conc, n in runs:
        res = {}
        for cls in (Postern, Postfix):
            res[cls.name] = workload(cls, n, size, conc, dkim=name == "W1-DKIM")
            show(name, cls.name, res[cls.name])
        ratios[name] = ratio_line(name, res["postern"], res["postfix"])
    if "w1dnsbl" in only:
        # W1-DNSBL: postern alone (Postfix would need the DNS server on port 53 of
        # /etc/resolv.conf): no lookups, then the two lists, then the lists and the reverse lookup.
        n = 2000 if quick else 10000
        res = {}
        for label, dnsbl, rdns in (("none", False, False), ("dnsbl", True, False), ("dnsbl+rdns", True, True)):
            r = res[label] = w1dnsbl(n, 4096, 20, dnsbl, rdns)
            show("W1-DNSBL", "postern", r)
            queries = sum(r["dns"].values())
            print(f"W1-DNSBL   {label:10} {n} msgs, {r['cpu_per_1k']:.3f} ms CPU/msg "
                  f"(+{r['cpu_per_1k'] - res['none']['cpu_per_1k']:.3f}), "
                  f"{20 * 1000 / r['accept_rate']:.2f} ms/msg per connection slot "
                  f"(+{20 * 1000 / r['accept_rate'] - 20 * 1000 / res['none']['accept_rate']:.2f}); "
                  f"DNS queries answered {queries} {json.dumps(r['dns'], sort_keys=True)}, "
                  f"DNS server CPU {r['dns_cpu']:.2f} s; mail log {json.dumps(r['log'], sort_keys=True)}",
                  flush=True)
        os.remove(srcaddr_preload())
        print(f"W1-DNSBL ratio: {res['dnsbl+rdns']['accept_rate'] / res['none']['accept_rate']:.2f}")
    if "w3" in only:
        # W1-lat: W1's traffic with the latency-measuring client (a connection per message).
        for label, auth in (("W1-lat", False), ("W3", True)):
            res = {}
            for cls in (Postern, Postfix):
                res[cls.name] = loadgen(cls, 3000, 20, auth)
                show(label, cls.name, res[cls.name])
            ratios[label] = ratio_line(label, res["postern"], res["postfix"])
    if "w4" in only:
        held, per = idle_connections()
        print(f"W4         postern  {held} idle connections after EHLO, {per:.1f} KB RSS each "
              f"(Postfix: one smtpd process per connection, limited by default_process_limit=200 here)")
    if "w5" in only:
        rates = {}
        for cls in (Postern, Postfix):
            rate, ok = drain(cls, 50000)
            rates[cls.name] = rate
            print(f"W5         {cls.name:8} drain {rate:9.0f} msg/s  all arrived {ok}", flush=True)
        if rates.get("postfix"):
            print(f"W5         ratio    drain {rates['postern'] / rates['postfix']:.2f}")
    if "W1-DKIM" in ratios:
        print(f"W1-DKIM ratio: {ratios['W1-DKIM'] or 0:.2f}")
    if "W1" in ratios or not (ratios or "w1dnsbl" in only):
        print(f"W1 ratio: {ratios.get('W1') or 0:.2f}")


if __name__ == "__main__":
    main()
