#!/usr/bin/env python3
"""Naming latency: from a service's death to the change arriving at a
`zurg resolve --watch` client, and restart latency with a dead, stalled or
live publisher versus none.

Usage (root, from the repository):
    bench/naming.py [KILLS] [--etcd | --etcd-only | --page | --page-floor [--rounds=R] [--back-to-back] [--plain] [--gap=MS]] [--no-restarts]

KILLS services run under one `zurg run`; each is SIGKILLed once (a first
crash restarts at once, so the crash-loop backoff never comes in) and the
time from kill(2) to the watch printing the `down` change is recorded.
With --etcd the publisher keeps its registry in a local etcd (needs a zurg
built with `--features etcd` and /usr/bin/etcd), and etcd's own put ->
watch latency on the same etcd is measured beside it as its floor
(examples/etcd_floor.rs). --etcd-only runs just those two; --no-restarts
leaves out the restart-latency table.

With --page the publisher also serves its status page (--http), headless
Chromium (driven over DevTools on a pipe) shows it, and each death is timed
a second way: kill(2) to the page's DOM no longer listing the GPID (a
MutationObserver stamps the time), beside the watch, in the same run.
The next kill waits until the restarted process sleeps and, with a page,
until the page shows the new GPID and has drawn that frame: each death is
measured on a quiet machine and a quiet page. --back-to-back kills without
waiting for the page; a death then often lands in the frame drawn for the
last restart (~1-3 ms of the renderer's main thread with --disable-gpu) and
waits for it, which is most of the page's p99 near zero load.
--gap=MS (paced) pauses that long after the page has drawn the restarted
GPID, before the next kill: deaths further apart (docs/performance.md,
"fourth pass": the page's own clock tick then lands among them).
--plain adds a plain client of the page's stream (/events) in this
process: when it reads each `down` (the publisher's share of the page's
figure). It is one more thread woken at each death in the window that is
measured, so it is off unless asked for (or --trace, which needs it).
Add --trace to split the page's figure at Chromium's own stamps (DevTools
Network domain: the renderer has the bytes, the EventSource dispatches, the
DOM changes), and TRACE_FILE=F to also record a Chromium trace of the kills
into F with a summary of the page's main thread (both slow the page down a
little; compare ratios from runs without them), and each death's times in
F.deaths.json: bench/page_trace.py F says what Chromium's threads did
during the slowest deaths.

Restart latency is zurg's own exit-to-start time from its event stream, so
it is comparable across runs without counting the benchmark's own work.
"""

