#!/usr/bin/env bash
# fuzz_smoke: runs every fuzz target of a fuzz build briefly over its seed
# corpus, two at a time, and fails on any crash, leak or sanitizer report.
# Usage: smoke.sh BUILD_FUZZ_DIR SEED_DIR   (ctest passes both)
#   PARLEY_FUZZ_SECONDS  seconds per target (default 30)
# Exits 77 (ctest: skipped) when clang or the fuzz build is missing.
set -uo pipefail
build="$1"
seeds="$2"
seconds="${PARLEY_FUZZ_SECONDS:-30}"
bindir="$build/tests/fuzz"

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz_smoke: skipped: clang is not installed (tools/install-deps.sh installs it)"
    exit 77
fi
if [ ! -d "$bindir" ]; then
    echo "fuzz_smoke: skipped: no fuzz build at $build (build it with: bash tools/build.sh fuzz)"
    exit 77
fi

targets=()
for src in "$seeds"/fuzz_*.c; do
    name="$(basename "$src" .c)"
    name="${name#fuzz_}"
    if [ ! -x "$bindir/fuzz_$name" ]; then
        echo "fuzz_smoke: $bindir/fuzz_$name is missing: rebuild with bash tools/build.sh fuzz"
        exit 1
    fi
    targets+=("$name")
done

out="$build/fuzz-smoke"
rm -rf "$out"
mkdir -p "$out"

run_one () {
    local name="$1" dir="$out/$1"
    mkdir -p "$dir/corpus" "$dir/crashes"
    local dict=()
    [ -f "$seeds/$name.dict" ] && dict=(-dict="$seeds/$name.dict")
    # New inputs go to the scratch corpus (first); the seeds are only read.
    "$bindir/fuzz_$name" -max_total_time="$seconds" -timeout=10 -close_fd_mask=2 \
        -print_final_stats=1 -artifact_prefix="$dir/crashes/" "${dict[@]}" \
        "$dir/corpus" "$seeds/$name" >"$dir/log" 2>&1
    echo $? >"$dir/rc"
}

echo "fuzz_smoke: ${#targets[@]} targets, ${seconds} s each, two at a time"
for name in "${targets[@]}"; do
    run_one "$name" &
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do
        wait -n
    done
done
wait

failed=0
for name in "${targets[@]}"; do
    dir="$out/$name"
    rc="$(cat "$dir/rc" 2>/dev/null || echo 1)"
    last="$(grep -E '^#[0-9]+' "$dir/log" | tail -1)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")"
    if [ "$rc" = 0 ]; then
        echo "fuzz_$name: ok, ${runs:-?} runs: $last"
    else
        failed=1
        echo "fuzz_$name: FAILED (exit $rc); inputs in $dir/crashes/:"
        ls "$dir/crashes" | sed 's/^/    /'
        grep -E 'ERROR|SUMMARY|runtime error|fuzz check failed' "$dir/log" | head -20
        echo "    full log: $dir/log"
    fi
done
exit $failed
