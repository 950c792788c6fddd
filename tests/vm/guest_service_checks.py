"""Runs INSIDE the testbed guest (real 6.12 kernel) as root: ``ptmt tune`` as the service runs it,
stopped by SIGTERM in the middle of a trial, then once more killed by SIGKILL in the middle of a trial
and cleaned up by ``ptmt restore --platform linux`` (what ptmt-restore.service runs at boot); records
every AutoNUMA knob before, during and after each.

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


def tune_until_a_trial(state: str) -> tuple[subprocess.Popen[str], dict[str, str] | None, float]:
    """Start ``ptmt tune`` and wait until a trial has changed the kernel (or 240 s pass)."""
    before = knobs()
    cmd = [sys.executable, "-m", "ptmt", "tune", "--backend", "autonuma", "--platform", "linux", "--search",
           "--objective", "cmd:echo 100", "--interval", "1", "--state-dir", state]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    during = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240 and proc.poll() is None:
        if knobs()[RATE] != before[RATE]:  # a trial is under way
            time.sleep(1.5)
            during = knobs()
            break
        time.sleep(0.5)
    return proc, during, time.monotonic() - t0


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def main(dest: str) -> None:
    result: dict[str, object] = {}
    # 1. SIGTERM: the daemon restores by itself
    state = tempfile.mkdtemp(prefix="ptmt-state-")
    before = knobs()
    proc, during, waited = tune_until_a_trial(state)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    journal = Path(state) / "journal.json"
    result.update({"before": before, "during": during, "after": knobs(), "rc": proc.returncode,
                   "waited_s": waited, "stdout": out[-3000:], "stderr": err[-3000:],
                   "journal_left": journal.exists()})
    # 2. SIGKILL: nothing runs in the daemon; the journal left behind drives `ptmt restore`
    state = tempfile.mkdtemp(prefix="ptmt-state-")
    before = knobs()
    proc, during, waited = tune_until_a_trial(state)
    killed_running = proc.poll() is None
    proc.kill()
    finish(proc)
    after_kill = knobs()
    journal = Path(state) / "journal.json"
    journal_after_kill = journal.exists()
    res = subprocess.run([sys.executable, "-m", "ptmt", "restore", "--platform", "linux", "--state-dir", state],
                         capture_output=True, text=True, timeout=180)
    result["kill"] = {"before": before, "during": during, "killed_running": killed_running,
                      "after_kill": after_kill, "journal_after_kill": journal_after_kill,
                      "restore_rc": res.returncode, "restore_out": res.stdout[-3000:],
                      "restore_err": res.stderr[-3000:], "after_restore": knobs(),
                      "journal_left": journal.exists()}
    Path(dest).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
