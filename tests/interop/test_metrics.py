"""The Prometheus endpoint and `postern status` with real peers: swaks makes
traffic, curl scrapes, promtool lints the page, a private Prometheus server
(Debian `prometheus`, started here and stopped by PID) scrapes it."""

import json
import re
import subprocess
import time
import urllib.parse

import pytest

from conftest import BASE_CONFIG, BIN, free_port, require, swaks, wait_for

# Loopback may not relay (a relay attempt is refused); metrics on {port2}.
METRICS_CONFIG = BASE_CONFIG + """
[relay]
networks = []
[metrics]
address = "127.0.0.1:{port2}"
"""


def add_user(p, name, pw):
    r = p.cli("user", "add", name, "--password-stdin", input=(pw + "\n").encode())
    assert r.returncode == 0, r.stderr


def curl(url, *args):
    require("curl")
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args, url], capture_output=True, text=True, timeout=30)


def scrape(p):
    r = curl(f"http://127.0.0.1:{p.ports['port2']}/metrics", "-D", "-")
    assert r.returncode == 0, r.stderr
    # text mode turned the header lines' CRLF into LF
    head, _, body = r.stdout.partition("\n\n")
    return head, body


def sample(body, name, **labels):
    """The value of the sample `name` whose labels include `labels` (None if absent)."""
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


@pytest.fixture
def mp(postern_factory):
    p = postern_factory(METRICS_CONFIG)
    add_user(p, "alice", "right-password")
    return p


def traffic(p):
    """A delivered message, a refused relay, a failed AUTH over STARTTLS."""
    r = swaks("--server", f"127.0.0.1:{p.port}", "--from", "x@far.example", "--to", "alice@mx.test")
    assert r.returncode == 0, r.stdout + r.stderr
    p.wait_mail("alice")
    r = swaks("--server", f"127.0.0.1:{p.port}", "--from", "x@far.example", "--to", "someone@elsewhere.example")
    assert r.returncode != 0
    r = swaks("--server", f"127.0.0.1:{p.port}", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
              "--auth-password", "wrong", "--from", "alice@mx.test", "--to", "bob@mx.test")
    assert r.returncode != 0
    assert "result=fail" in p.log()


def test_metrics_after_traffic(mp):
    traffic(mp)
    # Delivery is asynchronous: poll until the counter shows it.
    body = wait_for(lambda: (lambda b: sample(b, "postern_recipients_delivered_total", transport="maildir") and b)(scrape(mp)[1]),
                    what="a delivered recipient in the metrics")
    head, body = scrape(mp)
    assert "content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower(), head
    assert sample(body, "postern_messages_received_total", listener="smtp") == 1, body
    assert sample(body, "postern_recipients_delivered_total", transport="maildir") == 1
    assert sample(body, "postern_rejects_total", stage="rcpt", rule="no-relay", origin="built-in") == 1, body
    assert sample(body, "postern_auth_failures_total", mechanism="PLAIN", result="fail") == 1, body
    assert sample(body, "postern_auth_successes_total") is None
    assert sample(body, "postern_tls_handshakes_total", version="TLSv1.3") == 1, body
    # three swaks sessions, and the fixture's probe of the port
    assert sample(body, "postern_connections_total", listener="smtp") >= 3
    assert sample(body, "postern_sessions") == 0
    assert sample(body, "postern_queue_commit_duration_seconds_count") == 1
    assert sample(body, "postern_delivery_attempt_duration_seconds_count", transport="maildir") == 1
    assert sample(body, "postern_queue_messages", state="active") == 0
    assert sample(body, "postern_queue_messages", state="hold") == 0
    expiry = sample(body, "postern_certificate_expiry_timestamp_seconds", kind="server")
    assert expiry and expiry > time.time(), body
    # promtool lints the page as Prometheus reads it; any finding is a failure.
    require("promtool")
    lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # Nothing but /metrics.
    assert curl(f"http://127.0.0.1:{mp.ports['port2']}/", "-o", "/dev/null", "-w", "%{http_code}").stdout == "404"


def test_prometheus_scrapes_postern(mp, tmp_path):
    prom = require("prometheus")
    traffic(mp)
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: postern
    static_configs:
      - targets: ['127.0.0.1:{mp.ports['port2']}']
""")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        def query(q):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            r = curl(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(q)}")
            if r.returncode != 0:
                return None
            res = json.loads(r.stdout).get("data", {}).get("result", [])
            return float(res[0]["value"][1]) if res else None

        wait_for(lambda: query('up{job="postern"}') == 1, timeout=60, what='up{job="postern"} == 1')
        wait_for(lambda: query('sum(postern_messages_received_total{job="postern"})') == 1, timeout=30,
                 what="postern_messages_received_total in Prometheus")
        assert query('postern_auth_failures_total{mechanism="PLAIN",result="fail"}') == 1
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_status_health_check(mp):
    r = mp.cli("status", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout)
    assert s["running"] is True and s["healthy"] is True and s["problems"] == []
    assert s["pid"] == mp.proc.pid
    assert s["config_file"] == str(mp.cfg) and s["data_dir"] == str(mp.data)
    assert s["listeners"] == [{"name": "smtp", "role": "smtp", "address": f"127.0.0.1:{mp.port}", "up": True}]
    assert s["metrics_address"] == f"127.0.0.1:{mp.ports['port2']}"
    assert {"active", "deferred", "hold", "oldest_age_seconds"} <= s["queue"].keys()
    assert [c["kind"] for c in s["certificates"]] == ["server"] and s["certificates"][0]["days_left"] > 7
    text = mp.cli("status")
    assert text.returncode == 0 and b"listeners:" in text.stdout and b"up" in text.stdout, text.stdout
    # Unhealthy: a certificate that expires within the window.
    r = mp.cli("status", "--cert-days", "100000")
    assert r.returncode == 1, r.stdout + r.stderr
    assert b"unhealthy: server certificate" in r.stderr
    # Not running: 69, the reason on stderr.
    assert mp.stop() == 0
    r = mp.cli("status", "--json")
    assert r.returncode == 69, r.stdout + r.stderr
    assert json.loads(r.stdout)["running"] is False
    assert b"daemon not running" in r.stderr


def test_metrics_address_in_use_is_a_startup_error(postern_factory):
    p = postern_factory(METRICS_CONFIG.replace("{port2}", "{port}"), start=False)
    r = subprocess.run([BIN, "serve", "--config", str(p.cfg), "--data-dir", str(p.data)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert f"cannot listen on 127.0.0.1:{p.port}" in r.stderr + r.stdout
