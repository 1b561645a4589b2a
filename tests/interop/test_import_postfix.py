"""`postern import postfix` against the real Postfix (Debian package
`postfix`, a private instance per test with its own config and queue
directory on loopback ports, stopped with `postfix stop`).

For each of three set-ups the test writes main.cf/master.cf and the tables,
starts Postfix on them, runs `postern import postfix --config-dir DIR --out
OUT --verify ...`, which replays the parity table (>= 40 sessions: client
inside/outside mynetworks, ports 25/587/465, TLS or not, client certificate
trusted / look-alike CA / self-signed / none, AUTH right/wrong/none, senders
local/foreign/<>, recipients local / relay domain / other / tricky local
parts) against Postfix and against `postern serve` on the imported config,
and must find 0 unexplained differences. The report must account for every
restriction element and every table line.

1. submission + permit_tls_clientcerts (relay_clientcerts fingerprints)
2. a relay: relay_domains, transport_maps, smtpd_relay_restrictions,
   check_client_access cidr:, check_sender_access
3. mynetworks + smtpd_tls_auth_only + SASL through a real Dovecot, smtps
   with -o overrides, broken_sasl_auth_clients
"""

import os
import pathlib
import pwd
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import BIN, free_port, require, wait_for, wait_port

PASSWORD = "s3cret-pw"


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r


def openssl_certs(d):
    """A test CA, a look-alike CA (same subject, other key), a server
    certificate, and client certificates: trusted, look-alike, self-signed.
    Client certificates go to d/probe as the importer's --probe-certs layout."""
    require("openssl")
    d = pathlib.Path(d)
    probe = d / "probe"
    probe.mkdir()
    ext_ca = d / "ca.ext"
    ext_ca.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n")
    ext_client = d / "client.ext"
    ext_client.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    ext_server = d / "server.ext"
    ext_server.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:pf.test\n")
    for ca in ("ca", "lookalike-ca"):
        run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Parity Test CA", "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.csr"))
        run("openssl", "x509", "-req", "-in", str(d / f"{ca}.csr"), "-signkey", str(d / f"{ca}.key"), "-days", "30", "-extfile", str(ext_ca), "-out", str(d / f"{ca}.crt"))

    def issue(name, cn, ca, ext, out_dir):
        key, csr, crt = out_dir / f"{name}.key", d / f"{name}.csr", out_dir / f"{name}.crt"
        run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr))
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.crt"), "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(crt))
        os.chmod(key, 0o644)
        return crt

    issue("server", "pf.test", "ca", ext_server, d)
    issue("trusted", "relay-client", "ca", ext_client, probe)
    issue("look-alike", "relay-client", "lookalike-ca", ext_client, probe)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=relay-client", "-days", "30",
        "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=clientAuth",
        "-keyout", str(probe / "self-signed.key"), "-out", str(probe / "self-signed.crt"))
    os.chmod(probe / "self-signed.key", 0o644)
    return d


def fingerprint(path):
    r = run("openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256")
    return r.stdout.strip().split("=", 1)[1]


