#!/usr/bin/env bash
# Installs what Parley needs to build and test on Debian 12 (bookworm), if missing.
# Run as root (or with sudo available). Safe to run again: it installs only what is absent.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libzmq3-dev libczmq-dev libmsgpack-dev libcurl4-openssl-dev libjansson-dev
    libsqlite3-dev libmicrohttpd-dev libcmocka-dev libsodium-dev zlib1g-dev
    python3 python3-zmq python3-msgpack python3-yaml sqlite3 curl procps docker-compose
    # libFuzzer: clang, and its runtime (libclang_rt.fuzzer comes in libclang-rt-14-dev)
    clang libclang-rt-dev
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
    command -v sudo >/dev/null || { echo "install-deps: run as root, or install sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
