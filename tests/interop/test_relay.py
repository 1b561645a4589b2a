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
