#!/usr/bin/env bash
# The journal's CRC-32: the table-driven form against crc32fast over 16 MiB,
# a whole read of a 16 MiB journal and an open of its 8 MiB current file;
# best of 5, release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example crc_bench
target/release/examples/crc_bench "${1:-5}"
