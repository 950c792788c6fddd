"""Reading runs back: recorded through the real recorder, paired, grouped, with provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptmt.catalog import load_catalog
from ptmt.db import open_storage
from ptmt.online.recording import open_recorder, record_static_run
from ptmt.online.simrun import SimSetup
from ptmt.report.data import ReportError, load_runs, pair_runs
from ptmt.report.report import build_report

from .conftest import DURATION, REPEAT


def test_interleaved_pairs_are_read_back_in_order(ab_db: str) -> None:
    with open_storage(ab_db, create=False) as s:
        rs = load_runs(s)
        runs = s.tuning_runs_frame()
    assert len(runs) == 2 * REPEAT
    # recorded default, tuned, default, tuned, ...
    assert runs.sort_values("started_at")["mode"].tolist() == ["default", "tune"] * REPEAT
    [g] = rs.groups
    assert (g.backend, g.workload, g.platform, g.duration) == ("autonuma", "gups", "sim", DURATION)
    assert len(g.pairs) == REPEAT and rs.unpaired == []
    by_id = runs.set_index("run_id")
    seeds = []
    for d, t in g.pairs:
        assert by_id.loc[d, "mode"] == "default" and by_id.loc[t, "mode"] == "tune"
        assert by_id.loc[d, "seed"] == by_id.loc[t, "seed"]  # one seed within a pair
        assert by_id.loc[d, "started_at"] < by_id.loc[t, "started_at"]
        seeds.append(int(by_id.loc[t, "seed"]))
    assert len(set(seeds)) == REPEAT  # a different seed per pair
    default, tuned = rs.means(g)
    assert default == [by_id.loc[d, "mean_objective"] for d, _ in g.pairs]


def test_report_has_comparison_history_and_provenance(ab_db: str) -> None:
    with open_storage(ab_db, create=False) as s:
        rep = build_report(s, "autonuma", "gups", sensitivity=False)
    [gr] = rep.groups
    assert gr.comparison.n == REPEAT and gr.comparison.has_ci
    assert set(gr.events) == {t for _, t in gr.group.pairs}
    assert any(e["kind"] in ("explore", "model") and e["knob"] for evs in gr.events.values() for e in evs)
    assert all(e["reason"] for evs in gr.events.values() for e in evs)
    prov = rep.provenance()
    assert len(prov) == 2 * REPEAT
    catalog = load_catalog("autonuma")
    for r in prov:
        assert r["catalog_hash"] == catalog.hash
        assert r["host"].startswith("sim:") and r["kernel"].startswith("sim-")
        assert "GiB" in r["topology"] and r["ptmt_version"]
    # the knob columns of the history come from the stored configurations
    assert any(c.startswith("knob.") for c in rep.intervals.columns)


def test_filters_name_what_the_database_holds(ab_db: str) -> None:
    with open_storage(ab_db, create=False) as s:
        with pytest.raises(ReportError, match=r"backend 'tpp'.*it holds runs of: autonuma"):
            load_runs(s, "tpp")
        with pytest.raises(ReportError, match=r"workload 'btree'.*workloads: gups"):
            load_runs(s, "autonuma", "btree")


def test_runs_without_pair_id_pair_by_conditions_and_time(tmp_path: Path) -> None:
    """What `ptmt tune --db` records (no pair id): each tuned run takes the nearest default run of
    the same conditions; a run of other conditions stays unpaired."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    cat = load_catalog("autonuma")
    setup = SimSetup(workload="gups", seed=7)
    probe = setup.host(tmp_path / "m", "autonuma")
    settings = {"interval": 10.0, "duration": 30.0}

    def run(mode: str, value: float, seed: int = 7, duration: float = 30.0) -> None:
        rec = open_recorder(url, cat, probe, platform="sim", mode=mode, workload="gups",
                            settings={**settings, "duration": duration}, seed=seed)
        record_static_run(rec, [value] * 3, 10.0, cat.defaults())

    run("tune", 110.0)
    run("default", 100.0)
    run("tune", 121.0)
    run("default", 110.0)
    run("default", 50.0, duration=60.0)  # other conditions: no partner
    with open_storage(url, create=False) as s:
        frame = s.tuning_runs_frame()
        pairs, unpaired = pair_runs(frame)
        rep = build_report(s, sensitivity=False)
    assert pairs == [(2, 1), (4, 3)]
    assert unpaired == [5]
    [gr] = rep.groups
    assert gr.comparison.improvement == pytest.approx(0.10)
    assert rep.unpaired == [5]


