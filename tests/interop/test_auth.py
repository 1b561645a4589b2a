"""SMTP AUTH with real clients: swaks (PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5),
gsasl (SCRAM-SHA-256, SCRAM-SHA-256-PLUS, CRAM-MD5, DIGEST-MD5), msmtp, curl, Python smtplib;
the TLS-only policy, wrong passwords, the throttle, EXTERNAL, imports from a
real sasldb2 (saslpasswd2) and a Dovecot passwd-file (doveadm pw), and
postern as SASL client of a second postern that demands AUTH."""

import base64
import re
import smtplib
import ssl
import subprocess
import time

import pytest

from conftest import BASE_CONFIG, ROOT, free_port, require, swaks, swaks_full, wait_for

PASSWORD = 'pa ss:wörd "#1"!'

# Only authentication may relay: no relay networks.
AUTH_CONFIG = BASE_CONFIG + """
[relay]
networks = []
smarthost = "127.0.0.1:{port2}"
"""


def unverified():
    return ssl._create_unverified_context()


def add_user(p, name, pw=PASSWORD, *extra):
    r = p.cli("user", "add", name, "--password-stdin", *extra, input=(pw + "\n").encode())
    assert r.returncode == 0, r.stderr
    return name


@pytest.fixture
def authp(postern_factory, sink):
    cfg = AUTH_CONFIG.replace("{port2}", str(sink.port))
    p = postern_factory(cfg.replace("[queue]", '[auth]\nmechanisms = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5"]\n[queue]'))
    add_user(p, "alice")
    p.sink = sink
    return p


def relayed(p, n=1):
    return p.sink.wait(n)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5"])
def test_swaks_auth_mechanisms_relay(authp, mech):
    r = swaks("--server", f"127.0.0.1:{authp.port}", "--tls", "--auth", mech, "--auth-user", "alice",
              "--auth-password", PASSWORD, "--from", "alice@mx.test", "--to", "friend@far.example",
              "--header", f"Subject: {mech}")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = relayed(authp)
    assert msgs[0]["rcpt_tos"] == ["friend@far.example"]
    assert b"with ESMTPSA id" in msgs[0]["data"]
    assert f"auth client=[127.0.0.1]" in authp.log() and f"mechanism={mech} user=alice result=ok" in authp.log()


def gsasl(port, mech, user, pw, *extra):
    require("gsasl")
    return subprocess.run(["gsasl", "--client", "--smtp", f"--connect=127.0.0.1:{port}", f"--mechanism={mech}",
                           f"--authentication-id={user}", f"--password={pw}", "--x509-ca-file=", *extra],
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)


def test_gsasl_scram_and_cram(authp):
    for mech, extra in [("SCRAM-SHA-256-PLUS", []), ("SCRAM-SHA-256", ["--no-cb"]), ("CRAM-MD5", []), ("DIGEST-MD5", [])]:
        r = gsasl(authp.port, mech, "alice", PASSWORD, *extra)
        assert r.returncode == 0, (mech, r.stdout, r.stderr)
        assert f"mechanism={mech} user=alice result=ok" in authp.log(), mech
    # A wrong password fails SCRAM too.
    assert gsasl(authp.port, "SCRAM-SHA-256-PLUS", "alice", "wrong").returncode != 0
    assert "mechanism=SCRAM-SHA-256-PLUS user=alice result=fail" in authp.log()
    # SCRAM-SHA-256 with gs2 flag "y" (client could bind) while we offer -PLUS: downgrade refused.
    with smtplib.SMTP("127.0.0.1", authp.port, timeout=10) as s:
        s.starttls(context=unverified())
        s.ehlo("c.example")
        first = base64.b64encode(b"y,,n=alice,r=abcdefghijklmnop").decode()
        assert s.docmd("AUTH", f"SCRAM-SHA-256 {first}")[0] == 535
    assert "downgrade detected" in authp.log()


