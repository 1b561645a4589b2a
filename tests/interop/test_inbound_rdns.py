"""[inbound.rdns] against a real DNS server (dnslib on a loopback port,
`[mx] nameservers`) serving PTR/A/MX records, with clients on distinct
addresses the test adds to `lo` (198.18.0.2, .3, .4, the benchmarking range;
not 127/8: hickory answers PTR queries for 127/8 itself, with `localhost`):
FCrDNS OK shows in `Received:` and the log and a real milter (pymilter)
sees {client_resolve} OK; a PTR whose name points elsewhere is FORGED for
the milter and refused by an `rdns` rule; a HELO "localhost"/non-FQDN and a
sender domain that does not exist are refused at RCPT with the configured
replies; a harvester sending 50 unknown recipients is dropped (421) before
the 50th; `postern explain` shows the verdicts."""

import json
import pathlib
import smtplib
import subprocess

import pytest
from dnslib import MX, PTR, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

from conftest import BASE_CONFIG, free_port, require, swaks, wait_for, wait_port

MILTER = pathlib.Path(__file__).parent / "milters" / "resolve_seen.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3 with python3-milter


class Zone(BaseResolver):
    """Records by (name, type); unknown names answer NXDOMAIN."""

    def __init__(self, records):
        self.records = records
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


CLIENTS = ["198.18.0.2", "198.18.0.3", "198.18.0.4"]


