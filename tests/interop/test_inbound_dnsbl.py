"""[inbound.dnsbl] and [inbound.pregreet] against a real DNS server (dnslib,
started by the test on a loopback port, serving a DNSBL and a DNSWL zone)
and real clients (swaks, raw sockets) from distinct loopback addresses:
127.0.0.2 is listed, 127.0.0.3 is listed and allow-listed (the DNSWL wins),
127.0.0.1 is not listed."""

import socket
import time

import pytest
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

from conftest import BASE_CONFIG, free_port, swaks_full, wait_for


class Zone(BaseResolver):
    """A records by name; other names NXDOMAIN (what a DNSBL answers)."""

    def __init__(self, records):
        self.records = records
        self.queries = []

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append(name)
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if QTYPE[request.q.qtype] == "A":
            for a in self.records[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(a), ttl=300))
        return reply


@pytest.fixture
def dnsbl_dns():
    zone = Zone({
        "2.0.0.127.bl.test": ["127.0.0.2"],
        "3.0.0.127.bl.test": ["127.0.0.2"],
        "3.0.0.127.wl.test": ["127.0.9.0"],
        # An answer outside the filter [2..11] does not count.
        "6.0.0.127.bl.test": ["127.0.0.99"],
    })
    port = free_port()
    servers = [DNSServer(zone, port=port, address="127.0.0.1"), DNSServer(zone, port=port, address="127.0.0.1", tcp=True)]
    for s in servers:
        s.start_thread()
    yield port, zone
    for s in servers:
        s.stop()


def config(dns_port, dnsbl="", pregreet=""):
    return BASE_CONFIG + f"""
[relay]
networks = []
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
[inbound.dnsbl]
lists = ["bl.test=127.0.0.[2..11]*2", "wl.test=127.0.[0..255].0*-5"]
exempt_networks = []
{dnsbl}
[inbound.pregreet]
{pregreet}
"""


def send_from(p, src, rcpt="alice@mx.test"):
    return swaks_full("--server", f"127.0.0.1:{p.port}", "--local-interface", src, "--from", "sender@remote.test",
                      "--to", rcpt, "--helo", "client.remote.test", "--timeout", "20")


def banner_from(p, src, send_first=None, timeout=15):
    """Connects from `src`; optionally talks first; returns (first reply line, seconds to it)."""
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    t0 = time.monotonic()
    s.connect(("127.0.0.1", p.port))
    if send_first:
        s.sendall(send_first)
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    elapsed = time.monotonic() - t0
    rest = buf
    try:
        s.sendall(b"QUIT\r\n")
        s.settimeout(5)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
    except OSError:
        pass
    s.close()
    return buf.split(b"\r\n")[0].decode(), elapsed, rest.decode(errors="replace")


def test_dnsbl_at_rcpt_refuses_the_listed_client_naming_the_list(postern_factory, dnsbl_dns):
    dns_port, zone = dnsbl_dns
    p = postern_factory(config(dns_port))
    r = send_from(p, "127.0.0.2")
    assert r.returncode != 0, r.stdout
    assert "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test" in r.stdout, r.stdout
    assert "2.0.0.127.bl.test" in zone.queries and "2.0.0.127.wl.test" in zone.queries
    log = p.log()
    assert "rule=dnsbl" in log and "to=alice@mx.test" in log and "from=sender@remote.test" in log, log
    # The DNSWL entry (weight -5) wins over the DNSBL (2).
    r = send_from(p, "127.0.0.3")
    assert r.returncode == 0, r.stdout
    # Unlisted, and listed with a return code outside the filter.
    assert send_from(p, "127.0.0.1").returncode == 0
    assert send_from(p, "127.0.0.6").returncode == 0
    p.wait_mail("alice", 3)


def test_dnsbl_at_connect_refuses_the_greeting(postern_factory, dnsbl_dns):
    dns_port, _ = dnsbl_dns
    p = postern_factory(config(dns_port, dnsbl='stage = "connect"'))
    line, _, rest = banner_from(p, "127.0.0.2")
    assert line == "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test", line
    assert "221 " in rest, rest  # then only QUIT
    line, _, _ = banner_from(p, "127.0.0.3")
    assert line.startswith("220 mx.test"), line
    assert "verdict=listed" in p.log() and "verdict=allowlisted" not in p.log()


def test_pregreet_refuses_a_client_that_talks_first_and_remembers_a_patient_one(postern_factory, dnsbl_dns):
    dns_port, _ = dnsbl_dns
    delay = 3.0
    # 127.0.0.1 stays exempt so the harness' port probe is not delayed.
    p = postern_factory(config(dns_port, pregreet=f'greet_delay = "{delay}s"\nexempt_networks = ["127.0.0.1/32"]'))
    line, elapsed, _ = banner_from(p, "127.0.0.4", send_first=b"EHLO bot.test\r\n")
    assert line.startswith("554 5.5.1 Protocol error: client [127.0.0.4] talked before the greeting"), line
    assert "result=pregreet" in p.log()
    # A patient client (swaks waits for the banner) passes...
    t0 = time.monotonic()
    r = send_from(p, "127.0.0.5")
    assert r.returncode == 0, r.stdout
    assert time.monotonic() - t0 >= delay - 0.2
    wait_for(lambda: "result=pass" in p.log(), 5, "pregreet pass line")
    # ...and is greeted at once the next time.
    line, elapsed, _ = banner_from(p, "127.0.0.5")
    assert line.startswith("220 mx.test"), line
    assert elapsed < delay / 2, elapsed
    # A new client is still delayed.
    line, elapsed, _ = banner_from(p, "127.0.0.7")
    assert line.startswith("220 ") and elapsed >= delay - 0.2, (line, elapsed)
