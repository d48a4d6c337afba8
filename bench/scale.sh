#!/usr/bin/env bash
# Restart and start latency against the number of services, zurg and the
# raw posix_spawn/wait loop in the same run at each n, then the plot.
# Usage: bench/scale.sh [RESTARTS] [N...]   (needs root; default 200 restarts,
# n = 200 1000 3000 10000; the 10,000 run takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
restarts=${1:-200}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(200 1000 3000 10000)
peers=${PEERS_PY:-../shared/bench/peers.py}
out=${OUT_DIR:-/tmp/zurg-scale}
mkdir -p "$out"
cargo build --release --bin zurg >&2
files=()
for n in "${sizes[@]}"; do
  echo "== n=$n (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  ZURG_BIN=$PWD/target/release/zurg python3 "$peers" --drivers raw,zurg -n "$n" -r "$restarts" \
    --ratio --json "$out/n$n.json"
  files+=("$out/n$n.json")
done
python3 bench/plot.py --scale "$out/scale.png" "${files[@]}"
echo "plot: $out/scale.png" >&2
