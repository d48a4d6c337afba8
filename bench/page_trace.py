#!/usr/bin/env python3
"""What Chromium did while the page's slowest deaths waited.

Usage:
    TRACE_FILE=/tmp/t.json bench/naming.py 200 --page [--gap=MS] ...
    bench/page_trace.py /tmp/t.json [N]

naming.py writes the Chromium trace to TRACE_FILE and each death's times
(kill, the watch's line, the plain /events client's read, the page's DOM;
CLOCK_MONOTONIC µs, the trace's clock) to TRACE_FILE.deaths.json. For the
N slowest deaths by page - watch (default 10), and for the median ones as a
reference, this prints every trace slice of at least 100 µs that overlaps
the window from the kill to the page's DOM change, by process and thread:
what the page's change waited behind. A last table sums, over all deaths,
each thread's busy time inside the windows of the slowest 2 % against the
median 50 %.
"""

import json
import sys
from collections import defaultdict

MIN_SLICE_US = 100


def load(path):
    with open(path) as f:
        trace = json.load(f)["traceEvents"]
    with open(path + ".deaths.json") as f:
        deaths = [d for d in json.load(f) if d.get("gone")]
    return trace, deaths


def names(trace):
    procs, threads = {}, {}
    for e in trace:
        if e.get("ph") != "M":
            continue
        if e["name"] == "process_name":
            procs[e["pid"]] = e["args"]["name"]
        elif e["name"] == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
    return procs, threads


def top_slices(trace):
    """Complete slices (ph X) per thread, outermost only: a slice inside
    another of the same thread is part of it."""
    by_thread = defaultdict(list)
    for e in trace:
        if e.get("ph") == "X" and "dur" in e:
            by_thread[(e["pid"], e["tid"])].append(e)
    out = {}
    for key, slices in by_thread.items():
        slices.sort(key=lambda e: (e["ts"], -e["dur"]))
        top, end = [], -1
        for e in slices:
            if e["ts"] >= end:
                top.append(e)
                end = e["ts"] + e["dur"]
        out[key] = top
    return out


def overlapping(slices, start, end):
    return [e for e in slices if e["ts"] < end and e["ts"] + e["dur"] > start]


def busy(slices, start, end):
    return sum(min(end, e["ts"] + e["dur"]) - max(start, e["ts"]) for e in overlapping(slices, start, end))


def main():
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    trace, deaths = load(path)
    procs, threads = names(trace)
    tops = top_slices(trace)

    def label(key):
        return f"{procs.get(key[0], key[0])}/{threads.get(key, key[1])}"

    deaths.sort(key=lambda d: (d["gone"] - d["killed"]) - (d["watch"] - d["killed"]))
    median = deaths[len(deaths) // 4: 3 * len(deaths) // 4]
    slowest = deaths[-max(1, len(deaths) // 50):]

    def show(d):
        print(f"\n{d['gpid']}: watch {d['watch'] - d['killed']:.0f} µs, "
              + (f"plain {d['plain'] - d['killed']:.0f} µs, " if d.get("plain") else "")
              + f"page {d['gone'] - d['killed']:.0f} µs after the kill")
        for key, slices in sorted(tops.items(), key=lambda kv: label(kv[0])):
            for e in overlapping(slices, d["killed"], d["gone"]):
                if e["dur"] >= MIN_SLICE_US:
                    print(f"  {label(key):<45} {e['ts'] - d['killed']:>8.0f} +{e['dur']:>6.0f}  {e['name']}")

    print(f"{len(deaths)} deaths; the {n} slowest by page - watch, then one of the median:")
    for d in deaths[-n:]:
        show(d)
    show(median[len(median) // 2])

    print(f"\nbusy µs per death inside the window kill -> page, by thread "
          f"(slowest {len(slowest)} vs median {len(median)}):")
    rows = []
    for key, slices in tops.items():
        slow = sum(busy(slices, d["killed"], d["gone"]) for d in slowest) / len(slowest)
        mid = sum(busy(slices, d["killed"], d["gone"]) for d in median) / len(median)
        if slow >= 50 or mid >= 50:
            rows.append((slow, mid, label(key)))
    for slow, mid, name in sorted(rows, reverse=True):
        print(f"  {name:<50} {slow:>8.0f} {mid:>8.0f}")


if __name__ == "__main__":
    main()
