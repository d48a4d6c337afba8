#!/usr/bin/env python3
"""Plots restart latency per supervisor from a peers.py --json file:
p50, p99 and max as bars on a log scale, with the raw loop as the floor.
Usage: bench/plot.py RESULTS.json OUT.png   (needs matplotlib)
       bench/plot.py --scale OUT.png N1.json N2.json ...
The second form plots restart p50 and p99 against the number of services,
zurg and the raw loop, one peers.py run per n (bench/scale.sh)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def scale(out, files):
    by = {}
    for f in files:
        for r in json.load(open(f))["results"]:
            if "error" not in r and "restart_p50_ms" in r:
                by.setdefault(r["driver"], []).append(r)
    fig, ax = plt.subplots(figsize=(8, 4))
    for driver, style in (("raw", "--"), ("zurg", "-")):
        rows = sorted(by.get(driver, []), key=lambda r: r["n"])
        ns = [r["n"] for r in rows]
        for key, marker in (("restart_p50_ms", "o"), ("restart_p99_ms", "^")):
            ax.plot(ns, [r[key] for r in rows], style, marker=marker,
                    label="%s %s" % (driver, key.split("_")[1]))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("services")
    ax.set_ylabel("SIGKILL -> replacement running (ms, log)")
    ax.set_title("Restart latency against the number of services (one run per n)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    if sys.argv[1] == "--scale":
        return scale(sys.argv[2], sys.argv[3:])
    data = json.load(open(sys.argv[1]))
    rows = [r for r in data["results"] if "error" not in r and "restart_p50_ms" in r]
    names = [r["driver"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, (key, label) in enumerate([("restart_p50_ms", "p50"), ("restart_p99_ms", "p99"), ("restart_max_ms", "max")]):
        xs = [x + (i - 1) * width for x in range(len(rows))]
        ax.bar(xs, [r[key] for r in rows], width, label=label)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names)
    ax.set_ylabel("SIGKILL -> replacement running (ms, log)")
    raw = next((r for r in rows if r["driver"] == "raw"), None)
    if raw:
        ax.axhline(raw["restart_p50_ms"], color="grey", linestyle="--", linewidth=0.8, label="raw loop p50")
    n = rows[0]["n"] if rows else 0
    ax.set_title("Restart latency, %d services, one run (%s, %s CPUs)" % (n, data.get("when", "?"), data.get("cpus", "?")))
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
