#!/usr/bin/env bash
# Runs a libFuzzer target of the fuzz build for a while on its seed corpus.
# Usage: tools/fuzz.sh TARGET|all MINUTES
#   TARGET   proto, config, source_http, jsonl, telegram, twitch, llm, dest, recovery
#            (tests/fuzz/fuzz_TARGET.c; "all" runs every one, one after another)
#   MINUTES  how long each runs (decimals allowed)
# Build first: bash tools/build.sh fuzz. Each run works in a scratch
# directory ($PARLEY_FUZZ_WORK, default /tmp/parley-fuzz) with a copy of the
# seeds, so the corpus in the repository stays small; it prints where the
# crashes go and ends with libFuzzer's last status line. Exit status 1 if
# any target found something.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
    sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
what="$1"
minutes="$2"
seconds="$(awk -v m="$minutes" 'BEGIN { s = int (m * 60); if (s < 1) s = 1; print s }')"
bindir=build-fuzz/tests/fuzz
work="${PARLEY_FUZZ_WORK:-/tmp/parley-fuzz}"

if [ "$what" = all ]; then
    targets=()
    for src in tests/fuzz/fuzz_*.c; do
        name="$(basename "$src" .c)"
        targets+=("${name#fuzz_}")
    done
else
    targets=("$what")
fi

status=0
for name in "${targets[@]}"; do
    bin="$bindir/fuzz_$name"
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin not found (targets: $(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||' | tr '\n' ' ')); build with: bash tools/build.sh fuzz" >&2
        exit 2
    fi
    dir="$work/$name-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$dir/corpus" "$dir/crashes"
    cp tests/fuzz/"$name"/* "$dir/corpus/"
    dict=()
    [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
    echo "== fuzz_$name for ${seconds} s; corpus $dir/corpus; crashes go to $dir/crashes/"
    "$bin" -max_total_time="$seconds" -timeout=10 -close_fd_mask=2 -print_final_stats=1 \
        -artifact_prefix="$dir/crashes/" "${dict[@]}" "$dir/corpus" >"$dir/log" 2>&1
    rc=$?
    grep -E '^#[0-9]+' "$dir/log" | tail -1
    echo "   corpus: $(ls "$dir/corpus" | wc -l) inputs; log: $dir/log"
    if [ $rc -ne 0 ] || [ -n "$(ls -A "$dir/crashes")" ]; then
        status=1
        echo "   FOUND (exit $rc): $(ls "$dir/crashes" | tr '\n' ' ')"
        grep -E 'ERROR|SUMMARY|runtime error|fuzz check failed' "$dir/log" | head -10 | sed 's/^/   /'
        echo "   reproduce: $bin $dir/crashes/<file>"
    fi
done
exit $status
