"""Runs INSIDE the testbed guest (real 6.12 kernel, node1 a CPU-less lower tier) as root.

Drives the ptmt command line against the real kernel and writes what it saw to a JSON file; the
host-side tests (test_vm_knobs.py) assert on it. The entry-point script is run once as a process; the
many apply/restore calls go through the same Typer app in this process (each new Python process
costs seconds under software emulation).

usage: python guest_knob_checks.py OUT.json
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from ptmt.cli import app
from ptmt.journal import Journal

COMMON = ["--platform", "linux"]
RULE = re.compile(r"^\s*(\w+)\s*(<=|>=|<|>|==|!=)\s*(\w+)\s*$")
OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
       ">": lambda a, b: a > b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
runner = CliRunner()


def raw(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"<{e.strerror}>"


def value_of(knob: dict, text: str | None) -> object:
    """The kernel's text as a value comparable with a catalog value."""
    if text is None:
        return None
    if knob["type"] == "bool":
        return text.lower() in ("1", "y", "true", "on")
    try:
        return int(text.split()[0])
    except ValueError:
        return text


def cli(*args: str) -> dict:
    r = runner.invoke(app, list(args))
    out = {"args": list(args), "rc": r.exit_code, "stdout": r.stdout, "stderr": r.stderr}
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        out["exception"] = repr(r.exception)
    return out


def candidate(knob: dict, currents: dict[str, object], rules: list[str]) -> object | None:
    """A legal value other than the current and the default one that keeps every rule true."""
    cur, default = knob["current"], knob["default"]
    if knob["type"] == "bool":
        options: list[object] = [not cur]
    elif knob["type"] == "bitmask":
        bits = knob.get("bits") or []
        masks = {0}
        for b in bits:
            masks |= {m | b for m in masks}
        options = sorted(masks)
    else:
        options = list(knob.get("candidates") or [])
    for v in options:
        if v == cur or (v == default and len(options) > 1 and knob["type"] != "bool"):
            continue
        trial = dict(currents, **{knob["name"]: v})
        ok = True
        for r in rules:
            m = RULE.match(r)
            if m and m.group(1) in trial and m.group(3) in trial:
                ok &= OPS[m.group(2)](trial[m.group(1)], trial[m.group(3)])
        if ok:
            return v
    return None


def show(v: object) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def roundtrip(backend: str, doc: dict, state: str) -> list[dict]:
    entries = doc["activation"] + doc["knobs"]
    currents = {k["name"]: k["current"] for k in entries}
    rows = []
    for k in entries:
        row: dict = {"backend": backend, "knob": k["name"], "path": k["path"], "present": k["present"],
                     "writable": k["writable"], "problem": k.get("problem")}
        if not k["present"]:
            # A missing knob must be refused by name, without touching anything.
            row["apply"] = cli("apply", "--backend", backend, "--set", f"{k['name']}={show(k['default'])}",
                               "--state-dir", state, *COMMON)
            rows.append(row)
            continue
        v = candidate(k, currents, doc.get("rules", []))
        row["original_raw"] = raw(k["path"])
        row["original"] = value_of(k, row["original_raw"])
        row["candidate"] = v
        if v is None:
            rows.append(row)
            continue
        row["apply"] = cli("apply", "--backend", backend, "--set", f"{k['name']}={show(v)}",
                           "--state-dir", state, *COMMON)
        row["readback_raw"] = raw(k["path"])
        row["readback"] = value_of(k, row["readback_raw"])
        row["restore"] = cli("restore", "--state-dir", state, *COMMON)
        row["restored_raw"] = raw(k["path"])
        row["restored"] = value_of(k, row["restored_raw"])
        rows.append(row)
    return rows


def snapshot(doc: dict) -> dict[str, str | None]:
    return {k["name"]: raw(k["path"]) for k in doc["activation"] + doc["knobs"] if k["present"]}


