#!/usr/bin/env bash
# Runs a whole Parley pipeline on this machine: broker, sink, workers, poller.
# Usage: tools/parley-up.sh [--config FILE] [--workers N] [--build DIR]
# Replies and a stats line every few seconds appear here; Ctrl-C stops
# everything cleanly (SIGTERM to each daemon, then wait for them).
set -uo pipefail
cd "$(dirname "$0")/.."
config=()
workers=1
build=build
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config=(--config "$2"); shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --build) build="$2"; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
pids=()
stop() {
    trap - INT TERM
    echo
    echo "stopping..."
    kill -TERM "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
    echo "stopped."
    exit 0
}
trap stop INT TERM
# The broker and sink bind first; the others reconnect until they are up anyway.
"$build/broker/parley-broker" "${config[@]}" -q & pids+=($!)
"$build/sink/parley-sink" "${config[@]}" & pids+=($!)
for i in $(seq 1 "$workers"); do
    WORKER_ID="${WORKER_ID:-worker}-$i" "$build/worker/parley-worker" "${config[@]}" -q & pids+=($!)
done
"$build/poller/parley-poller" "${config[@]}" -q & pids+=($!)
echo "Parley is running (pids ${pids[*]}). Live view in another terminal: $build/tools/parleyctl top"
echo "Press Ctrl-C to stop."
wait -n "${pids[@]}"
echo "a daemon exited; stopping the rest" >&2
stop
