"""DSN (RFC 3461/3464): NOTIFY=SUCCESS for local delivery and for a next hop
without DSN, DSN parameters passed to a DSN-capable next hop (another
postern), NOTIFY=NEVER, delay warnings, a golden-file bounce, SMTPUTF8 and
8BITMIME to hosts that lack them, and `postern queue bounce`."""

import email
import json
import pathlib
import re
import smtplib

from conftest import BASE_CONFIG, wait_for
from test_mx import internet, mx_config  # noqa: F401  (fixture)

GOLDEN = pathlib.Path(__file__).parent / "golden"


def reports(p, user="alice"):
    return [email.message_from_bytes(m) for m in p.maildir(user)]


def part(msg, ctype):
    for x in msg.walk():
        if x.get_content_type() == ctype:
            return x
    raise AssertionError(f"no {ctype} part")


def status_fields(msg):
    """The per-recipient fields of a message/delivery-status part."""
    raw = part(msg, "message/delivery-status").as_bytes().decode()
    return raw


def test_success_notice_local_and_relayed(postern_factory, internet):  # noqa: F811
    port, dns_port, sinks = internet
    p = postern_factory(mx_config(port, dns_port))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.ehlo("c.example")
        assert s.has_extn("dsn")
        s.sendmail("alice@mx.test", ["bob@mx.test", "user@ascii.test"], b"Subject: want receipts\r\n\r\nx\r\n",
                   mail_options=["RET=HDRS", "ENVID=env-123"], rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig@mx.test"])
    sinks["127.0.0.8"].wait()
    # One report covers both recipients (delivered locally, relayed to a non-DSN host).
    notices = wait_for(lambda: reports(p), timeout=20, what="success notice")
    text = "\n".join(status_fields(m) for m in notices)
    assert "Action: delivered" in text and "Final-Recipient: rfc822; bob@mx.test" in text
    assert "Action: relayed" in text and "Final-Recipient: rfc822; user@ascii.test" in text
    assert "Original-Envelope-Id: env-123" in text
    assert "Original-Recipient: rfc822; orig@mx.test" in text
    assert "Remote-MTA: dns; mx.ascii.test" in text
    assert all(m["Return-Path"] == "<>" for m in notices)
    assert all(m["Subject"] == "Successful Mail Delivery Report" for m in notices)


def test_dsn_passed_to_dsn_capable_next_hop(postern_factory):
    b = postern_factory(BASE_CONFIG.replace('domains = ["mx.test", "localhost"]', 'domains = ["far.test"]'), name="b")
    a = postern_factory(BASE_CONFIG + f'\n[relay]\nsmarthost = "127.0.0.1:{b.port}"\n', name="a")
    with smtplib.SMTP("127.0.0.1", a.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["bob@far.test"], b"Subject: pass it on\r\n\r\nx\r\n",
                   mail_options=["ENVID=E-77"], rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@far.test"])
    b.wait_mail("bob")
    # B (the DSN-capable next hop) reports the success; A does not.
    wait_for(lambda: "dsn id=" in b.log() and "kind=delivered" in b.log(), what="success notice at the next hop")
    assert "dsn id=" not in a.log()


def test_notify_never_suppresses_bounce(postern_factory, internet):  # noqa: F811
    port, dns_port, _ = internet
    p = postern_factory(mx_config(port, dns_port))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["reject-me@good.test"], b"Subject: quiet\r\n\r\nx\r\n", rcpt_options=["NOTIFY=NEVER"])
    wait_for(lambda: "failed id=" in p.log(), what="failure")
    wait_for(lambda: p.queue_files()["active"] == [], what="message finished")
    assert p.maildir("alice") == [] and "bounced id=" not in p.log()


def test_delay_warning_then_expiry_with_last_reply(postern_factory, internet):  # noqa: F811
    port, dns_port, _ = internet
    cfg = mx_config(port, dns_port).replace('retry_max = "2s"', 'retry_max = "2s"\ndelay_warning = "2s"\nmax_lifetime = "6s"')
    p = postern_factory(cfg)
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["user@down.test"], b"Subject: slow\r\n\r\nx\r\n")
    first = wait_for(lambda: reports(p), timeout=20, what="delay warning")[0]
    assert first["Subject"] == "Delayed Mail (still being retried)"
    fields = status_fields(first)
    assert "Action: delayed" in fields and re.search(r"Status: 4\.\d+\.\d+", fields), fields
    final = wait_for(lambda: [m for m in p.maildir("alice") if b"Undelivered Mail Returned to Sender" in m], timeout=30, what="expiry bounce")[0]
    assert b"Status: 4.4.7" in final and b"Action: failed" in final
    assert b"delivery time expired; last reply: 4.4.1" in final, final


