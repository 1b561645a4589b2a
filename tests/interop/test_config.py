"""`postern config check|show|reload` and reloads, with the real binary:
check catches what serve would refuse (each broken config of the operator
review), `show -n` prints only what differs, a SIGHUP reload logs what
changed, and the certbot deploy hook (contrib/certbot/postern-deploy-hook)
gets a renewed certificate served by a daemon that dropped root, checked
with openssl s_client.
"""

import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from conftest import BASE_CONFIG, BIN, ROOT, free_port, require, wait_for

HOOK = ROOT / "contrib" / "certbot" / "postern-deploy-hook"


def check(tmp_path, text, name="c.toml"):
    f = tmp_path / name
    f.write_text(text)
    r = subprocess.run([BIN, "config", "check", str(f)], capture_output=True, timeout=30)
    return f, r.returncode, r.stdout.decode() + r.stderr.decode()


BROKEN = [
    # (name, config, exit code, expected message after "FILE:")
    (
        "duplicate port",
        '[[listener]]\naddress = "0.0.0.0:{p}"\n[[listener]]\naddress = "127.0.0.1:{p}"\nname = "local"\n',
        78,
        ':4:11: key `listener.address`: 127.0.0.1:{p} is bound by another listener too (0.0.0.0:{p})',
    ),
    (
        "missing certificate",
        '[tls]\ncertificate = "/nonexistent/fullchain.pem"\nkey = "/nonexistent/privkey.pem"\n',
        78,
        ":2:15: key `tls.certificate`: cannot read /nonexistent/fullchain.pem: No such file or directory",
    ),
    ("no such user", 'user = "nosuchuser"\n', 78, ':1:8: key `user`: no such user "nosuchuser"'),
    (
        "unknown listener in a rule",
        '[[listener]]\naddress = "127.0.0.1:{p}"\n[[rule]]\naction = "relay"\nlistener = ["nosuch"]\n',
        78,
        ':5:13: key `rule.listener`: no [[listener]] named "nosuch"',
    ),
    ("size with a suffix", '[limits]\nmax_message_size = "25M"\n', 0, ": ok"),
    (
        "bad size",
        '[limits]\nmax_message_size = "25 furlongs"\n',
        78,
        ':2:20: key `limits.max_message_size`: bad size "25 furlongs" (use bytes, e.g. 26214400, or a number with K, M or G',
    ),
    (
        "typo with a suggestion",
        '[limits]\nmax_mesage_size = 1\n',
        78,
        ":2:1: key `limits.max_mesage_size`: unknown field `max_mesage_size`, expected one of",
    ),
    ("short host name", 'hostname = "vm"\n', 0, ':1:12: warning: key `hostname`: host name "vm" is not a fully qualified domain name'),
]


