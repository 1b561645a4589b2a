"""postern vs Postfix, Exim and OpenSMTPD, same machine, same run, same relay-to-sink set-up.

Load: Postfix's smtp-source; sink: Postfix's smtp-sink (exits after the
expected number of messages, which gives the end-to-end time). Every loop is
bounded in count and time; all traffic is on 127.0.0.1. Every system keeps
its default durability (postern fsyncs every message before 250; Postfix,
Exim and OpenSMTPD fsync their queue files before 250).

Modules: common.py (helpers), peers.py (postern, Postfix), debpeers.py (Exim,
OpenSMTPD from their unpacked Debian packages), workloads.py (W1-W6),
growth.py (cost against queue size and connections, plots).

bench.py [--quick] [--only w1,w1dkim,w1dnsbl,w2,w3,w4,w4tls,w5,w6] [--peers postfix,exim,opensmtpd]
         [--sync fsync|syncfs] [--scale F] [--no-settle]
--scale 0.01 --no-settle: a functional check in a few minutes (figures not comparable).
"""

import json
import os
import sys

import debpeers
from common import arg, remove_shims, scaled
from peers import Postern, Postfix
from workloads import drain, idle_connections, local_delivery, loadgen, w1dnsbl, workload

PEERS = {"postfix": Postfix, "exim": debpeers.Exim, "opensmtpd": debpeers.OpenSMTPD}


def peers(quick):
    """--peers NAMES, else every peer available (bench/run unpacks Exim and OpenSMTPD); --quick
    without --peers: Postfix only (W1 ratio)."""
    names = arg("--peers")
    if names is None:
        return [Postfix] if quick else [Postfix, *debpeers.available()]
    out = []
    for name in names.lower().split(","):
        if name not in PEERS:
            raise SystemExit(f"--peers: unknown peer {name!r} (postfix, exim, opensmtpd)")
        if PEERS[name] is not Postfix and PEERS[name] not in debpeers.available():
            raise SystemExit(f"--peers: {name} is not unpacked under {debpeers.PEER_ROOT} (bench/run does it)")
        out.append(PEERS[name])
    return out


def with_tls(systems):
    """The peers whose TLS works (OpenSMTPD's does not with Debian 12's OpenSSL 3: debpeers.py)."""
    for cls in systems:
        if not getattr(cls, "tls_ok", True):
            print(f"(no TLS workload for {cls.name}: its STARTTLS fails with this OpenSSL, see debpeers.py)")
    return [cls for cls in systems if getattr(cls, "tls_ok", True)]


def show(label, name, r):
    extra = f"  p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms" if "p50" in r else ""
    if "signed" in r:
        extra += f"  signed at the sink {r['signed']}"
    if "delivered" in r:
        extra += f"  in Maildirs {r['delivered']}"
    if "flushes_per_msg" in r:
        extra += f"  device flushes/msg {r['flushes_per_msg']:.2f}"
    if r.get("error"):
        extra += f"  first error: {r['error']}"
    print(f"{label:10} {name:9} {r['accept_rate']:9.0f} {r['e2e_rate']:9.0f} {r['cpu_per_1k']:9.2f} "
          f"{r['rss_kb'] / 1024:7.1f} {r['all_arrived']}{extra}", flush=True)


def ratio_line(label, a, b, peer="postfix"):
    """postern / peer, end to end and CPU per message."""
    if not b["e2e_rate"]:
        return None
    ratio = a["e2e_rate"] / b["e2e_rate"]
    print(f"{label:10} ratio vs {peer:9} e2e {ratio:.2f}  cpu {a['cpu_per_1k'] / max(b['cpu_per_1k'], 1e-9):.2f}",
          flush=True)
    return ratio


def side_by_side(label, systems, run):
    """run(cls) for postern and every peer; the rows, then postern's ratio to each peer.
    Returns the ratio to Postfix (None when Postfix is not among them or delivered nothing)."""
    res = {}
    for cls in (Postern, *systems):
        res[cls.name] = run(cls)
        show(label, cls.name, res[cls.name])
    ratios = {cls.name: ratio_line(label, res["postern"], res[cls.name], cls.name) for cls in systems}
    return ratios.get("postfix")


