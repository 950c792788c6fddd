"""Sensitivity analysis on synthetic databases whose ground truth is known (ptmt.offline.synthetic):
scan_size_mb moves the objective most, the promotion rate limit less, scan_delay_ms not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ptmt.catalog import load_catalog
from ptmt.db import open_storage
from ptmt.offline import synthetic
from ptmt.offline.analyze import AnalysisError, analyze, load_trials, sensitivity
from ptmt.offline.model_cli import analyze as analyze_cmd

VARIED = ("scan_size_mb", "numa_balancing_promote_rate_limit_MBps", "scan_delay_ms")


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('analyze') / 'ptmt.db'}"
    with open_storage(url) as db:
        synthetic.fill(db, per_group=1, groups=("hot", "thrash"), n_configs=40, repetitions=2,
                       intervals=3, varied=VARIED)
    return url


def test_important_knob_first_irrelevant_last(db_url: str) -> None:
    with open_storage(db_url) as db:
        result = analyze(db, "autonuma", "hot-0", catalog=load_catalog("autonuma"))
    names = [k.knob for k in result.knobs]
    assert names == ["scan_size_mb", "numa_balancing_promote_rate_limit_MBps", "scan_delay_ms"]
    top, mid, irrelevant = result.knobs
    assert top.significant and top.direction == "higher is better" and top.best_value == 1024
    assert mid.significant and mid.best_value == 65536
    assert not irrelevant.significant and irrelevant.direction == "no clear effect"
    assert irrelevant.importance < 0.1 * top.importance
    assert top.effect > 0.3  # 0.8 .. 1.3 of the default: about 50 % of the mean
    assert top.default_value == 256
    assert result.noise_cv is not None and result.noise_cv < 0.1  # repetitions were measured
    assert result.surrogate_r2 > 0.8
    assert set(result.not_varied) >= {"hot_threshold_ms", "watermark_scale_factor"}


def test_opposite_tastes_pooled_and_per_workload(db_url: str) -> None:
    with open_storage(db_url) as db:
        thrash = analyze(db, "autonuma", "thrash-0", catalog=load_catalog("autonuma"))
        pooled = analyze(db, "autonuma", catalog=load_catalog("autonuma"))
    assert thrash.knobs[0].knob == "scan_size_mb"
    assert thrash.knobs[0].direction == "lower is better" and thrash.knobs[0].best_value == 64
    assert pooled.workloads == ["hot-0", "thrash-0"]
    assert pooled.knobs[0].knob == "scan_size_mb" and pooled.knobs[-1].knob == "scan_delay_ms"


def test_minimised_objective_is_inverted(tmp_path: Path) -> None:
    """A study whose objective is a runtime (direction min): best value flips accordingly."""
    with open_storage(f"sqlite:///{tmp_path / 'rt.db'}") as db:
        synthetic.fill(db, per_group=1, groups=("hot",), n_configs=30, intervals=2, varied=VARIED)
        trials = load_trials(db, "autonuma")
    runtime = trials.assign(objective=1000.0 / trials["objective"], direction="min")
    runtime["perf"] = 1.0 / runtime["objective"]
    result = sensitivity(runtime, "autonuma")
    assert result.knobs[0].knob == "scan_size_mb" and result.knobs[0].best_value == 1024


def test_too_little_data(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path / 'small.db'}") as db:
        synthetic.fill(db, per_group=1, groups=("hot",), n_configs=3, intervals=1, varied=VARIED)
        with pytest.raises(AnalysisError, match="too little data"):
            analyze(db, "autonuma")
        with pytest.raises(AnalysisError, match="no studies of backend tpp"):
            analyze(db, "tpp")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("analyze")(analyze_cmd)
    app.command("noop")(lambda: None)  # keep "analyze" a subcommand
    return app


def test_cli_table_and_json(db_url: str) -> None:
    runner = CliRunner()
    res = runner.invoke(_app(), ["analyze", "--backend", "autonuma", "--workload", "hot-0",
                                 "--db", db_url, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["knobs"][0]["knob"] == "scan_size_mb" and doc["knobs"][-1]["knob"] == "scan_delay_ms"
    assert "permutation importance" in doc["method"]
    res = runner.invoke(_app(), ["analyze", "--backend", "autonuma", "--db", db_url],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    first = next(line for line in res.stdout.splitlines() if "scan_size_mb" in line)
    assert first.split()[1] == "1"  # ranked first
    res = runner.invoke(_app(), ["analyze", "--backend", "autonuma", "--workload", "nope",
                                 "--db", db_url])
    assert res.exit_code == 1
    assert "no studies of backend autonuma, workload nope" in res.stderr
