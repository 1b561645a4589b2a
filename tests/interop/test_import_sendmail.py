"""`postern import sendmail` against REAL sendmail: decision parity.

For each configuration in tests/interop/parity/ (sendmail-*.mc, its access
map, aliases, relay-domains, mailertable, a sasldb2 made with saslpasswd2):

1. sendmail.cf is generated from the .mc with m4 and the sendmail-cf macros
   unpacked by scripts/install-test-deps (target/sendmail-root: sendmail-bin
   conflicts with the postfix package, so it is never installed), and the
   unpacked sendmail runs as a private daemon (-bD, its own queue directory,
   loopback ports) inside `unshare --uts --mount`: its own host name mx.test,
   and a private Cyrus SASL directory (Sendmail.conf naming the test's
   sasldb2) bind-mounted over the system's plugin directory, so nothing of
   the machine changes. It is stopped by PID.
2. `postern import sendmail` converts the same files; postern runs the result.
3. The parity table (sendmail-*.toml, `import::parity::Probe` format) is
   replayed against both, from the probe's client address (any 127/8 address
   is bound as source), with STARTTLS / implicit TLS, client certificates
   (trusted, look-alike CA, self-signed) and AUTH PLAIN; the reply classes at
   AUTH, MAIL and each RCPT are compared. Every difference must be one of the
   deliberate postern choices listed in EXPLAINED (docs/migration-sendmail.md).
"""

import base64
import os
import pathlib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tomllib

import pytest

from conftest import BIN, Postern, free_port, require, wait_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
PARITY = ROOT / "tests" / "interop" / "parity"
SM_ROOT = ROOT / "target" / "sendmail-root"
SM_BIN = SM_ROOT / "usr" / "libexec" / "sendmail" / "sendmail"
SM_MAKEMAP = SM_ROOT / "usr" / "libexec" / "sendmail" / "makemap"
SM_CF = SM_ROOT / "usr" / "share" / "sendmail" / "cf"
SASL_PLUGINS = pathlib.Path("/usr/lib/x86_64-linux-gnu/sasl2")
PASSWORD = "alice-secret"


def require_sendmail():
    for tool in ("m4", "saslpasswd2", "unshare", "openssl", "mount"):
        require(tool)
    assert SM_BIN.exists(), f"{SM_BIN} missing: run scripts/install-test-deps (downloads and unpacks sendmail-bin)"
    assert (SM_CF / "m4" / "cf.m4").exists(), "sendmail-cf macros missing: run scripts/install-test-deps"
    assert SASL_PLUGINS.is_dir(), "Cyrus SASL plugins missing (libsasl2-modules)"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d):
    """CA "CN=Parity Test CA"; server CN=mx.test; client CN=gw.test (trusted);
    a look-alike CA with the same name and another key, and CN=gw.test from
    it; a self-signed CN=gw.test."""
    d.mkdir()
    ext = d / "ext.cnf"
    ext.write_text("[srv]\nsubjectAltName=DNS:mx.test\nextendedKeyUsage=serverAuth\n[cli]\nextendedKeyUsage=clientAuth\n")
    for ca in ("ca", "lookalike-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "30",
                "-subj", "/CN=Parity Test CA", cwd=d)

    def leaf(name, cn, ca, section):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial", "-out",
                f"{name}.crt", "-days", "30", "-extfile", "ext.cnf", "-extensions", section, cwd=d)

    leaf("server", "mx.test", "ca", "srv")
    leaf("gw", "gw.test", "ca", "cli")
    leaf("lookalike", "gw.test", "lookalike-ca", "cli")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "selfsigned.key", "-out", "selfsigned.crt", "-days", "30",
            "-subj", "/CN=gw.test", cwd=d)
    for p in d.iterdir():
        p.chmod(0o600)
    return {"trusted": (d / "gw.crt", d / "gw.key"), "look-alike": (d / "lookalike.crt", d / "lookalike.key"),
            "self-signed": (d / "selfsigned.crt", d / "selfsigned.key")}


