#!/usr/bin/env bash
# Reap storm: 10,000 orphans double-forked at once under zurg (shim) and
# under tini, each as PID 1 of its own pid namespace, alternating rounds.
# Prints each run and the median total time per init. Needs root, gcc, tini.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
rounds=${2:-5}
command -v tini >/dev/null || { apt-get update -qq && apt-get install -y -qq tini >/dev/null; }
cargo build --release --quiet --bin zurg
mkdir -p target/bench
gcc -O2 -static -o target/bench/orphans bench/orphans.c 2>/dev/null || gcc -O2 -o target/bench/orphans bench/orphans.c
orphans=$PWD/target/bench/orphans
declare -A runs
for r in $(seq "$rounds"); do
  for init in zurg tini; do
    case $init in
      zurg) cmd=("$PWD/target/release/zurg" -- "$orphans" "$n") ;;
      tini) cmd=("$(command -v tini)" -s -- "$orphans" "$n") ;;
    esac
    out=$(unshare --pid --fork --kill-child --mount-proc "${cmd[@]}")
    echo "$init round $r: $out"
    runs[$init]+="$(sed -n 's/.*storm_reaped_ms=\([0-9.]*\).*/\1/p' <<<"$out") "
  done
done
for init in zurg tini; do
  med=$(tr ' ' '\n' <<<"${runs[$init]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "median $init: $med ms"
done
