# Sourced by the tiervm scripts: pick the project's virtualenv Python if there is one.
TIERVM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -x "$TIERVM_REPO/.venv/bin/python" ]; then PY="$TIERVM_REPO/.venv/bin/python"; else PY=${PYTHON:-python3}; fi
export PYTHONPATH="$TIERVM_REPO${PYTHONPATH:+:$PYTHONPATH}"
