#!/usr/bin/env bash
# Boot the tiered-memory guest, run a command inside it, exit with the command's status.
#   scripts/tiervm/run.sh [--fast-mb 1024] [--slow-mb 1024] [--slow-latency 400] [--slow-bandwidth 4G]
#                         [--no-hmat] [--kernel-arg ARG]... [--timeout 600] [--console] -- COMMAND...
# The guest sees this host's root read-only (tmpfs overlay), so COMMAND uses host paths.
# Exit status 124 = hard timeout, 125 = the guest did not boot. Options: run.sh --help.
set -euo pipefail
. "$(dirname "$0")/_python.sh"
exec "$PY" -m ptmt.testbed run "$@"
