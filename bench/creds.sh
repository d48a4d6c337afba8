#!/usr/bin/env bash
# Restart latency of a service with every identity and limit key set
# (user, group, supplementary_groups, umask, nice, oom_score_adj,
# no_new_privs, rlimits, capabilities, env_file) against the same service
# with none, each as a ratio to the raw posix_spawn loop of the same run.
# Uses ../shared/bench/peers.py; its zurg driver's units are replaced by
# ours through ZURG_ARGS.
#
#   bench/creds.sh [N] [RESTARTS] [ROUNDS]    (root: pid namespaces)
#
# `user` is root here: the probe reports to a socket only root may write.
# The child still makes every call (setgroups, setgid, setuid, the
# bounding set, capset, ambient raise, prlimit, setpriority, the OOM
# score write); only the "root cannot be regained" check is skipped for
# uid 0. `nice` and `oom_score_adj` are set to 0, which zurg still applies
# (setpriority in the child, the OOM score around the clone): a positive
# nice makes the service itself wait for the CPU on a busy machine, which
# is what it asks for, not a cost of the spawn path.
# Part 2, the spawn path alone: cargo run --release --example creds_bench
set -euo pipefail
n=${1:-200}
restarts=${2:-200}
rounds=${3:-2}
cd "$(dirname "$0")/.."
peers=${PEERS_PY:-../shared/bench/peers.py}
[ -f "$peers" ] || peers=/work/shared/bench/peers.py
cargo build --release --bin zurg >&2
work=$(mktemp -d /tmp/zurg-bench-creds.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/units"
printf 'A=1\nB="two words"\n' > "$work/env"
for i in $(seq 0 $((n - 1))); do
  cat > "$work/units/p$i.toml" <<UNIT
exec = "/tmp/zurgbench/probe"
args = ["p$i"]
restart = "always"
user = "root"
group = "root"
supplementary_groups = ["root", 4242]
umask = "027"
nice = 0
oom_score_adj = 0
no_new_privs = true
rlimits = { nofile = 4096, core = 0, nproc = [4096, 8192], memlock = 65536, as = "unlimited", stack = 8388608 }
capabilities = ["NET_BIND_SERVICE", "KILL", "SETUID", "SETGID", "DAC_OVERRIDE"]
env_file = ["$work/env", "-$work/missing.env"]
UNIT
done
export ZURG_BIN=$PWD/target/release/zurg
for round in $(seq "$rounds"); do
  echo "== round $round: no keys" >&2
  python3 "$peers" --drivers raw,zurg -n "$n" -r "$restarts" --idle-s 1 --ratio --json "$work/plain$round.json" | tail -2
  echo "== round $round: every key" >&2
  ZURG_ARGS="run --units $work/units --socket {tmp}/control.sock --state {tmp}/state" \
    python3 "$peers" --drivers raw,zurg -n "$n" -r "$restarts" --idle-s 1 --ratio --json "$work/creds$round.json" | tail -2
done
