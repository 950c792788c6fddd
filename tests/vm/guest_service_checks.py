"""Runs INSIDE the testbed guest (real 6.12 kernel) as root: ``ptmt tune`` as the service runs it,
stopped by SIGTERM in the middle of a trial; records every AutoNUMA knob before, during and after.

usage: python guest_service_checks.py OUT.json
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ptmt.catalog import load_catalog

RATE = "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"


def knobs() -> dict[str, str]:
    out = {}
    for knob in load_catalog("autonuma").all_knobs.values():
        try:
            out[knob.path] = Path(knob.path).read_text().strip()
        except OSError as e:
            out[knob.path] = f"<{e.strerror}>"
    return out


def main(dest: str) -> None:
    state = tempfile.mkdtemp(prefix="ptmt-state-")
    before = knobs()
    cmd = [sys.executable, "-m", "ptmt", "tune", "--backend", "autonuma", "--platform", "linux", "--search",
           "--objective", "cmd:echo 100", "--interval", "1", "--state-dir", state]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    during, waited = None, 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240 and proc.poll() is None:
        now = knobs()
        if now[RATE] != before[RATE]:  # a trial is under way
            time.sleep(1.5)
            during = knobs()
            break
        time.sleep(0.5)
    waited = time.monotonic() - t0
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    journal = Path(state) / "journal.json"
    Path(dest).write_text(json.dumps({"before": before, "during": during, "after": knobs(), "rc": proc.returncode,
                                      "waited_s": waited, "stdout": out[-3000:], "stderr": err[-3000:],
                                      "journal_left": journal.exists()}))


if __name__ == "__main__":
    main(sys.argv[1])
