"""The maildrop: `sendmail` run by any local user (here `www-data`, as
PHP's mail() would, through setpriv; the daemon runs as `nobody`), cron's
own call, mail for root, finding the daemon from another directory with no
config, and what a bad drop file does."""

import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from conftest import BIN, BASE_CONFIG, require, wait_for


@pytest.fixture
def public_base():
    """A directory other users can reach (pytest's tmp is root-only), holding
    a copy of the binary, removed afterwards."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="postern-maildrop-"))
    os.chmod(base, 0o755)
    shutil.copy(BIN, base / "postern")
    os.chmod(base / "postern", 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


SUBMITTER = "www-data"


def as_user(p, base, *args, input):
    """Runs `postern sendmail ARGS` as SUBMITTER, with the test's config."""
    setpriv = require("setpriv")
    env = {
        "PATH": "/usr/bin:/bin",
        "POSTERN_CONFIG": str(p.cfg),
        "POSTERN_DATA_DIR": str(p.data),
        "POSTERN_RUN_DIR": str(p.run_dir),
    }
    cmd = [setpriv, "--reuid=" + SUBMITTER, "--regid=" + SUBMITTER, "--clear-groups", "--", str(base / "postern"), "sendmail", *args]
    return subprocess.run(cmd, input=input, capture_output=True, env=env, cwd="/", timeout=60)


def public_daemon(postern_factory, base, extra=""):
    mail_log = base / "mail.log"
    cfg = BASE_CONFIG.replace('hostname = "mx.test"', 'hostname = "mx.test"\nuser = "nobody"') + f'\n[log]\nmail_log = "{mail_log}"\n' + extra
    p = postern_factory(cfg, start=False)
    p.dir = base
    p.cfg = base / "postern.toml"
    p.cfg.write_text(cfg.replace("{port}", str(p.port)))
    os.chmod(p.cfg, 0o644)
    p.data = base / "data"
    p.run_dir = base / "run"
    p.logfile = base / "stdout.log"
    p.mail_log = mail_log
    return p


def test_nonroot_sendmail_cron_call_reaches_postmaster_with_uid(postern_factory, public_base):
    user = pwd.getpwnam(SUBMITTER).pw_uid
    p = public_daemon(postern_factory, public_base).start()
    wait_for(lambda: p.mail_log.exists() and "start user=nobody" in p.mail_log.read_text(), what="privilege drop")
    wait_for(lambda: (p.data / "maildrop").is_dir() and (os.stat(p.data / "maildrop").st_mode & 0o7777) == 0o3733,
             what="public maildrop")
    assert os.stat(p.data).st_mode & 0o777 == 0o711
    for private in ("queue", "mail", "maildrop/.bad"):
        assert os.stat(p.data / private).st_mode & 0o077 == 0, private
    # cron's own call, as the user whose crontab ran.
    r = as_user(p, public_base, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root",
                input=b"Subject: Cron <www-data@mx> date\n\nWed Dec  2 03:00:01 UTC 2026\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b""), r
    got = p.wait_mail("postmaster")[0]
    assert b"Subject: Cron <www-data@mx> date" in got
    assert f"from userid {user})".encode() in got, got
    assert f'From: "CronDaemon" <{SUBMITTER}@mx.test>'.encode() in got, got
    log = wait_for(lambda: "client=local uid=%d" % user in p.mail_log.read_text() and p.mail_log.read_text(),
                   what="queued line in the daemon's mail log file")
    queued = [l for l in log.splitlines() if " queued " in l and f"uid={user}" in l]
    assert len(queued) == 1 and f"from={SUBMITTER}@mx.test" in queued[0], queued
    # The user's file is gone, and the user cannot list the maildrop.
    r = subprocess.run([require("setpriv"), "--reuid=" + SUBMITTER, "--regid=" + SUBMITTER, "--clear-groups", "--",
                        "ls", str(p.data / "maildrop")], capture_output=True)
    assert r.returncode != 0, r
    # An unknown local user is refused at once, with the sysexits code.
    r = as_user(p, public_base, "nosuchuser", input=b"x\n")
    assert r.returncode == 67 and b"no such local user" in r.stderr, r
    assert p.stop() == 0


def test_bad_drop_file_is_moved_aside_not_trusted(postern_factory, public_base):
    p = public_daemon(postern_factory, public_base).start()
    drop = p.data / "maildrop"
    wait_for(lambda: drop.is_dir() and (os.stat(drop).st_mode & 0o7777) == 0o3733, what="public maildrop")
    name = "%032x" % 0xBAD
    # A forged identity: a uid field inside the file is refused, whoever wrote it.
    (drop / name).write_bytes(b"POSTERN-DROP 1\nsize 9\nuid 0\nrcpt alice\n\nSubject: \n")
    # Any datagram on the public socket wakes the pickup.
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"w", str(p.data / "pickup.sock"))
    wait_for(lambda: (drop / ".bad" / name).exists(), what="bad file moved aside")
    log = p.mail_log.read_text()
    assert f"error drop={name} error=\"unknown field \\\"uid\\\"\"" in log, log
    assert p.maildir("alice") == []
    # The daemon is still there and still takes good mail.
    r = as_user(p, public_base, "alice", input=b"Subject: after\n\nx\n")
    assert r.returncode == 0, r
    p.wait_mail("alice")
    assert p.stop() == 0


def without_system_config(cmd):
    """`cmd` in a private mount namespace where /etc/postern is empty: the
    test machine may have a system config (a package test installs one)."""
    unshare = require("unshare")
    script = 'if [ -d /etc/postern ]; then mount -t tmpfs none /etc/postern || exit 99; fi; exec "$@"'
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]


def test_sendmail_from_another_directory_finds_the_daemon(postern, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "POSTERN_RUN_DIR": str(postern.run_dir)}
    wait_for(lambda: (postern.run_dir / "daemon.json").exists(), what="daemon record")
    r = subprocess.run(without_system_config([BIN, "sendmail", "alice"]), input=b"Subject: from elsewhere\n\nx\n", capture_output=True,
                       env=env, cwd=elsewhere, timeout=60)
    assert (r.returncode, r.stderr) == (0, b""), r
    assert b"Subject: from elsewhere" in postern.wait_mail("alice")[0]
    assert not (elsewhere / "postern-data").exists()
    # A command with another config than the daemon's says so, naming both.
    other = tmp_path / "other.toml"
    other.write_text("hostname = \"other.test\"\n")
    r = subprocess.run([BIN, "--config", str(other), "queue", "list"], capture_output=True, env=env, cwd=elsewhere, timeout=60)
    warning = [l for l in r.stderr.decode().splitlines() if "warning" in l]
    assert len(warning) == 1 and str(other) in warning[0] and str(postern.cfg) in warning[0], r.stderr
    # No daemon and no data directory: refused (EX_CONFIG), nothing created.
    env["POSTERN_RUN_DIR"] = str(tmp_path / "no-run")
    r = subprocess.run(without_system_config([BIN, "sendmail", "alice"]), input=b"x\n", capture_output=True, env=env, cwd=elsewhere, timeout=60)
    assert r.returncode == 78 and b"no running postern daemon found" in r.stderr, r
    assert not (elsewhere / "postern-data").exists()
    # The classic face too.
    link = elsewhere / "sendmail"
    os.symlink(BIN, link)
    r = subprocess.run(without_system_config([str(link), "root"]), input=b"x\n", capture_output=True, env=env, cwd=elsewhere, timeout=60)
    assert r.returncode == 78 and not (elsewhere / "postern-data").exists(), r