def test_msmtp_and_curl(authp, tmp_path):
    require("msmtp")
    conf = tmp_path / "msmtprc"
    conf.write_text(f"""account default
host 127.0.0.1
port {authp.port}
tls on
tls_starttls on
tls_certcheck off
auth on
user alice
password {PASSWORD}
from alice@mx.test
""")
    conf.chmod(0o600)
    r = subprocess.run(["msmtp", "-C", str(conf), "friend@far.example"], input=b"Subject: msmtp\r\n\r\nvia msmtp\r\n",
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: curl auth\r\n\r\nvia curl\r\n")
    require("curl")
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "--insecure", f"smtp://127.0.0.1:{authp.port}",
                        "--login-options", "AUTH=LOGIN", "--user", f"alice:{PASSWORD}", "--mail-from", "alice@mx.test",
                        "--mail-rcpt", "other@far.example", "--upload-file", str(msg)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    msgs = relayed(authp, 2)
    bodies = b"".join(m["data"] for m in msgs)
    assert b"via msmtp" in bodies and b"via curl" in bodies


def test_smtplib_and_policy(authp):
    # Before TLS: no AUTH offered, AUTH refused with 538, relaying closed.
    with smtplib.SMTP("127.0.0.1", authp.port, timeout=10) as s:
        s.ehlo("c.example")
        assert not s.has_extn("auth")
        code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode())
        assert (code, text) == (538, b"5.7.11 Encryption required for requested authentication mechanism")
        s.mail("alice@mx.test")
        assert s.rcpt("friend@far.example")[0] == 550
    add_user(authp, "bob", 'pa ss:word "#1"!')  # smtplib's CRAM-MD5 only takes ASCII
    for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
        with smtplib.SMTP("127.0.0.1", authp.port, timeout=10) as s:
            s.starttls(context=unverified())
            s.ehlo("c.example")
            assert mech in s.esmtp_features["auth"]
            s.user, s.password = "bob", 'pa ss:word "#1"!'
            code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower().replace("-", "_")))
            assert code == 235, mech
            s.sendmail("alice@mx.test", ["far@far.example"], f"Subject: smtplib {mech}\r\n\r\nx\r\n".encode())
    relayed(authp, 3)
    # Wrong password: 535 5.7.8 and still no relay.
    with smtplib.SMTP("127.0.0.1", authp.port, timeout=10) as s:
        s.starttls(context=unverified())
        s.ehlo("c.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice", "not the password")
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8")
        s.mail("alice@mx.test")
        assert s.rcpt("friend@far.example")[0] == 550
        s.rset()
        # Cancel and malformed base64.
        assert s.docmd("AUTH", "LOGIN")[0] == 334
        assert s.docmd("*") == (501, b"5.7.0 Authentication cancelled")
        assert s.docmd("AUTH", "PLAIN !!!notbase64")[:1] == (501,)
        assert s.docmd("AUTH", "ANONYMOUS")[0] == 504
    assert "user=alice result=fail" in authp.log()


def test_throttle_engages_and_releases(postern_factory):
    # Loopback is exempt from bans by default (a local webmail): take it out here.
    cfg = BASE_CONFIG.replace("[queue]", '[auth]\nmax_failures_per_ip = 3\ndelay_after = 1\nban_time = "3s"\nban_exempt_networks = []\n[queue]')
    p = postern_factory(cfg)
    add_user(p, "bob", "right")

    def attempt(pw):
        with smtplib.SMTP("127.0.0.1", p.port, timeout=20) as s:
            s.starttls(context=unverified())
            s.ehlo("c.example")
            s.user, s.password = "bob", pw
            try:
                return s.auth("PLAIN", s.auth_plain)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    assert attempt("wrong") == 535
    t = time.time()
    assert attempt("wrong") == 535
    assert time.time() - t >= 0.9, "second failure must be delayed"
    assert attempt("wrong") == 535
    assert attempt("right") == 454, "banned client must get 454 4.7.0 even with the right password"
    time.sleep(3.5)
    assert attempt("right") == 235
    # The fail2ban filter matches our failure lines and finds the address.
    conf = (ROOT / "contrib" / "fail2ban" / "filter.d" / "postern.conf").read_text()
    rx = re.search(r"^failregex = (.*)$", conf, re.M).group(1).replace("<HOST>", r"(?P<host>\S+)")
    hits = [m.group("host") for m in map(re.compile(rx).search, p.log().splitlines()) if m]
    assert hits.count("127.0.0.1") == 3, hits


