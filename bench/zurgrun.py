"""What the Python benchmarks share: a `zurg run` on units written into a
fresh temporary directory, and its client verbs."""

import json
import os
import subprocess
import tempfile


def start(zurg, units, prefix):
    """Writes `units` ({name: toml text}) and starts `zurg run` on them.
    Returns the temporary directory, an environment whose ZURG_SOCKET is
    its control socket, and the process."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    units_dir = os.path.join(tmp, "units")
    os.mkdir(units_dir)
    for name, text in units.items():
        with open(os.path.join(units_dir, f"{name}.toml"), "w") as f:
            f.write(text)
    sock = os.path.join(tmp, "sock")
    env = dict(os.environ, ZURG_SOCKET=sock)
    proc = subprocess.Popen(
        [zurg, "run", "--units", units_dir, "--socket", sock, "--state", os.path.join(tmp, "state")],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    return tmp, env, proc


def cli(zurg, env, *args):
    """The `result` of a client verb. Not checked: `status` exits 1 while a
    killed service restarts after a failure, and its JSON answer is
    complete all the same."""
    out = subprocess.run([zurg, *args], env=env, capture_output=True)
    return json.loads(out.stdout)["result"]
