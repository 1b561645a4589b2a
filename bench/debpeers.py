"""Exim 4 and OpenSMTPD as further peers (issue 20, item 7), each relaying to the same sink
with its default durability. Their Debian packages conflict with Postfix's, so bench/run
fetches them with `apt-get download` into target/bench-debs and unpacks them with `dpkg -x`
into target/bench-root (PEER_ROOT); nothing is installed or configured system-wide apart
from the system users the binaries have compiled in (Debian-exim; opensmtpd, opensmtpq),
which bench/run creates as the packages' postinst would.

Both run under reap.py (child subreaper) so the CPU of every process they fork counts.
Same interface as peers.Postern/Postfix."""

import crypt
import os
import pwd
import subprocess
import sys
import tempfile
import threading

from common import (BENCH_PASSWORD, BENCH_USER, LOCAL_DOMAIN, LOCAL_USERS, PEER_ROOT, ROOT, cleanup, cpu_of,
                    descendants, free_port, pss_kb, rss_kb, shim, stop_proc, tree_sum, wait_port)

EXIM = os.path.join(PEER_ROOT, "usr", "sbin", "exim4")
SMTPD = os.path.join(PEER_ROOT, "usr", "sbin", "smtpd")
SMTPCTL = os.path.join(PEER_ROOT, "usr", "sbin", "smtpctl")
REAP = [sys.executable, os.path.join(ROOT, "bench", "reap.py")]


def self_signed(d, rsa=False):
    """A P-256 certificate like postern's generated one and Postfix's in W3 (rsa: RSA-2048)."""
    key = ["rsa", "-pkeyopt", "rsa_keygen_bits:2048"] if rsa else ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", *key, "-nodes",
                    "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "30", "-subj", "/CN=bench.test"],
                   check=True, capture_output=True)
    os.chmod(f"{d}/key.pem", 0o600)


class Forking:
    """A daemon under reap.py: CPU, peak RSS and PSS over the whole tree (the subreaper's
    cutime holds the CPU of the processes already gone)."""

    def tree(self):
        return descendants(self.proc.pid)

    def cpu(self):
        return tree_sum(self.tree(), cpu_of)

    def rss(self):
        return tree_sum(self.tree(), rss_kb)

    def pss(self):
        return tree_sum(self.tree(), pss_kb)

    def stop(self):
        stop_proc(self.proc, 30)
        cleanup(self.dir)


