"""`ptmt tune --platform linux` on a fake kernel tree, in wall-clock time, with a real objective command.

The objective command reads the knob the tuner set (through the fake tree) and is best at the bottom of
the promotion rate limit's ladder, so the test proves the loop closes: the tuner must find that value,
keep it, and still hand back the machine's own values when it stops — by duration or by SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptmt.db import open_storage
from ptmt.errors import PtmtError
from ptmt.journal import Entry, Journal
from ptmt.online.hostrun import prepare_host, tune_host
from ptmt.online.objective import ObjectiveError, parse_objective

RATE = "proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"
BEST = 256
SCRIPT = f"""
import sys
from pathlib import Path
rate = int((Path(sys.argv[1]) / "{RATE}").read_text())
print("ops", 120 if rate == {BEST} else 100)
"""


@pytest.fixture
def machine(fake_root: Path, tmp_path: Path) -> dict:
    (fake_root / "proc/vmstat").write_text("numa_hint_faults 10\npgpromote_success 5\npgdemote_kswapd 1\n")
    script = tmp_path / "objective.py"
    script.write_text(SCRIPT)
    return {"root": fake_root, "state": tmp_path / "state", "db": f"sqlite:///{tmp_path / 'tune.db'}",
            "objective": f"cmd:{sys.executable} {script} {fake_root}"}


def knob_files(root: Path) -> dict[str, str]:
    same = {"false": "0", "true": "1"}
    return {str(p.relative_to(root)): same.get(p.read_text().strip(), p.read_text().strip())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_loop_finds_the_better_rung_and_restores_the_originals(machine: dict) -> None:
    before = knob_files(machine["root"])
    source = parse_objective(machine["objective"], regex=r"^ops (\d+)")
    result = tune_host("autonuma", root=machine["root"], state_dir=machine["state"], objective=source,
                       duration=2.0, interval=0.05)
    assert result.final_config["numa_balancing_promote_rate_limit_MBps"] == BEST
    kept = [e for e in result.events if e.kind == "keep"]
    assert kept and "numa_balancing_promote_rate_limit_MBps to the far end" in kept[0].reason
    assert knob_files(machine["root"]) == before
    assert Journal(machine["state"]).entries() == []


def test_nothing_is_written_when_the_objective_cannot_be_read(machine: dict) -> None:
    before = knob_files(machine["root"])
    with pytest.raises(ObjectiveError):
        prepare_host("autonuma", root=machine["root"], state_dir=machine["state"],
                     objective=parse_objective("cmd:ptmt-no-such-command-here"))
    assert knob_files(machine["root"]) == before


def test_a_journal_left_behind_must_be_restored_first(machine: dict) -> None:
    machine["state"].mkdir()
    Journal(machine["state"]).record([Entry(backend="autonuma", knob="numa_balancing_promote_rate_limit_MBps",
                                            platform="linux", root=str(machine["root"]), target="/" + RATE,
                                            original="65536")])
    with pytest.raises(PtmtError, match=r"holds 1 knob change\(s\) of an earlier ptmt command: run `ptmt restore`"):
        prepare_host("autonuma", root=machine["root"], state_dir=machine["state"],
                     objective=parse_objective(machine["objective"]))


def cli(machine: dict, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ptmt", "tune", "--backend", "autonuma", "--platform", "linux",
            "--root", str(machine["root"]), "--state-dir", str(machine["state"]), "--objective",
            machine["objective"], "--objective-regex", r"^ops (\d+)", "--objective-unit", "ops/s",
            "--interval", "0.05", "--search", "--db", machine["db"], *extra]


def test_cli_records_the_run_and_reports_json(machine: dict) -> None:
    before = knob_files(machine["root"])
    done = subprocess.run(cli(machine, "--duration", "2", "--json", "--label", "ci"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert d["final_config"]["numa_balancing_promote_rate_limit_MBps"] == BEST
    assert d["objective_unit"] == "ops/s"
    assert knob_files(machine["root"]) == before
    with open_storage(machine["db"], create=False) as db:
        runs = db.tuning_runs_frame()
        assert runs["token"].tolist() == [d["run_token"]]
        run = runs.iloc[0]
        assert (run["status"], run["platform"], run["label"], run["objective_unit"]) == ("finished", "linux", "ci", "ops/s")
        assert run["settings"]["objective_direction"] == "max"  # ptmt report compares with it
        intervals = db.tuning_intervals_frame(d["run_token"])
        assert len(intervals) == d["intervals"]
        assert BEST in set(intervals["knob.numa_balancing_promote_rate_limit_MBps"])


def test_sigterm_restores_every_knob_and_marks_the_run_interrupted(machine: dict) -> None:
    before = knob_files(machine["root"])
    proc = subprocess.Popen(cli(machine), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while knob_files(machine["root"]) == before:  # wait until tuning has changed the machine
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "every original knob value is restored" in out
    assert knob_files(machine["root"]) == before
    with open_storage(machine["db"], create=False) as db:
        assert db.tuning_runs_frame()["status"].tolist() == ["interrupted"]
