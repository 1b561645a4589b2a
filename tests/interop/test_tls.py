"""TLS with real peers: openssl s_client (STARTTLS and implicit, -msg to see
whether a CertificateRequest is sent), swaks --tls/--tlsc with client
certificates, curl smtps://, Python ssl, the STARTTLS injection probe,
certificate reload, the built-in CA with PKCS#12, and outbound TLS with a
client certificate to a smarthost that requires one."""

import datetime
import email
import hashlib
import re
import smtplib
import socket
import ssl
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiosmtpd.controller import Controller

from conftest import BASE_CONFIG, SinkHandler, free_port, require, swaks, swaks_full, wait_for, wait_port

TLS_CONFIG = BASE_CONFIG.replace(
    '[[listener]]\naddress = "127.0.0.1:{port}"\n',
    """[[listener]]
address = "127.0.0.1:{port}"
[[listener]]
address = "127.0.0.1:{port2}"
client_certificates = "optional"
[[listener]]
address = "127.0.0.1:{port3}"
request_client_certificates_from = ["127.0.0.0/8"]
[[listener]]
address = "127.0.0.1:{port4}"
request_client_certificates_from = ["192.0.2.0/24"]
[[listener]]
address = "127.0.0.1:{port5}"
role = "submissions"
[[listener]]
address = "127.0.0.1:{port6}"
role = "submission"
""",
)

# F5: "required" without a client CA is a config error, so this listener is
# only added where the CA exists before the start.
REQUIRED_LISTENER = """
[[listener]]
address = "127.0.0.1:{port7}"
client_certificates = "required"
"""


def s_client(port, *extra, starttls=True, data=b"EHLO t.example\r\nQUIT\r\n"):
    require("openssl")
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-msg", "-ign_eof", *extra]
    if starttls:
        cmd[2:2] = ["-starttls", "smtp"]
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def tls_ok(out, starttls=True):
    """True if the EHLO sent *inside* TLS was answered. s_client prints
    only the last line of the plaintext EHLO reply it reads before STARTTLS,
    so a continuation line like 250-SMTPUTF8 can only come from inside TLS
    (for implicit TLS everything is inside)."""
    return "250-SMTPUTF8" in out


def add_user(p, name="tlsuser", pw="tls pass"):
    r = p.cli("user", "add", name, "--password-stdin", input=(pw + "\n").encode())
    assert r.returncode == 0, r.stderr
    return name, pw


def postern_ca(p):
    r = p.cli("ca", "init")
    assert r.returncode == 0, r.stderr
    return p.data / "ca"


def issue_client(p, name, pw="secret"):
    r = p.cli("ca", "issue", "client", name, "--san", f"{name}@mx.test", "--p12-password", pw)
    assert r.returncode == 0, r.stderr
    d = p.data / "ca" / "issued"
    serial = re.search(r"serial (\w+)", r.stdout.decode()).group(1)
    return d / f"{name}.crt", d / f"{name}.key", serial


