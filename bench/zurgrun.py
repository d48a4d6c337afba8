"""What the Python benchmarks share: a `zurg run` on units written into a
fresh temporary directory, its client verbs, the chain stacks they lay out
and their wait for a state with a deadline."""

import json
import os
import signal
import subprocess
import tempfile
import time


class Zurg:
    """A `zurg run` (not as PID 1) on `units` ({name: toml text}), written
    into a fresh temporary directory named after `prefix`. As a context
    manager it stops zurg with SIGTERM on the way out, whatever happened,
    so a failed run leaves no services behind."""

    def __init__(self, zurg, units, prefix, stop_timeout=30):
        self.zurg = zurg
        self.stop_timeout = stop_timeout
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        units_dir = os.path.join(self.tmp, "units")
        os.mkdir(units_dir)
        for name, text in units.items():
            with open(os.path.join(units_dir, f"{name}.toml"), "w") as f:
                f.write(text)
        sock = os.path.join(self.tmp, "sock")
        self.env = dict(os.environ, ZURG_SOCKET=sock)
        self.proc = subprocess.Popen(
            [zurg, "run", "--units", units_dir, "--socket", sock,
             "--state", os.path.join(self.tmp, "state")],
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=self.stop_timeout)
        return False

    def cli(self, *args):
        """The `result` of a client verb. Not checked: `status` exits 1
        while a killed service restarts after a failure, and its JSON
        answer is complete all the same."""
        out = subprocess.run([self.zurg, *args], env=self.env, capture_output=True)
        return json.loads(out.stdout)["result"]

    def events(self):
        return self.cli("events", "--json")


def chains(unit, count=20, depth=10):
    """`count` chains of `depth` services `c{chain}l{level}`, each
    depending on the one below; `unit(deps)` writes one unit's text."""
    return {
        f"c{c}l{lvl}": unit([f"c{c}l{lvl - 1}"] if lvl else [])
        for c in range(count)
        for lvl in range(depth)
    }


def wait_until(check, seconds, what):
    """Calls `check` every 50 ms until it returns something true, and
    returns that. An answer zurg is not ready to give yet (no JSON, a field
    missing) counts as not yet. Past `seconds`, exits naming `what`."""
    deadline = time.time() + seconds
    while True:
        try:
            got = check()
            if got:
                return got
        except (ValueError, KeyError):
            pass
        if time.time() > deadline:
            raise SystemExit(f"{what} in {seconds} s")
        time.sleep(0.05)
