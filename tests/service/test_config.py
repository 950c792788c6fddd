"""The service's configuration file: the shipped example loads, every error names the file and the key,
flags override the file, and nothing is written when it does not validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ptmt.catalog import load_catalog
from ptmt.errors import ConfigError
from ptmt.service.config import ServiceConfig, check_against_catalog, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "ptmt.yaml"


def test_the_documented_example_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert (cfg.backend, cfg.platform, cfg.interval, cfg.dry_run) == ("autonuma", "linux", 10.0, False)
    assert cfg.objective == {"source": "proxy"}
    assert cfg.guard.revert_after == 2 and cfg.state_dir == Path("/var/lib/ptmt")
    assert (cfg.phase.objective_shift, cfg.phase.confirm) == (0.12, 2)
    check_against_catalog(cfg, load_catalog(cfg.backend))
    from ptmt.online.objective import objective_from_mapping

    assert objective_from_mapping(cfg.objective).describe()


def test_every_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "ptmt.yaml"
    bad.write_text("guard: {revert_after: 0, accept_margin: 3}\ninterval: -1\nmetrics_port: 70000\n"
                   "dry_run: maybe\ncolour: blue\nobjective: {source: 'cmd:', rate: 1}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    lines = str(exc.value).splitlines()
    assert f"{bad}: At 'guard.revert_after': must be a positive integer (got 0)" in lines
    assert f"{bad}: At 'guard.accept_margin': must be a number between 0 and 1 (got 3)" in lines
    assert f"{bad}: At 'interval': must be a positive number of seconds up to 86400 (got -1)" in lines
    assert f"{bad}: At 'metrics_port': must be a TCP port between 1 and 65535 (got 70000)" in lines
    assert f"{bad}: At 'dry_run': must be of type boolean (got 'maybe')" in lines
    assert any(line.startswith(f"{bad}: unknown key 'colour' (allowed: backend, ") for line in lines)
    assert f"{bad}: At 'objective.rate': must be true or false (got 1)" in lines
    assert len(lines) == 8


def test_phase_settings_are_read_and_every_error_names_its_key(tmp_path: Path) -> None:
    cfg = parse_config({"phase": {"objective_shift": 0.2, "ignore_features": ["promote"]}}, tmp_path / "p.yaml")
    assert cfg.phase.objective_shift == 0.2 and cfg.phase.ignore_features == ("promote",)
    assert cfg.phase.confirm == 2  # not given: the default
    bad = {"phase": {"confirm": 0, "settle": -1, "distance": "far", "ignore_features": ["promote", "promotions"],
                     "window": 3}}
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, "p.yaml")
    assert str(exc.value).splitlines() == [
        "p.yaml: At 'phase.confirm': must be a positive integer (got 0)",
        "p.yaml: At 'phase.settle': must be a non-negative integer (got -1)",
        "p.yaml: At 'phase.distance': must be a positive number (got 'far')",
        "p.yaml: At 'phase.ignore_features': unknown feature(s) promotions (allowed: hint_faults, "
        "hint_local_share, pte_updates, promote, promote_candidates, demote, demote_direct_share, migrate, "
        "migrate_fail, fast_free, fast_access_share, ipc)",
        "p.yaml: At 'phase.window': unknown setting (allowed: distance, objective_shift, confirm, settle, "
        "ignore_features)",
    ]


def test_unknown_knob_to_leave_alone_and_missing_file(tmp_path: Path) -> None:
    cfg = parse_config({"leave_alone": ["scan_size_mb", "no_such_knob"]}, tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match=r"p\.yaml: At 'leave_alone\[1\]': backend autonuma has no tunable knob "
                                          r"'no_such_knob' \(tunables: numa_balancing_promote_rate_limit_MBps, "):
        check_against_catalog(cfg, load_catalog("autonuma"))
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.yaml")


def test_flags_override_the_file(tmp_path: Path) -> None:
    f = tmp_path / "ptmt.yaml"
    f.write_text("backend: tpp\ninterval: 30\nmodel: agents/a.ptmt-agent\ndry_run: true\n")
    cfg = load_config(f)
    assert cfg.model == tmp_path / "agents/a.ptmt-agent"  # relative to the file
    merged = cfg.overlay(backend="autonuma", interval=None, dry_run=False, metrics_port=9109)
    assert (merged.backend, merged.interval, merged.dry_run, merged.metrics_port) == ("autonuma", 30.0, True, 9109)
    assert cfg.differences(merged) == ["backend", "metrics_port"]
    assert ServiceConfig(database="postgresql://ptmt:secret@db/ptmt").as_dict()["database"] == \
        "postgresql://ptmt:***@db/ptmt"


def test_an_invalid_file_stops_tune_before_any_write(host_tree, helpers, tmp_path: Path) -> None:
    f = tmp_path / "ptmt.yaml"
    f.write_text("guard:\n  revert_after: 0\n")
    before = helpers.knob_bytes(host_tree["root"])
    done = subprocess.run([sys.executable, "-m", "ptmt", "tune", "--config", str(f), "--backend", "autonuma",
                           "--platform", "linux", "--root", str(host_tree["root"]), "--state-dir",
                           str(host_tree["state"]), "--duration", "1", "--interval", "0.05"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"ptmt: error: {f}: At 'guard.revert_after': must be a positive integer (got 0)"
    assert helpers.knob_bytes(host_tree["root"]) == before
    assert not (host_tree["state"] / "journal.json").exists()