def test_submission_requires_auth_and_sender_match(postern_factory, sink):
    cfg = (AUTH_CONFIG.replace("{port2}", str(sink.port))
           .replace('[[listener]]\naddress = "127.0.0.1:{port}"\n', '[[listener]]\naddress = "127.0.0.1:{port}"\nrole = "submission"\n')
           .replace("[queue]", "[auth]\nsender_login_match = true\nbroken_auth_line = true\n[queue]"))
    p = postern_factory(cfg)
    add_user(p, "carol", "c-pass", "--address", "carol@company.example")
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.starttls(context=unverified())
        code, banner = s.ehlo("c.example")
        assert b"AUTH=SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN" in banner
        assert s.mail("carol@mx.test") == (530, b"5.7.0 Authentication required")
        s.rset()
        s.login("carol", "c-pass")
        assert s.docmd("AUTH", "PLAIN")[0] == 503
        code, text = s.mail("boss@company.example")
        assert code == 553 and text.startswith(b"5.7.1"), text
        s.rset()
        assert s.mail("carol@company.example")[0] == 250
        s.rset()
        # RFC 4954 §5: the AUTH= parameter of MAIL.
        assert s.docmd("MAIL", "FROM:<carol@mx.test> AUTH=<carol@mx.test>")[0] == 250
        assert s.rcpt("someone@far.example")[0] == 250
        code, _ = s.data(b"Subject: submitted\r\n\r\nx\r\n")
        assert code == 250
    sink.wait()


def test_external_with_client_certificate(postern_factory):
    cfg = BASE_CONFIG.replace('[[listener]]\naddress = "127.0.0.1:{port}"\n',
                              '[[listener]]\naddress = "127.0.0.1:{port}"\nclient_certificates = "optional"\n')
    cfg = cfg.replace("[queue]", '[auth]\nmechanisms = ["EXTERNAL", "PLAIN"]\n[queue]')
    p = postern_factory(cfg)
    assert p.cli("ca", "init").returncode == 0
    assert p.cli("ca", "issue", "client", "alice", "--p12-password", "x").returncode == 0
    add_user(p, "alice")
    wait_for(lambda: "reload=ok" in p.log(), timeout=30, what="CA picked up")  # the TLS file watch polls every 5 s
    issued = p.data / "ca" / "issued"
    ctx = unverified()
    ctx.load_cert_chain(issued / "alice.crt", issued / "alice.key")
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.starttls(context=ctx)
        s.ehlo("c.example")
        assert "EXTERNAL" in s.esmtp_features["auth"]
        assert s.docmd("AUTH", "EXTERNAL =") == (235, b"2.7.0 Authentication successful")
    assert "mechanism=EXTERNAL user=alice result=ok" in p.log()
    # Without a certificate EXTERNAL is not offered.
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.starttls(context=unverified())
        s.ehlo("c.example")
        assert "EXTERNAL" not in s.esmtp_features["auth"]
        assert s.docmd("AUTH", "EXTERNAL =")[0] == 504