class Sendmail:
    """The unpacked sendmail as a private daemon for one configuration."""

    def __init__(self, d, name, ports):
        self.d = d
        self.ports = ports
        subst = {"@DIR@": str(d), "@SMTP@": str(ports["smtp"]), "@SMTPS@": str(ports["smtps"]),
                 "@SUBMISSION@": str(ports["submission"]), "@SINK@": str(ports["sink"])}

        def copy(src, dst):
            text = (PARITY / src).read_text()
            for k, v in subst.items():
                text = text.replace(k, v)
            (d / dst).write_text(text)

        copy(f"sendmail-{name}.mc", "sendmail.mc")
        copy("sendmail.aliases", "aliases")
        for ext in ("access", "relay-domains", "mailertable"):
            if (PARITY / f"sendmail-{name}.{ext}").exists():
                copy(f"sendmail-{name}.{ext}", ext)
        cf = subprocess.run(["m4", f"-D_CF_DIR_={SM_CF}/", str(SM_CF / "m4" / "cf.m4"), str(d / "sendmail.mc")],
                            capture_output=True, text=True, timeout=60)
        assert cf.returncode == 0 and not cf.stderr.strip(), cf.stderr
        (d / "sendmail.cf").write_text(cf.stdout)
        (d / "queue").mkdir()
        (d / "service.switch").write_text("hosts files\naliases files\n")
        # Sendmail.conf in a private copy of the SASL plugin directory.
        sasl = d / "sasl2"
        shutil.copytree(SASL_PLUGINS, sasl, symlinks=True)
        (sasl / "Sendmail.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {d}/sasldb2\nmech_list: PLAIN LOGIN\n")
        subprocess.run(["saslpasswd2", "-f", str(d / "sasldb2"), "-c", "-p", "-u", "mx.test", "alice"], input=PASSWORD.encode(),
                       check=True, timeout=30, capture_output=True)
        (d / "sasldb2").chmod(0o600)
        self.opts = ["-C", str(d / "sendmail.cf"), "-O", f"QueueDirectory={d}/queue", "-O", f"PidFile={d}/sendmail.pid",
                     "-O", "DontBlameSendmail=TrustStickyBit,GroupReadableSASLDBFile", "-O", f"ServiceSwitchFile={d}/service.switch",
                     "-O", f"StatusFile={d}/statistics", "-O", "LogLevel=14"]
        for m in ("access", "mailertable"):
            if (d / m).exists():
                r = subprocess.run([str(SM_MAKEMAP), *self.opts[:2], "hash", str(d / m)], stdin=open(d / m), capture_output=True,
                                   timeout=30, text=True)
                assert r.returncode == 0, r.stderr
        # sendmail sleeps a minute on an unqualified host name: give it mx.test.
        script = f"hostname mx.test && exec {SM_BIN} " + " ".join(f"'{o}'" for o in self.opts) + " -bi"
        r = subprocess.run(["unshare", "--uts", "sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        self.proc = None

    def start(self):
        script = (f"mount --bind {self.d}/sasl2 {SASL_PLUGINS} && hostname mx.test && "
                  f"exec {SM_BIN} -bD " + " ".join(f"'{o}'" for o in self.opts))
        self.log = open(self.d / "sendmail.out", "ab")
        self.proc = subprocess.Popen(["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.ports["smtp"], timeout=30, proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        # Wait until the ports are free for postern (sendmail's children end with it).
        for p in self.ports.values():
            for _ in range(100):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind(("127.0.0.1", p))
                        break
                    except OSError:
                        import time
                        time.sleep(0.1)


def klass(code):
    if code is None:
        return "NotReached"
    if code < 400:
        return "Accept"
    return "TempFail" if code < 500 else "PermFail"


def replay(probe, ports, certs):
    """One probe: the reply classes at AUTH, MAIL and each RCPT."""
    verdict = {"auth": "NotReached" if probe.get("auth") else None, "mail": "NotReached",
               "rcpts": ["NotReached"] * len(probe["rcpts"])}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    cert = probe.get("cert", "none")
    if cert != "none":
        ctx.load_cert_chain(*certs[cert])
    src = (probe["client_ip"], 0)
    port = ports[probe["port"]]
    try:
        if probe["port"] == "smtps":
            s = smtplib.SMTP_SSL("127.0.0.1", port, source_address=src, context=ctx, timeout=20)
        else:
            s = smtplib.SMTP("127.0.0.1", port, source_address=src, timeout=20)
        with s:
            s.ehlo("client.test")
            if probe.get("starttls") and probe["port"] != "smtps":
                # A refused STARTTLS (sendmail refuses it to rejected
                # clients) leaves the session in plaintext: go on.
                if s.has_extn("starttls") and s.docmd("STARTTLS")[0] == 220:
                    s.sock = ctx.wrap_socket(s.sock)
                    s.file = None
                    s.helo_resp = s.ehlo_resp = None
                    s.esmtp_features = {}
                    s.does_esmtp = False
                    s.ehlo("client.test")
            if probe.get("auth"):
                if s.has_extn("auth") and "PLAIN" in s.esmtp_features.get("auth", "").upper().split():
                    user, pw = probe["auth"]
                    token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
                    verdict["auth"] = klass(s.docmd("AUTH", "PLAIN " + token)[0])
            frm = probe["mail_from"]
            code, _ = s.docmd("MAIL", f"FROM:<{frm}>")
            verdict["mail"] = klass(code)
            if code < 400:
                for i, r in enumerate(probe["rcpts"]):
                    verdict["rcpts"][i] = klass(s.docmd("RCPT", f"TO:<{r}>")[0])
            try:
                s.docmd("QUIT")
            except smtplib.SMTPException:
                pass
    except (smtplib.SMTPException, OSError, ssl.SSLError):
        pass
    return verdict


# Deliberate postern choices (docs/migration-sendmail.md, "Decisions that
# differ"): (predicate over config, probe, step, sendmail's class, postern's
# class) -> why.
def explain(config, probe, step, src, dst):
    rcpt = probe["rcpts"][int(step.split()[1]) - 1] if step.startswith("rcpt") else ""
    local = rcpt.split("@")[0] if "@" in rcpt else rcpt
    if "%" in local and src == "Accept" and dst == "PermFail":
        return "postern never routes by '%' in a local part (sendmail's percent hack relays it for relaying clients)"
    if local.startswith('"') and src == "Accept" and dst == "PermFail":
        return "postern does not unquote a quoted local part for local delivery (\"alice\"@ is not alice@)"
    if rcpt.endswith("@[127.0.0.1]") and src == "PermFail" and dst == "Accept":
        return ("sendmail counts its own address literals as local domains (x@[127.0.0.1] is an unknown local user); "
                "postern treats an address literal as another domain, relayed for relaying clients (delivery then bounces 5.4.6)")
    if step == "auth" and src == "NotReached" and probe["client_ip"] == "127.0.0.4":
        return "sendmail offers nothing (no AUTH) to a client its access map REJECTs; postern offers AUTH and refuses at RCPT"
    if step == "mail" and src == "PermFail" and dst == "Accept" and probe["client_ip"] == "127.0.0.4":
        return "postern refuses a client's access-map REJECT at RCPT (as FEATURE(delay_checks) does), not at MAIL"
    if step.startswith("rcpt") and src == "NotReached" and dst == "PermFail" and probe["client_ip"] == "127.0.0.4":
        return "same session: sendmail refused at MAIL, postern refuses each RCPT"
    if (probe["port"] in ("submission", "smtps") and probe.get("cert") == "trusted"
            and src == "PermFail" and dst == "Accept" and step == "mail"):
        return "postern counts a CA-verified client certificate as authentication on submission listeners (sendmail M=a wants AUTH)"
    if (probe["port"] in ("submission", "smtps") and probe.get("cert") == "trusted"
            and src == "NotReached" and step.startswith("rcpt")):
        return "same session: after MAIL was accepted the recipients are decided by the relay rules"
    return None


def compare(config, probes, a, b):
    diffs = []
    for p, x, y in zip(probes, a, b):
        steps = []
        if x["auth"] is not None:
            steps.append(("auth", x["auth"], y["auth"]))
        steps.append(("mail", x["mail"], y["mail"]))
        steps += [(f"rcpt {i + 1}", u, v) for i, (u, v) in enumerate(zip(x["rcpts"], y["rcpts"]))]
        for step, u, v in steps:
            if u != v:
                diffs.append((p["name"], step, u, v, explain(config, p, step, u, v)))
    return diffs


@pytest.mark.parametrize("name", ["seed", "relay", "smarthost"])
def test_parity_with_real_sendmail(tmp_path, name):
    require_sendmail()
    certs = make_certs(tmp_path / "certs")
    ports = {"smtp": free_port(), "smtps": free_port(), "submission": free_port(), "sink": free_port()}
    sm = Sendmail(tmp_path, name, ports)
    probes = tomllib.loads((PARITY / f"sendmail-{name}.toml").read_text())["probe"]
    assert len(probes) >= 40
    sm.start()
    try:
        source = [replay(p, ports, certs) for p in probes]
        # The same table through `postern import sendmail --verify`: postern's
        # own replay client, against this sendmail and a postern the importer
        # starts on the imported configuration.
        probe_certs = tmp_path / "probe-certs"
        probe_certs.mkdir()
        for kind, (c, k) in certs.items():
            shutil.copy(c, probe_certs / f"{kind}.crt")
            shutil.copy(k, probe_certs / f"{kind}.key")
        vout = tmp_path / "verified"
        vargs = [BIN, "import", "sendmail", "--mc", str(tmp_path / "sendmail.mc"), "--aliases", str(tmp_path / "aliases"),
                 "--sasldb", str(tmp_path / "sasldb2"), "--out", str(vout),
                 "--verify", f"127.0.0.1:{ports['smtp']}", "--verify-submission", f"127.0.0.1:{ports['submission']}",
                 "--verify-smtps", f"127.0.0.1:{ports['smtps']}", "--probes", str(PARITY / f"sendmail-{name}.toml"),
                 "--probe-certs", str(probe_certs)]
        verified = subprocess.run(vargs, capture_output=True, text=True, timeout=900)
    finally:
        sm.stop()
    parity_report = vout / "parity-report.txt"
    assert verified.returncode == 0, (verified.stdout[-3000:] + verified.stderr
                                      + (parity_report.read_text()[-3000:] if parity_report.exists() else ""))
    assert f"parity: {len(probes)} probes" in verified.stdout, verified.stdout[-2000:]
    assert ", 0 unexplained" in verified.stdout, verified.stdout[-2000:]
    print(f"{name}: postern import sendmail --verify: {verified.stdout.strip().splitlines()[-1]}")
    # Sanity: the table exercises accepts and refusals at RCPT on the source.
    classes = {c for v in source for c in v["rcpts"]}
    assert {"Accept", "PermFail"} <= classes, source

    out = tmp_path / "imported"
    args = [BIN, "import", "sendmail", "--mc", str(tmp_path / "sendmail.mc"), "--aliases", str(tmp_path / "aliases"),
            "--sasldb", str(tmp_path / "sasldb2"), "--out", str(out)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    report = (out / "import-report.txt").read_text()
    mc_lines = [i + 1 for i, l in enumerate((tmp_path / "sendmail.mc").read_text().splitlines()) if l.strip() and not l.startswith("#")]
    for line in mc_lines:
        assert f"sendmail.mc:{line}\t" in report, f"no report entry for sendmail.mc:{line}\n{report}"
    users = (out / "users.json").read_text()
    assert "alice" in users and PASSWORD not in users and "$argon2id$" in users
    assert oct((out / "users.json").stat().st_mode & 0o777) == "0o600"

    p = Postern(tmp_path / "postern", config=(out / "postern.toml").read_text())
    shutil.copy(out / "users.json", p.data / "users.json")
    p.port = ports["smtp"]
    p.start()
    try:
        for port in ("smtps", "submission"):
            if f":{ports[port]}\"" in (out / "postern.toml").read_text():
                wait_port(ports[port], proc=p.proc)
        ours = [replay(pr, ports, certs) for pr in probes]
    finally:
        p.stop()
    diffs = compare(name, probes, source, ours)
    unexplained = [d for d in diffs if d[4] is None]
    explained = [d for d in diffs if d[4] is not None]
    print(f"{name}: {len(probes)} probes, {len(diffs)} differences, {len(explained)} explained")
    reasons = {}
    for d in explained:
        reasons.setdefault(d[4], []).append(f"{d[0]} / {d[1]}")
    for why, where in reasons.items():
        print(f"  {len(where)} x {why}: e.g. {where[0]}")
    assert not unexplained, "\n".join(map(str, unexplained)) + "\n\n" + report


def test_unmapped_restriction_fails_the_import_unless_allow_partial(tmp_path):
    """An access entry postern cannot express (To: address REJECT) makes the
    import fail and write nothing; --allow-partial writes, and the report
    names the line."""
    (tmp_path / "access").write_text("Connect:192.0.2.7 RELAY\nTo:boss@mx.test REJECT\n")
    (tmp_path / "sendmail.mc").write_text(
        f"define(`confDOMAIN_NAME', `mx.test')dnl\nFEATURE(`access_db', `hash {tmp_path}/access')dnl\n"
        "DAEMON_OPTIONS(`Port=2525, Addr=127.0.0.1, Name=MTA')dnl\nFEATURE(`no_default_msa')dnl\n")
    out = tmp_path / "out"
    base = [BIN, "import", "sendmail", "--mc", str(tmp_path / "sendmail.mc"), "--out", str(out)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{tmp_path}/access:2: restriction not mapped: To:boss@mx.test REJECT" in r.stderr
    assert not out.exists()
    r = subprocess.run(base + ["--allow-partial"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    report = (out / "import-report.txt").read_text()
    assert f"{tmp_path}/access:1\tConnect:192.0.2.7 RELAY\tmapped -> relay.networks" in report
    assert "NOT MAPPED (restriction)" in report
    check = subprocess.run([BIN, "config", "check", str(out / "postern.toml")], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert '"192.0.2.7/32"' in (out / "postern.toml").read_text()
