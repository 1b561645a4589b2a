"""MTA-STS (RFC 8461) against real peers, all on loopback and started here:
a DNS server (dnslib) with MX, A and `_mta-sts` TXT records; a real HTTPS
server (Python http.server + ssl = OpenSSL) serving each domain's policy
with a certificate from a test CA; MX hosts that are real SMTP receivers
(aiosmtpd with STARTTLS) whose certificates match their name or not.

Cases: enforce + good certificate -> delivered over verified TLS; enforce +
certificate for another name -> deferred, the MX got nothing; enforce + MX
not in the policy -> deferred 4.7.5; testing + bad certificate -> delivered
and reported (mta_sts log line); a cached policy survives the HTTPS server
going away, the TXT record being removed and a restart; a new TXT id makes
postern fetch the policy again."""

import datetime
import pathlib
import signal
import smtplib
import ssl
import subprocess
import sys
import time

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from dnslib import MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSServer

from conftest import BASE_CONFIG, SinkHandler, free_port, wait_for, wait_port


class Zone(BaseResolver):
    """A zone the test may change while postern runs."""

    def __init__(self, records):
        self.records = records  # {(name, type): [rdata]}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if name not in {n for n, _ in self.records}:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rd in self.records.get((name, qtype), []):
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rd, ttl=1))
        return reply


class Authority:
    """A CA and leaf certificates issued by it (cryptography)."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postern MTA-STS test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = name
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = self.dir / "ca.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, label, names):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        crt, k = self.dir / f"{label}.crt", self.dir / f"{label}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return crt, k


# The policy server: a separate process (stopped by PID) serving
# ROOT/<host>/.well-known/mta-sts.txt as text/plain over HTTPS.
HTTPS_SERVER = r"""
import http.server, pathlib, ssl, sys
root, port, cert, key = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        f = root / host / self.path.lstrip("/")
        if self.path != "/.well-known/mta-sts.txt" or not f.is_file():
            self.send_error(404)
            return
        body = f.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""

# domain -> (MX address, certificate names of that MX, TXT id, policy)
DOMAINS = {
    "enforce.test": ("127.0.0.21", ["mx.enforce.test"], "e1", "enforce", "mx.enforce.test"),
    "badcert.test": ("127.0.0.22", ["wrong.example"], "b1", "enforce", "mx.badcert.test"),
    "notlisted.test": ("127.0.0.23", ["mx.notlisted.test"], "n1", "enforce", "other.notlisted.test"),
    "testing.test": ("127.0.0.24", ["wrong.example"], "t1", "testing", "mx.testing.test"),
    "cached.test": ("127.0.0.25", ["wrong.example"], "c1", "enforce", "*.cached.test"),
    "idchange.test": ("127.0.0.26", ["wrong.example"], "i1", "testing", "mx.idchange.test"),
}


def policy(mode, mx):
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"


class World:
    pass


