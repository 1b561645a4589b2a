"""DANE (RFC 7672) for MX delivery against real DNSSEC: a zone signed by
the test with ldns-keygen + ldns-signzone, served by a private NSD on a
loopback port, behind a private Unbound (the validating resolver, with the
zone's DS as its trust anchor); MX hosts are aiosmtpd receivers with
STARTTLS and certificates made here, one behind a proxy that strips
STARTTLS from the EHLO reply. postern asks Unbound (`mx.nameservers`) and
reads the AD bit.

Cases: DANE-EE 3 1 1 match -> delivered, logged `dane (3 1 1)`; mismatch
-> deferred, nothing sent; STARTTLS stripped -> deferred, nothing sent;
bogus TLSA signature -> deferred, no connection; unsigned zone -> delivered
as "may"; DANE-TA 2 0 1 of a test CA with the right name -> delivered.
"""

import asyncio
import datetime
import hashlib
import pathlib
import re
import smtplib
import ssl
import subprocess
import threading

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import BASE_CONFIG, SinkHandler, free_port, require, wait_for, wait_port

ZONE = "dane.test"
PLAIN = "plain.test"


def make_cert(directory, name, cn, sans, issuer=None, ca=False):
    """A certificate (and key) in `directory`/name.{crt,key}; `issuer` is
    (cert, key) or None for self-signed. Returns (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    cert = b.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


def tlsa(usage, selector, cert):
    """The SHA-256 TLSA record data of `cert` (matching type 1)."""
    if selector == 0:
        data = cert.public_bytes(serialization.Encoding.DER)
    else:
        data = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"{usage} {selector} 1 {hashlib.sha256(data).hexdigest()}"


class StripStartTls:
    """A TCP proxy that removes STARTTLS from the EHLO reply (an attacker on
    the path), in front of `upstream`."""

    def __init__(self, listen, port, upstream):
        self.listen, self.port, self.upstream = listen, port, upstream
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, cr, cw):
        ur, uw = await asyncio.open_connection(*self.upstream)

        async def up():
            try:
                while data := await cr.read(65536):
                    uw.write(data)
                    await uw.drain()
            finally:
                uw.close()

        async def down():
            reply = []
            try:
                while line := await ur.readline():
                    reply.append(line)
                    if line[3:4] == b"-":
                        continue
                    kept = [l for l in reply if l[4:].strip().upper() != b"STARTTLS"]
                    kept = [l[:3] + b"-" + l[4:] for l in kept[:-1]] + [kept[-1][:3] + b" " + kept[-1][4:]]
                    cw.write(b"".join(kept))
                    await cw.drain()
                    reply = []
            finally:
                cw.close()

        await asyncio.gather(up(), down(), return_exceptions=True)

    def start(self):
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self.handle, self.listen, self.port), self.loop)
        self.server = fut.result(10)

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def run(cmd, cwd):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=60)
    assert out.returncode == 0, f"{cmd}: {out.stderr.decode()}"
    return out.stdout.decode()


def sign_zone(d, text):
    """Signs `text` for ZONE (a KSK and a ZSK, ECDSA P-256); returns the
    signed file's name and the DS file (the resolver's trust anchor)."""
    require("ldns-keygen")
    require("ldns-signzone")
    (d / "dane.zone").write_text(text)
    ksk = run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", ZONE], d).strip()
    zsk = run(["ldns-keygen", "-a", "ECDSAP256SHA256", ZONE], d).strip()
    run(["ldns-signzone", "dane.zone", zsk, ksk], d)
    return "dane.zone.signed", d / f"{ksk}.ds"


def tamper(signed, owner, new_rdata):
    """Changes the TLSA record at `owner` after signing: its RRSIG no
    longer verifies, so a validating resolver answers SERVFAIL (bogus)."""
    lines = signed.read_text().splitlines()
    out = []
    hit = False
    for line in lines:
        f = line.split()
        if len(f) >= 5 and f[0] == owner and f[3] == "TLSA":
            line = "\t".join(f[:4]) + "\t" + new_rdata
            hit = True
        out.append(line)
    assert hit, f"no TLSA at {owner} in the signed zone"
    signed.write_text("\n".join(out) + "\n")


class Proc:
    """A daemon started in the foreground, stopped by its PID."""

    def __init__(self, cmd, log):
        self.log = open(log, "ab")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.log.close()


def wait_dns(port, proc, d, name):
    """Unbound answers for `name` (bounded)."""
    import dns.message
    import dns.query

    def answered():
        assert proc.p.poll() is None, f"resolver exited: {(d / 'unbound.log').read_text(errors='replace')}"
        try:
            r = dns.query.udp(dns.message.make_query(name, "A", want_dnssec=True), "127.0.0.1", port=port, timeout=1)
            return r.rcode() == 0 and r
        except Exception:
            return False

    return wait_for(answered, timeout=20, what=f"unbound answering {name}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require("nsd")
    require("unbound")
    d = tmp_path_factory.mktemp("dane")
    mx_port, nsd_port, ub_port = free_port(), free_port(), free_port()
    stops = []
    try:
        # Certificates: a self-signed MX certificate, one for the mismatch
        # host (the TLSA names another), a CA and a leaf it signed.
        good, _ = make_cert(d, "good", "mx.ee.dane.test", ["mx.ee.dane.test"])
        make_cert(d, "served", "mx.bad.dane.test", ["mx.bad.dane.test"])
        published, _ = make_cert(d, "published", "mx.bad.dane.test", ["mx.bad.dane.test"])
        strip_cert, _ = make_cert(d, "strip", "mx.strip.dane.test", ["mx.strip.dane.test"])
        bogus_cert, _ = make_cert(d, "bogus", "mx.bogus.dane.test", ["mx.bogus.dane.test"])
        ca, ca_key = make_cert(d, "ca", "DANE test CA", [], ca=True)
        make_cert(d, "ta", "mx.ta.dane.test", ["mx.ta.dane.test"], issuer=(ca, ca_key))
        (d / "ta-chain.crt").write_bytes((d / "ta.crt").read_bytes() + (d / "ca.crt").read_bytes())
        make_cert(d, "plain", "mx.plain.test", ["mx.plain.test"])

        sinks = {}

        def tls_sink(ip, port, cert, key):
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(d / cert, d / key)
            h = SinkHandler()
            c = Controller(h, hostname=ip, port=port, decode_data=False, tls_context=ctx)
            c.start()
            stops.append(c.stop)
            return h

        sinks["ee"] = tls_sink("127.0.0.2", mx_port, "good.crt", "good.key")
        sinks["bad"] = tls_sink("127.0.0.3", mx_port, "served.crt", "served.key")
        strip_port = free_port()
        sinks["strip"] = tls_sink("127.0.0.1", strip_port, "strip.crt", "strip.key")
        proxy = StripStartTls("127.0.0.4", mx_port, ("127.0.0.1", strip_port))
        proxy.start()
        stops.append(proxy.stop)
        sinks["bogus"] = tls_sink("127.0.0.5", mx_port, "bogus.crt", "bogus.key")
        sinks["plain"] = tls_sink("127.0.0.6", mx_port, "plain.crt", "plain.key")
        sinks["ta"] = tls_sink("127.0.0.7", mx_port, "ta-chain.crt", "ta.key")

        soa = "@ 3600 IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 300\n@ 3600 IN NS ns.{z}.\nns 3600 IN A 127.0.0.1\n"
        hosts = {"ee": "127.0.0.2", "bad": "127.0.0.3", "strip": "127.0.0.4", "bogus": "127.0.0.5", "ta": "127.0.0.7"}
        records = {
            "ee": tlsa(3, 1, good),
            "bad": tlsa(3, 1, published),
            "strip": tlsa(3, 1, strip_cert),
            "bogus": tlsa(3, 1, bogus_cert),
            "ta": tlsa(2, 0, ca),
        }
        zone = f"$ORIGIN {ZONE}.\n$TTL 300\n" + soa.format(z=ZONE)
        for name, ip in hosts.items():
            zone += f"{name} IN MX 10 mx.{name}\nmx.{name} IN A {ip}\n_{mx_port}._tcp.mx.{name} IN TLSA {records[name]}\n"
        signed, ds = sign_zone(d, zone)
        # A TLSA record changed after signing: bogus.
        tamper(d / signed, f"_{mx_port}._tcp.mx.bogus.{ZONE}.", tlsa(3, 1, good))
        (d / "plain.zone").write_text(
            f"$ORIGIN {PLAIN}.\n$TTL 300\n" + soa.format(z=PLAIN) + "@ IN MX 10 mx\nmx IN A 127.0.0.6\n"
            # TLSA in an unsigned zone: insecure, so ignored (it would not match).
            + f"_{mx_port}._tcp.mx IN TLSA {tlsa(3, 1, published)}\n"
        )

        (d / "nsd.conf").write_text(f"""