def make_cert(path_prefix, subject_cn, issuer_cn=None, issuer_key=None, not_before=None, not_after=None):
    """A client certificate made with `cryptography`: self-signed, or signed
    by `issuer_key` under the name `issuer_cn` (a look-alike CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]) if issuer_cn else subject
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(hours=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer_key or key, hashes.SHA256())
    )
    crt, k = f"{path_prefix}.crt", f"{path_prefix}.key"
    open(crt, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(k, "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return crt, k


def test_certificate_request_per_mode_and_network(postern_factory):
    p = postern_factory(TLS_CONFIG)
    assert "CertificateRequest" not in s_client(p.port), "mode none must not send a CertificateRequest"
    assert "CertificateRequest" in s_client(p.ports["port2"]), "mode optional must send one"
    assert "CertificateRequest" in s_client(p.ports["port3"]), "requested for 127.0.0.0/8"
    assert "CertificateRequest" not in s_client(p.ports["port4"]), "only 192.0.2.0/24 is asked"
    out = s_client(p.ports["port5"], starttls=False)
    assert "CertificateRequest" not in out and "250-STARTTLS" not in out and "220 mx.test ESMTP postern" in out
    # TLS 1.2 works too; TLS 1.1 does not.
    out = s_client(p.port, "-tls1_2")
    assert tls_ok(out) and "TLSv1.2" in out
    assert not tls_ok(s_client(p.port, "-tls1_1"))


def test_client_certificate_identities(postern_factory, tmp_path):
    p = postern_factory(TLS_CONFIG)
    ca_dir = postern_ca(p)
    crt, key, _ = issue_client(p, "alice")
    wait_for(lambda: "reload=ok" in p.log(), what="TLS reload after ca init")
    out = s_client(p.ports["port2"], "-cert", str(crt), "-key", str(key))
    assert tls_ok(out)
    line = wait_for(lambda: [l for l in p.log().splitlines() if 'cert_subject="CN=alice"' in l], what="tls log line")[0]
    assert 'cert="verified by CN=postern CA"' in line, line
    assert "version=TLSv1.3" in line and "client_cert_mode=optional" in line
    # A self-signed certificate, a look-alike CA (same DN, other key) and an
    # expired certificate from the real CA: accepted at TLS, recorded as unverified.
    selfsigned = make_cert(tmp_path / "self", "selfie")
    fake_ca_key = ec.generate_private_key(ec.SECP256R1())
    lookalike = make_cert(tmp_path / "look", "mallory", issuer_cn="postern CA", issuer_key=fake_ca_key)
    real_ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    expired = make_cert(tmp_path / "old", "oldtimer", issuer_cn="postern CA", issuer_key=real_ca_key,
                        not_before=past, not_after=past + datetime.timedelta(days=10))
    for (c, k), cn, why in [(selfsigned, "selfie", "not verified"), (lookalike, "mallory", "not verified"),
                            (expired, "oldtimer", "not verified: certificate expired")]:
        out = s_client(p.ports["port2"], "-cert", c, "-key", k)
        assert tls_ok(out), f"{cn}: optional mode must not abort the handshake"
        line = wait_for(lambda: [l for l in p.log().splitlines() if f'cert_subject="CN={cn}"' in l], what=f"{cn} line")[0]
        assert why in line, line
        assert "verified by" not in line


def test_required_mode_and_revocation(postern_factory):
    p = postern_factory(TLS_CONFIG + REQUIRED_LISTENER, start=False)
    r = p.cli("config", "check", str(p.cfg))
    assert r.returncode != 0 and b"requires client certificates, but no client CA is configured" in r.stderr, r.stderr
    postern_ca(p)
    p.start()
    crt, key, serial = issue_client(p, "bob")
    # Without STARTTLS, MAIL is refused where a certificate is required.
    r = swaks_full("--server", f"127.0.0.1:{p.ports['port7']}", "--to", "x@far.example", "--quit-after", "MAIL")
    assert "530 5.7.0 Must issue a STARTTLS command first" in r.stdout, r.stdout
    assert not tls_ok(s_client(p.ports["port7"])), "required mode must refuse a client without certificate"
    assert tls_ok(s_client(p.ports["port7"], "-cert", str(crt), "-key", str(key)))
    n = p.log().count("reload=ok")
    r = p.cli("ca", "revoke", serial)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: p.log().count("reload=ok") > n, what="TLS reload after revoke")
    assert not tls_ok(s_client(p.ports["port7"], "-cert", str(crt), "-key", str(key))), "revoked cert accepted"
    listing = p.cli("ca", "list").stdout.decode()
    assert "revoked" in listing


def test_swaks_starttls_with_client_cert(postern_factory):
    p = postern_factory(TLS_CONFIG)
    postern_ca(p)
    crt, key, _ = issue_client(p, "carol")
    wait_for(lambda: "reload=ok" in p.log(), what="TLS reload")
    r = swaks("--server", f"127.0.0.1:{p.ports['port2']}", "--tls", "--tls-cert", str(crt), "--tls-key", str(key),
              "--from", "carol@mx.test", "--to", "alice@mx.test", "--header", "Subject: swaks tls")
    assert r.returncode == 0, r.stdout + r.stderr
    m = email.message_from_bytes(p.wait_mail("alice")[0])
    received = m.get_all("Received")[0]
    assert "with ESMTPS id" in received, received
    assert "using TLSv1.3 with cipher" in received
    assert 'client certificate "CN=carol" verified by CN=postern CA' in received


def test_implicit_tls_swaks_curl_python(postern_factory, tmp_path):
    p = postern_factory(TLS_CONFIG)
    user, pw = add_user(p)
    port = p.ports["port5"]
    r = swaks("--server", f"127.0.0.1:{port}", "--tlsc", "--auth", "PLAIN", "--auth-user", user, "--auth-password", pw,
              "--from", "x@client.example", "--to", "bob@mx.test", "--header", "Subject: tlsc")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"with ESMTPSA id" in p.wait_mail("bob")[0]
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: curl smtps\r\n\r\nvia curl\r\n")
    require("curl")
    r = subprocess.run(["curl", "-sS", "--insecure", f"smtps://127.0.0.1:{port}", "--user", f"{user}:{pw}",
                        "--mail-from", "x@client.example",
                        "--mail-rcpt", "carol@mx.test", "--upload-file", str(msg)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert b"via curl" in p.wait_mail("carol")[0]
    # Python ssl, verifying the generated self-signed certificate by name.
    ctx = ssl.create_default_context(cafile=str(p.data / "tls" / "server.crt"))
    with smtplib.SMTP_SSL("localhost", port, context=ctx, timeout=10) as s:
        code, banner = s.ehlo("py.example")
        assert code == 250 and b"STARTTLS" not in banner
        s.login(user, pw)
        s.sendmail("x@client.example", ["alice@mx.test"], b"Subject: python ssl\r\n\r\nx\r\n")
    assert b"with ESMTPSA id" in p.wait_mail("alice")[0]
    fp = re.search(r"certificate_sha256=([0-9a-f]{64})", p.log()).group(1)
    der = ssl.PEM_cert_to_DER_cert((p.data / "tls" / "server.crt").read_text())
    assert hashlib.sha256(der).hexdigest() == fp


def test_submission_requires_tls_and_no_second_starttls(postern_factory):
    p = postern_factory(TLS_CONFIG)
    user, pw = add_user(p)
    with smtplib.SMTP("127.0.0.1", p.ports["port6"], timeout=10) as s:
        s.ehlo("c.example")
        assert s.has_extn("starttls") and not s.has_extn("auth"), "AUTH must not be offered before TLS"
        code, text = s.mail("a@c.example")
        assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        ctx = ssl._create_unverified_context()
        s.starttls(context=ctx)
        code, banner = s.ehlo("c.example")
        assert b"STARTTLS" not in banner, "STARTTLS offered again inside TLS"
        assert s.docmd("STARTTLS")[0] == 503
        assert s.mail("a@c.example") == (530, b"5.7.0 Authentication required")
        s.rset()
        s.login(user, pw)
        assert s.mail("a@c.example")[0] == 250


def test_starttls_injection_is_discarded(postern_factory):
    p = postern_factory(TLS_CONFIG)
    raw = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"220")
    raw.sendall(b"EHLO c.example\r\n")
    while f.readline()[3:4] == b"-":
        pass
    # The classic probe: a command pipelined in plaintext behind STARTTLS.
    raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert f.readline() == b"220 2.0.0 Ready to start TLS\r\n"
    tls = ssl._create_unverified_context().wrap_socket(raw, server_hostname="mx.test")
    tf = tls.makefile("rb")
    tls.sendall(b"NOOP\r\n")
    first = tf.readline()
    assert first == b"250 2.0.0 Ok\r\n", f"injected command was executed: {first!r}"
    tls.sendall(b"MAIL FROM:<a@c.example>\r\n")
    assert tf.readline().startswith(b"503 5.5.1"), "session must be reset to pre-EHLO after STARTTLS"
    tls.close()
    assert "discarded plaintext pipelined after STARTTLS" in p.log()


def peer_fp(port):
    ctx = ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="mx.test") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def test_certificate_reload_keeps_old_sessions(postern_factory):
    p = postern_factory(start=False)
    postern_ca(p)
    for name in ("one", "two"):
        assert p.cli("ca", "issue", "server", f"{name}.mx.test", "--san", "mx.test").returncode == 0
    issued = p.data / "ca" / "issued"
    live_crt, live_key = p.dir / "live.crt", p.dir / "live.key"
    live_crt.write_bytes((issued / "one.mx.test.crt").read_bytes())
    live_key.write_bytes((issued / "one.mx.test.key").read_bytes())
    p.cfg.write_text(TLS_CONFIG.replace("{port}", str(p.port)).replace("{port5}", str(p.ports["port5"]))
                     .replace("[queue]", f'[tls]\ncertificate = "{live_crt}"\nkey = "{live_key}"\n[queue]')
                     .replace("{port2}", str(p.ports["port2"])).replace("{port3}", str(p.ports["port3"]))
                     .replace("{port4}", str(p.ports["port4"])).replace("{port6}", str(p.ports["port6"]))
                     .replace("{port7}", str(p.ports["port7"])))
    p.start()
    user, pw = add_user(p)
    port = p.ports["port5"]
    fp_one = peer_fp(port)
    old = smtplib.SMTP_SSL("127.0.0.1", port, context=ssl._create_unverified_context(), timeout=10)
    old.ehlo("old.example")
    old.login(user, pw)
    # Swap in certificate two: picked up by the file watcher, no signal.
    live_key.write_bytes((issued / "two.mx.test.key").read_bytes())
    live_crt.write_bytes((issued / "two.mx.test.crt").read_bytes())
    wait_for(lambda: peer_fp(port) != fp_one, timeout=20, what="new certificate on new handshakes")
    fp_two = peer_fp(port)
    old.sendmail("x@c.example", ["alice@mx.test"], b"Subject: old session\r\n\r\nstill works\r\n")
    old.quit()
    assert b"still works" in p.wait_mail("alice")[0]
    # Broken material is refused; the last good certificate stays.
    live_crt.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    wait_for(lambda: "reload=error" in p.log(), timeout=20, what="refused reload")
    assert "keeping old certificate" in p.log()
    assert peer_fp(port) == fp_two


def test_pkcs12_bundle_opens_with_openssl(postern_factory):
    p = postern_factory()
    postern_ca(p)
    r = p.cli("ca", "issue", "client", "dave")
    assert r.returncode == 0
    pw = re.search(r"pkcs12 password (\S+)", r.stdout.decode()).group(1)
    p12 = p.data / "ca" / "issued" / "dave.p12"
    out = subprocess.run(["openssl", "pkcs12", "-in", str(p12), "-passin", f"pass:{pw}", "-info", "-nodes"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "subject=CN = dave" in text and "BEGIN PRIVATE KEY" in text and "issuer=CN = postern CA" in text
    bad = subprocess.run(["openssl", "pkcs12", "-in", str(p12), "-passin", "pass:wrong", "-info", "-nokeys"],
                         capture_output=True, timeout=30)
    assert bad.returncode != 0


class CertSink(SinkHandler):
    async def handle_DATA(self, server, session, envelope):
        peer = server.transport.get_extra_info("peercert") or (getattr(session, "ssl", None) or {}).get("peercert")
        self.peercert = peer
        return await super().handle_DATA(server, session, envelope)


def test_outbound_tls_presents_client_certificate(postern_factory):
    p = postern_factory(start=False)
    postern_ca(p)
    assert p.cli("ca", "issue", "server", "localhost", "--san", "localhost").returncode == 0
    assert p.cli("ca", "issue", "client", "relay-client", "--p12-password", "x").returncode == 0
    issued = p.data / "ca" / "issued"
    ca_crt = p.data / "ca" / "ca.crt"
    # A smarthost that requires a client certificate from our CA (Python ssl = OpenSSL).
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_crt))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(issued / "localhost.crt", issued / "localhost.key")
    handler = CertSink()
    sport = free_port()
    c = Controller(handler, hostname="127.0.0.1", port=sport, decode_data=False, tls_context=ctx, require_starttls=True)
    c.start()
    try:
        p.cfg.write_text(p.cfg.read_text() + f"""
