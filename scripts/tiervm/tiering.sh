#!/usr/bin/env bash
# The promotion/demotion scenario in a guest: a cold hog fills node0, a hot set starts on node1, NUMA
# balancing mode 2 with demotion on; prints the /proc/vmstat deltas.
#   scripts/tiervm/tiering.sh [--cold-mb 800] [--hot-mb 250] [--seconds 15] [--set KNOB=VALUE]... [--json]
set -euo pipefail
. "$(dirname "$0")/_python.sh"
exec "$PY" -m ptmt.testbed tiering "$@"
