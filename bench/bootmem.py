#!/usr/bin/env python3
"""Peak RSS of zurg booting on a full journal, and of the publisher
answering `history --publisher` on a full journal, against one or more zurg
binaries.

Boot: `zurg run` as PID 1 of a new pid namespace (so the leftovers check
looks at nothing but its own) on a state directory holding two full
generations at each `--journal-size` given (bench/history.py's records:
every start without an exit, the worst case for the leftovers fold), with
one service; VmHWM once that service runs, and again once a journal read
that missed the boot's 3 s deadline has arrived.

Publisher: `zurg publisher --journal DIR` on two full 8 MiB generations
(the publisher's journal size) of records from 4 hosts, each with its
host's zurg GPID and sequence number; VmHWM listening, then after
`history --publisher` (all) and after `history NAME --publisher`.

usage: bench/bootmem.py ZURG [ZURG...] [--sizes 8M,64M]
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import history  # noqa: E402  (its journal generator)

from history import cpu_ticks, deadline_wait, status  # noqa: E402


def size_bytes(text):
    units = {"K": 10, "M": 20, "G": 30}
    return int(text[:-1]) << units[text[-1].upper()]


def run_journal(size):
    history.PER_FILE = size
    old, n = history.journal(0)
    new, _ = history.journal(n)
    return old, new


def publisher_frame(i, hosts=4, services=50, time_us=None, service=None):
    """Record `i` of a publisher's journal: host `i % hosts`, its own
    sequence numbers, service `old{i % services}` (or `service`), at
    `time_us` (default 1_000_000 + i)."""
    host = i % hosts
    payload = json.dumps(
        {
            "time_us": 1_000_000 + i if time_us is None else time_us,
            "service": service or f"old{i % services}",
            "kind": "start" if (i // hosts) % 2 == 0 else "exit",
            "gpid": f"10.1.{2 + host // 250}.{host % 250}:0:{1_000_000 + i}:{100 + i}",
            "version": "1.0.0",
            "seq": i // hosts + 1,
            "zurg": f"10.1.{2 + host // 250}.{host % 250}:0:999:1",
        },
        separators=(",", ":"),
    ).encode()
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def publisher_journal(first, size=8 << 20, frame=publisher_frame):
    out, i = bytearray(), first
    while len(out) < size - 300:
        out += frame(i)
        i += 1
    return bytes(out), i


def inner_zurg(outer):
    """The zurg below `unshare --fork`."""
    children = f"/proc/{outer}/task/{outer}/children"
    deadline_wait("zurg under unshare", lambda: open(children).read().split())
    return int(open(children).read().split()[0])


def boot(zurg, work, size_text, files):
    state = os.path.join(work, "state")
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(state)
    for name, data in zip(("journal.1", "journal"), files):
        with open(os.path.join(state, name), "wb") as f:
            f.write(data)
    units = os.path.join(work, "units")
    sock = os.path.join(work, "sock")
    log = os.path.join(work, "log")
    with open(log, "wb") as err:
        outer = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", zurg, "run"]
            + ["--units", units, "--state", state, "--socket", sock]
            + ["--journal-size", size_text],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    pid = None
    try:
        pid = inner_zurg(outer.pid)

        def running():
            out = subprocess.run(
                [zurg, "status", "svc", "--json", "--socket", sock],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            ).stdout
            try:
                return json.loads(out)["result"][0]["state"] == "running"
            except (ValueError, KeyError, IndexError):
                return False

        t0 = time.monotonic()
        deadline_wait("svc running", running, 120)
        boot_s = time.monotonic() - t0
        at_start = status(pid, "VmHWM")
        text = lambda: open(log, errors="replace").read()
        if "did not answer within" in text():
            deadline_wait("the late journal", lambda: "too late" in text(), 120)
        return at_start, status(pid, "VmHWM"), boot_s, text()
    finally:
        # unshare ignores SIGTERM while it waits: zurg, its PID 1, is told.
        os.kill(pid or outer.pid, signal.SIGTERM)
        outer.wait(timeout=60)


def start_publisher(zurg, work, files):
    """A publisher on loopback whose journal is `files` (journal.1, then
    journal), once it listens: (process, address)."""
    jdir = os.path.join(work, "pubjournal")
    shutil.rmtree(jdir, ignore_errors=True)
    os.makedirs(jdir)
    for name, data in zip(("journal.1", "journal"), files):
        with open(os.path.join(jdir, name), "wb") as f:
            f.write(data)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    addr = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    p = subprocess.Popen(
        [zurg, "publisher", "--listen", addr, "--journal", jdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening():
        try:
            socket.create_connection(addr.split(":"), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        deadline_wait("the publisher listening", listening, 60)
    except BaseException:
        p.kill()
        p.wait(timeout=60)
        raise
    return p, addr


def publisher(zurg, work, files):
    p, addr = start_publisher(zurg, work, files)
    try:
        out = [status(p.pid, "VmHWM")]
        for args in ((), ("old7",)):
            c0 = cpu_ticks(p.pid)
            r = subprocess.run(
                [zurg, "history", *args, "--publisher", addr, "--json"],
                stdout=subprocess.PIPE,
                check=True,
            )
            n = len(json.loads(r.stdout)["result"])
            cpu = (cpu_ticks(p.pid) - c0) * 1000 // os.sysconf("SC_CLK_TCK")
            out.append((status(p.pid, "VmHWM"), n, cpu))
        return out
    finally:
        p.kill()
        p.wait(timeout=60)


def main():
    args = sys.argv[1:]
    sizes = ["8M", "64M"]
    if "--sizes" in args:
        i = args.index("--sizes")
        sizes = args[i + 1].split(",")
        del args[i : i + 2]
    work = tempfile.mkdtemp(prefix="zurg-bootmem-bench-")
    try:
        os.makedirs(os.path.join(work, "units"))
        with open(os.path.join(work, "units/svc.toml"), "w") as f:
            f.write('exec = "/bin/sleep"\nargs = ["1000"]\n')
        for zurg in args:
            at, _, _, _ = boot(zurg, work, "8M", (b"", b""))
            print(f"{zurg}: boot on no journal: VmHWM {at} kB; load {os.getloadavg()[0]:.1f}")
        for size_text in sizes:
            files = run_journal(size_bytes(size_text))
            total = sum(len(f) for f in files)
            for zurg in args:
                at, later, secs, text = boot(zurg, work, size_text, files)
                late = " (journal read past the 3 s deadline)" if "too late" in text else ""
                print(
                    f"{zurg}: boot on --journal-size {size_text} full ({total} bytes): "
                    f"VmHWM {at} kB when svc runs ({secs:.1f} s), {later} kB after{late}; "
                    f"load {os.getloadavg()[0]:.1f}"
                )
        old, n = publisher_journal(0)
        new, _ = publisher_journal(n)
        for zurg in args:
            listening, (after_all, n_all, cpu_all), (after_name, n_name, cpu_name) = publisher(
                zurg, work, (old, new)
            )
            print(
                f"{zurg}: publisher on a full journal ({len(old) + len(new)} bytes): VmHWM "
                f"{listening} kB listening, {after_all} kB after history ({n_all} records, "
                f"publisher CPU {cpu_all} ms), {after_name} kB after history NAME ({n_name}, "
                f"{cpu_name} ms); load {os.getloadavg()[0]:.1f}"
            )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
