"""The Debian package, on this machine: scripts/build-deb packs the release
binary under test (cargo deb --no-build, nothing compiled again), `dpkg -i`
installs it next to Postfix (whose sendmail, mailq and newaliases are
diverted), the installed files are checked, the installed binary serves a
short SMTP exchange (swaks) and takes a message from `sendmail -t` run as
`nobody`, then `dpkg --purge` must give Postfix its files back and leave
nothing behind. Runs as root (dpkg); everything is purged in `finally`."""

import hashlib
import os
import pathlib
import re
import shutil
import signal
import subprocess

from conftest import BIN, ROOT, free_port, require, swaks, wait_for, wait_port

LINKS = ["/usr/sbin/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases"]
DATA = pathlib.Path("/var/lib/postern")
MAILDIR = DATA / "mail" / "postmaster" / "new"


def run(*cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if check:
        assert r.returncode == 0, f"{cmd}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def fingerprint(path):
    """What is at `path`: a symlink's target or a file's hash (None if absent)."""
    p = pathlib.Path(path)
    if p.is_symlink():
        return ("link", os.readlink(p))
    if p.exists():
        return ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return None


def installed():
    r = run("dpkg-query", "-W", "-f=${Status}", "postern", check=False)
    return r.returncode == 0 and "installed" in r.stdout.split()


def purge():
    run("dpkg", "--purge", "postern", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def build_deb(out):
    """scripts/build-deb on the binary under test (POSTERN_BIN)."""
    require("cargo-deb")
    binary = pathlib.Path(BIN).resolve()
    assert binary.parent.name == "release", f"POSTERN_BIN must be a release build: {binary}"
    env = {**os.environ, "CARGO_TARGET_DIR": str(binary.parent.parent)}
    r = run(str(ROOT / "scripts" / "build-deb"), str(out), env=env, cwd=ROOT)
    deb = pathlib.Path(r.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.suffix == ".deb", r.stdout
    return deb


def check_archive(deb):
    info = run("dpkg-deb", "--info", str(deb)).stdout
    for want in ["Package: postern", "Section: mail", "adduser"]:
        assert want in info, f"{want!r} not in control:\n{info}"
    # Provides: mail-transport-agent would conflict with Postfix (see Cargo.toml).
    assert "mail-transport-agent" not in info, info
    contents = run("dpkg-deb", "--contents", str(deb)).stdout
    for path in [
        "./usr/sbin/postern",
        "./usr/sbin/sendmail -> postern",
        "./usr/bin/mailq -> ../sbin/postern",
        "./usr/bin/newaliases -> ../sbin/postern",
        "./etc/postern/postern.toml",
        "./usr/lib/systemd/system/postern.service",
        "./usr/share/man/man8/postern.8.gz",
        "./usr/share/man/man8/postern-queue.8.gz",
        "./usr/share/man/man8/sendmail.8.gz",
        "./usr/share/man/man8/mailq.8.gz",
        "./usr/share/man/man8/newaliases.8.gz",
        "./usr/share/bash-completion/completions/postern",
        "./usr/share/zsh/vendor-completions/_postern",
        "./usr/share/fish/vendor_completions.d/postern.fish",
        "./usr/share/doc/postern/README.md",
        "./usr/share/doc/postern/operations.md",
        "./usr/share/doc/postern/copyright",
    ]:
        assert path in contents, f"{path} not in the package:\n{contents}"


def check_installed():
    assert os.access("/usr/sbin/postern", os.X_OK)
    assert run("/usr/sbin/postern", "--version").stdout.startswith("postern ")
    for link, target in zip(LINKS, ["postern", "../sbin/postern", "../sbin/postern"]):
        assert os.readlink(link) == target, link
    diversions = run("dpkg-divert", "--list").stdout
    for link in LINKS:
        assert f"diversion of {link} to {link}.diverted-by-postern by postern" in diversions, diversions
    # Man pages readable by man(1), with the sections an admin looks for.
    page = run("man", "-l", "/usr/share/man/man8/postern.8.gz", env={**os.environ, "MANPAGER": "cat", "COLUMNS": "100"}).stdout
    for want in ["SYNOPSIS", "postern-queue(8)", "FILES", "/etc/postern/postern.toml"]:
        assert want in page, f"{want!r} not in man postern:\n{page}"
    page = run("man", "-l", "/usr/share/man/man8/sendmail.8.gz", env={**os.environ, "MANPAGER": "cat"}).stdout
    assert "read recipients from To:" in page, page
    unit = pathlib.Path("/usr/lib/systemd/system/postern.service").read_text()
    for want in ["Type=notify", "UMask=0077", "ExecStartPre=/usr/sbin/postern config check", "Documentation=man:postern(8)"]:
        assert want in unit, f"{want!r} not in the unit"
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "postern").stdout
    assert "/etc/postern/postern.toml" in conffiles, conffiles
    config = pathlib.Path("/etc/postern/postern.toml").read_text()
    assert 'data_dir = "/var/lib/postern"' in config and 'user = "postern"' in config
    run("/usr/sbin/postern", "config", "check", "/etc/postern/postern.toml")
    user = run("getent", "passwd", "postern").stdout.strip().split(":")
    assert user[5] == "/var/lib/postern" and user[6] == "/usr/sbin/nologin", user
    assert int(user[2]) < 1000, f"not a system user: {user}"
    st = DATA.stat()
    assert st.st_uid == int(user[2]) and (st.st_mode & 0o777) == 0o711, oct(st.st_mode)


def serve_and_send(tmp_path):
    """The installed binary as the unit runs it (`serve --config
    /etc/postern/postern.toml`), its listener moved to a free loopback port
    by editing the installed config as an admin would (so `sendmail` and the
    daemon read the same file): swaks, then `sendmail -t` as nobody."""
    port = free_port()
    cfg = pathlib.Path("/etc/postern/postern.toml")
    config = cfg.read_text()
    assert 'address = "127.0.0.1:25"' in config
    cfg.write_text(config.replace('address = "127.0.0.1:25"', f'address = "127.0.0.1:{port}"'))
    log = tmp_path / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["/usr/sbin/postern", "serve", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        wait_port(port, proc=proc)
        r = swaks("--server", f"127.0.0.1:{port}", "--from", "tester@localhost", "--to", "postmaster@localhost",
                  "--header", "Subject: package swaks")
        assert r.returncode == 0, r.stdout + r.stderr + log.read_text()
        wait_for(lambda: MAILDIR.is_dir() and len(list(MAILDIR.iterdir())) >= 1, what="swaks message in postmaster's Maildir")
        # The daemon dropped root: it runs as `postern`.
        status = pathlib.Path(f"/proc/{proc.pid}/status").read_text()
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
        assert uid == int(run("id", "-u", "postern").stdout), status
        # sendmail as a non-root user, from a directory it cannot write, as
        # cron or PHP would: silent, rc 0, and the mail arrives.
        msg = "To: postmaster@localhost\nSubject: package sendmail as nobody\n\nfrom nobody\n"
        r = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/sbin/sendmail", "-t"], input=msg, capture_output=True,
                           text=True, timeout=60, cwd="/")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", f"rc {r.returncode}: {r.stdout}{r.stderr}"
        wait_for(lambda: any(b"package sendmail as nobody" in p.read_bytes() for p in MAILDIR.iterdir()),
                 what="nobody's message in postmaster's Maildir")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- postern serve log ---\n{log.read_text(errors='replace')}") from e
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_deb_install_serve_sendmail_purge(tmp_path):
    assert os.geteuid() == 0, "the package test installs with dpkg: run as root"
    for tool in ["dpkg", "dpkg-deb", "dpkg-divert", "man", "runuser", "swaks"]:
        require(tool)
    if installed():
        purge()  # a leftover from an interrupted run
    if DATA.exists():
        shutil.rmtree(DATA)  # mail an earlier failed run left (purge keeps mail)
    before = {link: fingerprint(link) for link in LINKS}
    deb = build_deb(tmp_path / "deb")
    check_archive(deb)
    try:
        run("dpkg", "-i", str(deb), env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        check_installed()
        serve_and_send(tmp_path)
    finally:
        # The test's own mail, read and deleted as an admin would, so that
        # purge can remove the then-empty data directory.
        subprocess.run(["rm", "-rf", str(DATA / "mail" / "postmaster")], check=False)
        purge()
    # Postfix has its commands back, untouched; nothing of postern is left.
    assert {link: fingerprint(link) for link in LINKS} == before
    assert "postern" not in run("dpkg-divert", "--list").stdout
    assert not installed()
    for gone in ["/usr/sbin/postern", "/etc/postern", "/usr/lib/systemd/system/postern.service",
                 "/usr/share/man/man8/postern.8.gz", "/etc/systemd/system/multi-user.target.wants/postern.service",
                 str(DATA)]:
        assert not os.path.lexists(gone), f"{gone} left after purge: {list(pathlib.Path(gone).rglob('*')) if os.path.isdir(gone) else ''}"
    alias = pathlib.Path("/etc/systemd/system/mail-transport-agent.service")
    assert not (alias.is_symlink() and "postern" in os.readlink(alias)), "the unit's alias is left"
    if before["/usr/sbin/sendmail"] is not None:
        owner = run("dpkg", "-S", "/usr/sbin/sendmail").stdout
        assert "postern" not in owner, owner
