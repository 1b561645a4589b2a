"""ARC chains sealed by a real peer (dkimpy `arc_sign`, RSA keys published
in a dnslib server on loopback) checked by postern and by dkimpy's
`arc_verify` on the same bytes: one seal, a chain of two, a message changed
after sealing. Then the message-stage `[[rule]]`s (spf/dkim/dmarc/arc
criteria) over real verification: a mailing-list forward that breaks DKIM
and DMARC but carries a valid ARC chain is accepted by a rule; a broken
chain goes to the hold queue; SPF softfail is refused naming the rule; a DNS
failure gives 451 4.7.1. Each decision is logged with rule= and origin=."""

import base64
import json
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import A
from dnslib.server import DNSServer

from conftest import free_port
from test_mail_auth import HELO, Zone, config, delivered, message, results, sent, txt


def rsa_key():
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    pub = base64.b64encode(k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    return priv, pub


@pytest.fixture(scope="module")
def arc_keys():
    return {name: rsa_key() for name in ("origin", "fwd1", "fwd2")}


@pytest.fixture(scope="module")
def arc_dns(arc_keys):
    records = {
        ("origin.test", "TXT"): [txt("v=spf1 ip4:192.0.2.1 -all")],
        ("_dmarc.origin.test", "TXT"): [txt("v=DMARC1; p=reject")],
        ("s._domainkey.origin.test", "TXT"): [txt("v=DKIM1; k=rsa; p=" + arc_keys["origin"][1])],
        ("fwd1.test", "TXT"): [txt("v=spf1 ip4:127.0.0.1 -all")],
        ("arc._domainkey.fwd1.test", "TXT"): [txt("v=DKIM1; k=rsa; p=" + arc_keys["fwd1"][1])],
        ("fwd2.test", "TXT"): [txt("v=spf1 ip4:127.0.0.1 -all")],
        ("arc._domainkey.fwd2.test", "TXT"): [txt("v=DKIM1; k=rsa; p=" + arc_keys["fwd2"][1])],
        ("soft.test", "TXT"): [txt("v=spf1 ip4:192.0.2.1 ~all")],
        ("client.test", "A"): [A("127.0.0.1")],
    }
    servfail = {"dnsfail.test"}
    port = free_port()
    servers = [DNSServer(Zone(records, servfail), port=port, address="127.0.0.1", tcp=tcp) for tcp in (False, True)]
    for s in servers:
        s.start_thread()
    yield port
    for s in servers:
        s.stop()


def dnsfunc_for(port):
    import dns.resolver

    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = port
    res.lifetime = 3

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            ans = res.resolve(name.rstrip(".") + ".", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(r.strings) for r in ans)

    return dnsfunc


def origin_signed(keys, subject):
    """A message from origin.test, DKIM-signed there (p=reject)."""
    msg = message("a@origin.test", subject)
    sig = dkim.sign(msg, b"s", b"origin.test", keys["origin"][0], include_headers=[b"from", b"to", b"subject", b"date"])
    return sig + msg


def seal(msg, keys, hop, results):
    """One forwarder's hop: its Authentication-Results, then dkimpy's ARC set."""
    srv = f"{hop}.test".encode()
    msg = b"Authentication-Results: " + srv + b"; " + results.encode() + b"\r\n" + msg
    headers = dkim.arc_sign(msg, b"arc", srv, keys[hop][0], srv, include_headers=[b"from", b"to", b"subject", b"date"])
    assert headers, "dkimpy made no ARC set"
    return b"".join(headers) + msg


def chains(keys):
    one = seal(origin_signed(keys, "arc one"), keys, "fwd1", "dkim=pass header.d=origin.test")
    two = seal(seal(origin_signed(keys, "arc two"), keys, "fwd1", "dkim=pass header.d=origin.test"), keys, "fwd2", "arc=pass")
    broken = seal(seal(origin_signed(keys, "arc broken"), keys, "fwd1", "dkim=pass header.d=origin.test"), keys, "fwd2", "arc=pass")
    broken = broken.replace(b"body\r\n", b"b0dy\r\n")
    # A list that rewrites the Subject (DKIM of origin.test breaks) and seals.
    listed = origin_signed(keys, "arc list").replace(b"Subject: arc list", b"Subject: [list] arc list")
    listed = seal(listed, keys, "fwd1", "dkim=pass header.d=origin.test")
    return [("one", one, "pass"), ("two", two, "pass"), ("broken", broken, "fail"), ("list", listed, "pass")]


def subject(data):
    return re.search(rb"Subject: ([^\r\n]+)", data).group(1).decode()


def test_arc_chains_match_dkimpy(postern_factory, arc_dns, arc_keys, tmp_path):
    p = postern_factory(config(arc_dns, 'dmarc_reject = false\ndmarc_quarantine = "none"'))
    dnsfunc = dnsfunc_for(arc_dns)
    for name, data, want in chains(arc_keys):
        cv, _, why = dkim.arc_verify(data, dnsfunc=dnsfunc)
        assert cv.decode() == want, (name, cv, why)
        assert sent(p, "a@fwd1.test", data, tmp_path, name).startswith("250"), name
        got, header = results(delivered(p, subject(data)))
        assert got["arc"] == want, (name, header)
        assert got["spf"] == "pass", (name, header)
    # The list forward: origin.test's signature and DMARC fail, ARC holds.
    got, _ = results(delivered(p, "[list] arc list"))
    assert (got["dkim"], got["dmarc"]) == ("fail", "fail"), got


RULES = """
[[rule]]
name = "arc-forwarded"
dmarc = ["fail"]
arc = ["pass"]
action = "accept"

[[rule]]
name = "broken-arc"
arc = ["fail"]
action = "hold"

[[rule]]
name = "no-softfail"
spf = ["softfail"]
action = "reject"
message = "SPF softfail refused here"

[[rule]]
name = "dns-trouble"
spf = ["temperror"]
action = "tempfail"
"""


def test_message_rules(postern_factory, arc_dns, arc_keys, tmp_path):
    p = postern_factory(config(arc_dns, "dmarc_reject = true\n" + RULES))
    cases = {name: data for name, data, _ in chains(arc_keys)}
    # Without ARC, a DMARC p=reject failure is refused by the [mail_auth] switch.
    plain = origin_signed(arc_keys, "no arc").replace(b"Subject: no arc", b"Subject: [list] no arc")
    assert sent(p, "a@fwd1.test", plain, tmp_path, "plain").startswith("550 5.7.1"), "dmarc reject"
    # The same forward with a valid chain: accepted by the rule, delivered.
    assert sent(p, "a@fwd1.test", cases["list"], tmp_path, "list").startswith("250")
    got, _ = results(delivered(p, "[list] arc list"))
    assert (got["dmarc"], got["arc"]) == ("fail", "pass"), got
    log = p.log()
    assert re.search(r"queued .*authres=spf:pass,dkim:fail,dmarc:fail,arc:pass rule=arc-forwarded origin=\S+:\d+", log), log[-2000:]
    # A chain broken after sealing: the hold queue, the rule as reason.
    reply = sent(p, "a@fwd1.test", cases["broken"], tmp_path, "broken")
    assert reply.startswith("250"), reply
    qid = reply.split()[-1]
    entry = [e for e in json.loads(p.cli("queue", "list", "--json").stdout) if e["id"] == qid]
    assert entry and "hold" in json.dumps(entry[0]).lower(), entry
    assert re.search(r"hold id=" + qid + r' reason="rule broken-arc \(\S+:\d+\)"', p.log()), p.log()[-2000:]
    # SPF softfail: 550 5.7.1 with the rule's message and name.
    reply = sent(p, "a@soft.test", message("a@soft.test", "soft"), tmp_path, "soft")
    assert reply.startswith("550 5.7.1 SPF softfail refused here (rule no-softfail)"), reply
    assert re.search(r"reject .*rule=no-softfail origin=\S+:\d+", p.log()), p.log()[-2000:]
    # SPF cannot be checked (SERVFAIL): 451 4.7.1, never a silent pass.
    reply = sent(p, "a@dnsfail.test", message("a@dnsfail.test", "dns"), tmp_path, "dns")
    assert reply.startswith("451 4.7.1"), reply
    assert re.search(r"reject .*rule=dns-trouble", p.log()), p.log()[-2000:]
    # explain --message names the rule.
    f = tmp_path / "list.eml"
    f.write_bytes(cases["list"])
    r = p.cli("explain", "--ip", "127.0.0.1", "--helo", HELO, "--from", "a@fwd1.test", "--message", str(f), "--json")
    v = json.loads(r.stdout)
    assert (v["arc"], v["rule"], v["decision"]) == ("pass", "arc-forwarded", "accept"), v
