#!/usr/bin/env bash
# Hashing throughput: zurg's md5/sha256 of a 200 MB file against md5sum and
# sha256sum on the same (cached) file; best of 5 each, as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-/tmp/zurg-hash-bench.bin}
[ -f "$file" ] || head -c 200000000 /dev/urandom > "$file"
cargo build --release --quiet --example hash_bench
bin=target/release/examples/hash_bench
cat "$file" > /dev/null
best() { # best wall time of 5 runs of "$@"
  local b=999999
  for _ in 1 2 3 4 5; do
    local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N)
    b=$(echo "$t1 - $t0 < $b" | bc -l | grep -q 1 && echo "$t1 - $t0" | bc -l || echo "$b")
  done
  echo "$b"
}
for kind in md5 sha256; do
  read -r zsum zt < <("$bin" "$file" "$kind" 5)
  tool=${kind}sum
  ref=$("$tool" "$file" | cut -d' ' -f1)
  [ "$zsum" = "$ref" ] || { echo "$kind: zurg says $zsum, $tool says $ref" >&2; exit 1; }
  tt=$(best "$tool" "$file")
  printf '%s: zurg %.3f s, %s %.3f s, ratio %.2fx (%.0f MB/s)\n' "$kind" "$zt" "$tool" "$tt" "$(echo "$zt / $tt" | bc -l)" "$(echo "200 / $zt" | bc -l)"
done
