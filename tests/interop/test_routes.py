"""Per-route outbound settings end to end (issue 17 item 1): a satellite
postern with two [[route]]s, each presenting its own client certificate, to
two gateways -- a real Postfix (`permit_tls_clientcerts`, `relay_clientcerts`
with the SHA-256 fingerprint) and a postern (`cert_sha256` pin) -- each
accepting only its own certificate (and refusing the other's, with the
certificates swapped); a sender-dependent route with AUTH (PLAIN over
STARTTLS with a verified certificate) to a postern gateway that requires
AUTH; `next_hops` falling back when the first hop is down; `postern explain`
and `postern config check --rcpt` naming the route."""

import json
import os
import shutil
import smtplib
import tempfile

from conftest import BASE_CONFIG, free_port, wait_for
from test_relay import Postfix, fingerprint


def send(p, sender, rcpt, subject):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail(sender, [rcpt], f"Subject: {subject}\r\n\r\n{subject}\r\n".encode())


def write_config(p, text):
    """The config of a postern made with start=False ({port} filled in)."""
    p.cfg.write_text(text.replace("{port}", str(p.port)))


def log_lines(p, *needles):
    return [l for l in p.log().splitlines() if all(n in l for n in needles)]


def satellite_ca(postern_factory):
    """A postern (not started) with its CA, two client certificates and a
    server certificate for `localhost` (the gateways' TLS)."""
    sat = postern_factory(start=False, name="sat")
    assert sat.cli("ca", "init").returncode == 0
    for name in ("to-postfix", "to-postern"):
        assert sat.cli("ca", "issue", "client", name, "--p12-password", "x").returncode == 0
    assert sat.cli("ca", "issue", "server", "localhost").returncode == 0
    return sat, sat.data / "ca" / "issued"


def route_config(pf_port, gw_port, issued, ca, pf_cert, gw_cert):
    return BASE_CONFIG + f"""
[[route]]
domains = ["pf-side.example"]
transport = "smtp"
next_hop = "127.0.0.1:{pf_port}"
tls = "verify"
server_name = "localhost"
ca_files = ["{ca}"]
client_certificate = "{issued / (pf_cert + '.crt')}"
client_key = "{issued / (pf_cert + '.key')}"

[[route]]
domains = ["gw-side.example"]
transport = "smtp"
next_hop = "127.0.0.1:{gw_port}"
tls = "encrypt"
client_certificate = "{issued / (gw_cert + '.crt')}"
client_key = "{issued / (gw_cert + '.key')}"
"""


def test_two_gateways_each_take_only_their_own_certificate(postern_factory, sink):
    sat, issued = satellite_ca(postern_factory)
    ca = sat.data / "ca" / "ca.crt"
    # The postern gateway relays only for the pinned "to-postern" certificate.
    gw = postern_factory(BASE_CONFIG.replace('address = "127.0.0.1:{port}"\n', 'address = "127.0.0.1:{port}"\nclient_certificates = "optional"\n')
                         + f"""
[relay]
networks = []
default_rules = false
smarthost = "127.0.0.1:{sink.port}"

[[rule]]
name = "local"
rcpt = ["local"]
action = "accept"

[[rule]]
name = "satellite-pin"
cert_sha256 = ["{fingerprint(issued / 'to-postern.crt')}"]
action = "relay"
""", name="gw")
    stage = tempfile.mkdtemp(prefix="postern-pfkeys-")
    os.chmod(stage, 0o755)
    pf = None
    try:
        for name in ("localhost.crt", "localhost.key"):
            shutil.copy(issued / name, os.path.join(stage, name))
            os.chmod(os.path.join(stage, name), 0o644)
        shutil.copy(ca, os.path.join(stage, "ca.crt"))
        open(os.path.join(stage, "relay_clientcerts"), "w").write(f"{fingerprint(issued / 'to-postfix.crt')} satellite\n")
        pf_port = free_port()
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
smtpd_relay_restrictions = permit_tls_clientcerts, reject
""", pf_port)
        write_config(sat, route_config(pf_port, gw.port, issued, ca, "to-postfix", "to-postern"))
        sat.start()
        send(sat, "app@mx.test", "one@pf-side.example", "to postfix")
        send(sat, "app@mx.test", "two@gw-side.example", "to postern")
        msgs = sink.wait(2, timeout=40)
        by_rcpt = {m["rcpt_tos"][0]: m["data"] for m in msgs}
        assert b"by pf.test (Postfix)" in by_rcpt["one@pf-side.example"]
        assert b"by mx.test" in by_rcpt["two@gw-side.example"] and b"Postfix" not in by_rcpt["two@gw-side.example"]
        assert log_lines(gw, "rcpt ", "to=two@gw-side.example", "rule=satellite-pin")
        line = wait_for(lambda: log_lines(sat, "delivered ", "to=one@pf-side.example"), what="delivery to Postfix")[0]
        assert f"relay=smtp:127.0.0.1:{pf_port}" in line and "verified" in line and "unverified" not in line, line
        line = wait_for(lambda: log_lines(sat, "delivered ", "to=two@gw-side.example"), what="delivery to postern")[0]
        assert f"relay=smtp:127.0.0.1:{gw.port}" in line, line

        # The same satellite with the certificates swapped: both gateways refuse.
        swapped = postern_factory(route_config(pf_port, gw.port, issued, ca, "to-postern", "to-postfix"), name="swapped")
        send(swapped, "app@mx.test", "three@pf-side.example", "wrong cert to postfix")
        send(swapped, "app@mx.test", "four@gw-side.example", "wrong cert to postern")
        for rcpt, port in (("three@pf-side.example", pf_port), ("four@gw-side.example", gw.port)):
            line = wait_for(lambda: log_lines(swapped, "to=" + rcpt, f"relay=smtp:127.0.0.1:{port}"), timeout=30, what=f"refusal of {rcpt}")[0]
            assert line.split()[1] in ("failed", "deferred") and "5.7.1" in line, line
        assert "three@pf-side.example" in pf.log() and "reject: RCPT" in pf.log(), pf.log()
        assert log_lines(gw, "to=four@gw-side.example", "rule=no-relay") or log_lines(gw, "reject ", "four@gw-side.example")
        assert len(sink.messages) == 2, "nothing more got through"
    finally:
        if pf:
            pf.stop()
        shutil.rmtree(stage, ignore_errors=True)


def test_sender_dependent_route_with_auth(postern_factory, sink, tmp_path):
    sat, issued = satellite_ca(postern_factory)
    ca = sat.data / "ca" / "ca.crt"
    # The partner gateway: takes far.example mail into its Maildir, relays for nobody,
    # and offers AUTH PLAIN only (after STARTTLS) with a certificate from the satellite's CA.
    gw = postern_factory(BASE_CONFIG.replace('domains = ["mx.test", "localhost"]\nusers = ["alice", "bob", "carol"]',
                                             'domains = ["far.example"]\nusers = ["customer"]')
                         .replace('address = "127.0.0.1:{port}"\n', 'address = "127.0.0.1:{port}"\nauth_mechanisms = ["PLAIN"]\n')
                         + f"""
