"""postern and Postfix as the systems under test, each relaying to the sink on sink_port.
Exim and OpenSMTPD are in debpeers.py. Every class takes (sink_port, auth=False, dkim=False,
local=False, max_conn=2000) and has: name, dir, port, cpu(), rss() (peak, summed over its
processes), pss() (current, summed), flush(), stop(); mail_dir when local (W6: Maildirs of
LOCAL_USERS in LOCAL_DOMAIN, delivered by the system itself)."""

import os
import pwd
import subprocess
import tempfile
import time

from common import (BENCH_PASSWORD, BENCH_USER, LOCAL_DOMAIN, LOCAL_USERS, POSTERN, cleanup, cpu_of, descendants,
                    free_port, pss_kb, rss_kb, tree_sum, wait_port, arg)

# queue.sync for postern: "fsync" (default) or "syncfs" (bench.py --sync syncfs).
SYNC = arg("--sync", "fsync")
DKIM_DOMAIN, DKIM_SELECTOR = "src.test", "bench"
# W1-DNSBL: see workloads.w1dnsbl.
DNSBL_CLIENT = os.environ.get("BENCH_DNSBL_CLIENT", "127.0.0.2")
DNSBL_LISTS = ("bl1.bench.test", "bl2.bench.test")


class Postern:
    name = "postern"
    max_idle = None  # W4: one task per connection, no process limit

    def __init__(self, sink_port, auth=False, dkim=False, local=False, max_conn=2000, tls=False, screen=None):
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
        relay_extra = screen_tables = local_table = ""
        if local:  # W6: LOCAL_USERS get Maildirs under mail_dir
            self.mail_dir = os.path.join(self.dir, "mail")
            users = ", ".join(f'"{u}"' for u in LOCAL_USERS)
            local_table = f"""[local]
domains = ["{LOCAL_DOMAIN}"]
users = [{users}]
delivery = "maildir"
maildir_root = "{self.mail_dir}"
"""
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
{dkim_table}{screen_tables}{local_table}""")
        if auth:  # W3: AUTH needs TLS, which the listener offers with its generated certificate
            subprocess.run([POSTERN, "--config", cfg, "--data-dir", os.path.join(self.dir, "data"), "user", "add",
                            BENCH_USER, "--password-stdin"], input=(BENCH_PASSWORD + "\n").encode(), check=True,
                           capture_output=True)
        self.proc = subprocess.Popen([POSTERN, "serve", "--config", cfg, "--data-dir", os.path.join(self.dir, "data")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "POSTERN_RUN_DIR": self.dir})  # not /run/postern
        wait_port(self.port)
        self.pids = [self.proc.pid]

    def pss(self):
        return pss_kb(self.proc.pid)

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
    max_idle = 180  # W4: a smtpd process per connection, default_process_limit = 200

    def __init__(self, sink_port, auth=False, dkim=False, local=False, max_conn=2000, tls=False):
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
        if auth or tls:
            self.tls_auth(pw, sasl=auth)
        if local:
            self.virtual_maildirs()
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

    def virtual_maildirs(self):
        """W6: Postfix's virtual(8) delivery agent writes LOCAL_USERS' Maildirs under mail_dir
        (virtual_mailbox_domains/maps with a texthash: table, trailing "/" = Maildir), as nobody."""
        d, nobody = self.dir, pwd.getpwnam("nobody")
        self.mail_dir = f"{d}/mail"
        os.mkdir(self.mail_dir)
        os.chown(self.mail_dir, nobody.pw_uid, nobody.pw_gid)
        open(f"{d}/vmailbox", "w").write("".join(f"{u}@{LOCAL_DOMAIN} {u}/\n" for u in LOCAL_USERS))
        with open(os.path.join(d, "main.cf"), "a") as f:
            f.write(f"""virtual_mailbox_domains = {LOCAL_DOMAIN}
virtual_mailbox_maps = texthash:{d}/vmailbox
virtual_mailbox_base = {self.mail_dir}
virtual_minimum_uid = {nobody.pw_uid}
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
""")

    def tls_auth(self, pw, sasl=True):
        """W3: STARTTLS with a self-signed P-256 certificate (like postern's default) and
        Cyrus SASL PLAIN from a sasldb, the classic sendmail/Postfix set-up. W4-TLS: the
        certificate only (sasl=False)."""
        d = self.dir
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "30", "-subj", "/CN=bench.test"],
                       check=True, capture_output=True)
        if not sasl:
            with open(os.path.join(d, "main.cf"), "a") as f:
                f.write(f"smtpd_tls_cert_file = {d}/cert.pem\nsmtpd_tls_key_file = {d}/key.pem\n"
                        "smtpd_tls_security_level = may\n")
            return
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
        """master and the processes below it (they run as postfix)."""
        out = descendants(self.master)
        if self.opendkim:  # W1-DKIM: the milter's CPU and memory count for Postfix
            out.append(self.opendkim.pid)
        return out

    def cpu(self):
        return tree_sum(self.pids(), cpu_of)

    def rss(self):
        return tree_sum(self.pids(), rss_kb)

    def pss(self):
        return tree_sum(self.pids(), pss_kb)

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
