"""`postern check smarthost`, the smarthost self-test, against real peers:
the aiosmtpd sink (plain SMTP, --send-test delivers one message there), a
real Postfix with STARTTLS, a server certificate from postern's CA and a
REQUIRED client certificate (good certificate, none, a CA that does not
know the server), and a second postern that demands AUTH (trial login,
right and wrong password); the --json shape and the exit codes."""

import json
import os
import shutil
import tempfile

from conftest import BASE_CONFIG, free_port
from test_relay import Postfix

SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


def check(p, *args):
    r = p.cli("check", "smarthost", *args)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def line(out, step):
    """The verdict line of one step ("OK   tls: ...")."""
    found = [l for l in out.splitlines() if l.split(" ", 1)[-1].lstrip().startswith(step + ":")]
    assert len(found) == 1, (step, out)
    return found[0]


def test_plain_sink_and_send_test(postern_factory, sink):
    p = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{sink.port}"\n', start=False)
    rc, out, err = check(p)
    assert rc == 0, out + err
    assert line(out, "dns").startswith("OK") and "resolves to 127.0.0.1" in out
    assert line(out, "connect").startswith("OK") and "greeting: 220" in out
    assert line(out, "ehlo").startswith("OK") and "8BITMIME" in line(out, "ehlo")
    # The sink offers no STARTTLS: mail goes, in clear, and the check says so.
    assert line(out, "tls").startswith("WARN") and "does not offer STARTTLS" in out
    assert line(out, "transaction").startswith("OK") and "RSET: 250" in out
    assert line(out, "verdict").startswith("OK")
    assert sink.messages == []
    rc, out, err = check(p, "--send-test", "someone@far.example")
    assert rc == 0, out + err
    assert line(out, "transaction").startswith("OK") and "accepted: 250" in out
    msgs = sink.wait(1)
    assert msgs[0]["rcpt_tos"] == ["someone@far.example"]
    assert msgs[0]["mail_from"] == "postmaster@mx.test"
    assert b"Subject: postern smarthost test from mx.test" in msgs[0]["data"]
    # A refused recipient is a FAIL of the transaction step, exit 69.
    rc, out, _ = check(p, "--send-test", "reject@far.example")
    assert rc == 69 and line(out, "transaction").startswith("FAIL") and "550" in out, out


def test_json_shape_and_connect_failure(postern_factory, sink):
    p = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{sink.port}"\n', start=False)
    rc, out, err = check(p, "--json")
    assert rc == 0, out + err
    j = json.loads(out)
    assert j["verdict"] == "OK" and j["exit_code"] == 0 and j["target"] == "smarthost"
    assert j["endpoint"] == f"127.0.0.1:{sink.port}"
    assert [s["step"] for s in j["steps"]] == ["dns", "connect", "ehlo", "tls", "certificate", "client_certificate", "auth", "transaction"]
    for s in j["steps"]:
        assert s["verdict"] in ("OK", "WARN", "FAIL", "SKIP") and s["text"], s
    assert [s for s in j["steps"] if s["step"] == "tls"][0]["fix"]
    # Nobody listening: connect FAILs, the rest is not reached, exit 75 (try later).
    dead = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{free_port()}"\n', start=False, name="dead")
    rc, out, _ = check(dead, "--json")
    j = json.loads(out)
    assert rc == 75 and j["verdict"] == "FAIL" and j["exit_code"] == 75
    steps = {s["step"]: s for s in j["steps"]}
    assert steps["connect"]["verdict"] == "FAIL" and "refused" in steps["connect"]["text"].lower()
    assert steps["transaction"]["verdict"] == "SKIP"
    # No smarthost at all: a configuration error.
    none = postern_factory(start=False, name="none")
    rc, _, err = check(none)
    assert rc == 78 and "relay.smarthost is not configured" in err


def test_route_by_domain(postern_factory, sink):
    cfg = BASE_CONFIG + f"""
[[route]]
domains = ["partner.example"]
transport = "smtp"
next_hop = "127.0.0.1:{sink.port}"
"""
    p = postern_factory(cfg, start=False)
    rc, out, err = check(p, "partner.example", "--send-test", "x@partner.example")
    assert rc == 0, out + err
    assert "route partner.example" in line(out, "verdict")
    assert sink.wait(1)[0]["rcpt_tos"] == ["x@partner.example"]
    rc, _, err = check(p, "nowhere.example")
    assert rc == 64 and "no [[route]]" in err


def postfix_requiring_client_certs(ca_dir, stage):
    for name in ("localhost.crt", "localhost.key"):
        shutil.copy(ca_dir / "issued" / name, os.path.join(stage, name))
        os.chmod(os.path.join(stage, name), 0o644)
    shutil.copy(ca_dir / "ca.crt", os.path.join(stage, "ca.crt"))
    return Postfix(f"""mynetworks = 127.0.0.0/8
smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = {stage}/localhost.crt
smtpd_tls_key_file = {stage}/localhost.key
smtpd_tls_CAfile = {stage}/ca.crt
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
""", free_port())