import bisect
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZURG = os.environ.get("ZURG", os.path.join(ROOT, "target/release/zurg"))
# --page only: a Chromium trace of the kills, written here (chrome://tracing
# or ui.perfetto.dev open it).
TRACE_FILE = os.environ.get("TRACE_FILE")
FLOOR_PAGE = "--page-floor" in sys.argv
BACK_TO_BACK = "--back-to-back" in sys.argv
TRACE = "--trace" in sys.argv or bool(TRACE_FILE)
# A plain client of the page's stream, in this process, beside the watch:
# it tells the publisher's share of the page's figure, but it is one more
# thread to wake at each death, on the same 2 cores, in the window that is
# measured (and it shares this process's GIL with the thread that stamps
# the watch). On with --plain, and with --trace, which needs it.
PLAIN = "--plain" in sys.argv or TRACE
# Paced (not --back-to-back): after the page has drawn the restarted GPID,
# a pause of this many ms before the next kill. The frame's main-thread
# work ends there, but Chromium's compositor, raster and display (software,
# --disable-gpu) may still be at it; near zero load a death finds them
# done, as deaths seconds apart do.
GAP_MS = float(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--gap=")), "0"))
TRACE_CATEGORIES = ("devtools.timeline,toplevel,loading,net,mojom,"
                    "disabled-by-default-devtools.timeline")
FLOOR = os.environ.get("ETCD_FLOOR", os.path.join(ROOT, "target/release/examples/etcd_floor"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(what, cond, deadline=30, interval=0.01):
    end = time.time() + deadline
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def ratio_spread(page, watch, draws=1000):
    """The 5-95 % bootstrap interval of p99(page) / p99(watch): how far
    one run's ratio moves with which deaths it happened to draw. The p99
    of 1,000 deaths is their tenth worst, so two runs of the same build
    differ by more than most changes to the page; the interval says by
    how much before two figures are compared."""
    rng = random.Random(21)
    ratios = sorted(pct(rng.choices(page, k=len(page)), 99) / pct(rng.choices(watch, k=len(watch)), 99)
                    for _ in range(draws))
    return ratios[draws // 20], ratios[draws - 1 - draws // 20]


class Run:
    """A `zurg run` over N sleeper services in a temp dir."""

    def __init__(self, n, publish=None, restart="always", seconds=None, quick_restart=False):
        self.dir = tempfile.mkdtemp(prefix="zurg-naming-")
        units = os.path.join(self.dir, "units")
        os.mkdir(units)
        for i in range(n):
            with open(os.path.join(units, f"s{i}.toml"), "w") as f:
                # With `seconds`, each service exits after that long and is
                # started again at once (a 1 ms backoff: no crash-loop wait).
                sleep = seconds if seconds else 1000000 + i
                f.write(f'exec = "/bin/sleep"\nargs = ["{sleep}"]\nport = {10000 + i}\n'
                        f'restart = "{restart}"\n')
                if seconds or quick_restart:
                    f.write("backoff = { initial_ms = 1, max_ms = 1 }\n")
        self.sock = os.path.join(self.dir, "control.sock")
        args = [ZURG, "run", "--units", units, "--socket", self.sock,
                "--state", os.path.join(self.dir, "state"), "--host-ip", "127.0.0.1"]
        if publish:
            args += ["--publish", publish]
        self.proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        # Services that exit every few seconds are never all up at once.
        up = n * 9 // 10 if seconds else n
        wait_for("all services up", lambda: self.running() >= up, 60)

    def cli(self, *args):
        out = subprocess.run([ZURG, *args, "--socket", self.sock, "--json"],
                             capture_output=True, text=True)
        return json.loads(out.stdout) if out.stdout else None

    def status(self):
        v = self.cli("status")
        return v["result"] if v and v.get("ok") else []

    def running(self):
        return sum(1 for s in self.status() if s["state"] == "running")

    def restart_latencies_us(self):
        # The journal keeps every start and exit (the events ring only the
        # last thousand).
        records = self.cli("history")["result"]
        exited, out = {}, []
        for r in records:
            if r["kind"] == "exit":
                exited[r["service"]] = r["time_us"]
            elif r["kind"] == "start" and r["service"] in exited:
                out.append(r["time_us"] - exited.pop(r["service"]))
        return out

    def kill_each(self, on_kill=None, gap=0.0, before=None):
        for s in self.status():
            if before:
                before()
            t0 = time.perf_counter()
            os.kill(s["pid"], signal.SIGKILL)
            if on_kill:
                on_kill(s, t0)
            if gap:
                # One restart at a time: a burst would measure the queue.
                time.sleep(gap)

    def wait_restarted(self, n):
        wait_for("restarts", lambda: sum(1 for s in self.status()
                                         if s["state"] == "running" and s["restarts"] >= 1) == n, 60)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class Etcd:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="zurg-etcd-")
        c, p = free_port(), free_port()
        self.url = f"http://127.0.0.1:{c}"
        self.proc = subprocess.Popen(
            ["etcd", "--data-dir", self.dir, "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{p}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
             "--initial-cluster", f"default=http://127.0.0.1:{p}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", c), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for("etcd", up)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


SLEEP_SYSCALLS = {"35", "230"}  # nanosleep, clock_nanosleep (x86-64)


def settled(pid):
    """Waits until `pid` sits in sleep(1)'s sleep (or is gone)."""
    def asleep():
        try:
            with open(f"/proc/{pid}/syscall") as f:
                return f.read().split(" ", 1)[0] in SLEEP_SYSCALLS
        except OSError:
            return True
    wait_for(f"pid {pid} to settle into its sleep", asleep, deadline=5, interval=0.0002)


class Page:
    """Headless Chromium on the status page, over DevTools on a pipe
    (--remote-debugging-pipe reads fd 3 and writes fd 4)."""

    # Stamps, in the page, the time (performance.now(), ms: CLOCK_MONOTONIC
    # from the page's origin) at which each GPID left the DOM: the moment
    # the page shows the death. Not the wall clock: this machine's is
    # stepped by ~5 ms a second at times, which made the page's stamps
    # (its origin's wall time plus monotonic time since) drift from the
    # benchmark's by as much, even below the kill.
    OBSERVE = r'''(() => {
      window.__gone = {};
      const gpids = (nodes) => {
        const out = new Set();
        for (const n of nodes) {
          if (!(n instanceof Element)) continue;
          const rows = n.matches('tr.svc') ? [n] : [...n.querySelectorAll('tr.svc')];
          for (const r of rows) for (const g of r.dataset.gpids.split(' ')) if (g) out.add(g);
        }
        return out;
      };
      new MutationObserver((records) => {
        const t = performance.now();
        const removed = gpids(records.flatMap((r) => [...r.removedNodes]));
        const added = gpids(records.flatMap((r) => [...r.addedNodes]));
        // A row redrawn in place: its data-gpids changed.
        for (const r of records) {
          if (r.type !== 'attributes') continue;
          for (const g of (r.oldValue || '').split(' ')) if (g) removed.add(g);
          for (const g of r.target.dataset.gpids.split(' ')) if (g) added.add(g);
        }
        for (const g of removed) if (!added.has(g) && !(g in window.__gone)) window.__gone[g] = t;
      }).observe(document.getElementById('hosts'), { childList: true, subtree: true,
        attributes: true, attributeFilter: ['data-gpids'], attributeOldValue: true });
      return true;
    })()'''

    # --page-floor: the least page that shows each service's GPIDs, on the
    # publisher's own stream: one cell a row, its text set per change (no
    # styles, clocks, bars or exits). Chromium's share of the real page's
    # figure that no page could avoid.
    FLOOR = r'''(() => {
      // The publisher's pages forbid inline scripts (CSP); this one runs
      // from DevTools instead, which CSP does not cover.
      document.open();
      document.write('<!doctype html><meta charset="utf-8"><table><tbody id="hosts"></tbody></table>');
      document.close();
      const rows = new Map();
      const key = (e) => e.host + '\n' + e.service;
      const show = (row) => {
        const g = [...row.gpids].join(' ');
        row.el.dataset.gpids = g;
        row.el.firstChild.textContent = g || 'not running';
      };
      const es = new EventSource('/events');
      es.addEventListener('state', (ev) => {
        const doc = JSON.parse(ev.data);
        const body = document.getElementById('hosts');
        body.textContent = '';
        rows.clear();
        for (const e of Object.values(doc.services).flat()) {
          if (!rows.has(key(e))) {
            const el = document.createElement('tr');
            el.className = 'svc';
            el.append(document.createElement('td'));
            body.append(el);
            rows.set(key(e), { el, gpids: new Set() });
          }
          rows.get(key(e)).gpids.add(e.gpid);
        }
        for (const row of rows.values()) show(row);
      });
      es.addEventListener('change', (ev) => {
        const c = JSON.parse(ev.data);
        const row = rows.get(key(c.endpoint));
        if (!row) return;
        if (c.change === 'up') row.gpids.add(c.endpoint.gpid); else row.gpids.delete(c.endpoint.gpid);
        show(row);
      });
      window.__floor = es;
      return true;
    })()'''

    def __init__(self, url, trace=False):
        self.profile = tempfile.mkdtemp(prefix="zurg-chromium-")
        self.proc = subprocess.Popen(
            ["sh", "-c", "exec chromium --headless=new --no-sandbox --disable-gpu "
             "--disable-dev-shm-usage --no-first-run --remote-debugging-pipe "
             "--disable-renderer-backgrounding --disable-background-timer-throttling "
             "--disable-backgrounding-occluded-windows "
             f"--user-data-dir={self.profile} about:blank 3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.id, self.session = 0, None
        # Answers by id, and DevTools events (no id) once `record` is set.
        # A thread drains the pipe: Chromium must never block writing
        # events (one per change with the Network domain on).
        self.answers, self.record, self.events = queue.Queue(), False, []
        threading.Thread(target=self.read, daemon=True).start()
        page = wait_for("a tab", lambda: next((t["targetId"] for t in self.call(
            "Target.getTargets")["targetInfos"] if t["type"] == "page"), None))
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": page, "flatten": True})["sessionId"]
        if trace:
            # Before the page loads, so its stream's request is known.
            self.record = True
            self.call("Network.enable")
        self.call("Page.navigate", {"url": url})

    def read(self):
        buf = b""
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self.answers.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                v = json.loads(raw)
                if "id" in v:
                    self.answers.put(v)
                elif self.record and "method" in v:
                    self.events.append(v)

    def call(self, method, params=None):
        self.id += 1
        msg = {"id": self.id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            v = self.answers.get(timeout=60)
            if v is None:
                raise SystemExit("chromium exited")
            if v.get("id") == self.id:
                return v["result"]

    def cpu_ticks(self):
        """CPU time (clock ticks) used so far by Chromium's processes."""
        children, ticks = {}, {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(p))
            ticks[int(p)] = int(fields[11]) + int(fields[12])
        total, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            total += ticks.get(pid, 0)
            todo += children.get(pid, [])
        return total

    def wait_idle(self):
        """Waits until Chromium has done its start-up work (about a second
        of CPU in its first seconds, other tabs of its own included): a
        user's page has been open a while, and the first deaths would
        otherwise share the two cores with it."""
        def idle():
            before = self.cpu_ticks()
            time.sleep(0.25)
            return self.cpu_ticks() - before <= 2
        wait_for("Chromium to go idle", idle, 60, 0)

    def browser_call(self, method, params=None):
        """A call to the browser itself rather than the page (Tracing)."""
        session, self.session = self.session, None
        try:
            return self.call(method, params)
        finally:
            self.session = session

    def drawn(self, gpid):
        """Waits until the page shows `gpid` and has drawn the frame that
        shows it: the next death is then measured on a quiet page, as it is
        on a quiet machine (the restarted process has settled), not beside
        the frame of the last change."""
        expr = ('new Promise((done) => { const shown = () => document.querySelector('
                f'{json.dumps(f"[data-gpids~={json.dumps(gpid)}]")}); '
                'const wait = () => shown() ? requestAnimationFrame(() => setTimeout(done, 0)) '
                ': setTimeout(wait, 1); wait(); })')
        self.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True})

    def eval(self, expr):
        return self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True})["result"].get("value")

    def clock_offset_us(self, tries=30):
        """perf_counter µs (CLOCK_MONOTONIC) minus the page's
        performance.now() µs (the same clock, from the page's origin):
        from the call that took least time, within half of it."""
        best = None
        for _ in range(tries):
            before = time.perf_counter()
            page_now = self.eval("performance.now()")
            after = time.perf_counter()
            if best is None or after - before < best[0]:
                best = (after - before, (before + after) / 2 * 1e6 - page_now * 1000)
        return best[1]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class SseReader:
    """A plain client of the page's stream (/events): when each `down`
    arrives, perf_counter µs by GPID. It tells the publisher's share of the
    page's figure from Chromium's."""

    def __init__(self, http):
        host, port = http.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.seen = {}
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        f = self.sock.makefile("rb")
        for line in f:
            if not line.startswith(b"data: "):
                continue
            at = time.perf_counter() * 1e6
            v = json.loads(line[6:])
            if v.get("change") == "down":
                self.seen.setdefault(v["endpoint"]["gpid"], at)


def death_to_watch(n, etcd_url=None, restart="always", page=False, before=None, rounds=1):
    """kill(2) -> the watch's `down` line, per service. `before` runs
    before each kill (the etcd floors take their samples there, so both
    figures see the same moments of a noisy machine)."""
    addr = f"127.0.0.1:{free_port()}"
    pub_args = [ZURG, "publisher", "--listen", addr]
    if etcd_url:
        pub_args += ["--etcd", etcd_url]
    http = f"127.0.0.1:{free_port()}"
    if page:
        pub_args += ["--http", http]
    pub = subprocess.Popen(pub_args, stderr=subprocess.DEVNULL)
    run = browser = None
    try:
        wait_for("publisher", lambda: subprocess.run(
            [ZURG, "resolve", "--all", "--publisher", addr], capture_output=True).returncode in (0, 1))
        # More than one round kills each service again soon after its
        # restart: without a 1 ms backoff the crash-loop wait would come in.
        run = Run(n, publish=addr, restart=restart, quick_restart=rounds > 1)
        t0 = time.perf_counter()
        wait_for("registry", lambda: json.loads(subprocess.run(
            [ZURG, "resolve", "--all", "--json", "--publisher", addr],
            capture_output=True, text=True).stdout or "{}").get("services", {}).__len__() == n, 60)
        if etcd_url:
            # n starts at once: etcd's round trips, unless they share
            # transactions. Polled, so a bound to within one `resolve`.
            print(f"  ({n} running -> all {n} in the registry through etcd: "
                  f"{(time.perf_counter() - t0) * 1000:.0f} ms)")
        if page:
            if FLOOR_PAGE:
                browser = Page(f"http://{http}/floor", trace=TRACE)
                wait_for("the 404 page", lambda: browser.eval("document.readyState") == "complete")
                browser.eval(Page.FLOOR)
            else:
                browser = Page(f"http://{http}/", trace=TRACE)
            wait_for("the page", lambda: browser.eval("document.querySelectorAll('tr.svc').length") == n, 60)
            browser.eval(Page.OBSERVE)
            browser.wait_idle()
            sse = SseReader(http) if PLAIN else None
        watch = subprocess.Popen([ZURG, "resolve", "--all", "--watch", "--json", "--publisher", addr],
                                 stdout=subprocess.PIPE, text=True, bufsize=1)
        while json.loads(watch.stdout.readline()).get("t") != "synced":
            pass
        latencies, stamps = [], []
        # By GPID: perf_counter µs of its kill, for the page and the plain
        # client (stamps' wall time is for the hops zurg stamped).
        killed_mono = {}

        def measure(s, t0):
            gpid = s["gpid"]
            down = False
            while True:
                v = json.loads(watch.stdout.readline())
                if v.get("t") != "change" or v["endpoint"]["service"] != s["name"]:
                    continue
                if v["change"] == "down" and v["endpoint"]["gpid"] == gpid:
                    total = (time.perf_counter() - t0) * 1e6
                    killed_at = time.time() * 1e6 - total
                    latencies.append(total)
                    stamps.append((gpid, killed_at, v["time_us"], total))
                    killed_mono[gpid] = t0 * 1e6
                    down = True
                    if restart == "never":
                        return
                elif v["change"] == "up" and down:
                    # The restart is published when it has exec'd, but the
                    # new process still has its dynamic loading to do; the
                    # next kill waits until it sleeps, so each death is
                    # measured on a quiet system, not beside the last one's
                    # restart.
                    settled(int(v["endpoint"]["gpid"].rsplit(":", 1)[1]))
                    if browser and not BACK_TO_BACK:
                        browser.drawn(v["endpoint"]["gpid"])
                        if GAP_MS:
                            time.sleep(GAP_MS / 1000)
                    return

        if page and TRACE_FILE:
            browser.browser_call("Tracing.start", {"categories": TRACE_CATEGORIES,
                                                   "transferMode": "ReportEvents"})
        for _ in range(rounds):
            run.kill_each(measure, before=before)
        if page and TRACE_FILE:
            browser.browser_call("Tracing.end")
            wait_for("the trace", lambda: any(e["method"] == "Tracing.tracingComplete"
                                              for e in browser.events), 60)
            trace = [x for e in browser.events if e["method"] == "Tracing.dataCollected"
                     for x in e["params"]["value"]]
            with open(TRACE_FILE, "w") as f:
                json.dump({"traceEvents": trace}, f)
            print(renderer_summary(trace))
        watch.kill()
        if page:
            gone = browser.eval("JSON.stringify(window.__gone)")
            offset = browser.clock_offset_us()
            gone = {g: at * 1000 + offset for g, at in json.loads(gone).items()}
            shown = [gone[g] - killed_mono[g] for g, _, _, _ in stamps if g in gone]
            seen = sse.seen if sse else {}
            streamed = [seen[g] - killed_mono[g] for g, _, _, _ in stamps if g in seen]
            inside = page_stages(browser.events, killed_mono, gone, seen) if browser.record else ""
            if TRACE_FILE:
                # Each death on the trace's clock (CLOCK_MONOTONIC µs), for
                # bench/page_trace.py to line up with Chromium's threads.
                deaths = [{"gpid": g, "killed": killed_mono[g], "watch": killed_mono[g] + total,
                           "plain": seen.get(g), "gone": gone.get(g)}
                          for g, _, _, total in stamps]
                with open(TRACE_FILE + ".deaths.json", "w") as f:
                    json.dump(deaths, f)
            return latencies, stages(run, stamps), shown, streamed, inside
        return latencies, stages(run, stamps)
    finally:
        if browser:
            browser.stop()
        if run:
            run.stop()
        pub.kill()
        pub.wait()


def page_stages(events, killed_mono, gone, plain):
    """With --trace: each death's way through Chromium, from the DevTools
    Network domain's stamps (CLOCK_MONOTONIC, as perf_counter here): the
    renderer has the bytes (dataReceived; against the plain client of the
    same stream, this is what Chromium's network process and the renderer's
    busy main thread add), the EventSource dispatches the message
    (eventSourceMessageReceived), the DOM changed. All in perf_counter µs."""
    stream = next((e["params"]["requestId"] for e in events
                   if e["method"] == "Network.requestWillBeSent"
                   and e["params"]["request"]["url"].endswith("/events")), None)
    received, dispatched = [], {}
    for e in events:
        p = e["params"]
        if p.get("requestId") != stream:
            continue
        at = p.get("timestamp", 0) * 1e6
        if e["method"] == "Network.dataReceived":
            received.append(at)
        elif e["method"] == "Network.eventSourceMessageReceived" and p["eventName"] == "change":
            v = json.loads(p["data"])
            if v["change"] == "down":
                dispatched.setdefault(v["endpoint"]["gpid"], at)
    received.sort()
    hops = {"kill -> renderer has the bytes": [], "plain client -> renderer": [],
            "bytes -> handler": [], "handler -> DOM": []}
    for gpid, killed_at in killed_mono.items():
        if gpid not in dispatched or gpid not in gone:
            continue
        at = dispatched[gpid]
        # The last read at or before the dispatch carried the message.
        i = bisect.bisect_right(received, at + 1)
        if i == 0:
            continue
        got = received[i - 1]
        hops["kill -> renderer has the bytes"].append(got - killed_at)
        if gpid in plain:
            hops["plain client -> renderer"].append(got - plain[gpid])
        hops["bytes -> handler"].append(at - got)
        hops["handler -> DOM"].append(gone[gpid] - at)
    return "; ".join(f"{k} p50 {pct(v, 50):.0f} p99 {pct(v, 99):.0f}"
                     for k, v in hops.items() if v)


def renderer_summary(trace):
    """From a Chromium trace: how busy the page's renderer main thread was
    during the kills, and what its frames (tasks that commit a frame to
    the compositor) cost. A change that arrives during a frame waits for
    it."""
    renderers = {e["pid"] for e in trace if e.get("ph") == "M" and e["name"] == "process_name"
                 and e["args"]["name"] == "Renderer"}
    # Headless Chromium runs other renderers of its own; the page's is the
    # one that parses the rows' HTML.
    counts = {}
    for e in trace:
        if e["name"] == "ParseHTML" and e["pid"] in renderers:
            counts[e["pid"]] = counts.get(e["pid"], 0) + 1
    if not counts:
        return "  ... trace: no page renderer found"
    pid = max(counts, key=counts.get)
    main = [e for e in trace if e["pid"] == pid and e.get("tid") == pid and e.get("ph") == "X"]
    tasks = sorted((e for e in main if e["name"] == "ThreadControllerImpl::RunTask"),
                   key=lambda e: e["ts"])
    starts = [t["ts"] for t in tasks]
    frames = []
    for e in main:
        if e["name"] == "Commit":
            i = bisect.bisect_right(starts, e["ts"]) - 1
            if i >= 0:
                frames.append(tasks[i].get("dur", 0))
    busy = sum(t.get("dur", 0) for t in tasks)
    span = max(1, tasks[-1]["ts"] - tasks[0]["ts"]) if tasks else 1
    out = f"  ... trace: renderer main thread busy {busy * 100 / span:.0f}% of {span / 1e6:.1f} s"
    if frames:
        out += f"; {len(frames)} frames, p50 {pct(frames, 50)} p99 {pct(frames, 99)} µs each"
    return out


def stages(run, stamps):
    """Splits each death's notice into its hops, from wall-clock stamps:
    kill -> zurg has reaped it (the journal's exit time), zurg -> the
    publisher sends the change (the change's time_us), publisher -> the
    watch's line is read here."""
    exited = {r.get("gpid"): r["time_us"] for r in run.cli("history")["result"]
              if r["kind"] == "exit"}
    hops = {"kill -> zurg": [], "zurg -> publisher": [], "publisher -> client": []}
    for gpid, killed_at, sent_at, total in stamps:
        if gpid not in exited:
            continue
        hops["kill -> zurg"].append(exited[gpid] - killed_at)
        hops["zurg -> publisher"].append(sent_at - exited[gpid])
        hops["publisher -> client"].append(killed_at + total - sent_at)
    return "; ".join(f"{k} p50 {pct(v, 50):.0f} p99 {pct(v, 99):.0f}"
                     for k, v in hops.items() if v)


def restart_latency(n, mode):
    """Exit-to-start µs with no publisher, a dead address, a stalled one,
    or a live in-memory publisher."""
    stalled = pub = None
    publish = None
    if mode == "dead":
        publish = f"127.0.0.1:{free_port()}"
    elif mode == "stalled":
        stalled = socket.socket()
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(1)
        publish = "127.0.0.1:%d" % stalled.getsockname()[1]
    elif mode == "live":
        publish = f"127.0.0.1:{free_port()}"
        pub = subprocess.Popen([ZURG, "publisher", "--listen", publish], stderr=subprocess.DEVNULL)
        time.sleep(0.2)
    run = Run(n, publish=publish)
    try:
        run.kill_each(gap=0.003)
        run.wait_restarted(n)
        return run.restart_latencies_us()
    finally:
        run.stop()
        if stalled:
            stalled.close()
        if pub:
            pub.kill()
            pub.wait()


def kill_floor(n):
    """kill(2) to a pidfd turning readable: the kernel's share of any
    death notice, the physical limit for the figures above."""
    import select
    lat = []
    for _ in range(n):
        p = subprocess.Popen(["/bin/sleep", "1000"])
        fd = os.pidfd_open(p.pid)
        time.sleep(0.002)
        t0 = time.perf_counter()
        os.kill(p.pid, signal.SIGKILL)
        select.select([fd], [], [])
        lat.append((time.perf_counter() - t0) * 1e6)
        p.wait()
        os.close(fd)
    return lat


RELAY = r'''
import os, select, socket, sys
role = sys.argv[1]
if role == "watcher":          # like zurg: waits on a pidfd, tells the next hop
    out = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for line in sys.stdin:
        fd = os.pidfd_open(int(line))
        select.select([fd], [], [])
        os.close(fd)
        out.sendall(b"x")
elif role == "hop":            # like the publisher: passes it on
    l = socket.socket(); l.bind(("127.0.0.1", int(sys.argv[2]))); l.listen(1)
    print("ready", flush=True)
    c, _ = l.accept()
    out = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while c.recv(1):
        out.sendall(b"x")
else:                          # like resolve --watch: prints a line
    l = socket.socket(); l.bind(("127.0.0.1", int(sys.argv[2]))); l.listen(1)
    print("ready", flush=True)
    c, _ = l.accept()
    while c.recv(1):
        os.write(1, b"x\n")
'''


class Relay:
    """The same chain of processes with nothing in them: a pidfd watcher,
    a TCP hop, a printer, and this script reading its pipe. What pushing a
    death through three processes costs on this machine."""

    def __init__(self):
        p1, p2 = free_port(), free_port()
        self.printer = subprocess.Popen([sys.executable, "-c", RELAY, "printer", str(p2)],
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        self.printer.stdout.readline()
        self.hop = subprocess.Popen([sys.executable, "-c", RELAY, "hop", str(p1), str(p2)],
                                    stdout=subprocess.PIPE, text=True, bufsize=1)
        self.hop.stdout.readline()
        self.watcher = subprocess.Popen([sys.executable, "-c", RELAY, "watcher", str(p1)],
                                        stdin=subprocess.PIPE, text=True, bufsize=1)
        self.lat = []

    def sample(self):
        victim = subprocess.Popen(["/bin/sleep", "1000"])
        self.watcher.stdin.write(f"{victim.pid}\n")
        self.watcher.stdin.flush()
        time.sleep(0.001)
        settled(victim.pid)
        t0 = time.perf_counter()
        victim.kill()
        self.printer.stdout.readline()
        self.lat.append((time.perf_counter() - t0) * 1e6)
        victim.wait()

    def stop(self):
        for p in (self.watcher, self.hop, self.printer):
            p.kill()
            p.wait()


class EtcdFloor:
    """etcd's own put -> watch, on the same etcd: a process waiting on a
    pidfd writes to etcd when its process dies, another watching the prefix
    prints a line, this script reads it (examples/etcd_floor.rs, the
    etcd-client crate zurg uses). With role "txn" the write is the
    transaction zurg's etcd store makes for an exit (a guarded delete of
    the endpoint and a put of the host record, on a lease)."""

    def __init__(self, url, role="put"):
        prefix = f"/floor-{role}"
        self.watcher = subprocess.Popen([FLOOR, "watch", url, prefix], stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        self.putter = subprocess.Popen([FLOOR, role, url, prefix], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, bufsize=1)
        self.expect = "put " if role == "put" else "delete "
        self.lat = []
        if self.watcher.stdout.readline().strip() != "ready":
            raise SystemExit("etcd_floor watch did not start")

    def sample(self):
        victim = subprocess.Popen(["/bin/sleep", "1000"])
        self.putter.stdin.write(f"{victim.pid}\n")
        self.putter.stdin.flush()
        if self.putter.stdout.readline().strip() != "armed":
            raise SystemExit("etcd_floor put stopped")
        # As for zurg's figure: the kill lands on a process asleep, not
        # one still loading.
        settled(victim.pid)
        t0 = time.perf_counter()
        victim.kill()
        while True:
            line = self.watcher.stdout.readline()
            if not line:
                raise SystemExit("etcd_floor watch stopped")
            if line.startswith(self.expect):
                break
        self.lat.append((time.perf_counter() - t0) * 1e6)
        victim.wait()

    def stop(self):
        for p in (self.putter, self.watcher):
            p.kill()
            p.wait()


def main():
    n = int(next((a for a in sys.argv[1:] if a.isdigit()), "1000"))
    if not os.path.exists(ZURG):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "zurg"], cwd=ROOT, check=True)
    if "--etcd" in sys.argv and not os.path.exists(FLOOR):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "etcd",
                        "--example", "etcd_floor"], cwd=ROOT, check=True)
    # --rounds R kills each service R times (the page's p99 over 200 deaths
    # is their second worst; over 1,000 it is the tenth).
    rounds = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--rounds=")), "1"))
    print(f"# {n} services, each SIGKILLed {'once' if rounds == 1 else f'{rounds} times'}; figures in µs")
    if "--page" in sys.argv or FLOOR_PAGE:
        # Only the page against the watch, in one run: the rest is the
        # default benchmark's.
        lat, hops, shown, streamed, inside = death_to_watch(n, page=True, rounds=rounds)
        print(f"death -> resolve --watch, beside the page: p50 {pct(lat, 50):.0f}  p99 {pct(lat, 99):.0f}  max {max(lat):.0f}")
        print(f"  ... by hop: {hops}")
        if streamed:
            print(f"death -> /events read by a plain client: p50 {pct(streamed, 50):.0f}  p99 {pct(streamed, 99):.0f}  max {max(streamed):.0f}  (n={len(streamed)})")
        print(f"death -> status page DOM (Chromium):   p50 {pct(shown, 50):.0f}  p99 {pct(shown, 99):.0f}  max {max(shown):.0f}  (n={len(shown)})")
        if inside:
            print(f"  ... inside Chromium: {inside}")
        lo, hi = ratio_spread(shown, lat)
        print(f"  ... ratio page / watch: p50 {pct(shown, 50) / pct(lat, 50):.2f}  p99 {pct(shown, 99) / pct(lat, 99):.2f}"
              f"  (p99's 5-95 % bootstrap interval {lo:.2f}-{hi:.2f})")
        return
    etcd_only = "--etcd-only" in sys.argv
    if not etcd_only:
        floor = kill_floor(min(n, 300))
        print(f"floor: kill -> pidfd readable:    p50 {pct(floor, 50):.0f}  p99 {pct(floor, 99):.0f}")
        # One relay sample before each of zurg's kills: the ratio compares
        # figures taken at the same moments of a noisy machine.
        relay = Relay()
        try:
            lat, hops = death_to_watch(n, before=relay.sample)
        finally:
            relay.stop()
        print(f"floor: kill -> 3-process relay:   p50 {pct(relay.lat, 50):.0f}  p99 {pct(relay.lat, 99):.0f}")
        print(f"death -> resolve --watch, memory: p50 {pct(lat, 50):.0f}  p99 {pct(lat, 99):.0f}  max {max(lat):.0f}")
        print(f"  ... by hop: {hops}")
        print(f"  ... ratio to the relay floor: p50 {pct(lat, 50) / pct(relay.lat, 50):.2f}  "
              f"p99 {pct(lat, 99) / pct(relay.lat, 99):.2f}")
        # The same without the restart: the notice no longer shares the two
        # cores with the new process's exec.
        lat, hops = death_to_watch(n, restart="never")
        print(f"  ... no restart:                  p50 {pct(lat, 50):.0f}  p99 {pct(lat, 99):.0f}  max {max(lat):.0f}")
        print(f"  ... by hop: {hops}")
    if "--etcd" in sys.argv or etcd_only:
        etcd = Etcd()
        try:
            # One sample of each floor before each of zurg's kills, on the
            # same etcd: the three figures share the machine's load.
            floors = [EtcdFloor(etcd.url), EtcdFloor(etcd.url, "txn")]
            try:
                def before():
                    for f in floors:
                        f.sample()
                lat, hops = death_to_watch(n, etcd.url, before=before)
                put, txn = (f.lat for f in floors)
                print(f"floor: kill -> etcd put -> watch: p50 {pct(put, 50):.0f}  p99 {pct(put, 99):.0f}  max {max(put):.0f}")
                print(f"  ... zurg's txn instead of a put: p50 {pct(txn, 50):.0f}  p99 {pct(txn, 99):.0f}  max {max(txn):.0f}")
                print(f"death -> resolve --watch, etcd:   p50 {pct(lat, 50):.0f}  p99 {pct(lat, 99):.0f}  max {max(lat):.0f}")
                print(f"  ... by hop: {hops}")
                print(f"  ... ratio to etcd's floor: p50 {pct(lat, 50) / pct(put, 50):.2f}  "
                      f"p99 {pct(lat, 99) / pct(put, 99):.2f}")
                for f in floors:
                    f.lat.clear()
                # Without the restart: the floor restarts nothing, and a
                # restart's exec shares the two cores with etcd's commit.
                lat, hops = death_to_watch(n, etcd.url, restart="never", before=before)
                put, txn = (f.lat for f in floors)
                print(f"  ... no restart:                  p50 {pct(lat, 50):.0f}  p99 {pct(lat, 99):.0f}  max {max(lat):.0f}")
                print(f"  ... by hop: {hops}")
                print(f"  ... its floor, put: p50 {pct(put, 50):.0f}  p99 {pct(put, 99):.0f}; txn: p50 {pct(txn, 50):.0f}  p99 {pct(txn, 99):.0f}")
                print(f"  ... ratio to etcd's floor: p50 {pct(lat, 50) / pct(put, 50):.2f}  "
                      f"p99 {pct(lat, 99) / pct(put, 99):.2f}")
            finally:
                for f in floors:
                    f.stop()
        finally:
            etcd.stop()
    if etcd_only or "--no-restarts" in sys.argv:
        return
    for mode in ("none", "dead", "stalled", "live"):
        r = restart_latency(n, mode)
        print(f"exit -> start, publisher {mode:>7}: p50 {pct(r, 50):.0f}  p99 {pct(r, 99):.0f}  (n={len(r)})")

if __name__ == "__main__":
    main()
