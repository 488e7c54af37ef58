#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a full test run:
# installs what is missing, builds (normal, sanitizer and fuzz builds), runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh release
bash tools/build.sh asan
# The fuzz targets, for the fuzz_smoke test (skipped without clang).
if command -v clang >/dev/null 2>&1; then
    bash tools/build.sh fuzz
else
    echo "== clang not found: fuzz_smoke will be skipped"
fi
# Two at a time (tests/CMakeLists.txt runs the timing-sensitive ones alone).
jobs=2
echo "== tests (release build)"
ctest --test-dir build --output-on-failure --timeout 900 -j "$jobs"
echo "== tests under AddressSanitizer/UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure --timeout 900 -LE 'slow|fuzz' -j "$jobs"
echo "== a shortened chaos run under AddressSanitizer/UBSan"
PARLEY_CHAOS_MESSAGES=1000 ctest --test-dir build-asan --output-on-failure --timeout 900 -R '^test_chaos$'