def main():
    quick = "--quick" in sys.argv
    only = {"w1"} if quick else {"w1", "w1dkim", "w2", "w3", "w4", "w4tls", "w5", "w6"}
    if "--w45" in sys.argv:  # older spelling of --only w4,w5
        only = {"w4", "w5"}
    if "--only" in sys.argv:
        only = set(arg("--only").lower().split(","))
    systems = peers(quick)
    runs = []
    if "w1" in only:
        runs += [("W1", 4096, 20, 2000)] if quick else [("W1-c1", 4096, 1, 2000), ("W1", 4096, 20, 10000),
                                                        ("W1-c100", 4096, 100, 10000)]
    # One W1 row only: --only w1c1, w1c20, w1c100.
    runs += [r for key, r in (("w1c1", ("W1-c1", 4096, 1, 2000)), ("w1c20", ("W1", 4096, 20, 10000)),
                              ("w1c100", ("W1-c100", 4096, 100, 10000))) if key in only and "w1" not in only]
    if "w2" in only:
        # bench/sink.c as the sink (see its header); 1000 messages of 1 MB: 300 took under 2 s.
        runs += [("W2-100k", 100 * 1024, 20, 2000), ("W2-1M", 1024 * 1024, 20, 1000)]
    if "w1dkim" in only:  # W1 with DKIM signing: postern [[dkim]] vs Postfix + opendkim milter
        runs += [("W1-DKIM", 4096, 20, 10000)]
    print(f"{'workload':10} {'system':9} {'accept/s':>9} {'e2e/s':>9} {'cpu s/1k':>9} {'rss MB':>7} arrived")
    ratios = {}
    try:
        for name, size, conc, n in runs:
            dkim = name == "W1-DKIM"
            peers_here = [Postfix] if dkim else systems  # opendkim is wired into Postfix only
            ratios[name] = side_by_side(name, peers_here,
                                        lambda cls: workload(cls, scaled(n), size, conc, dkim=dkim,
                                                             fast_sink=name.startswith("W2")))
        if "w1dnsbl" in only:
            w1dnsbl_runs(quick)
        if "w3" in only:
            # W1-lat: W1's traffic with the latency-measuring client (a connection per message).
            for label, auth in (("W1-lat", False), ("W3", True)):
                ratios[label] = side_by_side(label, with_tls(systems) if auth else systems,
                                             lambda cls: loadgen(cls, scaled(3000), 20, auth))
        for label, tls, n in (("W4", False, 10000), ("W4-TLS", True, 10000)):
            if label.lower().replace("-", "") in only:
                for cls in (Postern, *(with_tls(systems) if tls else systems)):
                    r = idle_connections(cls, scaled(n, 10), tls=tls)
                    what = "STARTTLS and EHLO" if tls else "EHLO"
                    print(f"{label:10} {cls.name:9} {r['held']} of {r['wanted']} idle connections held after {what}, "
                          f"{r['pss_kb_per_conn']:.1f} KB PSS each"
                          + (f" ({r['rss_kb_per_conn']:.1f} KB RSS)" if cls is Postern else "")
                          + (f"  stopped: {r['error']}" if r["error"] else ""), flush=True)
        if "w5" in only:
            rates = {}
            for cls in (Postern, *systems):
                rate, ok = drain(cls, scaled(50000))
                rates[cls.name] = rate
                print(f"W5         {cls.name:9} drain {rate:9.0f} msg/s  all arrived {ok}", flush=True)
            for cls in systems:
                if rates.get(cls.name):
                    print(f"W5         ratio vs {cls.name:9} drain {rates['postern'] / rates[cls.name]:.2f}")
        if "w6" in only:
            n = 2000 if quick else 10000
            ratios["W6"] = side_by_side("W6", systems, lambda cls: local_delivery(cls, scaled(n), 20))
    finally:
        remove_shims()
    if "W1-DKIM" in ratios:
        print(f"W1-DKIM ratio: {ratios['W1-DKIM'] or 0:.2f}")
    if "W1" in ratios or not (ratios or "w1dnsbl" in only):
        print(f"W1 ratio: {ratios.get('W1') or 0:.2f}")


def w1dnsbl_runs(quick):
    # W1-DNSBL: postern alone (Postfix would need the DNS server on port 53 of
    # /etc/resolv.conf): no lookups, then the two lists, then the lists and the reverse lookup.
    n = scaled(2000 if quick else 10000)
    res = {}
    for label, dnsbl, rdns in (("none", False, False), ("dnsbl", True, False), ("dnsbl+rdns", True, True)):
        r = res[label] = w1dnsbl(n, 4096, 20, dnsbl, rdns)
        show("W1-DNSBL", "postern", r)
        queries = sum(r["dns"].values())
        print(f"W1-DNSBL   {label:10} {n} msgs, {r['cpu_per_1k']:.3f} ms CPU/msg "
              f"(+{r['cpu_per_1k'] - res['none']['cpu_per_1k']:.3f}), "
              f"{20 * 1000 / r['accept_rate']:.2f} ms/msg per connection slot "
              f"(+{20 * 1000 / r['accept_rate'] - 20 * 1000 / res['none']['accept_rate']:.2f}); "
              f"DNS queries answered {queries} {json.dumps(r['dns'], sort_keys=True)}, "
              f"DNS server CPU {r['dns_cpu']:.2f} s; mail log {json.dumps(r['log'], sort_keys=True)}",
              flush=True)
    print(f"W1-DNSBL ratio: {res['dnsbl+rdns']['accept_rate'] / res['none']['accept_rate']:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
