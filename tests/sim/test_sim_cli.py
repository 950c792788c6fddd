"""``ptmt sim run`` end to end (through typer's runner)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ptmt.sim.cli import sim_app

ARGS = ["--fast-gb", "1", "--slow-gb", "2", "--footprint-gb", "2", "--duration", "20", "--interval", "10"]


def test_run_json():
    r = CliRunner().invoke(sim_app, ["run", "--backend", "tpp", "--workload", "btree", "--set",
                                     "demote_scale_factor=400", "--json", *ARGS])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["throughput_ops_s"] > 0
    assert 0 <= data["fast_tier_access_ratio"] <= 1
    assert data["config"]["demote_scale_factor"] == "400"
    assert data["config"]["numa_balancing"] == "2"
    assert "pgpromote_success" in data["counters"]


def test_run_table_and_errors():
    r = CliRunner().invoke(sim_app, ["run", "-b", "autonuma", "-w", "gups", *ARGS])
    assert r.exit_code == 0, r.output
    assert "throughput" in r.output and "pgpromote_success=" in r.output
    bad = CliRunner().invoke(sim_app, ["run", "-b", "autonuma", "-w", "gups", "--set", "scan_size_mb=0", *ARGS])
    assert bad.exit_code == 1
    missing = CliRunner().invoke(sim_app, ["run", "-b", "autonuma", "-w", "nope", *ARGS])
    assert missing.exit_code == 1 and "unknown workload" in missing.output
