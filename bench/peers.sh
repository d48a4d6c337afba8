#!/usr/bin/env bash
# zurg against its peers and the raw posix_spawn/wait loop, in one run.
# Usage: bench/peers.sh [N] [RESTARTS] [DRIVERS]   (needs root)
# Installs the peers it can from Debian packages, builds zurg (release),
# runs ../shared/bench/peers.py and prints the table with ratios to the raw loop.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
restarts=${2:-200}
drivers=${3:-raw,zurg,daemontools,runit,s6,supervisord}
peers=${PEERS_PY:-../shared/bench/peers.py}
need=()
for pkg_bin in daemontools:svscan runit:runsvdir s6:s6-svscan supervisor:supervisord tini:tini; do
  command -v "${pkg_bin#*:}" >/dev/null || need+=("${pkg_bin%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || true
fi
cargo build --release --bin zurg >&2
out=${JSON_OUT:-/tmp/zurg-peers.json}
ZURG_BIN=$PWD/target/release/zurg python3 "$peers" --drivers "$drivers" -n "$n" -r "$restarts" \
  --ratio --json "$out"
echo "json: $out" >&2