def normalize(text):
    text = re.sub(r"[0-9A-F]{16}", "<QUEUEID>", text)
    text = re.sub(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}", "<DATE>", text)
    text = re.sub(r'boundary="[^"]+"', 'boundary="<B>"', text)
    text = re.sub(r"--<QUEUEID>\.\d+/mx\.test", "--<B>", text)
    text = re.sub(r"(Received: from \S+ \(\[127\.0\.0\.1\]\)\n\tby mx\.test \(postern\) with ESMTP id <QUEUEID>)", r"\1", text)
    text = re.sub(r"\[127\.0\.0\.\d\]:\d+", "[127.0.0.x]:PORT", text)
    text = re.sub(r"Delivered-To: .*", "Delivered-To: alice@mx.test", text)
    return text


def test_bounce_golden_file(postern_factory, internet):  # noqa: F811
    port, dns_port, _ = internet
    p = postern_factory(mx_config(port, dns_port))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["reject-this@good.test"], b"Subject: to be refused\r\nMessage-ID: <golden@client.example>\r\n\r\nsecret\r\n")
    raw = p.wait_mail("alice", timeout=20)[0].decode()
    got = normalize(raw)
    golden = GOLDEN / "bounce-5xx.txt"
    if not golden.exists():
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(got)
        raise AssertionError(f"golden file written: {golden}; review and commit it")
    assert got == golden.read_text(), got


def test_smtputf8_and_8bit_to_hosts_without_them(postern_factory, internet):  # noqa: F811
    port, dns_port, sinks = internet
    p = postern_factory(mx_config(port, dns_port))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["jürgen@ascii.test"], "Subject: ü\r\n\r\nü\r\n".encode(), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        s.sendmail("alice@mx.test", ["user@sevenbit.test"], "Subject: 8bit\r\n\r\nGrüße\r\n".encode(), mail_options=["BODY=8BITMIME"])
        s.sendmail("alice@mx.test", ["ascii@sevenbit.test"], b"Subject: plain\r\n\r\nascii only\r\n", mail_options=["BODY=8BITMIME"])
    bounces = wait_for(lambda: len(reports(p)) >= 2 and reports(p), timeout=20, what="two bounces")
    text = "\n".join(status_fields(m) for m in bounces)
    assert "Status: 5.6.7" in text and "Final-Recipient: rfc822; jürgen@ascii.test" in text
    assert "Status: 5.6.3" in text and "Final-Recipient: rfc822; user@sevenbit.test" in text
    # Pure-ASCII content declared 8BITMIME still goes through.
    assert sinks["127.0.0.9"].wait()[0]["rcpt_tos"] == ["ascii@sevenbit.test"]
    assert sinks["127.0.0.8"].messages == []


def test_queue_bounce_on_request(postern_factory, internet):  # noqa: F811
    port, dns_port, _ = internet
    p = postern_factory(mx_config(port, dns_port).replace('domain_backoff = "1s"', 'domain_backoff = "1h"'))
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as s:
        s.sendmail("alice@mx.test", ["user@down.test"], b"Subject: stuck\r\n\r\nx\r\n")
    wait_for(lambda: "deferred id=" in p.log(), what="deferral")
    q = json.loads(p.cli("queue", "list", "--json").stdout)
    r = q[0]["recipients"][0]
    assert r["status"] == "pending" and r["next_attempt"] > 0 and "4.4.1" in r["last_reply"]
    out = p.cli("queue", "bounce", q[0]["id"])
    assert out.returncode == 0, out.stderr
    raw = p.wait_mail("alice", timeout=20)[0]
    assert b"returned to sender on request of the postmaster" in raw
    wait_for(lambda: p.queue_files()["active"] == [], what="queue empty")
