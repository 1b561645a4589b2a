"""REQUIRETLS (RFC 8689) and internationalised domains with real peers:
Python smtplib as the sending client over STARTTLS, postern as a next hop
that offers REQUIRETLS (over TLS verified against a test CA), a real
Postfix 3.7 (Debian) that does not offer it and runs with
`smtputf8_enable = no`, aiosmtpd receivers, and a dnslib DNS server for
MX delivery with `mx.tls = "verify"` to a host with a bad certificate."""

import shutil
import smtplib
import ssl
import subprocess
import tempfile

import pytest
from aiosmtpd.controller import Controller
from dnslib import MX, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

from conftest import BASE_CONFIG, SinkHandler, free_port, queue_envelopes, require, wait_for
from test_relay import Postfix

BODY_SECRET = "the secret body line"


def issue_server_cert(p, name="localhost"):
    """`postern ca init` + a server certificate for `name` from that CA."""
    assert p.cli("ca", "init").returncode == 0
    r = p.cli("ca", "issue", "server", name)
    assert r.returncode == 0, r.stderr
    issued = p.data / "ca" / "issued"
    return issued / f"{name}.crt", issued / f"{name}.key", p.data / "ca" / "ca.crt"


def send_tls(port, sender, rcpts, text, options=()):
    """smtplib over STARTTLS (the test client does not check postern's
    self-signed certificate); returns the MAIL options' refusals, if any."""
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.example")
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("client.example")
        assert s.has_extn("requiretls"), s.esmtp_features
        s.sendmail(sender, rcpts, text, mail_options=list(options))


def queued_envelopes(p):
    return queue_envelopes(p.data / "queue")


def test_requiretls_inbound_and_to_a_postern_next_hop(postern_factory):
    """Offered only under TLS; refused in the clear (530 5.7.10); accepted
    under TLS and relayed over verified TLS to a postern next hop that
    offers it, whose envelope then carries REQUIRETLS too."""
    front = postern_factory(start=False, name="front")
    crt, key, ca = issue_server_cert(front)
    dead = free_port()  # the next hop's own smarthost: nothing listens, the mail stays queued there
    nh = postern_factory(BASE_CONFIG.replace('domains = ["mx.test", "localhost"]', 'domains = ["nh.test"]') + f"""
[tls]
certificate = "{crt}"
key = "{key}"
[relay]
smarthost = "127.0.0.1:{dead}"
""", name="nh")
    front.cfg.write_text(front.cfg.read_text() + f"""
[relay]
smarthost = "127.0.0.1:{nh.port}"
smarthost_tls = "verify"
smarthost_server_name = "localhost"
smarthost_ca_files = ["{ca}"]
""")
    front.start()

    # In the clear: not offered, and refused when used anyway.
    with smtplib.SMTP("127.0.0.1", front.port, timeout=15) as s:
        s.ehlo("client.example")
        assert not s.has_extn("requiretls"), s.esmtp_features
        code, msg = s.mail("app@mx.test", ["REQUIRETLS"])
        assert (code, msg[:6]) == (530, b"5.7.10"), (code, msg)

    send_tls(front.port, "app@mx.test", ["customer@far.example"],
             f"Subject: rt\r\n\r\n{BODY_SECRET}\r\n".encode(), options=["REQUIRETLS"])
    line = wait_for(lambda: [l for l in front.log().splitlines() if " delivered " in l and "to=customer@far.example" in l],
                    timeout=30, what="delivery to the next hop")[0]
    assert "verified" in line and "unverified" not in line, line
    envs = wait_for(lambda: queued_envelopes(nh), timeout=15, what="the next hop's queue")
    assert envs[0]["requiretls"] is True, envs[0]
    assert nh.cli("queue", "show", envs[0]["id"]).stdout.count(b"requiretls: yes") == 1


