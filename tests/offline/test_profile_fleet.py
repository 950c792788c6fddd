"""A fleet: several `ptmt profile --worker` processes split one study in a real PostgreSQL server.

Each worker plays a separate machine (its own fake /proc+/sys tree and journal). One is killed with
SIGKILL in the middle of a trial: its trial goes stale, is re-queued and finished by another worker, and
every planned trial ends done exactly once.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptmt.db import open_storage
from ptmt.offline.profile import ProfileOptions, prepare

# The PostgreSQL server of the database tests, shared rather than copied.
_spec = importlib.util.spec_from_file_location("ptmt_db_test_fixtures", Path(__file__).parents[1] / "db" / "conftest.py")
assert _spec and _spec.loader
_pg = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(_pg)
pg_server = _pg.pg_server

RATE = "proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"
SCRIPT = f"""
import os, time
from pathlib import Path
rate = (Path(os.environ["FAKE_ROOT"]) / "{RATE}").read_text().strip()
time.sleep(0.6)
print("ops", rate)
"""
CLI = ("import typer; from ptmt.offline.cli import profile; app = typer.Typer(); "
       "app.command('profile')(profile); app.command('x')(lambda: None); app()")
BUDGET = 10


@pytest.fixture
def pg_url(pg_server):
    url = pg_server.create_database()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        pg_server.drop_database(url)


def test_workers_share_a_study_and_take_over_a_killed_one(pg_url, fake_root, tmp_path):
    (fake_root / "proc/vmstat").write_text("numa_hint_faults 1\n")
    script = tmp_path / "bench.py"
    script.write_text(SCRIPT)
    workload = tmp_path / "bench.yaml"
    workload.write_text(f"name: fleet-bench\ncommand: [{sys.executable}, {script}]\n"
                        "objective: {regex: '^ops ([0-9]+)', unit: ops/s}\n")
    common = dict(backend="autonuma", workload=str(workload), platform="linux", strategy="lhs", budget=BUDGET,
                  interval=0.2, db=pg_url, seed=7)
    with open_storage(pg_url) as db:  # the coordinator plans the study; workers only join it
        study_id = prepare(ProfileOptions(**common, root=fake_root, state_dir=tmp_path / "s0"), db).study_id

    procs = []
    for i in range(3):
        root = tmp_path / f"machine{i}"
        shutil.copytree(fake_root, root)
        env = {**os.environ, "FAKE_ROOT": str(root), "PTMT_STALE_AFTER_S": "2"}
        cmd = [sys.executable, "-c", CLI, "profile", "--worker", "--backend", "autonuma", "--workload", str(workload),
               "--platform", "linux", "--strategy", "lhs", "--budget", str(BUDGET), "--interval", "0.2",
               "--seed", "7", "--db", pg_url, "--root", str(root), "--state-dir", str(tmp_path / f"s{i + 1}"),
               "--no-progress"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    victim = procs[0]
    with open_storage(pg_url) as db:
        deadline = time.monotonic() + 60
        killed = None
        while time.monotonic() < deadline and killed is None:
            for t in db.trials(study_id, status="running"):
                if (t.worker or "").endswith(f":{victim.pid}"):
                    time.sleep(0.2)  # well inside its 0.6 s run
                    victim.send_signal(signal.SIGKILL)
                    killed = t
                    break
            time.sleep(0.05)
        assert killed is not None, "the first worker never ran a trial"
        victim.wait(10)
        results = [p.communicate(timeout=120) for p in procs[1:]]
        for p, (_out, err) in zip(procs[1:], results, strict=True):
            assert p.returncode == 0, err

        assert db.progress(study_id) == {"pending": 0, "running": 0, "done": BUDGET, "failed": 0, "interrupted": 0}
        frame = db.trials_frame(study_id)
        samples = db.samples_frame(study=study_id)
        redone = db.get_trial(killed.id)
    assert sorted(frame["ordinal"]) == list(range(BUDGET))  # nothing lost, nothing twice
    assert redone.status == "done" and redone.attempts == 2
    assert not redone.worker.endswith(f":{victim.pid}")
    assert {w.rsplit(":", 1)[1] for w in frame["worker"]} <= {str(p.pid) for p in procs[1:]}
    assert not samples.duplicated(["trial_id", "seq"]).any()
    assert (frame["objective"] == frame["knob.numa_balancing_promote_rate_limit_MBps"]).all()