@pytest.fixture
def world(tmp_path):
    w = World()
    w.ca = Authority(tmp_path)
    w.root = tmp_path / "policies"
    w.smtp_port = free_port()
    w.https_port = free_port()
    w.dns_port = free_port()
    w.records = {}
    w.sinks = {}
    controllers = []
    for domain, (ip, cert_names, txt_id, mode, mx) in DOMAINS.items():
        host = f"mx.{domain}"
        w.records[(domain, "MX")] = [MX(host, 10)]
        w.records[(host, "A")] = [A(ip)]
        w.records[(f"_mta-sts.{domain}", "TXT")] = [TXT(f"v=STSv1; id={txt_id};"), TXT("v=spf1 -all")]
        w.records[(f"mta-sts.{domain}", "A")] = [A("127.0.0.1")]
        d = w.root / f"mta-sts.{domain}" / ".well-known"
        d.mkdir(parents=True)
        (d / "mta-sts.txt").write_text(policy(mode, mx))
        crt, key = w.ca.issue(domain, cert_names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        handler = SinkHandler()
        c = Controller(handler, hostname=ip, port=w.smtp_port, decode_data=False, tls_context=ctx)
        c.start()
        controllers.append(c)
        w.sinks[domain] = handler
    zone = Zone(w.records)
    udp = DNSServer(zone, port=w.dns_port, address="127.0.0.1")
    tcp = DNSServer(zone, port=w.dns_port, address="127.0.0.1", tcp=True)
    udp.start_thread()
    tcp.start_thread()
    https_crt, https_key = w.ca.issue("https", [f"mta-sts.{d}" for d in DOMAINS])
    script = tmp_path / "https_server.py"
    script.write_text(HTTPS_SERVER)
    w.https = subprocess.Popen(
        [sys.executable, str(script), str(w.root), str(w.https_port), str(https_crt), str(https_key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(w.https_port, proc=w.https)
    yield w
    if w.https.poll() is None:
        w.https.send_signal(signal.SIGTERM)
        w.https.wait(10)
    udp.stop()
    tcp.stop()
    for c in controllers:
        c.stop()


def config(w):
    return BASE_CONFIG + f"""
[mx]
nameservers = ["127.0.0.1:{w.dns_port}"]
port = {w.smtp_port}
tls = "may"
domain_backoff = "1s"
dangerous_allow_loopback = true

[mta_sts]
ca_files = ["{w.ca.path}"]
https_port = {w.https_port}
fetch_timeout = "5s"
fetch_failure_backoff = "1s"
"""


def send(p, rcpt, subject="mta-sts test"):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", [rcpt], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def lines(p, needle):
    return [line for line in p.log().splitlines() if needle in line]


def test_enforce_good_certificate_delivers_over_verified_tls(postern_factory, world):
    p = postern_factory(config(world))
    send(p, "user@enforce.test")
    assert world.sinks["enforce.test"].wait(timeout=20)[0]["rcpt_tos"] == ["user@enforce.test"]
    log = wait_for(lambda: lines(p, "delivered id="), what="the delivered line")
    assert " verified" in log[0] and "unverified" not in log[0], log
    fetched = lines(p, "mta_sts domain=enforce.test result=fetched")
    assert fetched and "id=e1" in fetched[0] and "mode=enforce" in fetched[0], p.log()
    assert (p.data / "mta-sts" / "enforce.test.json").is_file()
    # The operator's view of the same domain.
    out = p.cli("check", "mta-sts", "enforce.test")
    text = out.stdout.decode()
    assert out.returncode == 0, (out.returncode, text, out.stderr)
    assert "TXT _mta-sts.enforce.test: id=e1" in text and "policy: mode=enforce" in text, text
    assert "cached: id=e1" in text and "MX mx.enforce.test: verified TLS required" in text, text


def test_enforce_bad_certificate_defers_and_never_sends(postern_factory, world):
    p = postern_factory(config(world))
    send(p, "user@badcert.test")
    failure = wait_for(lambda: lines(p, "mta_sts domain=badcert.test mode=enforce host=mx.badcert.test"), timeout=20,
                       what="the mta_sts failure line")
    assert "result=tls-failure" in failure[0] and "type=certificate-host-mismatch" in failure[0], failure
    deferred = wait_for(lambda: lines(p, "deferred id="), what="the deferred line")
    assert "user@badcert.test" in deferred[0], deferred
    # Opportunistic TLS would have delivered: retries (1 s) keep failing.
    wait_for(lambda: len(lines(p, "mta_sts domain=badcert.test mode=enforce")) >= 2, timeout=20, what="a retry")
    assert world.sinks["badcert.test"].messages == []
    assert not lines(p, "delivered id=")


def test_enforce_mx_not_in_policy_defers(postern_factory, world):
    p = postern_factory(config(world))
    send(p, "user@notlisted.test")
    deferred = wait_for(lambda: lines(p, "deferred id="), timeout=20, what="the deferred line")
    assert "4.7.5" in deferred[0] and "lists none of its MX hosts" in deferred[0], deferred
    mismatch = lines(p, "mta_sts domain=notlisted.test mode=enforce host=mx.notlisted.test")
    assert mismatch and "result=mx-mismatch" in mismatch[0], p.log()
    assert world.sinks["notlisted.test"].messages == []
    assert world.sinks["notlisted.test"].ehlos == 0, "an MX host the policy does not list is not even contacted"
    out = p.cli("check", "mta-sts", "notlisted.test")
    assert out.returncode == 69, (out.returncode, out.stdout, out.stderr)
    assert b"FAIL MX mx.notlisted.test: not listed in the policy: refused" in out.stdout, out.stdout


def test_testing_bad_certificate_delivers_and_reports(postern_factory, world):
    p = postern_factory(config(world))
    send(p, "user@testing.test")
    assert world.sinks["testing.test"].wait(timeout=20)[0]["rcpt_tos"] == ["user@testing.test"]
    report = wait_for(lambda: lines(p, "mta_sts domain=testing.test mode=testing host=mx.testing.test"), what="the report line")
    assert "type=certificate-host-mismatch" in report[0] and 'action="reported only"' in report[0], report
    delivered = wait_for(lambda: lines(p, "delivered id="), what="the delivered line")
    assert "unverified" in delivered[0], delivered


def test_cached_policy_outlives_https_txt_and_a_restart(postern_factory, world):
    p = postern_factory(config(world))
    send(p, "first@cached.test")
    wait_for(lambda: lines(p, "mta_sts domain=cached.test mode=enforce host=mx.cached.test"), timeout=20, what="enforcement")
    assert lines(p, "mta_sts domain=cached.test result=fetched")
    # An attacker strips the TXT record and blocks the policy server...
    world.records[("_mta-sts.cached.test", "TXT")] = []
    world.https.send_signal(signal.SIGTERM)
    world.https.wait(10)
    # ...and postern restarts: the policy comes back from DATA/mta-sts/.
    p.stop()
    p.start()
    before = len(lines(p, "mta_sts domain=cached.test mode=enforce"))
    send(p, "second@cached.test")
    wait_for(lambda: len(lines(p, "mta_sts domain=cached.test mode=enforce")) >= before + 2, timeout=20,
             what="the cached policy enforced after the restart")
    assert world.sinks["cached.test"].messages == [], "never delivered over TLS that does not verify"
    assert len(lines(p, "mta_sts domain=cached.test result=fetched")) == 1, "no fetch: nothing to fetch from"
    assert not lines(p, "domain=cached.test result=fetch-error")


def test_new_txt_id_refetches_the_policy(postern_factory, world):
    p = postern_factory(config(world))
    send(p, "first@idchange.test")
    assert world.sinks["idchange.test"].wait(timeout=20), "testing mode delivers"
    # The domain switches to enforce and announces it with a new id.
    (world.root / "mta-sts.idchange.test" / ".well-known" / "mta-sts.txt").write_text(policy("enforce", "mx.idchange.test"))
    send(p, "second@idchange.test")
    # Same id: the cached testing policy still applies (no fetch).
    assert world.sinks["idchange.test"].wait(n=2, timeout=20)
    assert len(lines(p, "mta_sts domain=idchange.test result=fetched")) == 1
    world.records[("_mta-sts.idchange.test", "TXT")] = [TXT("v=STSv1; id=i2;")]
    # The DNS answers have a 1 s TTL; wait past it.
    time.sleep(1.5)
    send(p, "third@idchange.test")
    fetched = wait_for(lambda: len(lines(p, "mta_sts domain=idchange.test result=fetched")) >= 2
                       and lines(p, "mta_sts domain=idchange.test result=fetched"), timeout=20, what="the refetch")
    assert "id=i2" in fetched[1] and "mode=enforce" in fetched[1], fetched
    wait_for(lambda: lines(p, "mta_sts domain=idchange.test mode=enforce host="), timeout=20, what="enforcement")
    assert len(world.sinks["idchange.test"].messages) == 2, "the third message is held back by the new policy"
