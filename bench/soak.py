#!/usr/bin/env python3
"""Soak: zurg as PID 1 under a crash loop, control clients and a publisher
that keeps restarting, for minutes; then checks that nothing leaked and
nothing was lost.

Usage (root, from the repository, after `cargo build --release`):

    python3 bench/soak.py [--minutes M] [--services N] [--plot docs/soak.png]

What runs, for M minutes (default 10):
  - `zurg run` as PID 1 of a new pid namespace (`unshare --pid --fork
    --mount-proc`) on N services (default 200). Each is a small sh script
    that appends its $ZURG_GPID to a log, sleeps a random 0.2-5 s, then
    exits with a random code 0-7 or SIGKILLs itself; `restart = "always"`
    with a short backoff (100 ms doubling to 1 s) keeps it looping;
  - three control clients in loops: `status`, `stats`, `history --since 5s`;
  - `zurg publisher --journal DIR` on loopback, killed (SIGKILL) and
    started again every 30 s; zurg publishes to it (`--publish`).
Every 5 s it samples zurg's RSS (VmRSS) and open descriptors (/proc/PID/fd).

At the end it stops the clients, leaves the publisher up, stops every
service (`zurg stop`), waits until the forwarder has every event
acknowledged, and checks:
  - no zombie in the namespace (a Z process seen twice, 1 s apart);
  - exactly once: each GPID a service logged at its start has one start
    and one exit record in zurg's journal and in the publisher's journal,
    and no GPID has two exits anywhere. Both journals keep two 8 MiB
    generations (about 65,000 records); once one has rotated, only GPIDs
    started after the oldest record both still hold are checked (the
    window is printed);
  - RSS and fds flat: after a warm-up (the first 10%), the mean of the
    last quarter of the samples against the mean of the first quarter.
It prints a JSON summary, writes the samples plot (needs matplotlib), and
exits 1 if a check failed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naming  # noqa: E402
from naming import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZURG = os.environ.get("ZURG", os.path.join(ROOT, "target/release/zurg"))

SERVICE = r"""#!/bin/sh
# One life of a soak service: log the GPID, sleep 0.2-5 s, then exit with
# a random code or SIGKILL itself.
echo "$ZURG_GPID" >> "$1"
r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
ms=$((200 + r % 4800))
sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
case $(( (r / 4800) % 3 )) in
0) kill -9 $$ ;;
*) exit $(( (r / 14400) % 8 )) ;;
esac
"""


def wait_for(what, cond, deadline=60, interval=0.05):
    return naming.wait_for(what, cond, deadline, interval)


def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def proc_status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split()[1]
    except OSError:
        return None
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def descendants(root):
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append((int(p), rest[0]))
    out, todo = [], [root]
    while todo:
        for pid, state in kids.get(todo.pop(), []):
            out.append((pid, state))
            todo.append(pid)
    return out


class Soak:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="zurg-soak-")
        os.chmod(self.dir, 0o755)
        self.units = os.path.join(self.dir, "units")
        os.mkdir(self.units, 0o755)
        self.script = os.path.join(self.dir, "svc.sh")
        with open(self.script, "w") as f:
            f.write(SERVICE)
        os.chmod(self.script, 0o755)
        self.started_log = os.path.join(self.dir, "started.log")
        for i in range(args.services):
            with open(os.path.join(self.units, f"s{i}.toml"), "w") as f:
                f.write(
                    f'exec = "/bin/sh"\nargs = ["{self.script}", "{self.started_log}"]\n'
                    f'restart = "always"\nport = {20000 + i}\n'
                    "backoff = { initial_ms = 100, max_ms = 1000 }\n"
                )
        self.sock = os.path.join(self.dir, "control.sock")
        self.state = os.path.join(self.dir, "state")
        self.pjournal = os.path.join(self.dir, "pjournal")
        self.addr = f"127.0.0.1:{free_port()}"
        self.env = dict(os.environ, ZURG_SOCKET=self.sock)
        self.stop_flag = threading.Event()
        self.requests = {"status": 0, "stats": 0, "history": 0}
        self.failed_requests = 0
        self.publisher = None
        self.publisher_restarts = 0
        self.samples = []  # (t, rss_kib, fds, publisher_rss_kib)

    # --- processes -------------------------------------------------------

    def start_publisher(self):
        self.publisher = subprocess.Popen(
            [ZURG, "publisher", "--listen", self.addr, "--journal", self.pjournal],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_publisher(self):
        if self.publisher:
            self.publisher.kill()
            self.publisher.wait()
            self.publisher = None

    def start_zurg(self):
        self.log = open(os.path.join(self.dir, "zurg.log"), "w")
        self.unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", ZURG, "run",
             "--units", self.units, "--socket", self.sock, "--state", self.state,
             "--host-ip", "127.0.0.1", "--publish", self.addr, "--grace", "2s"],
            stdout=self.log, stderr=self.log)

        def child():
            kids = [p for p, _ in descendants(self.unshare.pid)]
            return kids[0] if kids else None

        self.zurg = wait_for("zurg's pid", child)
        wait_for("the control socket", lambda: self.cli("version") is not None)

    def cli(self, *args):
        try:
            out = subprocess.run([ZURG, *args, "--json"], env=self.env,
                                 capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return None
        if not out.stdout:
            return None
        try:
            v = json.loads(out.stdout.splitlines()[0])
        except (json.JSONDecodeError, IndexError):
            return None
        return v.get("result") if v.get("ok") else None

    # --- load ------------------------------------------------------------

    def hammer(self, verb, *args):
        while not self.stop_flag.is_set():
            if self.cli(verb, *args) is None:
                self.failed_requests += 1
            self.requests[verb] += 1

    def publisher_churn(self):
        while not self.stop_flag.wait(30):
            self.kill_publisher()
            self.start_publisher()
            self.publisher_restarts += 1

    def sample(self, t0):
        while not self.stop_flag.wait(self.args.every):
            rss = proc_status(self.zurg, "VmRSS")
            fds = fd_count(self.zurg)
            prss = proc_status(self.publisher.pid, "VmRSS") if self.publisher else None
            if rss is None or fds is None:
                continue
            self.samples.append((time.time() - t0, int(rss), fds, int(prss) if prss else None))

    # --- checks ----------------------------------------------------------

    def zombies(self):
        first = {p for p, s in descendants(self.zurg) if s == "Z"}
        time.sleep(1)
        return sorted(p for p, s in descendants(self.zurg) if s == "Z" and p in first)

    def records(self, publisher):
        out = {}
        for i in range(self.args.services):
            args = ["history", f"s{i}"] + (["--publisher", self.addr] if publisher else [])
            rows = self.cli(*args)
            if rows is None:
                raise SystemExit(f"history s{i} (publisher={publisher}) failed")
            out[f"s{i}"] = rows
        return out

    def once(self, local, remote):
        logged = set()
        with open(self.started_log) as f:
            for line in f:
                line = line.strip()
                if line:
                    logged.add(line)

        def counts(recs):
            c, oldest = {}, None
            for rows in recs.values():
                for r in rows:
                    t = r.get("time_us")
                    if t is not None:
                        oldest = t if oldest is None else min(oldest, t)
                    g = r.get("gpid")
                    if g and r["kind"] in ("start", "exit"):
                        c.setdefault(g, {"start": 0, "exit": 0})[r["kind"]] += 1
            return c, oldest or 0

        lc, lold = counts(local)
        rc, rold = counts(remote)
        # The GPIDs both journals still hold: all of them while neither has
        # rotated, else those started after the oldest record of either (a
        # few seconds' margin for the clocks' order).
        rotated = [d for d in (self.state, self.pjournal)
                   if os.path.exists(os.path.join(d, "journal.1"))]
        since = max(lold, rold) + 5_000_000 if rotated else 0
        checked = [g for g in logged if int(g.rsplit(":", 2)[1]) >= since]
        bad = []
        for g in checked:
            for name, c in (("zurg", lc), ("publisher", rc)):
                got = c.get(g, {"start": 0, "exit": 0})
                if got != {"start": 1, "exit": 1}:
                    bad.append((name, g, got))
        dup = [(n, g, v) for n, c in (("zurg", lc), ("publisher", rc))
               for g, v in c.items() if v["exit"] > 1 or v["start"] > 1]
        return {
            "gpids_logged": len(logged),
            "gpids_checked": len(checked),
            "journals_rotated": rotated,
            "window_from_us": since,
            "exits_in_zurg_journal": sum(v["exit"] for v in lc.values()),
            "exits_at_publisher": sum(v["exit"] for v in rc.values()),
            "missing_or_wrong": len(bad),
            "duplicates": len(dup),
            "examples": (bad + dup)[:5],
        }

    def flat(self, column):
        xs = [s for s in self.samples if s[0] >= self.args.minutes * 60 * 0.1]
        vals = [s[column] for s in xs if s[column] is not None]
        q = max(1, len(vals) // 4)
        first, last = mean(vals[:q]), mean(vals[-q:])
        return first, last

    def plot(self, path):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("no matplotlib: plot skipped (pip install matplotlib)", file=sys.stderr)
            return
        ts = [s[0] / 60 for s in self.samples]
        fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
        a.plot(ts, [s[1] / 1024 for s in self.samples], label="zurg (PID 1)")
        pub = [(s[0] / 60, s[3] / 1024) for s in self.samples if s[3]]
        if pub:
            a.plot([p[0] for p in pub], [p[1] for p in pub], ".", markersize=2,
                   label="publisher (restarted every 30 s)")
        a.set_ylabel("RSS (MiB)")
        a.set_ylim(bottom=0)
        a.legend(loc="lower right", fontsize=8)
        b.plot(ts, [s[2] for s in self.samples], color="tab:green")
        b.set_ylabel("zurg's open fds")
        b.set_ylim(bottom=0)
        b.set_xlabel("minutes")
        a.set_title(f"Soak: {self.args.services} services crash-looping, control clients, "
                    f"publisher restarts ({time.strftime('%Y-%m-%d')})", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)

    # --- the run ---------------------------------------------------------

    def run(self):
        a = self.args
        load0 = os.getloadavg()
        self.start_publisher()
        self.start_zurg()
        t0 = time.time()
        threads = [threading.Thread(target=self.hammer, args=v, daemon=True)
                   for v in (("status",), ("stats",), ("history", "--since", "5s"))]
        threads.append(threading.Thread(target=self.publisher_churn, daemon=True))
        threads.append(threading.Thread(target=self.sample, args=(t0,), daemon=True))
        for t in threads:
            t.start()
        loads = []
        end = t0 + a.minutes * 60
        while time.time() < end:
            time.sleep(min(30, max(0.1, end - time.time())))
            loads.append(os.getloadavg()[0])
            s = self.samples[-1] if self.samples else None
            print(f"{(time.time() - t0) / 60:5.1f} min: rss {s and s[1]} KiB, fds {s and s[2]}, "
                  f"load {loads[-1]:.1f}", file=sys.stderr, flush=True)
        self.stop_flag.set()
        for t in threads:
            t.join(timeout=120)
        if self.publisher is None:
            self.start_publisher()
        names = [f"s{i}" for i in range(a.services)]
        stopped = self.cli("stop", *names)
        wait_for("every service stopped", lambda: all(
            r["state"] in ("stopped", "exited", "failed") for r in (self.cli("status") or [{"state": "?"}])), 120)

        def acked():
            v = self.cli("version")
            p = v and v.get("publish")
            return p and p.get("connected") and p.get("acked") == p.get("seq")
        wait_for("every event acknowledged", acked, 120)
        zombies = self.zombies()
        local = self.records(False)
        remote = self.records(True)
        once = self.once(local, remote)
        rss = self.flat(1)
        fds = self.flat(2)
        starts = sum(1 for rows in local.values() for r in rows if r["kind"] == "start")
        result = {
            "minutes": a.minutes,
            "services": a.services,
            "stopped_all": stopped is not None,
            "exits_per_s": round(once["exits_in_zurg_journal"] / (a.minutes * 60), 1),
            "starts_in_journal": starts,
            "control_requests": dict(self.requests),
            "control_requests_failed": self.failed_requests,
            "publisher_restarts": self.publisher_restarts,
            "zombies": zombies,
            "exactly_once": once,
            "rss_kib_first_quarter": round(rss[0]),
            "rss_kib_last_quarter": round(rss[1]),
            "fds_first_quarter": round(fds[0], 1),
            "fds_last_quarter": round(fds[1], 1),
            "rss_max_kib": max(s[1] for s in self.samples),
            "fds_max": max(s[2] for s in self.samples),
            "samples": len(self.samples),
            "load_before": round(load0[0], 2),
            "load_mean": round(mean(loads), 2),
            "cpus": os.cpu_count(),
        }
        ok = (not zombies and once["missing_or_wrong"] == 0 and once["duplicates"] == 0
              and once["gpids_checked"] > 0
              and rss[1] <= rss[0] * 1.10 + 1024 and fds[1] <= fds[0] + 5)
        result["ok"] = ok
        print(json.dumps(result, indent=1))
        if a.plot:
            self.plot(a.plot)
        return ok

    def close(self):
        self.stop_flag.set()
        try:
            os.kill(self.zurg, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
        try:
            self.unshare.wait(timeout=60)
        except (subprocess.TimeoutExpired, AttributeError):
            self.unshare.kill()
        self.kill_publisher()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"kept {self.dir}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--every", type=float, default=5, help="seconds between samples")
    p.add_argument("--plot", default=os.path.join(ROOT, "docs/soak.png"))
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (unshare --pid)")
    random.seed()
    s = Soak(a)
    try:
        ok = s.run()
    finally:
        s.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
