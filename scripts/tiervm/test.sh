#!/usr/bin/env bash
# Only the guest tests (set-up included), as `make test-vm` would run them.
set -euo pipefail
. "$(dirname "$0")/_python.sh"
cd "$TIERVM_REPO"
exec "$PY" -m pytest -m vm tests/vm "$@"
