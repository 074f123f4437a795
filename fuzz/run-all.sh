#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60); exits non-zero on the first crash.
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly flags.
set -euo pipefail

secs="${1:-60}"
case "$secs" in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Listed first: a failure inside `for t in $(...)` would run no target and pass.
targets=$(cargo fuzz list)
if [ -z "$targets" ]; then
    echo "cargo fuzz list found no fuzz target" >&2
    exit 1
fi
for t in $targets; do
    echo "== fuzz $t for ${secs}s"
    # cargo fuzz exits non-zero when libFuzzer finds a crash (the input lands in artifacts/$t/).
    cargo fuzz run -O "$t" -- -max_total_time="$secs" -print_final_stats=1
done
echo "== all fuzz targets ran ${secs}s each without a crash"