def main() -> int:
    out_path = Path(sys.argv[1])
    res: dict = {}
    ptmt = Path(sys.executable).with_name("ptmt")
    state = tempfile.mkdtemp(prefix="ptmt-state-")
    # 1. the installed entry point, as a user would run it
    p = subprocess.run([str(ptmt), "status", "--json", "--state-dir", state, *COMMON],
                       capture_output=True, text=True)
    res["status_proc"] = {"rc": p.returncode, "stderr": p.stderr}
    try:
        res["status"] = json.loads(p.stdout)
    except ValueError:
        res["status_proc"]["stdout"] = p.stdout
    # 2. knob catalogs as seen on this kernel
    docs = {}
    for b in ("autonuma", "tpp"):
        r = cli("knobs", "--backend", b, "--json", "--state-dir", state, *COMMON)
        docs[b] = json.loads(r["stdout"]) if r["rc"] == 0 else None
        res.setdefault("knobs_cli", {})[b] = {k: r[k] for k in ("rc", "stderr")}
    res["knobs"] = docs
    if docs["autonuma"] is None:
        out_path.write_text(json.dumps(res, indent=1))
        return 0
    # 3. apply -> read back -> restore, knob by knob
    res["roundtrip"] = []
    for b in ("autonuma", "tpp"):
        if docs[b] is not None:
            res["roundtrip"] += roundtrip(b, docs[b], state)
    # 4. activation as a whole
    an = docs["autonuma"]
    before = snapshot(an)
    act = cli("apply", "--backend", "autonuma", "--activate", "--state-dir", state, *COMMON)
    during = snapshot(an)
    rst = cli("restore", "--state-dir", state, *COMMON)
    res["activate"] = {"apply": act, "restore": rst, "before": before, "during": during, "after": snapshot(an)}
    # 5. illegal values: refused before any write (a legal knob in the same request stays untouched)
    res["illegal"] = []
    for sets in (["hot_threshold_ms=2000", "scan_size_mb=0"],
                 ["hot_threshold_ms=2000", "scan_size_mb=lots"],
                 ["hot_threshold_ms=2000", "no_such_knob=1"],
                 ["scan_period_min_ms=5000", "scan_period_max_ms=1000"]):
        before = snapshot(an)
        args = [a for s in sets for a in ("--set", s)]
        r = cli("apply", "--backend", "autonuma", *args, "--state-dir", state, *COMMON)
        res["illegal"].append({"sets": sets, "apply": r, "before": before, "after": snapshot(an),
                               "journal": _journal(state)})
    # 6. a value the catalog allows but the kernel rejects: reported with the kernel's answer, and
    #    the knob written before it in the same request is rolled back
    cat = Path(tempfile.mkdtemp(prefix="ptmt-cat-"))
    (cat / "vmcheck.yaml").write_text(VMCHECK)
    before = snapshot(an)
    r = cli("apply", "--backend", "vmcheck", "--catalog-dir", str(cat), "--set", "scan_size_mb=512",
            "--set", "watermark_scale_factor=5000", "--state-dir", state, *COMMON)
    res["rejected"] = {"apply": r, "before": before, "after": snapshot(an), "journal": _journal(state)}
    out_path.write_text(json.dumps(res, indent=1))
    return 0


def _journal(state: str) -> list[str]:
    """Knobs whose originals the journal still holds."""
    return [f"{e.backend}.{e.knob}" for e in Journal(state).entries()]


# A user catalog whose range for watermark_scale_factor is wider than 6.12 accepts (1..3000), so the
# kernel, not PTMT's validation, refuses 5000 (EINVAL). scan_size_mb comes first in the request and
# in the catalog, so it has been written when the kernel refuses the second value.
VMCHECK = """\
backend: vmcheck
extends: autonuma
title: testbed check catalog (wider watermark range than the kernel accepts)
description: AutoNUMA with a watermark_scale_factor range wider than the kernel's, for tests.
knobs:
  watermark_scale_factor:
    path: /proc/sys/vm/watermark_scale_factor
    type: int
    min: 1
    max: 100000
    default: 10
    candidates: [10, 5000]
    category: reclaim
    description: Range deliberately wider than the kernel's so that the kernel rejects 5000.
"""

if __name__ == "__main__":
    sys.exit(main())
