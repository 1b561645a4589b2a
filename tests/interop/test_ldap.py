"""The [ldap] directory against a real OpenLDAP server (Debian slapd),
started privately on loopback ports with an mdb database in a tmp dir and a
test DIT loaded with slapadd; driven through `postern directory lookup`
(the same LdapDirectory the server uses). Covers search-then-bind and
bind-as-user logins (right and wrong passwords, filter/DN injection),
virtual domains, mailboxes, aliases, sender logins, StartTLS and LDAPS with
a test CA (and refusal of an untrusted certificate), and an outage: slapd
stopped gives exit 75 naming the outage, never "not found", and a
long-lived client reconnects once slapd is back."""

import os
import pathlib
import select
import signal
import subprocess
import time

import pytest

from conftest import BIN, free_port, require, wait_port

SUFFIX = "dc=example,dc=org"
ROOTDN = "cn=admin," + SUFFIX
ROOTPW = "rootsecret"
SVC_PW = "svcsecret"

SLAPD_CONF = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/misc.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {dir}/db
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by * read
"""

ENTRIES = """
dn: {suffix}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{suffix}
objectClass: organizationalUnit
ou: people

dn: ou=domains,{suffix}
objectClass: organizationalUnit
ou: domains

dn: ou=a.example,ou=domains,{suffix}
objectClass: organizationalUnit
objectClass: domainRelatedObject
ou: a.example
associatedDomain: a.example

dn: cn=svc,{suffix}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: svc
userPassword: {svc_hash}

dn: uid=alice,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: A
mail: alice@a.example
mailLocalAddress: postmaster@a.example
mailLocalAddress: sales@a.example
userPassword: {alice_hash}