def test_postfix_requiring_a_client_certificate(postern_factory):
    sat = postern_factory(start=False, name="sat")
    assert sat.cli("ca", "init").returncode == 0
    assert sat.cli("ca", "issue", "client", "satellite", "--p12-password", "x").returncode == 0
    assert sat.cli("ca", "issue", "server", "localhost").returncode == 0
    other = postern_factory(start=False, name="other")
    assert other.cli("ca", "init").returncode == 0
    issued = sat.data / "ca" / "issued"
    stage = tempfile.mkdtemp(prefix="postern-pfkeys-")
    os.chmod(stage, 0o755)
    pf = None
    base = sat.cfg.read_text()
    try:
        pf = postfix_requiring_client_certs(sat.data / "ca", stage)
        relay = f"""
[relay]
smarthost = "127.0.0.1:{pf.port}"
smarthost_tls = "verify"
smarthost_server_name = "localhost"
smarthost_ca_files = ["{{ca}}"]
"""
        cert = f"""smarthost_client_certificate = "{issued / 'satellite.crt'}"
smarthost_client_key = "{issued / 'satellite.key'}"
"""
        # 1. The good client certificate: every step passes.
        sat.cfg.write_text(base + relay.replace("{ca}", str(sat.data / "ca" / "ca.crt")) + cert)
        rc, out, err = check(sat)
        assert rc == 0, out + err + pf.log()
        assert line(out, "tls").startswith("OK") and "STARTTLS: TLSv1." in out
        assert line(out, "certificate").startswith("OK") and 'verifies for "localhost"' in out
        assert "subject: CN=localhost" in out and "issuer: CN=postern CA" in out and "SANs: DNS:localhost" in out
        cc = line(out, "client_certificate")
        assert cc.startswith("OK") and "requested (acceptable CAs: CN=postern CA)" in cc, out
        assert "sent CN=satellite" in cc and "accepted" in cc, out
        assert line(out, "verdict").startswith("OK")
        # 2. No client certificate: the server refuses; the FAIL names the client certificate step.
        sat.cfg.write_text(base + relay.replace("{ca}", str(sat.data / "ca" / "ca.crt")))
        rc, out, err = check(sat, "--json")
        j = json.loads(out)
        steps = {s["step"]: s for s in j["steps"]}
        assert rc == 69, out + err + pf.log()
        assert steps["client_certificate"]["verdict"] == "FAIL", out
        assert "none sent" in steps["client_certificate"]["text"]
        assert "smarthost_client_certificate" in steps["client_certificate"]["fix"]
        assert steps["certificate"]["verdict"] == "OK"
        assert "client_certificate" in j["summary"]
        # 3. CAs that did not issue the server's certificate (the system bundle): verification
        #    FAILs with the reason and the fix, the chain is still shown.
        assert os.path.exists(SYSTEM_CAS), "ca-certificates is not installed: run scripts/install-test-deps"
        sat.cfg.write_text(base + relay.replace("{ca}", SYSTEM_CAS) + cert)
        rc, out, err = check(sat)
        assert rc == 69, out + err
        c = line(out, "certificate")
        assert c.startswith("FAIL") and "unknown issuer" in c and "smarthost_ca_files" in c, out
        assert "subject: CN=localhost" in out
        assert line(out, "verdict").startswith("FAIL")
        # 4. Another postern CA with the same name: a look-alike issuer, also refused.
        sat.cfg.write_text(base + relay.replace("{ca}", str(other.data / "ca" / "ca.crt")) + cert)
        rc, out, err = check(sat)
        assert rc == 69 and line(out, "certificate").startswith("FAIL") and "bad signature" in out, out + err
    finally:
        if pf:
            pf.stop()
        shutil.rmtree(stage, ignore_errors=True)


def test_trial_login_against_postern(postern_factory, sink):
    up = postern_factory(BASE_CONFIG + f'\n[relay]\nnetworks = []\nsmarthost = "127.0.0.1:{sink.port}"\n', name="up")
    r = up.cli("user", "add", "relayuser", "--password-stdin", input=b"relay pass\n")
    assert r.returncode == 0, r.stderr
    pwfile = up.dir / "smarthost.pw"
    pwfile.write_text("relay pass\n")
    pwfile.chmod(0o600)
    cfg = BASE_CONFIG + f"""
[relay]
smarthost = "127.0.0.1:{up.port}"
smarthost_tls = "encrypt"
smarthost_username = "relayuser"
smarthost_password_file = "{pwfile}"
"""
    down = postern_factory(cfg, start=False, name="down")
    rc, out, err = check(down, "--send-test", "friend@far.example")
    assert rc == 0, out + err
    a = line(out, "auth")
    assert a.startswith("OK") and "SCRAM-SHA-256" in a and "trial login as relayuser" in a and "235" in a, out
    # Encrypted but not verified: a warning that says how to fix it.
    assert line(out, "certificate").startswith("WARN") and 'smarthost_tls = "verify"' in line(out, "certificate")
    assert "relay pass" not in out + err
    assert sink.wait(1)[0]["rcpt_tos"] == ["friend@far.example"]
    # A wrong password: the auth step FAILs with the server's 535, exit 69, and the password is not shown.
    pwfile.write_text("wrong pass\n")
    rc, out, err = check(down)
    assert rc == 69, out + err
    a = line(out, "auth")
    assert a.startswith("FAIL") and "535" in a and "smarthost_password_file" in a, out
    assert "wrong pass" not in out + err
