"""The console script, run as a user runs it: exit codes, one-line errors, JSON, SIGKILL + restore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PTMT = str(Path(sys.executable).parent / "ptmt")
DEBUG = "sys/kernel/debug/sched/numa_balancing"


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PTMT, *args], capture_output=True, text=True, timeout=60, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"ptmt {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def common(fake_root, tmp_path) -> list[str]:
    return ["--root", str(fake_root), "--state-dir", str(tmp_path / "state"), "--platform", "linux"]


def test_status_json_describes_the_machine(common):
    info = json.loads(run("status", "--json", *common).stdout)
    assert info["kernel"] == "6.12.0-fake"
    assert [(n["id"], n["cpu_less"], n["tier"]) for n in info["nodes"]] == [(0, False, 4), (1, True, 22)]
    assert info["demotion_targets"] == {"0": [1]}
    assert info["debugfs_mounted"] is True and info["damon"] is False
    assert info["backends"]["autonuma"]["usable"] and info["backends"]["tpp"]["usable"]
    dsf = {k["name"]: k for k in info["backends"]["tpp"]["knobs"]}["demote_scale_factor"]
    assert dsf["present"] is False and "TPP patch" in dsf["problem"]
    assert not info["backends"]["memtis"]["usable"]


def test_knobs_json_has_the_documented_shape(common):
    doc = json.loads(run("knobs", "--backend", "tpp", "--json", *common).stdout)
    assert doc["backend"] == "tpp"
    by_name = {k["name"]: k for k in doc["knobs"]}
    k = by_name["scan_size_mb"]
    assert {"name", "path", "type", "default", "current", "candidates", "category"} <= set(k)
    assert (k["current"], k["default"], k["type"]) == (256, 256, "int")
    assert [a["name"] for a in doc["activation"]] == ["demotion_enabled", "numa_balancing"]


def test_human_output_of_status_and_knobs(common):
    assert "Backends" in run("status", *common).stdout
    assert "scan_size_mb" in run("knobs", "-b", "autonuma", *common).stdout


def test_apply_dry_run_then_apply_then_restore(common, fake_root):
    dry = run("apply", "-b", "autonuma", "--set", "scan_size_mb=512", "--activate", "--dry-run", *common)
    assert "scan_size_mb: 256 -> 512" in dry.stdout and "numa_balancing: 1 -> 2" in dry.stdout
    assert (fake_root / DEBUG / "scan_size_mb").read_text() == "256\n"
    run("apply", "-b", "autonuma", "--set", "scan_size_mb=512", "--activate", *common)
    assert (fake_root / DEBUG / "scan_size_mb").read_text() == "512\n"
    assert (fake_root / "sys/kernel/mm/numa/demotion_enabled").read_text() == "1\n"
    state = common[common.index("--state-dir") + 1]
    out = run("restore", "--state-dir", state).stdout
    assert "restored autonuma scan_size_mb = 256" in out
    assert (fake_root / DEBUG / "scan_size_mb").read_text() == "256\n"
    assert (fake_root / "sys/kernel/mm/numa/demotion_enabled").read_text() == "0\n"
    assert "nothing to restore" in run("restore", "--state-dir", state).stdout


def test_errors_are_one_clear_line_and_exit_1(common):
    proc = run("apply", "-b", "autonuma", "--set", "scan_size_mb=zero", *common, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "ptmt: error: invalid configuration for autonuma, nothing written:"
    assert "scan_size_mb: must be an integer (got 'zero')" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("knobs", "-b", "nosuch", *common, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("ptmt: error: unknown backend 'nosuch' (known: autonuma,")
    proc = run("apply", "-b", "autonuma", "--set", "scan_size_mb", *common, check=False)
    assert proc.returncode == 1 and "--set expects KNOB=VALUE (got 'scan_size_mb')" in proc.stderr


def test_sigkill_mid_apply_then_restore_puts_originals_back(fake_root, tmp_path, common):
    """The apply is frozen on its second write (a FIFO nobody reads) and killed with SIGKILL."""
    fifo = fake_root / DEBUG / "scan_size_mb"
    fifo.unlink()
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        """Answer each of ptmt's reads of the FIFO with "256"; pausing between answers lets each
        reader see end-of-file and close, so no two reads share one writer."""
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                time.sleep(0.02)
                continue
            os.write(fd, b"256\n")
            os.close(fd)
            time.sleep(0.3)

    threading.Thread(target=feed, daemon=True).start()
    proc = subprocess.Popen([PTMT, "apply", "-b", "autonuma", "--set", "hot_threshold_ms=250",
                             "--set", "scan_size_mb=1024", *common],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hot = fake_root / DEBUG / "hot_threshold_ms"
    deadline = time.monotonic() + 30
    while hot.read_text() != "250\n":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "apply never wrote the first knob"
        time.sleep(0.05)
    time.sleep(0.2)  # now blocked opening the FIFO for its second write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    fifo.unlink()
    fifo.write_text("256\n")
    journal = json.loads((tmp_path / "state" / "journal.json").read_text())
    assert {e["knob"]: e["original"] for e in journal["entries"]} == {"hot_threshold_ms": "1000", "scan_size_mb": "256"}
    out = run("restore", "--state-dir", str(tmp_path / "state")).stdout
    assert "restored autonuma hot_threshold_ms = 1000" in out
    assert hot.read_text() == "1000\n"
    assert not (tmp_path / "state" / "journal.json").exists()