[relay]
smarthost = "127.0.0.1:{sport}"
smarthost_tls = "verify"
smarthost_server_name = "localhost"
smarthost_ca_files = ["{ca_crt}"]
smarthost_client_certificate = "{issued / 'relay-client.crt'}"
smarthost_client_key = "{issued / 'relay-client.key'}"
""")
        p.start()
        with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
            s.sendmail("a@mx.test", ["far@far.example"], b"Subject: over tls\r\n\r\nx\r\n")
        handler.wait()
        subject = dict(x[0] for x in handler.peercert["subject"])
        assert subject["commonName"] == "relay-client"
        line = wait_for(lambda: [l for l in p.log().splitlines() if l.split()[1:2] == ["delivered"] and "far@far.example" in l],
                        what="delivered line")[0]
        assert 'tls="TLSv1.3' in line and 'verified"' in line, line
    finally:
        c.stop()


def test_outbound_verify_refuses_unknown_ca(postern_factory, tmp_path):
    p = postern_factory(start=False)
    postern_ca(p)
    assert p.cli("ca", "issue", "server", "localhost").returncode == 0
    issued = p.data / "ca" / "issued"
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(issued / "localhost.crt", issued / "localhost.key")
    handler = SinkHandler()
    sport = free_port()
    c = Controller(handler, hostname="127.0.0.1", port=sport, decode_data=False, tls_context=ctx, require_starttls=True)
    c.start()
    other_ca, _ = make_cert(tmp_path / "otherca", "other CA")
    try:
        p.cfg.write_text(p.cfg.read_text() + f"""
