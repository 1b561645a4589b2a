"""TLS reporting (RFC 8460) end to end: postern delivers over MX to real
receivers (aiosmtpd on loopback addresses: one with STARTTLS, one without,
one whose TLS postern cannot negotiate) found through a private DNS server
(dnslib) that also serves the `_smtp._tls` TXT records; the counts survive
a restart; `postern tlsrpt send` queues the reports, which go through the
normal queue and MX delivery to the rua mailbox's receiver; the test parses
them back (MIME, gzip, JSON) and checks the counts and result types."""

import email
import gzip
import json
import smtplib
import ssl
import time

import pytest
from aiosmtpd.controller import Controller
from dnslib import MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSServer

from conftest import BASE_CONFIG, SinkHandler, free_port, wait_for

RUA = "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"


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


RECORDS = {
    # STARTTLS offered: successful sessions.
    ("tls.test", "MX"): [MX("mx.tls.test", 10)],
    ("mx.tls.test", "A"): [A("127.0.0.2")],
    ("_smtp._tls.tls.test", "TXT"): [TXT(RUA)],
    # No STARTTLS: delivered in plaintext under mx.tls = "may", a failure.
    ("plain.test", "MX"): [MX("mx.plain.test", 10)],
    ("mx.plain.test", "A"): [A("127.0.0.3")],
    ("_smtp._tls.plain.test", "TXT"): [TXT("v=spf1 -all"), TXT(RUA)],
    # STARTTLS offered, but only TLS 1.0/1.1, which postern (rustls) does not speak.
    ("oldtls.test", "MX"): [MX("mx.oldtls.test", 10)],
    ("mx.oldtls.test", "A"): [A("127.0.0.4")],
    ("_smtp._tls.oldtls.test", "TXT"): [TXT(RUA)],
    # No TLSRPT record: counted, but no report.
    ("norpt.test", "MX"): [MX("mx.norpt.test", 10)],
    ("mx.norpt.test", "A"): [A("127.0.0.3")],
    # Only an https rua: not supported, skipped.
    ("https.test", "MX"): [MX("mx.https.test", 10)],
    ("mx.https.test", "A"): [A("127.0.0.3")],
    ("_smtp._tls.https.test", "TXT"): [TXT("v=TLSRPTv1; rua=https://reports.test/tlsrpt")],
    # Where the reports go.
    ("reports.test", "MX"): [MX("mx.reports.test", 10)],
    ("mx.reports.test", "A"): [A("127.0.0.5")],
}


