"""postern verifies mail signed by real opendkim (issue 18): a first postern
runs Debian's opendkim as a signing milter and relays to a second postern
through its smarthost; the second one checks the signature with its own
verifier against a dnslib DNS server and writes `dkim=pass` into its
Authentication-Results. A message whose body a relay changes fails."""

import smtplib

from dnslib import A
from dnslib.server import DNSServer

from conftest import BASE_CONFIG, free_port, wait_for
from test_mail_auth import Zone, txt
from test_milter import milter_config, opendkim_instance


def test_postern_verifies_opendkim_signatures(postern_factory, tmp_path):
    proc, milter_port, record = opendkim_instance(tmp_path)
    dns_port = free_port()
    zone = Zone({
        ("test._domainkey.example.org", "TXT"): [txt(record.decode())],
        ("example.org", "TXT"): [txt("v=spf1 ip4:127.0.0.1 -all")],
        ("_dmarc.example.org", "TXT"): [txt("v=DMARC1; p=reject")],
        ("example.org", "A"): [A("192.0.2.1")],
    })
    servers = [DNSServer(zone, port=dns_port, address="127.0.0.1"), DNSServer(zone, port=dns_port, address="127.0.0.1", tcp=True)]
    for s in servers:
        s.start_thread()
    try:
        # The verifier: an MX for mx.test that trusts nobody (relay.networks empty).
        verifier = postern_factory(BASE_CONFIG + f"""
[relay]
networks = []
[mx]
nameservers = ["127.0.0.1:{dns_port}"]
[mail_auth]
dns_timeout = "2s"
""", name="verifier")
        # The signer: opendkim as its milter, everything relayed to the verifier.
        cfg = milter_config([("opendkim", milter_port, "")], extra=f'[relay]\nsmarthost = "127.0.0.1:{verifier.port}"\n')
        signer = postern_factory(cfg.replace('domains = ["mx.test", "localhost"]', 'domains = ["signer.test"]'), name="signer")
        msg = (b"From: Sender <sender@example.org>\r\nTo: bob@mx.test\r\nSubject: signed by opendkim\r\n"
               b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <opendkim-verify@example.org>\r\n\r\n"
               b"A body line.\r\n")
        with smtplib.SMTP("127.0.0.1", signer.port, timeout=20) as s:
            s.sendmail("sender@example.org", ["bob@mx.test"], msg)
        got = verifier.wait_mail("bob")[0]
        head = got.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in got else got.split(b"\n\n", 1)[0]
        assert b"DKIM-Signature:" in head, got[:1500]
        ar = head[head.index(b"Authentication-Results:"):].decode(errors="replace")
        assert "dkim=pass" in ar and "header.d=example.org" in ar and "header.s=test" in ar, ar
        assert "dmarc=pass" in ar, ar
        wait_for(lambda: "authres=spf:pass,dkim:pass,dmarc:pass" in verifier.log(), what="authres on the queued line")
    finally:
        proc.kill()
        proc.wait(5)
        for s in servers:
            s.stop()
