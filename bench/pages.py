#!/usr/bin/env python3
"""The publisher's CPU while status pages are open (issue 21).

Usage (root, from the repository): bench/pages.py [SERVICES] [--pages N] [--seconds S]

SERVICES (default 1,000) `sleep 1` services under one `zurg run --publish`,
each started again as soon as it exits, so about SERVICES exits and as many
starts reach the publisher every second. The publisher serves its status
page (`--http`). The publisher's CPU time (user + system, from
/proc/PID/stat) is measured over S seconds (default 20) twice in one run:
with no page open, then with N (default 50) pages open. A page is what the
publisher serves to a browser: the page itself, /api/services once, then
the /events stream, read as fast as it comes by a plain client (Chromium's
own CPU is the browser's, not the publisher's). zurg's CPU over the same
windows is printed beside it.
"""

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from naming import ZURG, ROOT, Run, free_port, wait_for  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MARK = b"event: change\n"


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def get(http, path):
    host, port = http.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass


class Stream:
    """One page's /events stream, read as it comes; only its change events
    (an exit, a start) are counted, without JSON decoding: 50 of them must
    keep up in one Python."""

    def __init__(self, http):
        import threading
        host, port = http.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.changes = 0
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        tail = b""
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                return
            data = tail + data
            self.changes += data.count(MARK)
            tail = data[-len(MARK):]
            self.changes -= tail.count(MARK)


def restarts(run):
    return sum(s["restarts"] for s in run.status())


def window(pub, run, seconds):
    """CPU of the publisher and of zurg per second of wall time, and the
    exits per second zurg saw, over `seconds`."""
    r0 = restarts(run)
    p0, z0, t0 = cpu_s(pub), cpu_s(run.proc.pid), time.time()
    time.sleep(seconds)
    p1, z1, t1 = cpu_s(pub), cpu_s(run.proc.pid), time.time()
    exits = (restarts(run) - r0) / (t1 - t0)
    return (p1 - p0) / (t1 - t0), (z1 - z0) / (t1 - t0), exits


def main():
    args = sys.argv[1:]
    n = int(next((a for a in args if a.isdigit()), "1000"))
    pages = int(args[args.index("--pages") + 1]) if "--pages" in args else 50
    seconds = float(args[args.index("--seconds") + 1]) if "--seconds" in args else 20.0
    if not os.path.exists(ZURG):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "zurg"], cwd=ROOT, check=True)
    addr, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    pub = subprocess.Popen([ZURG, "publisher", "--listen", addr, "--http", http],
                           stderr=subprocess.DEVNULL)
    run = None
    try:
        wait_for("publisher", lambda: subprocess.run(
            [ZURG, "resolve", "--all", "--publisher", addr], capture_output=True).returncode in (0, 1))
        run = Run(n, publish=addr, seconds=1)
        time.sleep(3)  # past the first start's burst: the steady churn
        idle = window(pub.pid, run, seconds)
        streams = []
        for _ in range(pages):
            get(http, "/")
            get(http, "/api/services")
            streams.append(Stream(http))
        wait_for("every page's stream", lambda: all(r.changes for r in streams), 30)
        before = [r.changes for r in streams]
        opened = window(pub.pid, run, seconds)
        per_page = sum(r.changes - b for r, b in zip(streams, before)) / len(streams) / seconds
        print(f"# {n} services exiting and restarting every ~1 s; CPU in seconds per second (1.0 = one core)")
        print(f"no page open:    publisher {idle[0]:.3f}  zurg {idle[1]:.3f}  exits/s {idle[2]:.0f}")
        print(f"{pages} pages open:  publisher {opened[0]:.3f}  zurg {opened[1]:.3f}  exits/s {opened[2]:.0f}")
        print(f"changes/s reaching each page: {per_page:.0f} (an exit and a start each); "
              f"publisher CPU per open page: {(opened[0] - idle[0]) / pages * 1000:.2f} ms/s")
    finally:
        if run:
            run.stop()
        pub.kill()
        pub.wait()


if __name__ == "__main__":
    main()