class Exim(Forking):
    """Exim 4 (exim4-daemon-light) with a private configuration (-C): spool and logs in its
    own directory, a manualroute smarthost router to the sink, immediate delivery (Exim's
    default: every accepted message is delivered at once by a process of its own), fsync of
    the spool files before 250 (default). smtp_accept_max = 200 (default 20) like Postfix's
    default_process_limit here, and a listen backlog of 1024 (default 20: at c=100 the clients'
    SYNs overflow it and are retried after 1, 3, 7 s); no ident (RFC 1413) or reverse lookups of the client (host_lookup
    unset; helo_lookup_domains empty: by default a HELO name equal to primary_hostname, as
    `postern bench` sends, makes Exim ask DNS for the client's name, 5 s per lost packet).
    Exim answers QUIT only after 200 ms unless the client half-closes: smtp-source gets
    bench/netshim.c's BENCH_QUIT_SHUTDOWN for every system (common.smtp_source)."""
    name = "exim"
    max_idle = 190  # a process per connection, smtp_accept_max = 200

    def __init__(self, sink_port, auth=False, dkim=False, local=False, max_conn=2000, tls=False):
        self.dir = tempfile.mkdtemp(prefix="bench-exim-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        d = self.dir
        ex = pwd.getpwnam("Debian-exim")
        os.mkdir(f"{d}/spool")
        os.chown(f"{d}/spool", ex.pw_uid, ex.pw_gid)
        tls_opts = auth_section = local_router = local_transport = ""
        if auth or tls:
            self_signed(d)
            os.chown(f"{d}/key.pem", ex.pw_uid, ex.pw_gid)
            tls_opts = f"tls_certificate = {d}/cert.pem\ntls_privatekey = {d}/key.pem\ntls_advertise_hosts = *\n"
        if auth:  # W3: AUTH PLAIN after STARTTLS, the password compared in the config
            tls_opts += "auth_advertise_hosts = ${if eq{$tls_in_cipher}{}{}{*}}\n"
            cond = "${if and {{eq{$auth2}{" + BENCH_USER + "}}{eq{$auth3}{" + BENCH_PASSWORD + "}}}}"
            auth_section = f"""begin authenticators
plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = {cond}
  server_set_id = $auth2
"""
        if local:  # W6: appendfile in maildir_format, as Debian-exim
            # (Exim re-executes itself for deliveries; with -C and no setuid bit on the unpacked
            # binary, that process runs as exim_user and cannot switch to another user)
            self.mail_dir = f"{d}/mail"
            os.mkdir(self.mail_dir)
            os.chown(self.mail_dir, ex.pw_uid, ex.pw_gid)
            open(f"{d}/users", "w").write("".join(f"{u}: {u}\n" for u in LOCAL_USERS))
            local_router = f"""local_user:
  driver = accept
  domains = {LOCAL_DOMAIN}
  local_parts = lsearch;{d}/users
  transport = local_maildir
"""
            local_transport = f"""local_maildir:
  driver = appendfile
  directory = {self.mail_dir}/$local_part_data
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = Debian-exim
  group = Debian-exim
"""
        open(f"{d}/exim.conf", "w").write(f"""exim_path = {EXIM}
primary_hostname = bench.test
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = {d}/spool
log_file_path = {d}/spool/log/%slog
local_interfaces = 127.0.0.1
smtp_accept_max = 200
smtp_connect_backlog = 1024
rfc1413_query_timeout = 0s
host_lookup =
helo_lookup_domains =
domainlist local_domains = {LOCAL_DOMAIN}
hostlist relay_hosts = 127.0.0.0/8
acl_smtp_rcpt = acl_check_rcpt
keep_environment =
{tls_opts}
begin acl
acl_check_rcpt:
  accept hosts = +relay_hosts
  accept domains = +local_domains
  deny
begin routers
{local_router}smarthost:
  driver = manualroute
  domains = ! +local_domains
  route_list = * 127.0.0.1::{sink_port} byname
  transport = remote_smtp
  self = send
begin transports
remote_smtp:
  driver = smtp
{local_transport}
begin retry
* * F,1h,1m
{auth_section}""")
        self.proc = subprocess.Popen([*REAP, EXIM, "-C", f"{d}/exim.conf", "-bdf", "-oX", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def flush(self):
        """W5: one queue run of everything (-qff), Exim's own way; it delivers one message after
        the other."""
        subprocess.run([EXIM, "-C", f"{self.dir}/exim.conf", "-qff"], capture_output=True, timeout=3600)


class OpenSMTPD(Forking):
    """OpenSMTPD 6.8 with a private smtpd.conf, run in a private mount namespace (unshare -m)
    where its compiled-in paths are bind mounts of its own directory: /var/spool (spool:
    /var/spool/smtpd), /var/lib (chroot /var/lib/opensmtpd/empty), /run (control socket) and
    /etc/resolv.conf ("lookup file": client names from /etc/hosts, no DNS); /usr/libexec is
    the unpacked package's (mail.maildir for W6).
    Default durability (fsync of the envelope and message before 250). Its listen backlog
    (fixed at 5) is raised to 1024 by bench/netshim.c's BENCH_LISTEN_BACKLOG, preloaded into
    smtpd only; otherwise 20 clients connecting at once see SYN retries (1 s each)."""
    name = "opensmtpd"
    max_idle = None
    # Debian 12's OpenSMTPD 6.8.0p2 with OpenSSL 3 fails every TLS handshake ("EVP lib", with an
    # ECDSA or an RSA key; OpenSMTPD issues #1171, #1239): no W3, no W4-TLS for it.
    tls_ok = False

    def __init__(self, sink_port, auth=False, dkim=False, local=False, max_conn=2000, tls=False):
        self.dir = tempfile.mkdtemp(prefix="bench-opensmtpd-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        d = self.dir
        for sub in ("spool", "varlib/opensmtpd/empty", "run"):
            os.makedirs(f"{d}/{sub}")
        listen = f"listen on 127.0.0.1 port {self.port}"
        pki = rules = ""
        if auth or tls:
            self_signed(d)
            pki = f'pki bench.test cert "{d}/cert.pem"\npki bench.test key "{d}/key.pem"\n'
            listen += " tls pki bench.test"
        if auth:  # W3: a credentials table with a SHA-512 crypt hash
            h = crypt.crypt(BENCH_PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
            open(f"{d}/creds", "w").write(f"{BENCH_USER} {h}\n")
            os.chmod(f"{d}/creds", 0o600)
            pki += f"table creds file:{d}/creds\n"
            listen += " auth <creds>"
        if local:  # W6: the maildir action, every local user delivered as nobody (virtual + userbase)
            self.mail_dir = f"{d}/mail"
            os.mkdir(self.mail_dir)
            nobody = pwd.getpwnam("nobody")
            os.chown(self.mail_dir, nobody.pw_uid, nobody.pw_gid)
            # one virtual user "vmail" = nobody, with the mail directory as its home (a home that
            # does not exist makes the ~/.forward check fail: every message would be deferred)
            open(f"{d}/vusers", "w").write("".join(f"{u}@{LOCAL_DOMAIN} vmail\n" for u in LOCAL_USERS))
            open(f"{d}/userinfo", "w").write(f"vmail {nobody.pw_uid}:{nobody.pw_gid}:{self.mail_dir}\n")
            pki += f"table vusers file:{d}/vusers\ntable userinfo file:{d}/userinfo\n"
            rules = (f'action "local" maildir "{self.mail_dir}/%{{dest.user}}" virtual <vusers> userbase <userinfo>\n'
                     f'match from any for domain "{LOCAL_DOMAIN}" action "local"\n')
        open(f"{d}/smtpd.conf", "w").write(f"""{pki}{listen}
action "relay" relay host smtp://127.0.0.1:{sink_port}
{rules}match from local for any action "relay"
""")
        os.chmod(f"{d}/smtpd.conf", 0o644)
        # asr (OpenSMTPD's resolver) asks DNS before /etc/hosts for the client's name: its own
        # resolv.conf says "lookup file" (hosts only), as Exim runs with host_lookup unset and
        # postern answers 127.0.0.0/8 itself; else a lost DNS packet stalls a session 5 s.
        open(f"{d}/resolv.conf", "w").write("lookup file\n")
        binds = " && ".join(f"mount --bind {os.path.join(d, src)} {dst}" for src, dst in
                            (("spool", "/var/spool"), ("varlib", "/var/lib"), ("run", "/run"),
                             ("resolv.conf", "/etc/resolv.conf"),
                             (f"{PEER_ROOT}/usr/libexec", "/usr/libexec")))
        env = {**os.environ, "LD_PRELOAD": shim(), "BENCH_LISTEN_BACKLOG": "1024"}
        self.stopping = threading.Event()
        self.log = open(f"{d}/smtpd.log", "w")
        self.proc = subprocess.Popen([*REAP, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      f"{binds} && exec {SMTPD} -d -f {d}/smtpd.conf"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_port(self.port)

    def ctl(self, *args):
        """smtpctl inside smtpd's mount namespace (its control socket is in the private /run)."""
        main = [p for p in self.tree() if p != self.proc.pid][:1]
        if main:
            # smtpctl insists on running setgid opensmtpq (the package installs it so)
            out = subprocess.run(["nsenter", "--mount", "--target", str(main[0]), "setpriv", "--regid", "opensmtpq",
                                  "--clear-groups", SMTPCTL, *args], capture_output=True, text=True, timeout=60)
            if out.returncode and not self.stopping.is_set():
                raise SystemExit(f"smtpctl {' '.join(args)}: {out.stderr.strip()}")

    def flush(self):
        """W5: `smtpctl schedule all`, again every 5 s until stopped: after a refused connection
        OpenSMTPD disables the route to the sink for 15 s, and an envelope scheduled while it is
        disabled fails again at once and waits for its next retry (minutes). The drain therefore
        includes up to 15 s of that wait, OpenSMTPD's own."""
        self.ctl("schedule", "all")

        def again():
            while not self.stopping.wait(5):
                try:
                    self.ctl("schedule", "all")
                except (SystemExit, OSError, subprocess.SubprocessError):
                    return

        threading.Thread(target=again, daemon=True).start()

    def stop(self):
        self.stopping.set()
        self.log.close()
        super().stop()


def available():
    """The extra peers whose binaries bench/run unpacked."""
    return [cls for cls, path in ((Exim, EXIM), (OpenSMTPD, SMTPD)) if os.access(path, os.X_OK)]
