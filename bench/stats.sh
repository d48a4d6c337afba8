#!/usr/bin/env bash
# zurg's /proc stats readers over N processes vs a hand-written read of the
# same files; prints the ratio (best of 7 alternating rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet --example stats_bench -- "${1:-1000}"