[relay]
networks = []
[[rule]]
name = "partner-only"
authenticated = false
action = "reject"
message = "authenticate first"
[tls]
certificate = "{issued / 'localhost.crt'}"
key = "{issued / 'localhost.key'}"
""", name="gw")
    assert gw.cli("user", "add", "partner", "--password-stdin", input=b"s3cret pw\n").returncode == 0
    (tmp_path / "partner.pw").write_text("s3cret pw\n")
    os.chmod(tmp_path / "partner.pw", 0o600)
    write_config(sat, BASE_CONFIG + f"""
[relay]
smarthost = "127.0.0.1:{sink.port}"

[[route]]
senders = ["partner.example"]
transport = "smtp"
next_hop = "127.0.0.1:{gw.port}"
tls = "verify"
server_name = "localhost"
ca_files = ["{ca}"]
username = "partner"
password_file = "{tmp_path / 'partner.pw'}"
""")
    sat.start()
    send(sat, "someone@partner.example", "customer@far.example", "from the partner")
    send(sat, "someone@other.example", "customer@far.example", "from elsewhere")
    send(sat, "someone@partner.example", "alice@mx.test", "partner to a local user")
    # The partner's mail went to the gateway, authenticated with PLAIN.
    box = gw.wait_mail("customer", timeout=30)
    assert b"from the partner" in box[0] and b"from elsewhere" not in b"".join(box)
    assert log_lines(gw, "auth ", "mechanism=PLAIN", "user=partner", "result=ok"), gw.log()
    assert log_lines(gw, "rcpt ", "to=customer@far.example")
    # Other senders go to the smarthost; a sender-only route never takes local mail.
    msgs = sink.wait(1, timeout=30)
    assert b"from elsewhere" in msgs[0]["data"] and msgs[0]["mail_from"] == "someone@other.example"
    assert b"partner to a local user" in sat.wait_mail("alice")[0]
    line = wait_for(lambda: log_lines(sat, "delivered ", "to=customer@far.example", f"relay=smtp:127.0.0.1:{gw.port}"),
                    what="satellite delivery line")[0]
    assert "verified" in line, line
    # explain and config check name the route, its TLS mode and AUTH.
    r = sat.cli("explain", "--json", "--ip", "127.0.0.1", "--from", "x@partner.example", "--rcpt", "customer@far.example")
    plan = json.loads(r.stdout)["delivery"]
    assert plan["route"] == "[[route]] 1: senders partner.example" and plan["tls"] == "verify", plan
    assert plan["next_hops"] == [f"127.0.0.1:{gw.port}"] and plan["auth"].startswith("as partner:"), plan
    r = sat.cli("config", "check", str(sat.cfg), "--rcpt", "customer@far.example", "--from", "x@other.example")
    out = r.stdout.decode()
    assert r.returncode == 0 and "smarthost (relay.smarthost)" in out and f"127.0.0.1:{sink.port}" in out, (out, r.stderr)


def test_next_hops_fall_back_in_order(postern_factory, sink):
    down = free_port()  # nothing listens there
    sat = postern_factory(BASE_CONFIG + f"""
[[route]]
domains = ["fb.example"]
transport = "smtp"
next_hops = ["127.0.0.1:{down}", "127.0.0.1:{sink.port}"]
""", name="sat")
    send(sat, "app@mx.test", "x@fb.example", "fallback")
    msgs = sink.wait(1, timeout=30)
    assert msgs[0]["rcpt_tos"] == ["x@fb.example"]
    line = wait_for(lambda: log_lines(sat, "delivered ", "to=x@fb.example"), what="delivered line")[0]
    assert f"relay=smtp:127.0.0.1:{sink.port}" in line, line
    skipped = log_lines(sat, "deferred ", "to=x@fb.example", f"relay=smtp:127.0.0.1:{down}")
    assert skipped and f'action="next hop smtp:127.0.0.1:{sink.port}"' in skipped[0], sat.log()
    r = sat.cli("explain", "--ip", "127.0.0.1", "--rcpt", "x@fb.example")
    assert f"next hop:    127.0.0.1:{down}, 127.0.0.1:{sink.port} (in order)" in r.stdout.decode(), r.stdout
