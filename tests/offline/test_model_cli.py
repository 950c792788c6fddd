"""``ptmt model fit|show|query`` through the CLI (the console script once ``ptmt model`` is
registered, typer's CliRunner otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ptmt.db import open_storage
from ptmt.offline import synthetic
from ptmt.offline.fingerprint import FEATURE_NAMES
from ptmt.offline.model_cli import model_app

PTMT = Path(sys.executable).parent / "ptmt"


def _registered() -> bool:
    if not PTMT.exists():
        return False
    res = subprocess.run([str(PTMT), "model", "--help"], capture_output=True, text=True, timeout=60)
    return res.returncode == 0


@pytest.fixture(scope="module")
def run():  # noqa: ANN201
    """Run ``ptmt model ...``: (exit code, stdout, stderr)."""
    if _registered():
        def console(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
            import os

            res = subprocess.run([str(PTMT), "model", *args], capture_output=True, text=True,
                                 timeout=300, env={**os.environ, "COLUMNS": "200", **(env or {})})
            return res.returncode, res.stdout, res.stderr
        return console
    app = typer.Typer()
    app.add_typer(model_app, name="model")
    runner = CliRunner()

    def in_process(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
        res = runner.invoke(app, ["model", *args], env={"COLUMNS": "200", **(env or {})})
        return res.exit_code, res.stdout, res.stderr
    return in_process


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('modelcli') / 'ptmt.db'}"
    with open_storage(url) as db:
        synthetic.fill(db, per_group=1, n_configs=30, intervals=2, bulk=True)
    return url


def test_fit_show_query(run, db_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "autonuma.npz"
    code, stdout, stderr = run(["fit", "--backend", "autonuma", "--db", db_url, "--output", str(out)])
    assert code == 0, stderr
    assert "model fitted from 90 trials (180 samples) of 3 workloads" in stdout
    assert out.is_file()
    code, stdout, stderr = run(["show", "--model", str(out), "--json"])
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["backend"] == "autonuma" and doc["features"] == list(FEATURE_NAMES)
    assert set(doc["workloads"]) == {"hot-0", "thrash-0", "mid-0"}
    assert doc["workloads"]["hot-0"]["configuration"]["scan_size_mb"] == 1024
    code, stdout, stderr = run(["show", "--backend", "autonuma", "--model", str(out)])
    assert code == 0, stderr
    assert "Best known configuration per workload" in stdout and "scan_size_mb=1024" in stdout
    with open_storage(db_url) as db:
        samples = db.samples_frame(study=1)  # hot-0
    rows = samples[samples["trial_id"] == samples["trial_id"].iloc[0]]
    fp_file = tmp_path / "samples.json"
    fp_file.write_text(rows.drop(columns=["trial_id", "study_id"]).to_json(orient="records"))
    code, stdout, stderr = run(["query", f"@{fp_file}", "--model", str(out), "--json"])
    assert code == 0, stderr
    r = json.loads(stdout)
    assert r["outlier"] is False and r["configuration"]["scan_size_mb"] == 1024
    assert list(r["workloads"])[0] == "hot-0"
    foreign = json.dumps({"hint_faults": 20.0, "fast_free": 1.0, "ipc": 9.0})
    code, stdout, stderr = run(["query", foreign, "--model", str(out), "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["outlier"] is True


def test_errors(run, db_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, stderr = run(["fit", "--backend", "tpp", "--db", db_url, "--output", str(tmp_path / "t.npz")])
    assert code == 1 and "ptmt: error: no studies of backend tpp" in stderr
    code, _, stderr = run(["show", "--model", str(tmp_path / "missing.npz")])
    assert code == 1 and "no model at" in stderr
    # the default path lives in the data directory
    code, _, stderr = run(["show", "--backend", "autonuma"], env={"XDG_DATA_HOME": str(tmp_path)})
    assert code == 1 and str(tmp_path / "ptmt" / "models" / "autonuma.npz") in stderr
