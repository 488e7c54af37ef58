#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running Parley:
# installs what is missing, builds, and runs the whole pipeline on the
# embedded default (a demo chat, template replies, live stats). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh release
exec bash tools/parley-up.sh "$@"
