"""W1-DNSBL's DNS server: dnslib on a loopback port, answering for the client address only.

    python3 dnszone.py PORT CLIENT_IP CLIENT_NAME LIST [LIST...]

- PTR of CLIENT_IP -> CLIENT_NAME, A of CLIENT_NAME -> CLIENT_IP (so FCrDNS says "ok");
  AAAA of CLIENT_NAME: no records (NOERROR, empty, with the SOA);
- every LIST is a DNSBL zone that does not list the client (NXDOMAIN, with an SOA
  whose minimum, 300 s, is the negative TTL);
- anything else: REFUSED.

Positive answers have a TTL of 300 s. Every query is counted by (type, kind); on SIGTERM
the counts are written to stdout as one JSON line, so the bench can show that postern
asked once per name, not once per message.
"""

import json
import signal
import sys
import threading

from dnslib import PTR, QTYPE, RCODE, RR, SOA, A
from dnslib.server import BaseResolver, DNSServer

TTL = 300


class Zone(BaseResolver):
    def __init__(self, client_ip, client_name, lists):
        self.ptr = ".".join(reversed(client_ip.split("."))) + ".in-addr.arpa."
        self.ip = client_ip
        self.name = client_name.rstrip(".") + "."
        self.lists = [z.rstrip(".") + "." for z in lists]
        self.counts = {}
        self.lock = threading.Lock()

    def count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def resolve(self, request, handler):
        reply = request.reply()
        q = request.q
        qname, qtype = str(q.qname).lower(), QTYPE[q.qtype]
        if qname == self.ptr and qtype == "PTR":
            reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(self.name), ttl=TTL))
            self.count(f"{qtype} client")
        elif qname == self.name and qtype in ("A", "AAAA"):
            if qtype == "A":
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(self.ip), ttl=TTL))
            else:  # NODATA, with the SOA that makes it cacheable (RFC 2308 §5)
                reply.add_auth(soa(self.name.split(".", 1)[1]))
            self.count(f"{qtype} client-name")
        elif any(qname.endswith("." + z) or qname == z for z in self.lists):
            zone = next(z for z in self.lists if qname.endswith("." + z) or qname == z)
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(soa(zone))
            self.count(f"{qtype} {zone.rstrip('.')}")
        else:
            reply.header.rcode = RCODE.REFUSED
            self.count(f"{qtype} other")
        return reply


def soa(zone):
    """The zone's SOA; its minimum (TTL s) is the negative-caching TTL (RFC 2308 §5)."""
    return RR(zone, QTYPE.SOA, ttl=TTL, rdata=SOA("ns." + zone, "hostmaster." + zone, (1, 3600, 600, 86400, TTL)))


def main():
    port, client_ip, client_name, *lists = sys.argv[1:]
    zone = Zone(client_ip, client_name, lists)
    udp = DNSServer(zone, address="127.0.0.1", port=int(port), logger=Quiet())
    tcp = DNSServer(zone, address="127.0.0.1", port=int(port), tcp=True, logger=Quiet())
    udp.start_thread()
    tcp.start_thread()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait(3600)  # bounded: the bench stops it long before
    udp.stop()
    tcp.stop()
    print(json.dumps(zone.counts, sort_keys=True), flush=True)


class Quiet:
    """dnslib's logger interface, saying nothing."""

    def __getattr__(self, _name):
        return lambda *a, **k: None


if __name__ == "__main__":
    main()