server:
    ip-address: 127.0.0.1@{nsd_port}
    port: {nsd_port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    server-count: 1
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: {signed}
zone:
    name: {PLAIN}
    zonefile: plain.zone
""")
        nsd = Proc(["nsd", "-d", "-c", str(d / "nsd.conf")], d / "nsd.out")
        stops.append(nsd.stop)
        wait_port(nsd_port, proc=nsd.p)

        (d / "unbound.conf").write_text(f"""
server:
    interface: 127.0.0.1
    port: {ub_port}
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: "{d}/unbound.log"
    verbosity: 1
    val-log-level: 2
    do-not-query-localhost: no
    qname-minimisation: no
    module-config: "validator iterator"
    trust-anchor-file: "{ds}"
    local-zone: "test." nodefault
    num-threads: 1
remote-control:
    control-enable: no
stub-zone:
    name: "{ZONE}"
    stub-addr: 127.0.0.1@{nsd_port}
stub-zone:
    name: "{PLAIN}"
    stub-addr: 127.0.0.1@{nsd_port}
""")
        require("unbound-checkconf")
        run(["unbound-checkconf", str(d / "unbound.conf")], d)
        ub = Proc(["unbound", "-d", "-c", str(d / "unbound.conf")], d / "unbound.out")
        stops.append(ub.stop)
        r = wait_dns(ub_port, ub, d, f"mx.ee.{ZONE}.")
        # The resolver validates: the signed zone's answers carry AD.
        assert r.flags & 0x20, f"no AD bit from unbound for the signed zone: {r}"
        yield {"mx_port": mx_port, "dns_port": ub_port, "sinks": sinks, "dir": d}
    finally:
        for stop in reversed(stops):
            stop()


def dane_config(w):
    return BASE_CONFIG + f"""
[mx]
nameservers = ["127.0.0.1:{w['dns_port']}"]
port = {w['mx_port']}
tls = "dane"
domain_backoff = "1s"
dangerous_allow_loopback = true
"""


def send(p, rcpt):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", [rcpt], b"Subject: dane\r\n\r\nbody\r\n")


def line(log, event, rcpt):
    for l in log.splitlines():
        if f" {event} " in f" {l} " and f"to={rcpt}" in l:
            return l
    return None


@pytest.mark.parametrize("name,note", [("ee", "dane (3 1 1)"), ("ta", "dane (2 0 1)")])
def test_dane_match_is_delivered(postern_factory, world, name, note):
    p = postern_factory(dane_config(world))
    rcpt = f"user@{name}.{ZONE}"
    send(p, rcpt)
    assert world["sinks"][name].wait(timeout=30)[-1]["rcpt_tos"] == [rcpt]
    got = wait_for(lambda: line(p.log(), "delivered", rcpt), timeout=15, what="the delivered line")
    assert note in got and "TLSv1.3" in got, got


@pytest.mark.parametrize(
    "name,result",
    [("bad", "validation-failure"), ("strip", "starttls-not-supported"), ("bogus", "dnssec-invalid")],
)
def test_dane_failure_is_deferred_never_sent(postern_factory, world, name, result):
    p = postern_factory(dane_config(world))
    rcpt = f"user@{name}.{ZONE}"
    send(p, rcpt)
    got = wait_for(lambda: line(p.log(), "deferred", rcpt), timeout=30, what="the deferred line")
    assert "4.7.5" in got and "passed DANE" in got, got
    if name == "bad":
        assert "DANE authentication failed: no TLSA record matches" in got, got
    log = p.log()
    assert re.search(rf"\btls .*policy=dane .*result={result}\b", log), log
    assert world["sinks"][name].messages == [], "mail went to a host that failed DANE"
    assert line(log, "delivered", rcpt) is None
    if name == "bogus":
        assert "SERVFAIL" in got, got


def test_unsigned_domain_is_delivered_as_may(postern_factory, world):
    p = postern_factory(dane_config(world))
    rcpt = f"user@{PLAIN}"
    send(p, rcpt)
    assert world["sinks"]["plain"].wait(timeout=30)[-1]["rcpt_tos"] == [rcpt]
    got = wait_for(lambda: line(p.log(), "delivered", rcpt), timeout=15, what="the delivered line")
    # Opportunistic TLS: encrypted, the self-signed certificate unverified, no DANE.
    assert "TLSv1.3" in got and "dane" not in got, got


def test_dane_refuses_a_remote_resolver(postern_factory, world):
    """The AD bit of a resolver elsewhere on the network is not trusted."""
    cfg = dane_config(world).replace(f'"127.0.0.1:{world["dns_port"]}"', '"192.0.2.53:53"')
    p = postern_factory(cfg, start=False)
    out = p.cli("config", "check")
    text = (out.stdout + out.stderr).decode()
    assert out.returncode != 0 and "mx.nameservers" in text and "dnssec_trust_remote_ad" in text, text
