"""The running service's state file, and ``ptmt tune --status`` which reads it.

Every interval the service writes ``tune-BACKEND.json`` in its state directory (next to the
journal), atomically: pid, backend, objective and its last reading, the configuration, counts of
changes and reverts, the knobs it manages, the knobs it let go and why, the advice of a dry run.
When it stops it writes its final state (``running: false``). A state file whose pid is gone while
it still says ``running`` belongs to a daemon that crashed: ``ptmt restore`` (or the boot unit)
puts back what its journal holds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ptmt.host import pid_alive

PREFIX = "tune-"


def state_path(state_dir: Path, backend: str) -> Path:
    return Path(state_dir) / f"{PREFIX}{backend}.json"


def write_state(state_dir: Path, backend: str, doc: dict[str, Any]) -> Path:
    path = state_path(state_dir, backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tune.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({**doc, "updated_at": time.time()}, f, indent=1, default=str)
    os.replace(tmp, path)
    return path


def read_states(state_dir: Path) -> list[dict[str, Any]]:
    """Every state file in *state_dir*; a daemon that says it runs but whose pid is gone is ``crashed``."""
    out = []
    for path in sorted(Path(state_dir).glob(f"{PREFIX}*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        doc["state_file"] = str(path)
        if doc.get("running") and not pid_alive(int(doc.get("pid", 0))):
            doc["running"], doc["status"] = False, "crashed"
        out.append(doc)
    return out


def describe(doc: dict[str, Any]) -> list[str]:
    """Lines for a terminal."""
    age = time.time() - float(doc.get("updated_at", time.time()))
    head = (f"ptmt tune {doc.get('backend')}: {doc.get('status')}"
            + (f" (pid {doc.get('pid')}, updated {age:.0f} s ago)" if doc.get("running") else ""))
    value = doc.get("objective_value")
    reading = "no reading yet" if value is None else f"{value:.6g} {doc.get('objective_unit', '')}".rstrip()
    lines = [head,
             f"  objective {doc.get('objective')}: {reading}",
             f"  {doc.get('config_line', '')}",
             f"  {doc.get('intervals', 0)} interval(s), {doc.get('changes', 0)} change(s), "
             f"{doc.get('reverts', 0)} revert(s), {doc.get('errors', 0)} error(s)"]
    config = doc.get("knobs") or {}
    if config:
        lines.append("  managed: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    for name, why in (doc.get("released") or {}).items():
        lines.append(f"  let go: {name}: {why}")
    if doc.get("dry_run") and doc.get("advice"):
        lines.append("  advice (dry run, not written): " + "; ".join(doc["advice"][-5:]))
    if doc.get("status") == "crashed":
        lines.append("  the daemon is gone without restoring: run `ptmt restore` (the boot unit does it at boot)")
    return lines