@pytest.fixture
def world(postern_factory):
    p = postern_factory(start=False)
    r = p.cli("ca", "init")
    assert r.returncode == 0, r.stderr
    r = p.cli("ca", "issue", "server", "mx.tls.test", "--san", "mx.tls.test")
    assert r.returncode == 0, r.stderr
    issued = p.data / "ca" / "issued"
    good = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    good.load_cert_chain(issued / "mx.tls.test.crt", issued / "mx.tls.test.key")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old.load_cert_chain(issued / "mx.tls.test.crt", issued / "mx.tls.test.key")
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    port = free_port()
    sinks = {ip: SinkHandler() for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")}
    tls = {"127.0.0.2": good, "127.0.0.4": old}
    controllers = []
    try:
        for ip, h in sinks.items():
            kw = {"tls_context": tls[ip], "require_starttls": False} if ip in tls else {}
            c = Controller(h, hostname=ip, port=port, decode_data=False, **kw)
            c.start()
            controllers.append(c)
        dns_port = free_port()
        servers = [DNSServer(Zone(RECORDS), port=dns_port, address="127.0.0.1", tcp=t) for t in (False, True)]
        for s in servers:
            s.start_thread()
        p.cfg.write_text(BASE_CONFIG.replace("{port}", str(p.port)) + f"""
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
port = {port}
tls = "may"
domain_backoff = "1s"
dangerous_allow_loopback = true

[tls_rpt]
enabled = true
from = "tlsrpt@mx.test"
organization_name = "postern interop"
contact_info = "postmaster@mx.test"
save_interval = "1h"
""")
        p.start()
        yield p, sinks
    finally:
        for c in controllers:
            c.stop()
        for s in locals().get("servers", []):
            s.stop()


def send(p, rcpt):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", [rcpt], f"Subject: to {rcpt}\r\n\r\nbody\r\n".encode())


def delivered(p, n):
    return wait_for(lambda: p.log().count("delivered id=") >= n and p.log(), timeout=20, what=f"{n} delivered lines")


def report_of(msg_bytes):
    """The MIME report parsed back: (message, report JSON)."""
    m = email.message_from_bytes(msg_bytes)
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "tlsrpt"
    parts = [x for x in m.walk() if x.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1, [x.get_content_type() for x in m.walk()]
    name = parts[0].get_filename()
    assert name.startswith("mx.test!") and name.endswith(".json.gz"), name
    return m, json.loads(gzip.decompress(parts[0].get_payload(decode=True))), name


def test_tlsrpt_counts_persist_and_reports_arrive(world):
    p, sinks = world
    today = time.strftime("%Y-%m-%d", time.gmtime())
    send(p, "a@tls.test")
    delivered(p, 1)
    send(p, "b@tls.test")
    send(p, "c@plain.test")
    send(p, "d@norpt.test")
    send(p, "e@https.test")
    log = delivered(p, 5)
    assert "relay=mx:mx.tls.test[127.0.0.2]" in log and "tls=\"TLSv1.3" in log
    # The old-TLS host never takes it: deferred, retried, each attempt a failure.
    send(p, "f@oldtls.test")
    wait_for(lambda: "to=f@oldtls.test" in p.log() and "deferred id=" in p.log(), what="the oldtls deferral")

    # A clean stop writes the day's counts; a new start reads them back.
    assert p.stop() == 0
    day_file = p.data / "tlsrpt" / f"{today}.json"
    saved = json.loads(day_file.read_text())
    assert saved["domains"]["tls.test"][0]["successes"] == 2
    p.start()
    send(p, "g@tls.test")
    wait_for(lambda: len(sinks["127.0.0.2"].messages) >= 3, what="the third tls.test message")
    wait_for(lambda: p.log().count("relay=mx:mx.tls.test") >= 3, what="its delivered line")

    # `show` (through the running daemon): today's counts, as the report would say.
    r = p.cli("tlsrpt", "show")
    assert r.returncode == 0, r.stderr
    shown = {x["policies"][0]["policy"]["policy-domain"]: x for x in json.loads(r.stdout)}
    assert shown["tls.test"]["policies"][0]["summary"] == {"total-successful-session-count": 3, "total-failure-session-count": 0}
    assert shown["norpt.test"]["policies"][0]["summary"]["total-failure-session-count"] == 1

    # Yesterday has nothing; today's reports go out now.
    r = p.cli("tlsrpt", "send")
    assert r.returncode == 0 and b"nothing to send for that day" in r.stdout, (r.stdout, r.stderr)
    r = p.cli("tlsrpt", "send", "--day", today)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = r.stdout.decode()
    for d in ("tls.test", "plain.test", "oldtls.test"):
        assert f"{d}: queued as " in out and "to tlsrpt@reports.test" in out, out
    assert "norpt.test: skipped: _smtp._tls.norpt.test: no TLSRPTv1 record" in out, out
    assert "https.test: skipped: only https rua" in out, out
    assert "tlsrpt day=" in p.log() and "rua=https://reports.test/tlsrpt" in p.log()

    # The reports travel through the queue and MX delivery to the rua's receiver.
    got = sinks["127.0.0.5"].wait(n=3, timeout=30)
    reports = {}
    for msg in got:
        assert msg["mail_from"] == "tlsrpt@mx.test"
        assert msg["rcpt_tos"] == ["tlsrpt@reports.test"]
        m, rep, name = report_of(msg["data"])
        domain = m["TLS-Report-Domain"]
        assert m["TLS-Report-Submitter"] == "mx.test"
        assert m["Subject"] == f"Report Domain: {domain} Submitter: mx.test Report-ID: <{rep['report-id']}>"
        assert name.startswith(f"mx.test!{domain}!")
        reports[domain] = rep
    assert set(reports) == {"tls.test", "plain.test", "oldtls.test"}

    t = reports["tls.test"]
    assert t["organization-name"] == "postern interop"
    assert t["contact-info"] == "postmaster@mx.test"
    assert t["date-range"] == {"start-datetime": f"{today}T00:00:00Z", "end-datetime": f"{today}T23:59:59Z"}
    (pol,) = t["policies"]
    assert pol["policy"] == {"policy-type": "no-policy-found", "policy-domain": "tls.test"}
    assert pol["summary"] == {"total-successful-session-count": 3, "total-failure-session-count": 0}
    assert "failure-details" not in pol

    (pol,) = reports["plain.test"]["policies"]
    assert pol["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
    (row,) = pol["failure-details"]
    assert row["result-type"] == "starttls-not-supported"
    assert row["receiving-mx-hostname"] == "mx.plain.test"
    assert row["receiving-ip"] == "127.0.0.3"
    assert row["sending-mta-ip"] == "127.0.0.1"
    assert row["failed-session-count"] == 1

    (pol,) = reports["oldtls.test"]["policies"]
    assert pol["summary"]["total-successful-session-count"] == 0
    assert pol["summary"]["total-failure-session-count"] >= 1
    assert {x["result-type"] for x in pol["failure-details"]} == {"validation-failure"}
    assert all(x["receiving-mx-hostname"] == "mx.oldtls.test" for x in pol["failure-details"])
    assert sinks["127.0.0.4"].messages == [], "never delivered without the TLS it offered"


def test_tlsrpt_encrypt_without_starttls_and_cli_without_daemon(postern_factory):
    """`mx.tls = "encrypt"` and a host without STARTTLS: the mail is deferred,
    never sent in clear, and each attempt counts as starttls-not-supported.
    With the daemon stopped, `postern tlsrpt show` reads the saved day and
    `tlsrpt send` queues into the spool itself; the next start delivers."""
    port = free_port()
    sinks = {ip: SinkHandler() for ip in ("127.0.0.3", "127.0.0.5")}
    controllers = [Controller(h, hostname=ip, port=port, decode_data=False) for ip, h in sinks.items()]
    dns_port = free_port()
    servers = [DNSServer(Zone(RECORDS), port=dns_port, address="127.0.0.1", tcp=t) for t in (False, True)]
    try:
        for c in controllers:
            c.start()
        for s in servers:
            s.start_thread()
        cfg = BASE_CONFIG + f"""
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
port = {port}
tls = "encrypt"
domain_backoff = "1s"
dangerous_allow_loopback = true

[tls_rpt]
enabled = true
"""
        p = postern_factory(cfg)
        send(p, "x@plain.test")
        wait_for(lambda: "to=x@plain.test" in p.log() and "does not offer STARTTLS" in p.log(), what="the deferral")
        assert sinks["127.0.0.3"].messages == [], "encrypt: never in clear"
        assert p.stop() == 0
        today = time.strftime("%Y-%m-%d", time.gmtime())
        r = p.cli("tlsrpt", "show", "--day", today)
        assert r.returncode == 0, r.stderr
        (rep,) = json.loads(r.stdout)
        (pol,) = rep["policies"]
        assert pol["policy"]["policy-domain"] == "plain.test"
        assert pol["summary"]["total-successful-session-count"] == 0
        n = pol["summary"]["total-failure-session-count"]
        assert n >= 1
        (row,) = pol["failure-details"]
        assert row["result-type"] == "starttls-not-supported"
        assert row["failed-session-count"] == n
        assert "does not offer STARTTLS" in row["failure-reason-code"]
        # Defaults: organization = host name, contact = from = postmaster@host name.
        assert rep["organization-name"] == "mx.test" and rep["contact-info"] == "postmaster@mx.test"
        r = p.cli("tlsrpt", "send", "--day", today, "--json")
        assert r.returncode == 0, r.stderr
        (sent,) = json.loads(r.stdout)
        assert sent["result"] == "queued" and sent["to"] == ["tlsrpt@reports.test"], sent
        assert p.cli("tlsrpt", "send", "--day", "2026-13-01").returncode == 64
        # The report waits in the spool; the next start delivers it. The rua's
        # host has no STARTTLS either: RFC 8460 §5.3 wants reports delivered
        # despite TLS failures, so the report carries `TLS-Required: No`
        # (RFC 8689 §5) and goes in clear where ordinary mail may not.
        p.start()
        wait_for(lambda: f"delivered id={sent['id']}" in p.log(), what="the report delivered despite mx.tls = encrypt")
        (got,) = sinks["127.0.0.5"].messages
        assert b"TLS-Required: No" in got["data"]
        assert sinks["127.0.0.3"].messages == [], "ordinary mail still never in clear"
    finally:
        for c in controllers:
            c.stop()
        for s in servers:
            s.stop()