def test_import_sasldb_and_passwd_file(postern_factory, tmp_path):
    require("saslpasswd2")
    require("doveadm")
    db = tmp_path / "sasldb2"
    r = subprocess.run(["saslpasswd2", "-f", str(db), "-c", "-p", "-u", "mx.test", "sasluser"],
                       input=b"from the sasl db", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    p = postern_factory()
    r = p.cli("user", "import-sasldb", str(db))
    assert r.returncode == 0 and b"sasluser" in r.stdout, r.stderr
    h = subprocess.run(["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", "dove pass"], capture_output=True, timeout=30)
    assert h.returncode == 0, h.stderr
    bc = subprocess.run(["doveadm", "pw", "-s", "BLF-CRYPT", "-p", "blow fish"], capture_output=True, timeout=60)
    assert bc.returncode == 0, bc.stderr
    pf = tmp_path / "passwd"
    pf.write_text(f"dove:{h.stdout.decode().strip()}::::::\nfish:{bc.stdout.decode().strip()}::::::\n")
    r = p.cli("user", "import-passwd", str(pf))
    assert r.returncode == 0 and b"dove" in r.stdout and b"fish" in r.stdout, r.stderr
    for user, pw in [("sasluser", "from the sasl db"), ("dove", "dove pass"), ("fish", "blow fish")]:
        with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
            s.starttls(context=unverified())
            s.ehlo("c.example")
            assert s.login(user, pw)[0] == 235, user
    assert p.cli("user", "verify", "dove", "--password-stdin", input=b"dove pass\n").returncode == 0
    assert p.cli("user", "verify", "dove", "--password-stdin", input=b"nope\n").returncode == 1
    listing = p.cli("user", "list").stdout.decode()
    assert "sasluser" in listing and "imported-hash" in listing


def test_user_database_file_and_reload(postern):
    add_user(postern, "eve", "first")
    f = postern.data / "users.json"
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    text = f.read_text()
    assert "$argon2id$" in text and "scram_sha256" in text and "first" not in text
    with smtplib.SMTP("127.0.0.1", postern.port, timeout=10) as s:
        s.starttls(context=unverified())
        s.ehlo("c.example")
        assert s.login("eve", "first")[0] == 235
    # Changed on disk while running: picked up without restart.
    assert postern.cli("user", "passwd", "eve", "--password-stdin", input=b"second\n").returncode == 0
    with smtplib.SMTP("127.0.0.1", postern.port, timeout=10) as s:
        s.starttls(context=unverified())
        s.ehlo("c.example")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("eve", "first")
    with smtplib.SMTP("127.0.0.1", postern.port, timeout=10) as s:
        s.starttls(context=unverified())
        s.ehlo("c.example")
        assert s.login("eve", "second")[0] == 235
    assert postern.cli("user", "del", "eve").returncode == 0


def test_postern_as_sasl_client_of_postern(postern_factory, sink):
    # Upstream: a postern that relays only for authenticated users, then to the sink.
    up_cfg = AUTH_CONFIG.replace("{port2}", str(sink.port))
    up = postern_factory(up_cfg, name="up")
    add_user(up, "relayuser", "relay pass")
    # Downstream: relays everything through upstream, with TLS and SCRAM.
    pwfile = up.dir / "smarthost.pw"
    pwfile.write_text("relay pass\n")
    pwfile.chmod(0o600)
    down_cfg = BASE_CONFIG + f"""
[relay]
smarthost = "127.0.0.1:{up.port}"
smarthost_tls = "encrypt"
smarthost_username = "relayuser"
smarthost_password_file = "{pwfile}"
"""
    down = postern_factory(down_cfg, name="down")
    with smtplib.SMTP("127.0.0.1", down.port, timeout=10) as s:
        s.sendmail("x@mx.test", ["far@far.example"], b"Subject: via two posterns\r\n\r\nx\r\n")
    msgs = sink.wait()
    assert msgs[0]["rcpt_tos"] == ["far@far.example"]
    assert b"with ESMTPSA id" in msgs[0]["data"]
    assert "mechanism=SCRAM-SHA-256 user=relayuser result=ok" in up.log()
    line = wait_for(lambda: [l for l in down.log().splitlines() if "delivered id=" in l], what="delivery")[0]
    assert "auth SCRAM-SHA-256 as relayuser" in line, line
    # Never before TLS: with smarthost_tls = "none", the credentials are not sent.
    bad = postern_factory(down_cfg.replace('smarthost_tls = "encrypt"', 'smarthost_tls = "none"'), name="bad")
    with smtplib.SMTP("127.0.0.1", bad.port, timeout=10) as s:
        s.sendmail("x@mx.test", ["far2@far.example"], b"Subject: must not\r\n\r\nx\r\n")
    line = wait_for(lambda: [l for l in bad.log().splitlines() if "deferred id=" in l], what="deferral")[0]
    assert "refusing to send credentials" in line, line


def test_smarthost_password_never_over_unverified_tls(postern_factory, sink):
    # F8: a smarthost (or a man in the middle) with a certificate that does not
    # verify, offering only PLAIN and LOGIN, never gets the password: the mail waits.
    up_cfg = AUTH_CONFIG.replace("{port2}", str(sink.port)).replace("[queue]", '[auth]\nmechanisms = ["PLAIN", "LOGIN"]\n[queue]')
    up = postern_factory(up_cfg, name="up")
    add_user(up, "relayuser", "relay pass")
    pwfile = up.dir / "smarthost.pw"
    pwfile.write_text("relay pass\n")
    pwfile.chmod(0o600)
    down_cfg = BASE_CONFIG + f"""
[relay]
smarthost = "127.0.0.1:{up.port}"
smarthost_tls = "encrypt"
smarthost_username = "relayuser"
smarthost_password_file = "{pwfile}"
"""
    down = postern_factory(down_cfg, name="down")
    with smtplib.SMTP("127.0.0.1", down.port, timeout=10) as s:
        s.sendmail("x@mx.test", ["far@far.example"], b"Subject: must wait\r\n\r\nx\r\n")
    line = wait_for(lambda: [l for l in down.log().splitlines() if "deferred id=" in l], what="deferral")[0]
    assert "certificate did not verify" in line and "4.7.0" in line, line
    assert "mechanism=PLAIN" not in up.log() and "mechanism=LOGIN" not in up.log()
    # config check explains the fix.
    r = down.cli("config", "check", str(down.cfg))
    err, out = r.stderr.decode(), r.stdout.decode()
    assert r.returncode == 0 and 'smarthost_tls = "verify"' in err, err
    assert "(with warnings)" in out, out
