"""`ptmt profile` on a real-host-style machine: a fake /proc+/sys tree, tiny real commands.

The workload reads the knob the trial set (through the fake tree), so a recorded objective proves the
configuration was applied while the command ran; afterwards every knob file must hold its original.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptmt.db import open_storage
from ptmt.offline.profile import ProfileOptions, run_profile

RATE = "proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"
VMSTAT = "numa_hint_faults 10\npgpromote_success 5\npgdemote_kswapd 1\n"

SCRIPT = """
import os, sys, time
from pathlib import Path
root = Path(sys.argv[1])
log = Path(sys.argv[2])
rate = int((root / "{rate}").read_text())
with log.open("a") as f:
    f.write(f"{{rate}}\\n")
calls = len(log.read_text().splitlines())
if rate == int(os.environ.get("FAIL_RATE", "-1")):
    sys.stderr.write("boom: rate " + str(rate) + "\\n")
    sys.exit(3)
if calls >= int(os.environ.get("HANG_FROM", "1000000")) and not (log.parent / "nohang").exists():
    time.sleep(60)
print("progress ops", rate / 2)
print("ops", rate)
""".format(rate=RATE)

CLI = ("import typer; from ptmt.offline.cli import profile; app = typer.Typer(); "
       "app.command('profile')(profile); app.command('x')(lambda: None); app()")


@pytest.fixture
def machine(fake_root: Path, tmp_path: Path) -> dict:
    (fake_root / "proc/vmstat").write_text(VMSTAT)
    script = tmp_path / "bench.py"
    script.write_text(SCRIPT)
    log = tmp_path / "calls.log"
    wl = tmp_path / "bench.yaml"
    wl.write_text(f"name: bench\ncommand: [{sys.executable}, {script}, {fake_root}, {log}]\n"
                  "timeout_s: 120\nobjective: {regex: '^ops ([0-9.]+)', unit: ops/s, direction: max}\n")
    return {"root": fake_root, "workload": wl, "log": log, "db": f"sqlite:///{tmp_path / 'p.db'}",
            "state": tmp_path / "state"}


def knob_files(root: Path) -> dict[str, str]:
    """The tree's files as the kernel would show them (a restored bool may be written as 0/1)."""
    same = {"false": "0", "true": "1"}
    return {str(p.relative_to(root)): same.get(p.read_text().strip(), p.read_text().strip())
            for p in sorted(root.rglob("*")) if p.is_file()}


def options(m: dict, **kw) -> ProfileOptions:
    base = dict(backend="autonuma", workload=str(m["workload"]), platform="linux", strategy="sobol", budget=6,
                interval=0.2, db=m["db"], seed=1, root=m["root"], state_dir=m["state"], show_progress=False)
    return ProfileOptions(**{**base, **kw})


def test_trials_apply_measure_restore_and_failures_do_not_stop_the_sweep(machine, monkeypatch):
    before = knob_files(machine["root"])
    # the third planned configuration makes the command fail; the sweep goes on past it
    from ptmt.catalog import load_catalog
    from ptmt.offline.sampling import plan_configurations

    plan = plan_configurations(load_catalog("autonuma"), "sobol", 6, seed=1)
    monkeypatch.setenv("FAIL_RATE", str(plan[2]["numa_balancing_promote_rate_limit_MBps"]))
    summary = run_profile(options(machine))
    assert knob_files(machine["root"]) == before  # every knob back
    assert not (machine["state"] / "journal.json").exists()
    with open_storage(machine["db"]) as db:
        frame = db.trials_frame(summary.study_id)
        samples = db.samples_frame(study=summary.study_id)
    fail_rate = plan[2]["numa_balancing_promote_rate_limit_MBps"]
    failed = frame[frame["knob.numa_balancing_promote_rate_limit_MBps"] == fail_rate]
    done = frame[frame["knob.numa_balancing_promote_rate_limit_MBps"] != fail_rate]
    assert len(frame) == 6 and len(failed) >= 1
    assert set(failed["status"]) == {"failed"}
    assert all("exited with status 3" in e and "boom: rate" in e for e in failed["error"])
    assert set(done["status"]) == {"done"}
    # the command saw the configuration: its objective is the rate limit the trial applied
    assert (done["objective"] == done["knob.numa_balancing_promote_rate_limit_MBps"]).all()
    assert set(done["objective_unit"]) == {"ops/s"}
    assert frame.loc[frame["ordinal"] == 0, "knob.numa_balancing_promote_rate_limit_MBps"].item() == 65536
    assert len(samples) >= len(frame) and {"numa_hint_faults", "t_s", "dt_s"} <= set(samples.columns)
    assert summary.counts["done"] == len(done) and summary.best == max(done["objective"])