class Postfix:
    """A private Postfix: main.cf = the common part + `main_extra`; master.cf
    = master.cf.dist without its smtp line, no chroot, plus `services`."""

    def __init__(self, main_extra, services, files=None):
        require("postfix")
        self.dir = tempfile.mkdtemp(prefix="postern-import-pf-")
        os.chmod(self.dir, 0o755)
        pw = pwd.getpwnam("postfix")
        for sub in ("queue", "data"):
            os.mkdir(os.path.join(self.dir, sub))
        os.chown(os.path.join(self.dir, "data"), pw.pw_uid, pw.pw_gid)
        for name, text in (files or {}).items():
            self.file(name, text)
        main = f"""# common part of the test instance
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pf.test
mydestination = pf.test
local_recipient_maps = texthash:{self.dir}/users
alias_maps =
alias_database =
maillog_file_prefixes = /tmp
maillog_file = {self.dir}/maillog
smtpd_tls_loglevel = 1
{main_extra}
"""
        self.file("main.cf", main)
        self.file("users", "alice x\nbob x\n")
        master = open("/usr/share/postfix/master.cf.dist").read()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp      inet"):
                line = services.strip("\n")
            elif line and not line.startswith(("#", " ")):
                f = line.split()
                if len(f) >= 8 and f[4] in ("y", "-"):
                    f[4] = "n"  # no chroot: the test directories are not in a chroot
                    line = " ".join(f)
            lines.append(line)
        self.file("master.cf", "\n".join(lines) + "\n")
        r = subprocess.run(["postfix", "-c", self.dir, "check"], capture_output=True, timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr, self.log())
        r = subprocess.run(["postfix", "-c", self.dir, "start"], capture_output=True, timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr, self.log())

    def file(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def log(self):
        try:
            return open(os.path.join(self.dir, "maillog")).read()
        except OSError:
            return ""

    def stop(self):
        subprocess.run(["postfix", "-c", self.dir, "stop"], capture_output=True, timeout=60)
        for _ in range(100):
            if not os.path.exists(os.path.join(self.dir, "data", "master.lock")):
                break
            time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def certs():
    d = tempfile.mkdtemp(prefix="postern-import-certs-")
    os.chmod(d, 0o755)
    yield openssl_certs(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def postfixes():
    started = []

    def make(*a, **kw):
        p = Postfix(*a, **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def import_and_verify(pf, out, ports, probe_certs=None, probe_auth=None):
    for p in ports.values():
        wait_port(p, timeout=20)
    cmd = [BIN, "import", "postfix", "--config-dir", pf.dir, "--out", str(out), "--verify", f"127.0.0.1:{ports['smtp']}"]
    if "submission" in ports:
        cmd += ["--verify-submission", f"127.0.0.1:{ports['submission']}"]
    if "smtps" in ports:
        cmd += ["--verify-smtps", f"127.0.0.1:{ports['smtps']}"]
    if probe_certs:
        cmd += ["--probe-certs", str(probe_certs)]
    if probe_auth:
        cmd += ["--probe-auth", probe_auth]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    parity = (out / "parity-report.txt").read_text() if (out / "parity-report.txt").exists() else ""
    assert r.returncode == 0, (r.returncode, r.stdout[-6000:], r.stderr[-3000:], parity[-12000:], pf.log()[-3000:])
    m = re.search(r"parity: (\d+) probes, (\d+) differences, (\d+) unexplained", r.stdout)
    assert m, r.stdout
    assert int(m.group(1)) >= 40, r.stdout
    assert int(m.group(3)) == 0, parity
    # The imported configuration loads.
    chk = subprocess.run([BIN, "config", "check", str(out / "postern.toml")], capture_output=True, text=True, timeout=60)
    assert "error" not in chk.stderr.lower() or chk.returncode == 0, chk.stderr
    return r, (out / "import-report.txt").read_text(), parity


def report_lines(report, path):
    return [line for line in report.splitlines() if line.startswith(f"{path}:")]


def assert_restrictions_accounted(report, pf_dir, elements):
    """Every restriction element has a report line, and none is silently
    dropped: each is mapped, a documented default, or listed NOT MAPPED."""
    for el in elements:
        hits = [line for line in report.splitlines() if f"_restrictions: {el}" in line]
        assert hits, (el, report)
        for h in hits:
            assert ("mapped -> " in h) or ("default: " in h) or ("NOT MAPPED" in h), h


def test_submission_with_permit_tls_clientcerts(postfixes, certs, tmp_path):
    smtp, sub = free_port(), free_port()
    fp = fingerprint(certs / "probe" / "trusted.crt")
    pf = postfixes(
        f"""mynetworks = 127.0.0.1/32
smtpd_tls_cert_file = {certs}/server.crt
smtpd_tls_key_file = {certs}/server.key
smtpd_tls_CAfile = {certs}/ca.crt
smtpd_tls_security_level = may
smtpd_tls_ask_ccert = yes
relay_clientcerts = texthash:$config_directory/relay_clientcerts
smtpd_relay_restrictions = permit_mynetworks,
    permit_tls_clientcerts,
    reject_unauth_destination
""",
        f"""127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{sub} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_relay_restrictions=permit_tls_clientcerts,reject
""",
        files={"relay_clientcerts": f"# the satellites\n{fp} relay-client\n"},
    )
    r, report, parity = import_and_verify(pf, tmp_path / "out", {"smtp": smtp, "submission": sub}, probe_certs=certs / "probe")
    cfg = (tmp_path / "out" / "postern.toml").read_text()
    assert fp in cfg and 'role = "submission"' in cfg, cfg
    assert_restrictions_accounted(report, pf.dir, ["permit_mynetworks", "permit_tls_clientcerts", "reject_unauth_destination", "reject"])
    # The fingerprint line of the table is mapped to the rule.
    assert any("relay-client" in line and "mapped -> [[rule]]" in line for line in report_lines(report, f"{pf.dir}/relay_clientcerts")), report
    # The trusted certificate relays from outside mynetworks; the look-alike does not (both sides).
    # (recipients: alice@pf.test, an unknown local user, customer@other.example, ...)
    assert re.search(r"smtp-outside-starttls-trusted-noauth-\S+\s+mail=accept accept 5xx accept .*\| mail=accept accept 5xx accept", parity), parity
    assert re.search(r"smtp-outside-starttls-look-alike-noauth-\S+\s+mail=accept accept 5xx 5xx .*\| mail=accept accept 5xx 5xx", parity), parity
    assert re.search(r"smtp-outside-starttls-self-signed-noauth-\S+\s+mail=accept accept 5xx 5xx .*\| mail=accept accept 5xx 5xx", parity), parity


def test_relay_with_relay_domains_and_transport_maps(postfixes, certs, tmp_path):
    smtp = free_port()
    pf = postfixes(
        f"""mynetworks = 127.0.0.0/30
smtpd_tls_cert_file = {certs}/server.crt
smtpd_tls_key_file = {certs}/server.key
smtpd_tls_security_level = may
relay_domains = relay.example, partner.example
transport_maps = texthash:${{config_directory}}/transport
smtpd_client_restrictions = check_client_access cidr:$config_directory/clients.cidr
smtpd_sender_restrictions = check_sender_access texthash:$config_directory/senders
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
message_size_limit = 20480000
""",
        f"127.0.0.1:{smtp} inet n - n - - smtpd\n",
        files={
            "transport": "relay.example smtp:[127.0.0.1]:2\npartner.example relay:[192.0.2.10]:587\nelsewhere.example smtp:[192.0.2.11]\n",
            "clients.cidr": "# a partner network that must not relay\n127.0.0.7/32 OK\n127.0.0.200/32 REJECT\n",
            "senders": "foreign.example REJECT\n",
        },
    )
    r, report, parity = import_and_verify(pf, tmp_path / "out", {"smtp": smtp})
    cfg = (tmp_path / "out" / "postern.toml").read_text()
    assert 'next_hop = "127.0.0.1:2"' in cfg and 'next_hop = "192.0.2.10:587"' in cfg, cfg
    assert 'max_message_size = 20480000' in cfg, cfg
    assert_restrictions_accounted(report, pf.dir, ["check_client_access", "check_sender_access", "permit_mynetworks", "reject_unauth_destination"])
    for table in ("transport", "clients.cidr", "senders"):
        lines = report_lines(report, f"{pf.dir}/{table}")
        assert lines, (table, report)
    # elsewhere.example is not a relay domain: reported, not turned into an open route.
    assert any("elsewhere.example" in line and "NOT MAPPED" in line for line in report.splitlines()), report


def dovecot_auth(d):
    require("dovecot")
    nobody = pwd.getpwnam("nobody")
    d = pathlib.Path(d)
    for sub in ("run", "state"):
        (d / sub).mkdir()
    h = run("doveadm", "pw", "-s", "SHA512-CRYPT", "-p", PASSWORD).stdout.strip()
    (d / "users").write_text(f"alice:{h}::::::\n")
    port = free_port()
    (d / "dovecot.conf").write_text(f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
default_login_user = root
default_internal_user = root
default_internal_group = root
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
  default_fields = uid={nobody.pw_uid} gid={nobody.pw_gid} home={d}/home/%n
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
  inet_listener {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(d / "dovecot.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=proc)
    wait_for(lambda: (d / "run" / "auth-client").exists(), what="Dovecot's auth-client socket")
    return proc


def test_mynetworks_sasl_dovecot_tls_auth_only(postfixes, certs, tmp_path):
    dd = tempfile.mkdtemp(prefix="postern-import-dovecot-")
    os.chmod(dd, 0o755)
    dov = dovecot_auth(dd)
    try:
        smtp, sub, smtps = free_port(), free_port(), free_port()
        pf = postfixes(
            f"""mynetworks = 127.0.0.1/32
smtpd_tls_cert_file = {certs}/server.crt
smtpd_tls_key_file = {certs}/server.key
smtpd_tls_security_level = may
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {dd}/run/auth-client
smtpd_tls_auth_only = yes
broken_sasl_auth_clients = yes
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
""",
            f"""127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{sub} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{smtps} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
""",
        )
        r, report, parity = import_and_verify(
            pf, tmp_path / "out", {"smtp": smtp, "submission": sub, "smtps": smtps}, probe_auth=f"alice:{PASSWORD}"
        )
        cfg = (tmp_path / "out" / "postern.toml").read_text()
        assert 'backend = "dovecot"' in cfg and f"unix:{dd}/run/auth-client" in cfg, cfg
        assert 'broken_auth_line = true' in cfg and 'role = "submissions"' in cfg, cfg
        assert_restrictions_accounted(report, pf.dir, ["permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination", "reject"])
        # AUTH worked on both sides (the right password) and failed with the wrong one.
        assert re.search(r"smtps-outside-tls-nocert-auth-ok-\S+\s+auth=accept mail=accept", parity), parity
        assert re.search(r"smtps-outside-tls-nocert-auth-bad-\S+\s+auth=5xx", parity), parity
    finally:
        dov.terminate()
        try:
            dov.wait(10)
        except subprocess.TimeoutExpired:
            dov.kill()
            dov.wait(5)
        shutil.rmtree(dd, ignore_errors=True)
