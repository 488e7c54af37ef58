#!/usr/bin/env bash
# Configures and builds Parley. Usage: tools/build.sh [release|debug|asan|fuzz]
#   release -> build/       (RelWithDebInfo)
#   debug   -> build-debug/
#   asan    -> build-asan/  (AddressSanitizer + UndefinedBehaviorSanitizer)
#   fuzz    -> build-fuzz/  (clang, libFuzzer + ASan + UBSan: the fuzz_* targets only)
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-release}"
case "$kind" in
    release) dir=build;       flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
    debug)   dir=build-debug; flags=(-DCMAKE_BUILD_TYPE=Debug) ;;
    asan)    dir=build-asan;  flags=(-DCMAKE_BUILD_TYPE=Debug -DPARLEY_SANITIZE=ON) ;;
    fuzz)    dir=build-fuzz;  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARLEY_FUZZ=ON
                                     -DCMAKE_C_COMPILER="${FUZZ_CC:-clang}") ;;
    *) echo "usage: $0 [release|debug|asan|fuzz]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
if [ "$kind" = fuzz ]; then
    #  Only the fuzz targets (and the libraries they test): the daemons and
    #  unit tests are built and tested by the other kinds.
    cmake --build "$dir" -j "$(nproc)" --target fuzz -- --no-print-directory >/dev/null
else
    cmake --build "$dir" -j "$(nproc)" -- --no-print-directory >/dev/null
fi
echo "built $dir/"
