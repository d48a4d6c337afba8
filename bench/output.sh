#!/bin/bash
# CPU time to take 1 GB of 100-byte lines from a pipe and write them to
# rotating files: zurg (a service's stdout with a file sink) against
# `cat > file` (the floor: no lines, no rotation), svlogd (runit) and
# s6-log (s6), all rotating at 10 MiB and keeping 5 old files, no
# timestamps. The writer is the same `yes | head -c` for each; only the
# consumer's CPU is counted. Also zurg's peak PSS during the run.
#
#   bench/output.sh [BYTES] [RUNS]      (root: zurg runs as PID 1 of a pid namespace)
#
# Needs the Debian packages runit (svlogd) and s6 (s6-log); release build.
set -euo pipefail
bytes=${1:-1000000000}
runs=${2:-3}
cd "$(dirname "$0")/.."
cargo build --release --quiet
zurg=$PWD/target/release/zurg
line=$(printf '%099d' 0)   # 99 characters + newline = 100 bytes
work=$(mktemp -d /tmp/zurg-bench-output.XXXXXX)
trap 'rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)

produce() { yes "$line" | head -c "$bytes"; }

# Seconds of CPU (user+sys) of a consumer reading the producer's pipe.
timed() {
    local out=$work/time
    produce | /usr/bin/time -f '%U %S' -o "$out" "$@"
    awk '{ printf "%.2f\n", $1 + $2 }' "$out"
}

run_cat() { rm -f "$work/cat.out"; timed sh -c "exec cat > $work/cat.out"; rm -f "$work/cat.out"; }

run_svlogd() {
    rm -rf "$work/svlogd" && mkdir -p "$work/svlogd"
    printf 's10485760\nn5\n' > "$work/svlogd/config"
    timed svlogd "$work/svlogd"
}

run_s6log() { rm -rf "$work/s6log"; timed s6-log n5 s10485760 "$work/s6log"; }

# zurg as PID 1 with one service; its CPU from /proc once the service says
# it is done, and its peak PSS sampled every 50 ms meanwhile.
run_zurg() {
    local d=$work/zurg
    rm -rf "$d" && mkdir -p "$d/units" "$d/logs"
    cat > "$d/units/src.toml" <<EOF
exec = "/bin/sh"
args = ["-c", "while [ ! -e $d/go ]; do sleep 0.01; done; yes $line | head -c $bytes; echo done >&2; exec sleep 1000"]
restart = "never"
stdout = { file = "$d/logs/src.log", max_bytes = 10485760, keep = 5 }
EOF
    unshare --pid --fork --kill-child --mount-proc "$zurg" run --units "$d/units" \
        --socket "$d/sock" --state "$d/state" > /dev/null 2> "$d/err" &
    local outer=$!
    local pid=""
    for _ in $(seq 500); do
        pid=$(pgrep -P "$outer" -x zurg || true)
        [ -n "$pid" ] && grep -q 'started pid' "$d/err" && break
        sleep 0.01
    done
    local t0 peak=0 pss
    t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    touch "$d/go"
    until grep -q 'src | done' "$d/err"; do
        pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")
        [ "$pss" -gt "$peak" ] && peak=$pss
        sleep 0.05
    done
    # The last lines are read after the service's `done` on stderr.
    sleep 0.2
    local t1
    t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    kill -9 "$outer"
    wait "$outer" 2>/dev/null || true
    echo "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }') $peak"
}

echo "bytes=$bytes runs=$runs $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
best() { sort -n | head -1; }
cat_s=$(for _ in $(seq "$runs"); do run_cat; done | best)
svlogd_s=$(for _ in $(seq "$runs"); do run_svlogd; done | best)
s6_s=$(for _ in $(seq "$runs"); do run_s6log; done | best)
zurg_runs=$(for _ in $(seq "$runs"); do run_zurg; done)
zurg_s=$(echo "$zurg_runs" | awk '{ print $1 }' | best)
pss_kb=$(echo "$zurg_runs" | awk '{ print $2 }' | sort -n | tail -1)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '%-8s %8s %10s\n' consumer 'cpu s' 'vs cat'
printf '%-8s %8s %10s\n' cat "$cat_s" 1.00
printf '%-8s %8s %10s\n' zurg "$zurg_s" "$(ratio "$zurg_s" "$cat_s")"
printf '%-8s %8s %10s\n' svlogd "$svlogd_s" "$(ratio "$svlogd_s" "$cat_s")"
printf '%-8s %8s %10s\n' s6-log "$s6_s" "$(ratio "$s6_s" "$cat_s")"
echo "zurg vs svlogd $(ratio "$zurg_s" "$svlogd_s"), vs s6-log $(ratio "$zurg_s" "$s6_s"); zurg peak PSS ${pss_kb} KiB"
