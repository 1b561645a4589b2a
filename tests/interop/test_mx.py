"""Direct MX delivery against a real DNS server (dnslib, started by the
test on a loopback port) and real receivers (aiosmtpd) on several loopback
addresses: preference order, failover from a dead primary, implicit MX,
null MX and NXDOMAIN bounces, 4xx then success."""

import email
import smtplib
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from dnslib import AAAA, MX, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

from conftest import BASE_CONFIG, SinkHandler, free_port, wait_for


class Zone(BaseResolver):
    def __init__(self, records):
        self.records = records  # {(name, type): [rdata]}
        self.names = {n for n, _ in records}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rd in self.records.get((name, qtype), []):
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rd, ttl=60))
        return reply


class NoEightBit(SinkHandler):
    """A receiver that does not offer 8BITMIME."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [r for r in responses if "8BITMIME" not in r]


class Flaky(SinkHandler):
    """451 for the first RCPT, then accepts."""

    def __init__(self):
        super().__init__()
        self.tries = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.tries += 1
        if self.tries == 1:
            return "451 4.3.0 try again"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture
def internet():
    port = free_port()
    kinds = {"127.0.0.6": Flaky, "127.0.0.9": NoEightBit}
    ips = ("127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9")
    sinks = {ip: kinds.get(ip, SinkHandler)() for ip in ips}
    controllers = []
    sinks["::1"] = SinkHandler()
    for ip, h in sinks.items():
        c = Controller(h, hostname=ip, port=port, decode_data=False, enable_SMTPUTF8=(ip != "127.0.0.8"))
        c.start()
        controllers.append(c)
    records = {
        ("good.test", "MX"): [MX("mx2.good.test", 20), MX("mx1.good.test", 10)],
        ("mx1.good.test", "A"): [A("127.0.0.2")],
        ("mx2.good.test", "A"): [A("127.0.0.7")],
        ("failover.test", "MX"): [MX("dead.failover.test", 10), MX("backup.failover.test", 20)],
        ("dead.failover.test", "A"): [A("127.0.0.3")],
        ("backup.failover.test", "A"): [A("127.0.0.4")],
        ("implicit.test", "A"): [A("127.0.0.5")],
        ("implicit.test", "MX"): [],
        ("nullmx.test", "MX"): [MX(".", 0)],
        ("flaky.test", "MX"): [MX("mx.flaky.test", 10)],
        ("mx.flaky.test", "A"): [A("127.0.0.6")],
        ("mx.flaky.test", "AAAA"): [],
        ("down.test", "MX"): [MX("dead.down.test", 10)],
        ("dead.down.test", "A"): [A("127.0.0.3")],
        ("ascii.test", "MX"): [MX("mx.ascii.test", 10)],
        ("mx.ascii.test", "A"): [A("127.0.0.8")],
        ("sevenbit.test", "MX"): [MX("mx.sevenbit.test", 10)],
        ("mx.sevenbit.test", "A"): [A("127.0.0.9")],
        # A refused IPv4 address, then the same host's IPv6 address.
        ("dual.test", "MX"): [MX("mx.dual.test", 10)],
        ("mx.dual.test", "A"): [A("127.0.0.3")],
        ("mx.dual.test", "AAAA"): [AAAA("::1")],
    }
    dns_port = free_port()
    server = DNSServer(Zone(records), port=dns_port, address="127.0.0.1")
    tcp = DNSServer(Zone(records), port=dns_port, address="127.0.0.1", tcp=True)
    server.start_thread()
    tcp.start_thread()
    yield port, dns_port, sinks
    server.stop()
    tcp.stop()
    for c in controllers:
        c.stop()


def mx_config(port, dns_port):
    return BASE_CONFIG + f"""
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
port = {port}
tls = "may"
domain_backoff = "1s"
# the sinks are on loopback (127.0.0.2...); postern's own listener stays refused
dangerous_allow_loopback = true
"""


def send(p, rcpt, subject="mx test"):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", [rcpt], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def test_mx_preference_failover_implicit(postern_factory, internet):
    port, dns_port, sinks = internet
    p = postern_factory(mx_config(port, dns_port))
    send(p, "user@good.test")
    assert sinks["127.0.0.2"].wait()[0]["rcpt_tos"] == ["user@good.test"]
    assert sinks["127.0.0.7"].messages == [], "the lower-preference MX must not be used"
    send(p, "user@failover.test")
    assert sinks["127.0.0.4"].wait()[0]["rcpt_tos"] == ["user@failover.test"]
    send(p, "user@implicit.test")
    assert sinks["127.0.0.5"].wait()[0]["rcpt_tos"] == ["user@implicit.test"]
    log = p.log()
    assert f"relay=mx:mx1.good.test[127.0.0.2]:{port}" in log
    assert f"relay=mx:backup.failover.test[127.0.0.4]:{port}" in log


def test_mx_host_ipv6_after_its_ipv4_address_refuses(postern_factory, internet):
    """An MX host with A and AAAA records: IPv4 first, then IPv6 (the AAAA
    used to be looked up only for hosts without an A record)."""
    port, dns_port, sinks = internet
    p = postern_factory(mx_config(port, dns_port))
    send(p, "user@dual.test")
    assert sinks["::1"].wait()[0]["rcpt_tos"] == ["user@dual.test"]
    assert f"relay=mx:mx.dual.test[::1]:{port}" in p.log()


def test_mx_4xx_then_success(postern_factory, internet):
    port, dns_port, sinks = internet
    p = postern_factory(mx_config(port, dns_port))
    send(p, "user@flaky.test")
    assert sinks["127.0.0.6"].wait(timeout=30)[0]["rcpt_tos"] == ["user@flaky.test"]
    # The sink has the message before postern has its 250 and logs it.
    log = wait_for(lambda: "delivered id=" in p.log() and p.log(), what="the delivered log line")
    assert "deferred id=" in log and "451 4.3.0 try again" in log


@pytest.mark.parametrize("domain,status", [("nullmx.test", b"5.1.10"), ("nope.test", b"5.1.2")])
def test_null_mx_and_nxdomain_bounce(postern_factory, internet, domain, status):
    port, dns_port, _ = internet
    p = postern_factory(mx_config(port, dns_port))
    send(p, f"user@{domain}")
    raw = p.wait_mail("alice", timeout=20)[0]
    m = email.message_from_bytes(raw)
    assert m.get_content_type() == "multipart/report"
    assert b"Status: " + status in raw, raw
    assert f"Final-Recipient: rfc822; user@{domain}".encode() in raw


def test_route_transport_mx(postern_factory, internet):
    """`[[route]] transport = "mx"` delivers by MX for the route's domains,
    even with a smarthost configured for everything else (the smarthost
    here is a dead port: mail sent there would only be deferred)."""
    port, dns_port, sinks = internet
    cfg = mx_config(port, dns_port) + f"""
