#!/usr/bin/env bash
# Install the testbed's host packages from apt (root), download Debian's 6.12 kernel package and unpack it
# into the cache (never installed), build the guest's initramfs. Idempotent.
#   scripts/tiervm/setup.sh [--json]
# Cache: $PTMT_TIERVM_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/ptmt/tiervm.
set -euo pipefail
. "$(dirname "$0")/_python.sh"
exec "$PY" -m ptmt.testbed setup "$@"
