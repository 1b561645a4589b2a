"""Bursts of concurrent logins (issue 20, W3): clients that log in together with the same user
and password share one password check inside postern (single-flight), and must all get the
right answer: the right password 235 and its mail relayed, a wrong one 535 (never the right one's
answer), an unknown user 535. Real clients: Python smtplib (all threads held at a barrier
until each has done STARTTLS and EHLO, so that their AUTH commands arrive together) and swaks
(twenty processes at once). No timing is asserted: only answers, relayed mail and log lines."""

import smtplib
import ssl
import subprocess
import threading

from conftest import BASE_CONFIG, require

PASSWORD = "burst pass 1"

CONFIG = BASE_CONFIG + """
[relay]
networks = []
smarthost = "127.0.0.1:{port2}"
"""


def start(postern_factory, sink):
    p = postern_factory(CONFIG.replace("{port2}", str(sink.port)))
    r = p.cli("user", "add", "bob", "--password-stdin", input=(PASSWORD + "\n").encode())
    assert r.returncode == 0, r.stderr
    return p


def login_together(port, attempts):
    """Each (user, password) in its own connection: STARTTLS, EHLO, wait for all, AUTH PLAIN,
    then MAIL/RCPT/DATA if it got 235. Returns the AUTH reply codes, in order."""
    barrier = threading.Barrier(len(attempts), timeout=60)
    codes = [None] * len(attempts)
    errors = []

    def one(i, user, password):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                s.starttls(context=ssl._create_unverified_context())
                s.ehlo("burst.example")
                s.user, s.password = user, password
                barrier.wait()
                try:
                    codes[i] = s.auth("PLAIN", s.auth_plain)[0]
                except smtplib.SMTPAuthenticationError as e:
                    codes[i] = e.smtp_code
                if codes[i] == 235:
                    s.sendmail("bob@mx.test", ["far@far.example"], f"Subject: burst {i}\r\n\r\nx\r\n".encode())
        except Exception as e:  # reported below, with the attempt
            errors.append((i, repr(e)))
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i, u, pw)) for i, (u, pw) in enumerate(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return codes


def auth_lines(p, result):
    return [line for line in p.log().splitlines() if " auth " in f" {line} " and f"result={result}" in line]


def test_same_password_burst_all_succeed(postern_factory, sink):
    p = start(postern_factory, sink)
    codes = login_together(p.port, [("bob", PASSWORD)] * 20)
    assert codes == [235] * 20
    assert len(sink.wait(20, timeout=60)) == 20
    assert len([line for line in auth_lines(p, "ok") if "user=bob" in line]) == 20


def test_wrong_and_unknown_never_share_the_right_answer(postern_factory, sink):
    p = start(postern_factory, sink)
    attempts = [("bob", PASSWORD), ("bob", "not " + PASSWORD), ("nobody", PASSWORD)] * 6
    codes = login_together(p.port, attempts)
    for (user, password), code in zip(attempts, codes):
        assert code == (235 if (user, password) == ("bob", PASSWORD) else 535), (user, password, code)
    assert len(sink.wait(6, timeout=60)) == 6
    assert len(auth_lines(p, "ok")) == 6
    assert len(auth_lines(p, "fail")) == 12
    # The cache holds successes only: the same wrong password, once more, fails again.
    assert login_together(p.port, [("bob", "not " + PASSWORD)]) == [535]


def test_swaks_burst(postern_factory, sink):
    require("swaks")
    p = start(postern_factory, sink)
    procs = [
        subprocess.Popen(["swaks", "--hide-all", "--server", f"127.0.0.1:{p.port}", "--tls", "--auth", "PLAIN",
                          "--auth-user", "bob", "--auth-password", PASSWORD, "--from", "bob@mx.test",
                          "--to", "far@far.example", "--header", f"Subject: swaks {i}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(20)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            outputs.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert all(rc == 0 for rc, _ in outputs), outputs
    assert len(sink.wait(20, timeout=60)) == 20