[relay]
smarthost = "127.0.0.1:{free_port()}"

[[route]]
domains = ["good.test", "failover.test"]
transport = "mx"
"""
    p = postern_factory(cfg)
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["user@good.test", "user@failover.test"], b"Subject: routed\r\n\r\nbody\r\n")
    assert sinks["127.0.0.2"].wait(timeout=20)[0]["rcpt_tos"] == ["user@good.test"]
    assert sinks["127.0.0.4"].wait(timeout=20)[0]["rcpt_tos"] == ["user@failover.test"]
    log = wait_for(lambda: p.log().count("delivered id=") >= 2 and p.log(), what="two delivered log lines")
    assert f"relay=mx:mx1.good.test[127.0.0.2]:{port}" in log
    assert f"relay=mx:backup.failover.test[127.0.0.4]:{port}" in log
    assert "not built yet" not in log


def test_f1_success_notice_to_a_loopback_literal_does_not_loop(postern_factory):
    """F1: an unauthenticated client (127.0.0.2) sends MAIL FROM:<x@[127.0.0.1]>
    to a local user with NOTIFY=SUCCESS, and MX delivery points at postern's
    own port. The success notice to x@[127.0.0.1] used to go to postern itself,
    be relayed from loopback and circle (7,694 times in 10 s); now MX delivery
    refuses this host and the notice fails with 5.4.6 (no bounce of a bounce)."""
    cfg = BASE_CONFIG + '\n[mx]\nport = {port}\ndomain_backoff = "1s"\n'
    p = postern_factory(cfg)
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10, source_address=("127.0.0.2", 0)) as s:
        s.ehlo("attacker.example")
        s.sendmail("x@[127.0.0.1]", ["alice@mx.test"], b"Subject: loop?\r\n\r\nx\r\n", rcpt_options=["NOTIFY=SUCCESS"])
    p.wait_mail("alice")
    time.sleep(5)  # had it looped, thousands of hops would be queued by now
    queued = p.log().count("queued id=")
    assert queued <= 2, f"{queued} messages queued in 5 s: a mail loop"
    wait_for(lambda: "loops back to myself" in p.log(), what="the notice fails as a loop (5.4.6)")
    wait_for(lambda: p.queue_files()["active"] == [], what="queue empty")