def test_resume_does_not_repeat_finished_trials(machine):
    first = run_profile(options(machine, budget=4))
    assert first.ran == 4
    calls = machine["log"].read_text().splitlines()
    again = run_profile(options(machine, budget=4))
    assert again.study_id == first.study_id and again.ran == 0
    assert machine["log"].read_text().splitlines() == calls
    bigger_repeat = run_profile(options(machine, budget=4, repeat=2))
    assert bigger_repeat.study_id != first.study_id and bigger_repeat.counts["done"] == 8


def test_in_run_mode_one_command_many_configurations(machine, tmp_path):
    stream = tmp_path / "stream.py"
    stream.write_text(f"""
import sys, time
from pathlib import Path
knob = Path({str(machine["root"] / RATE)!r})
with open({str(machine["log"])!r}, "a") as f:
    f.write("start\\n")
while True:
    print("ops", knob.read_text().strip(), flush=True)
    time.sleep(0.01)
""")
    machine["workload"].write_text(f"command: [{sys.executable}, {stream}]\n"
                                   "objective: {regex: '^ops ([0-9.]+)', unit: ops/s}\n")
    before = knob_files(machine["root"])
    s = run_profile(options(machine, budget=5, in_run=True, interval=0.3))
    assert s.counts["done"] == 5
    assert machine["log"].read_text().splitlines() == ["start"]  # one run for all five
    with open_storage(machine["db"]) as db:
        frame = db.trials_frame(s.study_id)
    # each interval's score is what the command printed under that interval's configuration
    assert (frame["objective"] == frame["knob.numa_balancing_promote_rate_limit_MBps"]).all()
    assert knob_files(machine["root"]) == before


def test_sigterm_restores_knobs_marks_interrupted_and_resumes(machine):
    before = knob_files(machine["root"])
    env = {**os.environ, "HANG_FROM": "3"}
    cmd = [sys.executable, "-c", CLI, "profile", "--backend", "autonuma", "--workload", str(machine["workload"]),
           "--platform", "linux", "--root", str(machine["root"]), "--state-dir", str(machine["state"]),
           "--db", machine["db"], "--budget", "5", "--interval", "0.2", "--seed", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the third command hangs with its configuration applied
        if machine["log"].exists() and len(machine["log"].read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    assert knob_files(machine["root"]) != before
    proc.send_signal(signal.SIGTERM)
    outs, errs = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, errs
    assert "interrupted by SIGTERM: knobs restored" in errs
    assert knob_files(machine["root"]) == before
    assert not (machine["state"] / "journal.json").exists()
    with open_storage(machine["db"]) as db:
        (study_id,) = db.studies_frame()["study_id"]
        counts = db.progress(study_id)
        assert counts == {"pending": 2, "running": 0, "done": 2, "failed": 0, "interrupted": 1}
        assert db.trials(study_id, status="interrupted")[0].error == "interrupted by signal"
    # rerunning the same command finishes the study; the two done trials do not run again
    (machine["log"].parent / "nohang").touch()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(machine["log"].read_text().splitlines()) == 3 + 3
    with open_storage(machine["db"]) as db:
        assert db.progress(study_id)["done"] == 5
    assert knob_files(machine["root"]) == before


def test_an_earlier_apply_in_the_journal_stops_the_study_before_any_trial(machine):
    from ptmt.errors import PtmtError
    from ptmt.journal import Entry, Journal

    journal = Journal(machine["state"])
    with journal.locked():
        journal.record([Entry("autonuma", "scan_size_mb", "linux", str(machine["root"]),
                              "/sys/kernel/debug/sched/numa_balancing/scan_size_mb", "256")])
    with pytest.raises(PtmtError, match="run `ptmt restore` first"):
        run_profile(options(machine, budget=3))
    with open_storage(machine["db"]) as db:
        (study_id,) = db.studies_frame()["study_id"]
        assert db.progress(study_id)["pending"] == 3
    assert not machine["log"].exists()
