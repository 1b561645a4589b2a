"""Rate limits and greylisting ([inbound.rate], [inbound.greylist]) with
real peers: swaks over its message rate gets the 4xx that names the limit
and is served again after the window; a client over its connection rate
gets 421 at connect; real Postfix, acting as the sending MTA, is
greylisted on its first attempt, retries, and its mail is delivered.

Clients other than 127.0.0.1 use other loopback addresses (Linux routes
all of 127/8 to lo); 127.0.0.1 itself (the readiness probe) is exempt.
"""

import smtplib
import socket
import time

from conftest import BASE_CONFIG, free_port, require, swaks_full, wait_for
from test_relay import Postfix

RATE = BASE_CONFIG + """
[relay]
networks = ["127.0.0.1/32"]
[inbound.rate]
exempt_networks = ["127.0.0.1/32"]
exempt_relay_networks = false
[[inbound.rate.limit]]
key = "client"
what = "messages"
max = 2
per = "3s"
[[inbound.rate.limit]]
key = "client"
what = "connections"
max = 2
per = "1m"
"""


def send(p, ip, n):
    return swaks_full(
        "--server", f"127.0.0.1:{p.port}", "--local-interface", ip, "--from", "a@far.example",
        "--to", "alice@mx.test", "--header", f"Subject: rate {n}", "--timeout", "20",
    )


def test_message_rate_names_the_limit_and_serves_again_after_the_window(postern_factory):
    p = postern_factory(RATE.replace('max = 2\nper = "1m"', 'max = 100\nper = "1m"'))
    first = time.time()
    for n in range(2):
        r = send(p, "127.0.0.2", n)
        assert "250 2.0.0" in r.stdout and "queued as" in r.stdout, r.stdout
    r = send(p, "127.0.0.2", 3)
    assert "<** 450 4.7.1 Error: too many messages from [127.0.0.2] (limit 2 per 3s)" in r.stdout, r.stdout
    assert 'limit="client messages 2/3s"' in p.log()
    # Another client is counted apart.
    assert "queued as" in send(p, "127.0.0.5", 4).stdout
    # Served again once the window (3 s from the first message) is over;
    # refused attempts meanwhile do not extend it.
    time.sleep(max(0.0, first + 3.0 - time.time()))
    wait_for(lambda: "queued as" in send(p, "127.0.0.2", 5).stdout, 10, "served again after the window")
    assert time.time() - first >= 3.0
    p.wait_mail("alice", 4)


def greeting(port, ip):
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((ip, 0))
        s.connect(("127.0.0.1", port))
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(512)
            if not chunk:
                break
            data += chunk
        return data.decode()


def test_connection_rate_refused_at_connect(postern_factory):
    p = postern_factory(RATE)
    assert greeting(p.port, "127.0.0.3").startswith("220 ")
    assert greeting(p.port, "127.0.0.3").startswith("220 ")
    assert greeting(p.port, "127.0.0.3") == "421 4.7.0 Too many connections from [127.0.0.3] (limit 2 per 1m)\r\n"
    assert greeting(p.port, "127.0.0.6").startswith("220 ")
    # The exempt address is never counted.
    for _ in range(4):
        assert greeting(p.port, "127.0.0.1").startswith("220 ")
    wait_for(lambda: 'limit="client connections 2/1m"' in p.log() and 'reason="connection rate"' in p.log(), 5, "log lines")
    explain = p.cli("explain", "--ip", "127.0.0.3", "--from", "a@far.example", "--rcpt", "alice@mx.test")
    assert explain.returncode == 0, explain.stderr
    assert "rate:     connections 2 per 1m ([127.0.0.3])" in explain.stdout.decode(), explain.stdout
    assert "greylist: off" in explain.stdout.decode()


GREY = BASE_CONFIG + """
[relay]
networks = ["127.0.0.1/32"]
[inbound.greylist]
enabled = true
delay = "1s"
ipv4_prefix = 32
exempt_networks = ["127.0.0.1/32"]
exempt_relay_networks = false
"""


def test_real_postfix_is_greylisted_then_delivered_on_retry(postern_factory):
    require("postfix")
    p = postern_factory(GREY)
    pf = None
    try:
        pf = Postfix(f"""mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{p.port}
smtp_bind_address = 127.0.0.4
queue_run_delay = 1s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
smtp_tls_security_level = none
""", free_port())
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=20) as s:
            s.sendmail("sender@pf.test", ["alice@mx.test"], b"Subject: greylisted\r\n\r\nfrom Postfix\r\n")
        mail = p.wait_mail("alice", 1, timeout=60)
        assert b"Subject: greylisted" in mail[0]
        log = p.log()
        assert "greylist=new" in log and "client=[127.0.0.4]" in log, log
        assert "Greylisted, try again in 1s" in pf.log(), pf.log()
        assert "status=deferred" in pf.log() and "status=sent" in pf.log(), pf.log()
        # The pass is remembered in DATA/greylist.json (written within a second).
        wait_for(lambda: (p.data / "greylist.json").exists() and b'"passed":' in (p.data / "greylist.json").read_bytes(), 5, "snapshot")
        explain = p.cli("explain", "--ip", "127.0.0.4", "--from", "sender@pf.test", "--rcpt", "alice@mx.test")
        assert "greylist: would pass (known)" in explain.stdout.decode(), explain.stdout
        explain = p.cli("explain", "--ip", "127.0.0.4", "--from", "other@pf.test", "--rcpt", "alice@mx.test")
        assert "greylist: would defer (new triplet)" in explain.stdout.decode(), explain.stdout
    finally:
        if pf:
            pf.stop()
