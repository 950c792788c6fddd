"""What identifies the simulated machine's behaviour, so that cached simulated results are never
reused across simulator versions.

Suite databases and oracle runs are expensive and are cached on disk (``benchmarks/evaluate.py
--cache-dir``, ``benchmarks/tune_loo.py --db-dir``). A cache keyed only by its parameters outlives
the code that filled it: a table measured on databases built by an earlier simulator cannot be
reproduced from a fresh clone (docs/tuning.md, 2026-12-05). The digest covers everything a
simulated result depends on: the simulator's code, the built-in machines and workloads, and the
backends' knob catalogs.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from ptmt.sim.specs import builtin_dir

#: the data directories whose YAML files shape a simulated run
_DATA = ("machines", "workloads", "backends")


def _files() -> list[tuple[str, Path]]:
    code = Path(__file__).resolve().parent
    out = [(f"sim/{p.name}", p) for p in sorted(code.glob("*.py"))]
    for kind in _DATA:
        out += [(f"{kind}/{p.name}", p) for p in sorted(builtin_dir(kind).glob("*.yaml"))]
    return out


@cache
def simulator_digest(length: int = 10) -> str:
    """Hex digest of the simulator's code and built-in data (file names and contents, in order)."""
    h = hashlib.sha256()
    for name, path in _files():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:length]
