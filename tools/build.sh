#!/usr/bin/env bash
# Configures and builds Parley. Usage: tools/build.sh [release|debug|asan]
#   release -> build/       (RelWithDebInfo)
#   debug   -> build-debug/
#   asan    -> build-asan/  (AddressSanitizer + UndefinedBehaviorSanitizer)
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-release}"
case "$kind" in
    release) dir=build;       flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
    debug)   dir=build-debug; flags=(-DCMAKE_BUILD_TYPE=Debug) ;;
    asan)    dir=build-asan;  flags=(-DCMAKE_BUILD_TYPE=Debug -DPARLEY_SANITIZE=ON) ;;
    *) echo "usage: $0 [release|debug|asan]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)" -- --no-print-directory >/dev/null
echo "built $dir/"