@pytest.mark.parametrize("name,config,rc,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_config_check_catches_what_serve_refuses(tmp_path, name, config, rc, message):
    port = free_port()
    base = f'hostname = "mx.example.org"\ndata_dir = "{tmp_path}/data"\n' if "hostname" not in config else f'data_dir = "{tmp_path}/data"\n'
    # The base lines come first: shift the expected line numbers by them.
    shift = base.count("\n")
    text = base + config.replace("{p}", str(port))
    if message[:2].lstrip(":").isdigit():
        line, rest = message[1:].split(":", 1)
        message = f":{int(line) + shift}:{rest}"
    f, got, out = check(tmp_path, text)
    assert got == rc, out
    assert f"{f}{message}".replace("{p}", str(port)) in out or (message == ": ok" and f"{f}: ok" in out), out
    if name == "typo with a suggestion":
        assert "did you mean `max_message_size`?" in out, out
    if rc == 78 and name in ("missing certificate", "no such user", "duplicate port"):
        # serve refuses with the same message, before binding anything.
        r = subprocess.run([BIN, "serve", "--config", str(f)], capture_output=True, timeout=30)
        assert r.returncode == 78, r.stderr
        assert message.split(": ", 1)[1].replace("{p}", str(port)) in r.stderr.decode(), r.stderr


def test_config_check_reports_every_problem_at_once(tmp_path):
    f, rc, out = check(
        tmp_path,
        f'hostname = "mx.example.org"\ndata_dir = "{tmp_path}/d"\nuser = "nosuchuser"\n'
        '[tls]\ncertificate = "/nonexistent/c.pem"\nkey = "/nonexistent/k.pem"\n',
    )
    assert rc == 78
    for m in ["key `user`", "key `tls.certificate`", "key `tls.key`", "3 errors, serve would refuse to start"]:
        assert m in out, out


def test_config_show_non_default(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('hostname = "mx.example.org"\n[limits]\nmax_message_size = "10MB"\nmax_recipients = 1000\n')
    r = subprocess.run([BIN, "--config", str(f), "config", "show", "-n"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    body = [l for l in r.stdout.decode().splitlines() if not l.startswith("#")]
    assert body == ['hostname = "mx.example.org"', "", "[limits]", 'max_message_size = "10M"'], r.stdout
    r = subprocess.run([BIN, "--config", str(f), "config", "show"], capture_output=True, timeout=30)
    full = r.stdout.decode()
    assert "max_recipients = 1000" in full and 'retry_min = "5m"' in full and 'address = "127.0.0.1:2525"' in full, full
    # What show prints loads again.
    again = tmp_path / "again.toml"
    again.write_text(full)
    r = subprocess.run([BIN, "--config", str(again), "config", "show", "-n", "--json"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    import json
    shown = json.loads(r.stdout)
    assert shown["limits"] == {"max_message_size": "10M"} and shown["hostname"] == "mx.example.org", shown


def test_sighup_reload_logs_what_changed(postern):
    good = postern.cfg.read_text()
    postern.cfg.write_text(good.replace('shutdown_timeout = "5s"', 'shutdown_timeout = "5s"\nmax_message_size = "10M"'))
    postern.proc.send_signal(1)
    wait_for(lambda: "reload result=ok changed=limits.max_message_size " in postern.log(), what="reload with changed=")
    # The control socket's answer carries the same fields; nothing changed now.
    r = postern.cli("config", "reload")
    assert r.returncode == 0 and r.stdout.decode().startswith("reload ok changed=none"), r.stdout + r.stderr
    # A listener change is named as needing a restart.
    port = free_port()
    postern.cfg.write_text(postern.cfg.read_text() + f'\n[[listener]]\naddress = "127.0.0.1:{port}"\nname = "extra"\n')
    postern.proc.send_signal(1)
    wait_for(lambda: "restart_needed=listener" in postern.log(), what="restart_needed=listener")
    assert postern.stop() == 0


def openssl_cert(d, cn):
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
         "-subj", f"/CN={cn}", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )
    return d / "cert.pem", d / "key.pem"


def fingerprint(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem, capture_output=True, check=True)
    return out.stdout.decode().strip().split("=", 1)[1]


def served_fingerprint(port):
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp", "-servername", "mail.test"],
        input=b"", capture_output=True, timeout=30,
    )
    return fingerprint(r.stdout)


def test_certbot_deploy_hook_after_privilege_drop(postern_factory):
    """A certbot-style root-only lineage, a daemon running as nobody: the
    deploy hook copies a renewed certificate where the daemon's group can
    read it and reloads; s_client then sees the new one. Pointing the config
    at the root-only files directly makes the reload say `result=partial`."""
    require("openssl")
    assert os.geteuid() == 0, "this test needs root (it checks the privilege drop)"
    nobody = pwd.getpwnam("nobody")
    base = pathlib.Path(tempfile.mkdtemp(prefix="postern-certbot-"))
    os.chmod(base, 0o755)
    try:
        le = base / "letsencrypt"
        archive, live = le / "archive" / "mail.test", le / "live" / "mail.test"
        archive.mkdir(parents=True)
        live.mkdir(parents=True)
        for d in (le, le / "archive", le / "live", archive, live):
            os.chmod(d, 0o700)

        def renew(n):
            c, k = openssl_cert(base / f"gen{n}", "mail.test")
            shutil.copy(c, archive / f"fullchain{n}.pem")
            shutil.copy(k, archive / f"privkey{n}.pem")
            os.chmod(archive / f"privkey{n}.pem", 0o600)
            for f in ("fullchain", "privkey"):
                link = live / f"{f}.pem"
                if link.is_symlink():
                    link.unlink()
                link.symlink_to(f"../../archive/mail.test/{f}{n}.pem")
            return fingerprint(c.read_bytes())

        dest = base / "postern-tls"
        data = base / "data"
        config = BASE_CONFIG.replace('hostname = "mx.test"', f'hostname = "mx.test"\nuser = "nobody"\ndata_dir = "{data}"')
        copied = config + f'[tls]\ncertificate = "{dest}/fullchain.pem"\nkey = "{dest}/privkey.pem"\n'
        p = postern_factory(copied, start=False)
        p.data = data
        # The daemon re-reads its config as nobody on reload: not in pytest's root-only tmp.
        shutil.copy(p.cfg, base / "postern.toml")
        p.cfg = base / "postern.toml"
        os.chmod(p.cfg, 0o644)
        env = dict(os.environ, RENEWED_LINEAGE=str(live), POSTERN_TLS_DIR=str(dest), POSTERN_USER="nobody",
                   POSTERN_BIN=BIN, POSTERN_CONFIG=str(p.cfg))

        # config check warns about the root-only lineage, naming the fix.
        direct = base / "direct.toml"
        direct.write_text(config.replace("{port}", str(free_port())) + f'[tls]\ncertificate = "{live}/fullchain.pem"\nkey = "{live}/privkey.pem"\n')
        first = renew(1)
        r = subprocess.run([BIN, "config", "check", str(direct)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert b'warning: key `tls.key`' in r.stderr and b'not readable by user "nobody"' in r.stderr, r.stderr
        assert b"contrib/certbot/postern-deploy-hook" in r.stderr

        # First run of the hook, before the daemon runs: it copies only.
        r = subprocess.run([str(HOOK)], env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        st = os.stat(dest / "privkey.pem")
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, nobody.pw_gid)
        r = subprocess.run([BIN, "config", "check", str(p.cfg)], capture_output=True, timeout=30)
        assert r.returncode == 0 and b"not readable" not in r.stderr, r.stderr

        p.start()
        wait_for(lambda: "start user=nobody" in p.log(), what="privilege drop")
        assert served_fingerprint(p.port) == first

        # Renewal: new files in the root-only lineage, then the hook.
        second = renew(2)
        assert second != first
        r = subprocess.run([str(HOOK)], env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.decode().startswith("reload ok changed=none"), r.stdout
        wait_for(lambda: served_fingerprint(p.port) == second, what="the renewed certificate served")

        # Without the hook (config names the root-only files): one line says so.
        p.cfg.write_text(copied.replace("{port}", str(p.port)).replace(str(dest), str(live)))
        p.proc.send_signal(1)
        wait_for(lambda: "reload result=partial" in p.log(), what="reload result=partial")
        line = [l for l in p.log().splitlines() if "reload result=partial" in l][-1]
        assert "changed=tls.certificate,tls.key" in line and "tls=error" in line, line
        assert "Permission denied" in line and 'action="keeping old certificate"' in line, line
        assert served_fingerprint(p.port) == second
        assert p.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