[relay]
smarthost = "127.0.0.1:{sport}"
smarthost_tls = "verify"
smarthost_server_name = "localhost"
smarthost_ca_files = ["{other_ca}"]
""")
        p.start()
        with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
            s.sendmail("a@mx.test", ["far@far.example"], b"Subject: must not go\r\n\r\nx\r\n")
        line = wait_for(lambda: [l for l in p.log().splitlines() if "deferred id=" in l], what="deferral")[0]
        assert "4.7.5 TLS handshake" in line, line
        time.sleep(0.5)
        assert handler.messages == []
    finally:
        c.stop()


def test_implicit_tls_smarthost(postern_factory):
    p = postern_factory(start=False)
    postern_ca(p)
    assert p.cli("ca", "issue", "server", "localhost").returncode == 0
    issued = p.data / "ca" / "issued"
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(issued / "localhost.crt", issued / "localhost.key")
    handler = SinkHandler()
    sport = free_port()
    c = Controller(handler, hostname="127.0.0.1", port=sport, decode_data=False, ssl_context=ctx)
    c.start()
    try:
        p.cfg.write_text(p.cfg.read_text() + f"""
[relay]
smarthost = "127.0.0.1:{sport}"
smarthost_implicit_tls = true
smarthost_tls = "verify"
smarthost_server_name = "localhost"
""")
        p.start()
        with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
            s.sendmail("a@mx.test", ["far@far.example"], b"Subject: implicit\r\n\r\nx\r\n")
        handler.wait()
        line = wait_for(lambda: [l for l in p.log().splitlines() if "delivered id=" in l], what="delivered")[0]
        assert 'tls="TLSv1.3' in line and "verified" in line, line
    finally:
        c.stop()


def test_rsa_ca_and_expiry_warning(postern_factory, tmp_path):
    p = postern_factory(start=False)
    assert p.cli("ca", "init", "--rsa", "--name", "old clients CA").returncode == 0
    assert p.cli("ca", "issue", "server", "mx.test", "--rsa").returncode == 0
    # A server certificate that expires in 10 days, signed by the RSA CA.
    ca_key = serialization.load_pem_private_key((p.data / "ca" / "ca.key").read_bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    crt, key = make_cert(tmp_path / "soon", "mx.test", issuer_cn="old clients CA", issuer_key=ca_key,
                         not_after=now + datetime.timedelta(days=10))
    p.cfg.write_text(p.cfg.read_text().replace("[queue]", f'[tls]\ncertificate = "{crt}"\nkey = "{key}"\n[queue]'))
    p.start()
    log = p.log()
    assert "tls warning=\"expires soon\" what=\"server certificate\"" in log, log
    out = s_client(p.port)
    assert tls_ok(out)
    # The RSA-issued server certificate works too.
    issued = p.data / "ca" / "issued"
    p.kill9()
    p.cfg.write_text(p.cfg.read_text().replace(str(crt), str(issued / "mx.test.crt")).replace(str(key), str(issued / "mx.test.key")))
    p.start()
    out = s_client(p.port)
    assert tls_ok(out), out[-2000:]
    bits = int(re.search(r"Server public key is (\d+) bit", out).group(1))
    assert bits >= 2048, out[-2000:]  # RSA (an ECDSA P-256 key shows 256)