dn: uid=admin,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: admin
cn: Admin
sn: A
mail: admin@a.example
mailLocalAddress: sales@a.example
userPassword: {admin_hash}
"""

# Logins that, pasted unescaped into the default user_filter, find entries.
RAW_MATCHING = ["*", "*)(uid=*", "admin)(|(uid=*)", "alice)(uid=*", "*)(|(objectClass=*)"]
INJECTIONS = RAW_MATCHING + ["admin)(|(uid=*", "*)(uid=*))(|(uid=*"]


def ssha(password):
    out = subprocess.run(["slappasswd", "-h", "{SSHA}", "-s", password], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def make_tls(d):
    """A test CA and a server certificate for localhost / 127.0.0.1."""
    run = lambda *a: subprocess.run(a, capture_output=True, timeout=60, check=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=LDAP test CA",
        "-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.pem")


class Slapd:
    """A private slapd on two loopback ports (ldap:// and ldaps://)."""

    def __init__(self, d):
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        (d / "db").mkdir(exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port()
        make_tls(d)
        (d / "slapd.conf").write_text(SLAPD_CONF.format(dir=d, suffix=SUFFIX, rootdn=ROOTDN, rootpw=ROOTPW))
        ldif = ENTRIES.format(suffix=SUFFIX, svc_hash=ssha(SVC_PW), alice_hash=ssha("alicepw"), admin_hash=ssha("adminpw"))
        (d / "dit.ldif").write_text(ldif)
        subprocess.run(["slapadd", "-f", str(d / "slapd.conf"), "-l", str(d / "dit.ldif")], capture_output=True, timeout=60, check=True)
        self.proc = None

    def start(self):
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"
        self.log = open(self.dir / "slapd.log", "ab")
        self.proc = subprocess.Popen([require("slapd"), "-h", urls, "-f", str(self.dir / "slapd.conf"), "-d", "0"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        wait_port(self.tls_port, proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.log.close()
        self.proc = None


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    for tool in ("slapd", "slapadd", "slappasswd", "ldapsearch", "openssl"):
        require(tool)
    s = Slapd(tmp_path_factory.mktemp("slapd")).start()
    yield s
    s.stop()


def config(slapd, tmp, extra="", url=None):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "svc.pw").write_text(SVC_PW + "\n")
    cfg = tmp / "postern.toml"
    cfg.write_text(f"""
hostname = "mx.test"
[ldap]
url = "{url or f'ldap://127.0.0.1:{slapd.port}'}"
base = "{SUFFIX}"
bind_dn = "cn=svc,{SUFFIX}"
bind_password_file = "{tmp}/svc.pw"
timeout = "3s"
# No caching: these tests watch every answer change (an outage, a restart).
cache_ttl = "0s"
negative_cache_ttl = "0s"
domain_filter = "(associatedDomain=%d)"
alias_filter = "(mailLocalAddress=%s)"
alias_attribute = "mail"
sender_login_filter = "(|(mail=%s)(mailLocalAddress=%s))"
login_attribute = "uid"
{extra}
""")
    return cfg


def lookup(cfg, *args, input=None):
    data = cfg.parent / "data"
    data.mkdir(exist_ok=True)
    return subprocess.run([BIN, "--config", str(cfg), "--data-dir", str(data), "directory", "lookup", *args],
                          input=input, capture_output=True, text=True, timeout=60)


def check_password(cfg, login, password):
    return lookup(cfg, "password-check", "--password-stdin", login, input=password + "\n")


def test_logins_search_bind(slapd, tmp_path):
    cfg = config(slapd, tmp_path)
    r = check_password(cfg, "alice", "alicepw")
    assert (r.returncode, r.stdout.strip()) == (0, "accepted as alice"), r.stderr
    r = check_password(cfg, "Alice", "alicepw")
    assert (r.returncode, r.stdout.strip()) == (0, "accepted as alice"), r.stderr
    for login, pw in [("alice", "wrong"), ("alice", "adminpw"), ("nobody", "alicepw")]:
        r = check_password(cfg, login, pw)
        assert r.returncode == 1 and "rejected" in r.stderr, (login, r.stdout, r.stderr)


def test_injection_logins_match_nothing(slapd, tmp_path):
    cfg = config(slapd, tmp_path)
    # The test can fail: the same logins pasted unescaped into the filter
    # do find entries in this directory.
    for login in RAW_MATCHING:
        raw = f"(&(objectClass=inetOrgPerson)(uid={login}))"
        out = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", f"ldap://127.0.0.1:{slapd.port}", "-b", SUFFIX, raw, "dn"],
                             capture_output=True, text=True, timeout=30)
        assert "dn: uid=" in out.stdout, (login, out.stdout, out.stderr)
    for login in INJECTIONS:
        for pw in ("alicepw", "adminpw"):
            r = check_password(cfg, login, pw)
            assert r.returncode == 1 and "rejected" in r.stderr, (login, r.stdout, r.stderr)
        r = lookup(cfg, "mailbox", login + "@a.example")
        assert r.returncode == 1, (login, r.stdout, r.stderr)
        r = lookup(cfg, "sender-logins", login)
        assert r.returncode == 1, (login, r.stdout, r.stderr)


def test_logins_bind_as_user(slapd, tmp_path):
    extra = f'auth = "bind_as_user"\nbind_dn_template = "uid=%u,ou=people,{SUFFIX}"'
    cfg = config(slapd, tmp_path, extra)
    r = check_password(cfg, "alice", "alicepw")
    assert (r.returncode, r.stdout.strip()) == (0, "accepted as alice"), r.stderr
    # DN injection: the value cannot add an RDN or point at another entry.
    for login in ["alice", "admin,ou=people", "alice,ou=people," + SUFFIX + "+cn=x", "alice)(uid=*", " alice"]:
        for pw in ("wrong", "adminpw"):
            r = check_password(cfg, login, pw)
            assert r.returncode == 1 and "rejected" in r.stderr, (login, pw, r.stdout, r.stderr)
    # An empty password is an unauthenticated bind (RFC 4513): never a login.
    r = check_password(cfg, "alice", "")
    assert r.returncode != 0


def test_domains_mailboxes_aliases_sender_logins(slapd, tmp_path):
    cfg = config(slapd, tmp_path)
    cases = [
        (("domain", "a.example"), 0, "yes"),
        (("domain", "A.Example"), 0, "yes"),
        (("domain", "b.example"), 1, ""),
        (("domain", "*"), 1, ""),
        (("mailbox", "alice@a.example"), 0, "exists"),
        (("mailbox", "carol@a.example"), 1, ""),
        (("mailbox", "*@a.example"), 1, ""),
        (("alias", "postmaster@a.example"), 0, "alice@a.example"),
        (("alias", "sales@a.example"), 0, "alice@a.example\nadmin@a.example"),
        (("alias", "alice@a.example"), 1, ""),
        (("alias", "*"), 1, ""),
        (("sender-logins", "alice@a.example"), 0, "alice"),
        (("sender-logins", "sales@a.example"), 0, "alice\nadmin"),
        (("sender-logins", "nobody@a.example"), 1, ""),
    ]
    for args, code, out in cases:
        r = lookup(cfg, *args)
        got = r.stdout.strip()
        if "\n" in out:  # order of entries is the server's
            got, out = sorted(got.split("\n")), sorted(out.split("\n"))
        assert (r.returncode, got) == (code, out), (args, r.stdout, r.stderr)


def test_starttls_and_ldaps_verify_the_server(slapd, tmp_path):
    ca = f'ca_files = ["{slapd.dir}/ca.pem"]'
    for name, url, extra in [
        ("starttls", f"ldap://localhost:{slapd.port}", "starttls = true\n" + ca),
        ("ldaps", f"ldaps://localhost:{slapd.tls_port}", ca),
        ("ldaps-ip", f"ldaps://127.0.0.1:{slapd.tls_port}", ca),
    ]:
        cfg = config(slapd, tmp_path / name, extra, url=url)
        r = lookup(cfg, "mailbox", "alice@a.example")
        assert (r.returncode, r.stdout.strip()) == (0, "exists"), (name, r.stderr)
        r = check_password(cfg, "alice", "alicepw")
        assert r.returncode == 0, (name, r.stderr)
    # Without our CA (system roots) the test certificate is refused: an
    # outage (75), not "no such mailbox".
    for name, url, extra in [
        ("untrusted-ldaps", f"ldaps://localhost:{slapd.tls_port}", ""),
        ("untrusted-starttls", f"ldap://localhost:{slapd.port}", "starttls = true"),
    ]:
        cfg = config(slapd, tmp_path / name, extra, url=url)
        r = lookup(cfg, "mailbox", "alice@a.example")
        assert r.returncode == 75 and "ldap directory unavailable" in r.stderr, (name, r.stdout, r.stderr)
        r = check_password(cfg, "alice", "alicepw")
        assert r.returncode == 75, (name, r.stdout, r.stderr)


def read_line(proc, timeout=10):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no answer line in time"
    return proc.stdout.readline().strip()


def test_outage_is_temporary_and_reconnects(tmp_path):
    for tool in ("slapd", "slapadd", "slappasswd", "openssl"):
        require(tool)
    s = Slapd(tmp_path / "slapd").start()
    proc = None
    try:
        cfg = config(s, tmp_path / "p")
        data = cfg.parent / "data"
        data.mkdir(exist_ok=True)
        # A long-lived client (like the server): one process, keys on stdin.
        proc = subprocess.Popen([BIN, "--config", str(cfg), "--data-dir", str(data), "directory", "lookup", "mailbox", "-"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ask = lambda k: (proc.stdin.write(k + "\n"), proc.stdin.flush(), read_line(proc))[2]
        assert ask("alice@a.example") == "alice@a.example\texists"
        s.stop()
        for key in ("alice@a.example", "carol@a.example"):
            line = ask(key)
            assert line.startswith(key + "\tUNAVAILABLE ldap lookup failed"), line
            assert "NOT FOUND" not in line
        r = lookup(cfg, "mailbox", "alice@a.example")
        assert r.returncode == 75 and "connect to ldap://127.0.0.1" in r.stderr, (r.stdout, r.stderr)
        r = check_password(cfg, "alice", "alicepw")
        assert r.returncode == 75 and "unavailable" in r.stderr, (r.stdout, r.stderr)
        s.start()
        assert ask("alice@a.example") == "alice@a.example\texists"
        assert ask("carol@a.example") == "carol@a.example\tNOT FOUND"
        proc.stdin.close()
        assert proc.wait(15) == 75  # one answer was "unavailable"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        s.stop()


def test_config_check_names_ldap_problems(tmp_path):
    cfg = tmp_path / "postern.toml"
    cfg.write_text('hostname = "mx.test"\n[ldap]\nbase = "dc=x"\nauth = "bind_as_user"\nuser_filter = "(uid=%u"\n'
                   'bind_dn = "cn=svc"\nbind_password_file = "/nonexistent/pw"\n')
    r = subprocess.run([BIN, "--config", str(cfg), "--data-dir", str(tmp_path), "config", "check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 78, (r.stdout, r.stderr)
    for want in ("key `ldap.url`: required", "key `ldap.bind_dn_template`: required", "key `ldap.user_filter`"):
        assert want in r.stderr, (want, r.stderr)
    cfg.write_text('hostname = "mx.test"\n[ldap]\nurl = "ldap://127.0.0.1:1"\nbind_dn = "cn=svc"\nbind_password_file = "/nonexistent/pw"\n')
    r = subprocess.run([BIN, "--config", str(cfg), "--data-dir", str(tmp_path), "config", "check"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ldap.bind_password_file" in (r.stdout + r.stderr), (r.stdout, r.stderr)


def test_smtp_session_uses_ldap(tmp_path, postern_factory):
    """The daemon itself with `auth.backend = "ldap"`: AUTH by bind, virtual
    domain mailboxes and aliases at RCPT (swaks), injection logins refused,
    and slapd stopped: AUTH 454 4.7.0 and RCPT 451 4.3.0, never 535/550."""
    require("swaks")
    from conftest import swaks_full as swaks
    s = Slapd(tmp_path / "slapd-smtp").start()
    try:
        ldap_cfg = config(s, tmp_path / "cfg").read_text()
        p = postern_factory(f"""
hostname = "mx.test"
[[listener]]
address = "127.0.0.1:{{port}}"
[local]
domains = ["mx.test"]
[relay]
networks = []
[auth]
backend = "ldap"
plaintext_networks = ["127.0.0.1/32"]
ban_exempt_networks = ["127.0.0.1/32"]
[limits]
shutdown_timeout = "5s"
""" + ldap_cfg.replace('hostname = "mx.test"', ""))
        server = ["--server", f"127.0.0.1:{p.port}"]

        def auth(login, pw):
            return swaks(*server, "--auth", "PLAIN", "--auth-user", login, "--auth-password", pw, "--quit-after", "AUTH")

        def rcpt(to):
            return swaks(*server, "--from", "x@elsewhere.example", "--to", to, "--quit-after", "RCPT")

        assert auth("alice", "alicepw").returncode == 0
        r = auth("alice", "wrong")
        assert r.returncode != 0 and "535 5.7.8" in r.stdout, r.stdout
        for login in ("*", "*)(uid=*", "admin)(|(uid=*"):
            r = auth(login, "alicepw")
            assert "535" in r.stdout and "235" not in r.stdout, (login, r.stdout)
        assert "250 2.1.5" in rcpt("alice@a.example").stdout
        assert "250 2.1.5" in rcpt("sales@a.example").stdout  # an alias
        assert "550 5.1.1" in rcpt("carol@a.example").stdout
        assert "550 5.7.1" in rcpt("someone@c.example").stdout  # not a virtual domain: no relay
        s.stop()
        r = auth("alice", "alicepw")
        assert "454 4.7.0" in r.stdout and "235" not in r.stdout, r.stdout
        r = rcpt("admin@a.example")
        assert "451 4.3.0" in r.stdout and "550" not in r.stdout, r.stdout
        assert "ldap" in p.log()
    finally:
        s.stop()