@pytest.fixture(scope="module", autouse=True)
def client_addresses():
    """The client addresses on `lo` for this module, removed afterwards."""
    ip = require("ip")
    for a in CLIENTS:
        r = subprocess.run([ip, "addr", "replace", f"{a}/32", "dev", "lo"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
    yield
    for a in CLIENTS:
        subprocess.run([ip, "addr", "del", f"{a}/32", "dev", "lo"], capture_output=True, timeout=10)


@pytest.fixture
def dns_port():
    records = {
        ("2.0.18.198.in-addr.arpa", "PTR"): [PTR("good.client.test.")],
        ("good.client.test", "A"): [A("198.18.0.2")],
        ("3.0.18.198.in-addr.arpa", "PTR"): [PTR("forged.client.test.")],
        ("forged.client.test", "A"): [A("192.0.2.99")],
        ("ok.test", "MX"): [MX("mx.ok.test.", 10)],
        ("mx.ok.test", "A"): [A("192.0.2.25")],
    }
    port = free_port()
    servers = [DNSServer(Zone(records), port=port, address="127.0.0.1", tcp=tcp) for tcp in (False, True)]
    for s in servers:
        s.start_thread()
    yield port
    for s in servers:
        s.stop()


@pytest.fixture
def milter(tmp_path):
    assert pathlib.Path(SYSTEM_PYTHON).exists(), "Debian python3 is missing: run scripts/install-test-deps"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import Milter"], capture_output=True)
    assert r.returncode == 0, "python3-milter (pymilter) is missing: run scripts/install-test-deps"
    port = free_port()
    log = tmp_path / "seen.jsonl"
    out = open(tmp_path / "milter.out", "wb")
    proc = subprocess.Popen([SYSTEM_PYTHON, str(MILTER), f"inet:{port}@127.0.0.1", str(log)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        yield port, log
    finally:
        proc.kill()
        proc.wait(5)
        out.close()


def config(dns_port, milter_port, extra=""):
    listener = 'address = "127.0.0.1:{port}"\n'
    text = BASE_CONFIG.replace(listener, listener + 'milters = ["seen"]\n')
    return text + f"""
[relay]
networks = ["127.0.0.1/32"]
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
[inbound.rdns]
timeout = "3s"
helo_require_fqdn = true
helo_reject_own_name = true
sender_domain_check = true
harvest_delay_after = 5
harvest_drop_after = 20
harvest_delay = "20ms"
harvest_max_delay = "50ms"
[[milter]]
name = "seen"
socket = "inet:127.0.0.1:{milter_port}"
[[rule]]
name = "forged-rdns"
rdns = ["forged"]
action = "reject"
message = "Client host rejected: forged reverse DNS"
{extra}
"""


def seen(log, addr):
    def find():
        if not log.exists():
            return None
        for line in log.read_text().splitlines():
            e = json.loads(line)
            if e["addr"] == addr:
                return e
        return None

    return wait_for(find, timeout=10, what=f"milter CONNECT from {addr}")


def session(p, source, helo="mail.client.test"):
    s = smtplib.SMTP(timeout=20, source_address=(source, 0))
    s.connect("127.0.0.1", p.port)
    s.ehlo(helo)
    return s


@pytest.fixture
def p(postern_factory, dns_port, milter):
    return postern_factory(config(dns_port, milter[0]))


def test_fcrdns_ok_in_received_log_and_milter(p, milter):
    r = swaks("--server", f"127.0.0.1:{p.port}", "--local-interface", "198.18.0.2", "--helo", "mail.client.test",
              "--from", "a@ok.test", "--to", "bob@mx.test")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = p.wait_mail("bob")
    assert b"Received: from mail.client.test (good.client.test [198.18.0.2])" in msgs[0], msgs[0][:400]
    e = seen(milter[1], "198.18.0.2")
    assert e["macros"]["{client_resolve}"] == "OK", e
    assert e["macros"]["{client_name}"] == "good.client.test", e
    assert e["hostname"] == "good.client.test", e
    log = p.log()
    assert "client=good.client.test[198.18.0.2]:" in log and "rdns=ok" in log, log


def test_forged_and_missing_ptr(p, milter):
    with session(p, "198.18.0.3") as s:
        assert s.mail("a@ok.test")[0] == 250
        code, text = s.rcpt("bob@mx.test")
        assert (code, text) == (550, b"5.7.1 <bob@mx.test>: Client host rejected: forged reverse DNS")
    e = seen(milter[1], "198.18.0.3")
    assert e["macros"]["{client_resolve}"] == "FORGED", e
    assert e["macros"]["{client_ptr}"] == "forged.client.test", e
    assert e["macros"]["{client_name}"] == "[198.18.0.3]", e
    with session(p, "198.18.0.4") as s:
        assert s.mail("a@ok.test")[0] == 250
        assert s.rcpt("bob@mx.test")[0] == 250
    assert seen(milter[1], "198.18.0.4")["macros"]["{client_resolve}"] == "FAIL"
    assert "rdns=forged ptr=forged.client.test" in p.log()


def test_helo_refused_at_rcpt(p):
    for helo, reason in (("localhost", "you are not me"), ("workstation", "need fully-qualified hostname"), ("mx.test", "you are not me")):
        with session(p, "198.18.0.2", helo) as s:
            assert s.mail("a@ok.test")[0] == 250
            code, text = s.rcpt("bob@mx.test")
            assert code == 550 and text.decode() == f"5.7.1 <{helo}>: Helo command rejected: {reason}", (helo, code, text)
    # relay.networks (here 127.0.0.1) is exempt.
    with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
        s.ehlo("localhost")
        assert s.mail("a@ok.test")[0] == 250
        assert s.rcpt("bob@mx.test")[0] == 250


def test_sender_domain_nxdomain_refused(p):
    with session(p, "198.18.0.2") as s:
        assert s.mail("a@nx.test")[0] == 250
        assert s.rcpt("bob@mx.test") == (550, b"5.1.8 <a@nx.test>: Sender address rejected: Domain not found")
        s.rset()
        assert s.mail("a@ok.test")[0] == 250
        assert s.rcpt("bob@mx.test")[0] == 250


def test_harvester_dropped_before_the_50th(p):
    s = session(p, "198.18.0.2")
    assert s.mail("a@ok.test")[0] == 250
    replies = []
    for i in range(50):
        try:
            code, text = s.rcpt(f"guess{i}@mx.test")
        except smtplib.SMTPServerDisconnected:
            break
        replies.append(code)
        if code == 421:
            break
    s.close()
    assert replies[-1] == 421, replies
    assert len(replies) < 50 and replies.count(550) == 19, replies
    assert "too many unknown recipients" in p.log()
    # The count lasts across connections: the next guess is dropped at once.
    with session(p, "198.18.0.2") as s:
        assert s.mail("a@ok.test")[0] == 250
        assert s.rcpt("guess-again@mx.test")[0] == 421


def test_explain_shows_the_verdicts(p):
    r = p.cli("explain", "--ip", "198.18.0.3", "--helo", "localhost", "--from", "a@nx.test", "--rcpt", "bob@mx.test")
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "rdns:     forged (client_resolve=FORGED, ptr=forged.client.test)" in out, out
    assert "helo:     own-name -> 550 5.7.1 <localhost>: Helo command rejected: you are not me (refused at RCPT)" in out, out
    assert "sender:   unknown -> 550 5.1.8" in out, out
    assert "rule:     forged-rdns" in out, out