def test_hosts_frame_gives_each_runs_host(ab_db: str) -> None:
    with open_storage(ab_db, create=False) as s:
        hosts = s.hosts_frame()
        runs = s.tuning_runs_frame()
    assert set(runs["host_id"]) <= set(hosts["host_id"])
    h = hosts.set_index("host_id").loc[int(runs["host_id"].iloc[0])]
    assert h["platform"] == "sim" and isinstance(h["topology"], dict) and h["topology"]["fast"]["capacity_gb"] > 0
    assert runs["kernel"].iloc[0] == h["kernel"]


def test_same_seed_sim_pairs_count_once(tmp_path: Path) -> None:
    """Rerunning `ptmt tune --db` with the same seed repeats the same simulation: not a new sample."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    cat = load_catalog("autonuma")
    probe = SimSetup(workload="gups").host(tmp_path / "m", "autonuma")
    for seed, (d, t) in ((0, (100.0, 150.0)), (1, (100.0, 104.0)), (0, (100.0, 105.0))):
        for mode, value in (("tune", t), ("default", d)):
            rec = open_recorder(url, cat, probe, platform="sim", mode=mode, workload="gups",
                                settings={"interval": 10.0, "duration": 30.0}, seed=seed)
            record_static_run(rec, [value] * 3, 10.0, cat.defaults())
    with open_storage(url, create=False) as s:
        rep = build_report(s, sensitivity=False)
    [gr] = rep.groups
    assert gr.group.pairs == [(4, 3), (6, 5)] and gr.group.replicates == [(2, 1)]
    assert gr.comparison.n == 2 and gr.comparison.improvement == pytest.approx(0.045)
    assert rep.as_dict()["groups"][0]["replicates_left_out"] == [{"default_run": 2, "tuned_run": 1}]


def test_sensitivity_comes_from_the_profiling_trials(ab_db: str, tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from ptmt.cli import app

    copy = tmp_path / "with-trials.db"
    shutil.copy(ab_db.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    res = CliRunner().invoke(app, ["profile", "--platform", "sim", "--backend", "autonuma", "--workload", "gups",
                                   "--budget", "10", "--workers", "1", "--duration", "60", "--interval", "10",
                                   "--db", url, "--no-progress"], env={"PTMT_STATE_DIR": str(tmp_path / "st")})
    assert res.exit_code == 0, res.output
    with open_storage(url, create=False) as s:
        rep = build_report(s)
    sens = rep.sensitivity["autonuma/gups"]
    assert "error" not in sens, sens
    assert sens["scope"] == "gups" and sens["n_trials"] == 10
    assert {k["knob"] for k in sens["knobs"]} <= set(load_catalog("autonuma").knobs)
    with open_storage(ab_db, create=False) as s:  # without trials: says why
        assert "ptmt profile" in build_report(s).sensitivity["autonuma/gups"]["error"]


def test_a_non_positive_objective_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'neg.db'}"
    cat = load_catalog("autonuma")
    probe = SimSetup(workload="gups").host(tmp_path / "m", "autonuma")
    for mode, value in (("tune", 5.0), ("default", -1.0)):
        rec = open_recorder(url, cat, probe, platform="sim", mode=mode, workload="gups",
                            settings={"interval": 10.0, "duration": 30.0}, seed=0)
        record_static_run(rec, [value] * 3, 10.0, cat.defaults())
    with open_storage(url, create=False) as s, pytest.raises(ReportError, match=r"autonuma/gups.*positive"):
        build_report(s, sensitivity=False)
