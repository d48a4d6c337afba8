#!/usr/bin/env python3
"""`zurg history` over a full journal (two 8 MiB generations) against one
or more zurg binaries, alternating: per binary, the client's wall time and
the serving zurg's CPU time per request (all records, and `history NAME`),
and the growth of its peak RSS over the requests (VmHWM reset after start,
so the boot read of the journal does not hide it).

usage: bench/history.py ZURG [ZURG...] [--rounds N]
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

PER_FILE = 8 << 20


def frame(i):
    # Field order as serde writes `journal::Record`.
    payload = json.dumps(
        {
            "time_us": 1_000_000 + i,
            "service": f"old{i % 50}",
            "kind": "start" if i % 2 == 0 else "exit",
            "gpid": f"10.1.2.3:0:{1_000_000 + i}:{100 + i}",
            "version": "1.0.0",
        },
        separators=(",", ":"),
    ).encode()
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def journal(first):
    out, i = bytearray(), first
    while len(out) < PER_FILE - 200:
        out += frame(i)
        i += 1
    return bytes(out), i


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_ticks(pid):
    rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def deadline_wait(what, ok, seconds=60):
    end = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > end:
            sys.exit(f"timed out: {what}")
        time.sleep(0.05)


def run(zurg, work, rounds):
    state = os.path.join(work, "state")
    units = os.path.join(work, "units")
    sock = os.path.join(work, "sock")
    timed = os.path.join(work, "time-v")
    t = subprocess.Popen(
        ["/usr/bin/time", "-v", "-o", timed]
        + [zurg, "run", "--units", units, "--state", state, "--socket", sock],
        stderr=subprocess.DEVNULL,
    )
    children = f"/proc/{t.pid}/task/{t.pid}/children"
    deadline_wait("zurg started", lambda: open(children).read().split())
    z = Zurg(int(open(children).read().split()[0]))
    try:
        deadline_wait("the control socket", lambda: os.path.exists(sock))
        client = lambda *a: subprocess.run(
            [zurg, "history", *a, "--json", "--socket", sock],
            stdout=subprocess.PIPE,
            check=True,
        ).stdout
        deadline_wait("svc started", lambda: b"svc" in client("svc"))
        with open(f"/proc/{z.pid}/clear_refs", "w") as f:
            f.write("5")
        base = status(z.pid, "VmHWM")
        result = {}
        for label, args in (("all", ()), ("NAME", ("old7",))):
            walls, cpus = [], []
            for _ in range(rounds):
                c0, t0 = cpu_ticks(z.pid), time.monotonic()
                out = client(*args)
                walls.append(time.monotonic() - t0)
                cpus.append((cpu_ticks(z.pid) - c0) * 1000 // os.sysconf("SC_CLK_TCK"))
                n = len(json.loads(out)["result"])
            result[label] = (min(walls), sorted(cpus)[len(cpus) // 2], n)
        result["hwm"] = (base, status(z.pid, "VmHWM"))
    finally:
        os.kill(z.pid, signal.SIGTERM)
        t.wait(timeout=60)
    # What /usr/bin/time -v says of zurg's whole life: its start-up reads
    # the journal whole (boot_read), which may be its peak.
    for line in open(timed):
        key, _, value = line.strip().rpartition(": ")
        if key in ("Maximum resident set size (kbytes)", "User time (seconds)", "System time (seconds)"):
            result[key] = value
    return result


class Zurg:
    def __init__(self, pid):
        self.pid = pid


def main():
    args = sys.argv[1:]
    rounds = 5
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i : i + 2]
    work = tempfile.mkdtemp(prefix="zurg-history-bench-")
    try:
        os.makedirs(os.path.join(work, "state"))
        os.makedirs(os.path.join(work, "units"))
        with open(os.path.join(work, "units/svc.toml"), "w") as f:
            f.write('exec = "/bin/sleep"\nargs = ["1000"]\n')
        old, n = journal(0)
        new, _ = journal(n)
        print(f"journal: {len(old) + len(new)} bytes; load {os.getloadavg()}")
        for turn in range(2):
            for zurg in args:
                # Each run starts from the same files: the last one's
                # records may have rotated them.
                for name, data in (("journal.1", old), ("journal", new)):
                    with open(os.path.join(work, "state", name), "wb") as f:
                        f.write(data)
                r = run(zurg, work, rounds)
                a, m, (h0, h1) = r["all"], r["NAME"], r["hwm"]
                print(
                    f"{zurg} (turn {turn}): all {a[2]} records: best {a[0] * 1000:.0f} ms, "
                    f"zurg CPU median {a[1]} ms; NAME {m[2]} records: best {m[0] * 1000:.0f} ms, "
                    f"CPU median {m[1]} ms; peak RSS over the requests {h0} -> {h1} kB "
                    f"(+{h1 - h0}); time -v of zurg: max RSS "
                    f"{r['Maximum resident set size (kbytes)']} kB, user "
                    f"{r['User time (seconds)']} s, sys {r['System time (seconds)']} s; "
                    f"load {os.getloadavg()[0]:.1f}"
                )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
