"""Relay policy end to end: who may relay (networks, AUTH, client
certificates by CA / subject / fingerprint), what does not (look-alike CA,
self-signed, expired), `postern explain` agreeing with the live server, and a
certificate-only satellite -> gateway chain of two posterns (STARTTLS and
implicit TLS) delivering to a capturing sink."""

import datetime
import json
import re
import smtplib
import ssl
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import BASE_CONFIG, BIN, wait_for
from test_tls import make_cert

# Loopback is NOT trusted here: only rules decide.
CLOSED = BASE_CONFIG.replace('[[listener]]\naddress = "127.0.0.1:{port}"\n',
                             '[[listener]]\naddress = "127.0.0.1:{port}"\nclient_certificates = "optional"\n') + """
[relay]
networks = []
"""


def ctx_with(cert=None):
    c = ssl._create_unverified_context()
    if cert:
        c.load_cert_chain(*cert)
    return c


def try_rcpt(p, rcpt, cert=None, login=None, tls=True):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        if tls:
            s.starttls(context=ctx_with(cert))
        s.ehlo("client.example")
        if login:
            s.login(*login)
        s.mail("sender@client.example")
        return s.rcpt(rcpt)


def explain(p, *args):
    r = p.cli("explain", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def last_rule(p, rcpt):
    lines = [l for l in p.log().splitlines() if f"to={rcpt}" in l and ("rcpt " in l or "reject " in l)]
    return re.search(r"rule=(\S+)", lines[-1]).group(1)


def test_who_may_relay(postern_factory, tmp_path):
    p = postern_factory(CLOSED.replace("[queue]", "[[rule]]\nname = \"pinned\"\ncert_sha256 = [\"{pin}\"]\naction = \"relay\"\n[queue]"), start=False)
    pinned = make_cert(tmp_path / "pinned", "pinned-appliance")
    other = make_cert(tmp_path / "other", "pinned-appliance")
    fp = subprocess.run(["openssl", "x509", "-in", pinned[0], "-noout", "-fingerprint", "-sha256"], capture_output=True, text=True)
    pin = fp.stdout.strip().split("=", 1)[1]
    p.cfg.write_text(p.cfg.read_text().replace("{pin}", pin))
    p.start()
    assert p.cli("ca", "init").returncode == 0
    assert p.cli("ca", "issue", "client", "satellite", "--p12-password", "x").returncode == 0
    wait_for(lambda: "reload=ok" in p.log(), what="CA loaded")
    issued = p.data / "ca" / "issued"
    good = (str(issued / "satellite.crt"), str(issued / "satellite.key"))
    ca_key = serialization.load_pem_private_key((p.data / "ca" / "ca.key").read_bytes(), None)
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    expired = make_cert(tmp_path / "expired", "satellite", issuer_cn="postern CA", issuer_key=ca_key,
                        not_before=past, not_after=past + datetime.timedelta(days=5))
    lookalike = make_cert(tmp_path / "look", "satellite", issuer_cn="postern CA", issuer_key=ec.generate_private_key(ec.SECP256R1()))
    selfsigned = make_cert(tmp_path / "self", "satellite")
    r = p.cli("user", "add", "alice", "--password-stdin", input=b"alice pw\n")
    assert r.returncode == 0

    # Unknown client: local yes, outside no.
    assert try_rcpt(p, "alice@mx.test", tls=False)[0] == 250
    assert try_rcpt(p, "x@far.example", tls=False) == (550, b"5.7.1 <x@far.example>: Relay access denied")
    assert try_rcpt(p, "x@far.example")[0] == 550
    # A certificate from the trusted CA relays without AUTH.
    assert try_rcpt(p, "x@far.example", cert=good)[0] == 250
    assert last_rule(p, "x@far.example") == "trusted-certificate"
    # Look-alike CA, self-signed and expired certificates do not.
    for bad in (lookalike, selfsigned, expired):
        assert try_rcpt(p, "x@far.example", cert=bad)[0] == 550, bad
        assert last_rule(p, "x@far.example") == "no-relay"
    # The fingerprint rule matches exactly one (self-signed) certificate.
    assert try_rcpt(p, "pin@far.example", cert=pinned)[0] == 250
    assert last_rule(p, "pin@far.example") == "pinned"
    assert try_rcpt(p, "nopin@far.example", cert=other)[0] == 550
    # An authenticated user relays.
    assert try_rcpt(p, "auth@far.example", login=("alice", "alice pw"))[0] == 250
    assert last_rule(p, "auth@far.example") == "authenticated"

    # Golden: explain agrees with the live server for the same inputs.
    cases = [
        ([], "alice@mx.test", 250, "local-domains"),
        ([], "x@far.example", 550, "no-relay"),
        (["--cert", good[0]], "x@far.example", 250, "trusted-certificate"),
        (["--cert", lookalike[0]], "x@far.example", 550, "no-relay"),
        (["--cert", expired[0]], "x@far.example", 550, "no-relay"),
        (["--cert", pinned[0]], "pin@far.example", 250, "pinned"),
        (["--cert", other[0]], "nopin@far.example", 550, "no-relay"),
        (["--auth", "alice", "--tls"], "auth@far.example", 250, "authenticated"),
        ([], "nobody@mx.test", 550, "local-unknown"),
    ]
    for extra, rcpt, code, rule in cases:
        e = explain(p, "--ip", "127.0.0.1", "--from", "sender@client.example", "--rcpt", rcpt, *extra)
        assert e["rule"] == rule and e["reply"].startswith(str(code)), (extra, rcpt, e)
    live = try_rcpt(p, "nobody@mx.test", tls=False)
    assert live[0] == 550 and last_rule(p, "nobody@mx.test") == "local-unknown"
    text = p.cli("explain", "--ip", "192.0.2.9", "--rcpt", "x@far.example").stdout.decode()
    assert "decision: reject" in text and "550 5.7.1" in text and "no-relay (built-in)" in text


def test_rule_origin_and_config_check(postern_factory, tmp_path):
    cfg = CLOSED.replace("[queue]", "[[rule]]\nname = \"blocked\"\nclient_file = \"blocked.txt\"\naction = \"reject\"\nmessage = \"Go away\"\n[queue]")
    p = postern_factory(cfg, start=False)
    (p.data / "blocked.txt").write_text("# bad actors\n127.0.0.0/8\n")
    p.start()
    assert try_rcpt(p, "alice@mx.test", tls=False) == (550, b"5.7.1 <alice@mx.test>: Go away")
    e = explain(p, "--ip", "127.0.0.1", "--rcpt", "alice@mx.test")
    line = next(i + 1 for i, l in enumerate(p.cfg.read_text().splitlines()) if l.strip() == "[[rule]]")
    assert e["origin"] == f"{p.cfg}:{line}" and e["rule"] == "blocked"
    assert f"origin={p.cfg}:{line}" in p.log()
    # config check warns about an open relay.
    open_cfg = tmp_path / "open.toml"
    open_cfg.write_text('[[rule]]\nname = "oops"\naction = "relay"\n')
    r = subprocess.run([BIN, "config", "check", str(open_cfg)], capture_output=True, timeout=20)
    assert r.returncode == 0 and b"OPEN RELAY" in r.stderr, r.stderr
    fine = tmp_path / "fine.toml"
    fine.write_text("")
    r = subprocess.run([BIN, "config", "check", str(fine)], capture_output=True, timeout=20)
    assert b"OPEN RELAY" not in r.stderr


def chain(postern_factory, sink, implicit):
    """gateway: relays only for certificates whose subject matches; satellite:
    relays everything to the gateway presenting its client certificate."""
    gw_cfg = BASE_CONFIG.replace('[[listener]]\naddress = "127.0.0.1:{port}"\n', f"""[[listener]]
address = "127.0.0.1:{{port}}"
client_certificates = "optional"
[[listener]]
name = "gateway-tls"
address = "127.0.0.1:{{port2}}"
role = "submissions"
client_certificates = "optional"
""") + f"""
[relay]
networks = []
default_rules = false
smarthost = "127.0.0.1:{sink.port}"

[[rule]]
name = "local"
rcpt = ["local"]
action = "accept"

[[rule]]
name = "satellites"
cert_subject = "CN=*.sat.example"
action = "relay"
"""
    gw = postern_factory(gw_cfg, name="gw")
    assert gw.cli("ca", "init", "--name", "Gateway CA").returncode == 0
    assert gw.cli("ca", "issue", "client", "one.sat.example", "--p12-password", "x").returncode == 0
    wait_for(lambda: "reload=ok" in gw.log(), what="gateway CA loaded")
    issued = gw.data / "ca" / "issued"
    gw_port = gw.ports["port2"] if implicit else gw.port
    sat_cfg = BASE_CONFIG + f"""
[relay]
smarthost = "127.0.0.1:{gw_port}"
smarthost_tls = "encrypt"
smarthost_implicit_tls = {"true" if implicit else "false"}
smarthost_server_name = "localhost"
smarthost_client_certificate = "{issued / 'one.sat.example.crt'}"
smarthost_client_key = "{issued / 'one.sat.example.key'}"
"""
    sat = postern_factory(sat_cfg, name="sat")
    with smtplib.SMTP("127.0.0.1", sat.port, timeout=10) as s:
        s.sendmail("app@sat.example", ["customer@far.example"], b"Subject: via satellite\r\n\r\ncert only\r\n")
    msgs = sink.wait()
    assert msgs[0]["rcpt_tos"] == ["customer@far.example"]
    received = msgs[0]["data"].split(b"\r\n\r\n")[0]
    assert b'client certificate "CN=one.sat.example" verified by CN=Gateway CA' in received, received
    assert "rule=satellites" in gw.log()
    assert "auth=" not in gw.log()
    # Without the certificate the gateway refuses to relay.
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("intruder.example")
        s.mail("x@intruder.example")
        assert s.rcpt("customer@far.example")[0] == 550


def test_satellite_gateway_starttls(postern_factory, sink):
    chain(postern_factory, sink, implicit=False)


def test_satellite_gateway_implicit_tls(postern_factory, sink):
    chain(postern_factory, sink, implicit=True)


def test_route_map_relay_domain(postern_factory, sink):
    cfg = BASE_CONFIG + f"""
[relay]
networks = []

[[route]]
domains = ["backup.example"]
transport = "smtp"
next_hop = "127.0.0.1:{sink.port}"
"""
    p = postern_factory(cfg)
    # Anyone may send to a routed (relay) domain; it goes to the route's next hop.
    assert try_rcpt(p, "x@far.example", tls=False)[0] == 550
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("a@outside.example", ["user@backup.example"], b"Subject: backup mx\r\n\r\nx\r\n")
    msgs = sink.wait()
    assert msgs[0]["rcpt_tos"] == ["user@backup.example"]
    assert "rule=relay-domains" in p.log()
    assert f"relay=smtp:127.0.0.1:{sink.port}" in p.log()


# --- Real Postfix on either side ------------------------------------------

import os
import pwd
import shutil
import tempfile

import pytest

from conftest import free_port, require, wait_port

MASTER_SMTPD = "{listen} inet n - n - - smtpd\n"


class Postfix:
    """A private Postfix instance (own config and queue directory),
    started and stopped with `postfix -c DIR`."""

    def __init__(self, main_extra, port):
        require("postfix")
        self.dir = tempfile.mkdtemp(prefix="postern-postfix-")
        os.chmod(self.dir, 0o755)
        self.port = port
        pw = pwd.getpwnam("postfix")
        for sub in ("queue", "data"):
            os.mkdir(os.path.join(self.dir, sub))
        os.chown(os.path.join(self.dir, "data"), pw.pw_uid, pw.pw_gid)
        main = f"""compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pf.test
mydestination =
alias_maps =
alias_database =
maillog_file_prefixes = /tmp
maillog_file = {self.dir}/maillog
smtpd_tls_loglevel = 1
smtp_tls_loglevel = 1
{main_extra}
"""
        open(os.path.join(self.dir, "main.cf"), "w").write(main)
        master = open("/usr/share/postfix/master.cf.dist").read()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp      inet"):
                line = f"127.0.0.1:{port} inet n - n - - smtpd"
            elif line and not line.startswith(("#", " ")):
                f = line.split()
                if len(f) >= 8 and f[4] == "y" or (len(f) >= 8 and f[4] == "-"):
                    f[4] = "n"  # no chroot: the test directories are not in a chroot
                    line = " ".join(f)
            lines.append(line)
        open(os.path.join(self.dir, "master.cf"), "w").write("\n".join(lines) + "\n")
        r = subprocess.run(["postfix", "-c", self.dir, "check"], capture_output=True, timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr, self.log())
        r = subprocess.run(["postfix", "-c", self.dir, "start"], capture_output=True, timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr, self.log())
        wait_port(port, timeout=20)

    def file(self, name, data, mode=0o644):
        p = os.path.join(self.dir, name)
        open(p, "wb").write(data)
        os.chmod(p, mode)
        return p

    def log(self):
        try:
            return open(os.path.join(self.dir, "maillog")).read()
        except OSError:
            return ""

    def stop(self):
        subprocess.run(["postfix", "-c", self.dir, "stop"], capture_output=True, timeout=60)
        for _ in range(50):
            if not os.path.exists(os.path.join(self.dir, "data", "master.lock")):
                break
            time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


import time  # noqa: E402


def fingerprint(path):
    fp = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"], capture_output=True, text=True)
    return fp.stdout.strip().split("=", 1)[1]


def test_postfix_to_postern_with_client_certificate(postern_factory, sink):
    gw_cfg = CLOSED + f"""default_rules = false
smarthost = "127.0.0.1:{sink.port}"

[[rule]]
name = "local"
rcpt = ["local"]
action = "accept"

[[rule]]
name = "postfix-satellite"
cert_subject = "CN=postfix-client"
action = "relay"
"""
    gw = postern_factory(gw_cfg, name="gw")
    assert gw.cli("ca", "init").returncode == 0
    assert gw.cli("ca", "issue", "client", "postfix-client", "--p12-password", "x").returncode == 0
    wait_for(lambda: "reload=ok" in gw.log(), what="CA loaded")
    issued = gw.data / "ca" / "issued"
    pf_port = free_port()
    # Postfix key files are read by Postfix processes; keep them in its own directory.
    pf = None
    try:
        stage = tempfile.mkdtemp(prefix="postern-pfkeys-")
        os.chmod(stage, 0o755)
        crt = os.path.join(stage, "c.crt")
        key = os.path.join(stage, "c.key")
        shutil.copy(issued / "postfix-client.crt", crt)
        shutil.copy(issued / "postfix-client.key", key)
        os.chmod(key, 0o644)
        pf = Postfix(f"""mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{gw.port}
smtp_tls_security_level = encrypt
smtp_tls_cert_file = {crt}
smtp_tls_key_file = {key}
""", pf_port)
        with smtplib.SMTP("127.0.0.1", pf_port, timeout=20) as s:
            s.sendmail("app@pf.test", ["customer@far.example"], b"Subject: postfix to postern\r\n\r\nvia Postfix\r\n")
        msgs = sink.wait(timeout=40)
        data = msgs[0]["data"]
        assert msgs[0]["rcpt_tos"] == ["customer@far.example"]
        assert b'client certificate "CN=postfix-client" verified by CN=postern CA' in data, data[:800]
        assert b"by pf.test (Postfix)" in data
        assert "rule=postfix-satellite" in gw.log()
    finally:
        if pf:
            pf.stop()
        shutil.rmtree(stage, ignore_errors=True)


def test_postern_to_postfix_relay_clientcerts(postern_factory, sink):
    sat = postern_factory(start=False, name="sat")
    assert sat.cli("ca", "init").returncode == 0
    assert sat.cli("ca", "issue", "client", "satellite", "--p12-password", "x").returncode == 0
    assert sat.cli("ca", "issue", "server", "localhost").returncode == 0
    issued = sat.data / "ca" / "issued"
    pf_port = free_port()
    stage = tempfile.mkdtemp(prefix="postern-pfkeys-")
    os.chmod(stage, 0o755)
    for name in ("localhost.crt", "localhost.key"):
        shutil.copy(issued / name, os.path.join(stage, name))
        os.chmod(os.path.join(stage, name), 0o644)
    shutil.copy(sat.data / "ca" / "ca.crt", os.path.join(stage, "ca.crt"))
    open(os.path.join(stage, "relay_clientcerts"), "w").write(f"{fingerprint(issued / 'satellite.crt')} satellite\n")
    pf = None
    try:
        pf = Postfix(f"""mynetworks = 192.0.2.1/32
relayhost = [127.0.0.1]:{sink.port}
smtp_tls_security_level = none
smtpd_tls_security_level = may
smtpd_tls_cert_file = {stage}/localhost.crt
smtpd_tls_key_file = {stage}/localhost.key
smtpd_tls_CAfile = {stage}/ca.crt
smtpd_tls_ask_ccert = yes
smtpd_tls_fingerprint_digest = sha256
relay_clientcerts = texthash:{stage}/relay_clientcerts
smtpd_relay_restrictions = permit_tls_clientcerts, reject_unauth_destination
""", pf_port)
        sat.cfg.write_text(sat.cfg.read_text() + f"""
[relay]
smarthost = "127.0.0.1:{pf_port}"
smarthost_tls = "verify"
smarthost_server_name = "localhost"
smarthost_client_certificate = "{issued / 'satellite.crt'}"
smarthost_client_key = "{issued / 'satellite.key'}"
""")
        sat.start()
        with smtplib.SMTP("127.0.0.1", sat.port, timeout=10) as s:
            s.sendmail("app@mx.test", ["customer@far.example"], b"Subject: postern to postfix\r\n\r\ncert only\r\n")
        msgs = sink.wait(timeout=40)
        assert msgs[0]["rcpt_tos"] == ["customer@far.example"]
        assert b"by pf.test (Postfix)" in msgs[0]["data"]
        line = wait_for(lambda: [l for l in sat.log().splitlines() if "delivered id=" in l], what="delivery")[0]
        assert "verified" in line and "unverified" not in line, line
        # Without the client certificate Postfix refuses to relay (454 4.7.1).
        nocert = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{pf_port}"\nsmarthost_tls = "encrypt"\n', name="nocert")
        with smtplib.SMTP("127.0.0.1", nocert.port, timeout=10) as s:
            s.sendmail("app@mx.test", ["other@far.example"], b"Subject: no cert\r\n\r\nx\r\n")
        line = wait_for(lambda: [l for l in nocert.log().splitlines() if "to=other@far.example" in l and "Relay access denied" in l],
                        timeout=30, what="refusal")[0]
        assert line.split()[1] in ("failed", "deferred"), line
    finally:
        if pf:
            pf.stop()
        shutil.rmtree(stage, ignore_errors=True)


def test_ipv4_client_on_a_dual_stack_listener_is_plain_ipv4(postern_factory):
    """A `[::]` listener sees IPv4 clients as ::ffff:a.b.c.d; the log, the
    relay networks and fail2ban must see 127.0.0.1 (as Postfix logs it)."""
    cfg = CLOSED.replace('address = "127.0.0.1:{port}"', 'address = "[::]:{port}"').replace("networks = []", 'networks = ["127.0.0.0/8"]')
    p = postern_factory(cfg)
    code, _ = try_rcpt(p, "someone@far.example", tls=False)
    assert code == 250  # 127.0.0.0/8 matched the mapped client
    wait_for(lambda: "client=[127.0.0.1]" in p.log(), what="plain IPv4 in the connect line")
    assert "::ffff:" not in p.log()