def test_postfix_next_hop_requiretls_bounce_and_idn(postern_factory, sink):
    """A real Postfix 3.7 with verified TLS but without REQUIRETLS: the
    REQUIRETLS message is not sent and bounces to the sender with 5.7.30,
    headers only; Postfix never sees it. The same Postfix with
    `smtputf8_enable = no` gets a recipient in bücher.example as
    xn--bcher-kva.example (and relays it to the sink)."""
    front = postern_factory(start=False, name="front")
    crt, key, ca = issue_server_cert(front)
    stage = tempfile.mkdtemp(prefix="postern-pfkeys-")
    for f in (crt, key):
        shutil.copy(f, stage)
    subprocess.run(["chmod", "-R", "a+rX", stage], check=True)
    pf_port = free_port()
    pf = None
    try:
        pf = Postfix(f"""mynetworks = 127.0.0.0/8
relay_domains = far.example xn--bcher-kva.example
relayhost = [127.0.0.1]:{sink.port}
smtputf8_enable = no
smtp_tls_security_level = none
smtpd_tls_security_level = may
smtpd_tls_cert_file = {stage}/localhost.crt
smtpd_tls_key_file = {stage}/localhost.key
""", pf_port)
        front.cfg.write_text(front.cfg.read_text() + f"""
[relay]
smarthost = "127.0.0.1:{pf_port}"
smarthost_tls = "verify"
smarthost_server_name = "localhost"
smarthost_ca_files = ["{ca}"]
[[route]]
domains = ["bücher.example"]
transport = "smtp"
next_hop = "127.0.0.1:{pf_port}"
""")
        front.start()

        send_tls(front.port, "alice@mx.test", ["customer@far.example"],
                 f"Subject: needs tls\r\n\r\n{BODY_SECRET}\r\n".encode(), options=["REQUIRETLS", "RET=FULL"])
        dsn = wait_for(lambda: front.maildir("alice"), timeout=30, what="the bounce")[0].decode(errors="replace")
        assert "Status: 5.7.30" in dsn, dsn
        assert "does not offer REQUIRETLS" in dsn, dsn
        assert "Subject: needs tls" in dsn, dsn
        assert BODY_SECRET not in dsn, "RFC 8689 §5: headers only, even with RET=FULL"
        log = front.log()
        assert any("failed" in l and "to=customer@far.example" in l and "5.7.30" in l for l in log.splitlines()), log

        # IDN: UTF-8 domain, ASCII local part, to a next hop without SMTPUTF8.
        with smtplib.SMTP("127.0.0.1", front.port, timeout=15) as s:
            s.sendmail("app@mx.test", ["kim@bücher.example"], "Subject: idn\r\n\r\nhallo\r\n".encode(),
                       mail_options=["SMTPUTF8"])
        msgs = sink.wait(timeout=40)
        assert msgs[0]["rcpt_tos"] == ["kim@xn--bcher-kva.example"], msgs[0]
        assert b"by pf.test (Postfix)" in msgs[0]["data"]
        assert "to=<kim@xn--bcher-kva.example>" in pf.log()
        # The REQUIRETLS message never reached Postfix.
        assert "customer@far.example" not in pf.log()
        assert len(sink.messages) == 1
    finally:
        if pf:
            pf.stop()
        shutil.rmtree(stage, ignore_errors=True)


class Zone(BaseResolver):
    def __init__(self, records):
        self.records = records

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in {n for n, _ in self.records}:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rd in self.records.get((name, QTYPE[request.q.qtype]), []):
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rd, ttl=60))
        return reply


@pytest.fixture
def badcert_mx(tmp_path):
    """An MX host (aiosmtpd with STARTTLS) whose certificate is
    self-signed for another name, behind a dnslib DNS server."""
    require("openssl")
    crt, key = tmp_path / "bad.crt", tmp_path / "bad.key"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=wrong.example",
                        "-keyout", str(key), "-out", str(crt)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(crt), str(key))
    handler = SinkHandler()
    port = free_port()
    c = Controller(handler, hostname="127.0.0.2", port=port, decode_data=False, tls_context=ctx, require_starttls=False)
    c.start()
    records = {("badcert.test", "MX"): [MX("mx.badcert.test", 10)], ("mx.badcert.test", "A"): [A("127.0.0.2")]}
    dns_port = free_port()
    udp = DNSServer(Zone(records), port=dns_port, address="127.0.0.1")
    tcp = DNSServer(Zone(records), port=dns_port, address="127.0.0.1", tcp=True)
    udp.start_thread()
    tcp.start_thread()
    yield port, dns_port, handler
    udp.stop()
    tcp.stop()
    c.stop()


def test_tls_required_no_passes_mx_verify(postern_factory, badcert_mx):
    """`mx.tls = "verify"` and an MX host whose certificate does not verify:
    mail waits, except a message with `TLS-Required: No` (RFC 8689 §5),
    which goes over opportunistic TLS; that connection is not reused for
    the next strict message."""
    port, dns_port, handler = badcert_mx
    p = postern_factory(BASE_CONFIG + f"""
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
port = {port}
tls = "verify"
domain_backoff = "1s"
# the MX host is on loopback (127.0.0.2)
dangerous_allow_loopback = true
""")
    with smtplib.SMTP("127.0.0.1", p.port, timeout=15) as s:
        s.sendmail("app@mx.test", ["strict@badcert.test"], b"Subject: strict\r\n\r\nmust wait\r\n")
    line = wait_for(lambda: [l for l in p.log().splitlines() if " deferred " in l and "to=strict@badcert.test" in l],
                    timeout=30, what="the strict message deferred")[0]
    assert handler.messages == [], line
    with smtplib.SMTP("127.0.0.1", p.port, timeout=15) as s:
        s.sendmail("app@mx.test", ["relaxed@badcert.test"], b"TLS-Required: No\r\nSubject: relaxed\r\n\r\nmay go\r\n")
    msgs = wait_for(lambda: [m for m in handler.messages if m["rcpt_tos"] == ["relaxed@badcert.test"]], timeout=40,
                    what="the TLS-Required: No message at the MX host")
    assert b"TLS-Required: No" in msgs[0]["data"]
    line = wait_for(lambda: [l for l in p.log().splitlines() if " delivered " in l and "to=relaxed@badcert.test" in l],
                    timeout=15, what="delivered line")[0]
    assert "unverified" in line, line
    # The pooled connection that skipped verification does not carry the
    # next message that did not ask for it.
    with smtplib.SMTP("127.0.0.1", p.port, timeout=15) as s:
        s.sendmail("app@mx.test", ["strict2@badcert.test"], b"Subject: strict again\r\n\r\nmust wait\r\n")
    wait_for(lambda: [l for l in p.log().splitlines() if " deferred " in l and "to=strict2@badcert.test" in l],
             timeout=30, what="the second strict message deferred")
    assert [m["rcpt_tos"] for m in handler.messages] == [["relaxed@badcert.test"]]
