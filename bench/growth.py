"""How cost grows (issue 20, item 8): msg/s and RSS against the queue size and against the
number of concurrent connections, written as JSON and plotted as PNGs (matplotlib).

  growth.py [--queue 1000,10000,100000] [--conns 100,1000,10000] [--systems postern,postfix,...]
            [--out docs/img] [--no-settle]
  growth.py --plot [--out docs/img]     the plots again from OUT/growth.json

Queue size: Q messages (4 KB) are sent at c=20 while the sink is down (the accept rate with
the queue growing), then the sink comes up and the queue is flushed (W5's drain rate); PSS
with the queue full (current, summed over the system's processes: shared pages counted once)
and the peak RSS of the run (VmHWM summed over them: a forking system's shared pages count once
per process).
Connections: W1 at c=C (4 KB, max(2000, 2*C) messages, a new connection per message; accept
and end-to-end msg/s, peak RSS), then C idle connections after EHLO (RSS per connection, W4).
Default systems: postern. Every run is bounded; every process is stopped by PID.
Output: OUT/growth.json, OUT/growth-queue.png, OUT/growth-connections.png.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import debpeers  # noqa: E402
from common import ROOT, arg, remove_shims  # noqa: E402
from peers import Postern, Postfix  # noqa: E402
from workloads import drain, idle_connections, raise_nofile, workload  # noqa: E402

SYSTEMS = {"postern": Postern, "postfix": Postfix, "exim": debpeers.Exim, "opensmtpd": debpeers.OpenSMTPD}


def ints(name, default):
    return [int(x) for x in arg(name, default).split(",") if x]


def measure(systems, queue_sizes, conns):
    out = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "queue": [], "connections": []}
    for q in queue_sizes:
        for cls in systems:
            stats = {}
            rate, ok = drain(cls, q, timeout=max(900, q // 20), stats=stats)
            row = {"system": cls.name, "queue": q, "drain_rate": rate, "all_arrived": ok, **stats}
            out["queue"].append(row)
            print(json.dumps(row), flush=True)
    for c in conns:
        for cls in systems:
            n = max(2000, 2 * c) // 100 * 100
            w = workload(cls, n, 4096, c, timeout=max(300, n // 50))
            idle = idle_connections(cls, c)
            row = {"system": cls.name, "connections": c, "messages": n, "accept_rate": w["accept_rate"],
                   "e2e_rate": w["e2e_rate"], "rss_kb": w["rss_kb"], "cpu_per_1k": w["cpu_per_1k"],
                   "all_arrived": w["all_arrived"], "idle_held": idle["held"],
                   "idle_kb_per_conn": idle["rss_kb_per_conn"] if cls is Postern else idle["pss_kb_per_conn"]}
            out["connections"].append(row)
            print(json.dumps(row), flush=True)
    return out


def plot(data, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(rows, key, x):
        by = {}
        for r in rows:
            by.setdefault(r["system"], []).append((r[x], r[key]))
        return {k: sorted(v) for k, v in by.items()}

    files = []
    for kind, x, xlabel, panels in (
            ("queue", "queue", "messages queued while the sink is down",
             [("msg/s", [("accept_rate", "accepted (queue growing)"), ("drain_rate", "drained (sink up)")], 1, False),
              ("memory MB (log)", [("pss_queued_kb", "PSS, queue full"),
                                   ("rss_kb", "peak RSS of the run, summed*")], 1024, True)]),
            ("connections", "connections", "concurrent connections",
             [("msg/s", [("accept_rate", "accepted"), ("e2e_rate", "end to end")], 1, False),
              ("peak RSS during W1, MB (log)", [("rss_kb", "summed*")], 1024, True),
              ("KB per idle connection after EHLO (log)", [("idle_kb_per_conn", "")], 1, True)])):
        rows = data[kind]
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
        for ax, (ylabel, keys, div, log_y) in zip(axes, panels):
            for key, label in keys:
                for system, pts in series(rows, key, x).items():
                    ax.plot([p[0] for p in pts], [p[1] / div for p in pts], marker="o",
                            label=f"{system}: {label}" if label else system)
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{kind}: {data['machine']}, {data['cpus']} CPUs, {data['started']}"
                     " (*summed over a system's processes: shared pages once per process)", fontsize=9)
        fig.tight_layout()
        path = os.path.join(outdir, f"growth-{kind}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)
    return files


def main():
    if "--plot" in sys.argv:  # plots again from an existing growth.json, nothing measured
        outdir = arg("--out", os.path.join(ROOT, "docs", "img"))
        with open(os.path.join(outdir, "growth.json")) as f:
            for path in plot(json.load(f), outdir):
                print(f"wrote {path}")
        return
    names = arg("--systems", "postern").lower().split(",")
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise SystemExit(f"--systems: unknown {unknown} (postern, postfix, exim, opensmtpd)")
    systems = [SYSTEMS[n] for n in names]
    queue_sizes = ints("--queue", "1000,10000,100000")
    conns = ints("--conns", "100,1000,10000")
    outdir = arg("--out", os.path.join(ROOT, "docs", "img"))
    os.makedirs(outdir, exist_ok=True)
    raise_nofile(max(conns, default=0) * 2 + 1000)  # smtp-source -s C, idle sockets
    try:
        data = measure(systems, queue_sizes, conns)
    finally:
        remove_shims()
    with open(os.path.join(outdir, "growth.json"), "w") as f:
        json.dump(data, f, indent=1)
    for path in plot(data, outdir):
        print(f"wrote {path}")
    print(f"wrote {os.path.join(outdir, 'growth.json')}")


if __name__ == "__main__":
    main()
