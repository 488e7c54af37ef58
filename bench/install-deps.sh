#!/usr/bin/env bash
# Installs what the benchmark needs beyond the build and test dependencies
# (tools/install-deps.sh), if missing: the peer systems it measures Parley
# against and the C client library for one of them. Debian 12; run as root
# (or with sudo available). Safe to run again: it installs only what is absent.
set -euo pipefail

packages=(
    beanstalkd          # peer: a job queue, with and without its binlog
    redis-server        # peer: LPUSH / BRPOP job queue, without and with AOF
    libhiredis-dev      # the Redis C client the peer clients are built on
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "Installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bench/install-deps: run as root, or install sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Where the packages start their own services, those are left alone: the
# benchmark starts its own daemons, on ports it picks, and stops them by PID.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
