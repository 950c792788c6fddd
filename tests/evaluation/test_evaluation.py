"""The evaluation suite's oracle, metrics and online baselines, with tiny settings."""

from __future__ import annotations

import numpy as np
import pytest

from ptmt.catalog import load_catalog
from ptmt.evaluation import suite as ev
from ptmt.evaluation.search import TPEProposer, random_proposer, run_search
from ptmt.offline.suite_db import build_suite_database, leave_one_out, suite_table
from ptmt.online.knobspace import KnobSpace
from ptmt.online.simrun import SimSetup, run_static

BACKEND = "upm"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('suite') / 'upm.db'}"
    build_suite_database(BACKEND, url, ["gups", "btree", "stream"], budget=4, duration=60, workers=1)
    return suite_table(url, BACKEND)


def test_oracle_at_least_every_static_config_it_swept(tmp_path):
    space = KnobSpace(load_catalog(BACKEND))
    grid = ev.oracle_grid(BACKEND, space.names, 1)
    assert len(grid) == len(space.ladders[0].values)
    setup = SimSetup(workload="gups")
    runs = ev.sweep_oracle(BACKEND, setup, grid, duration=300, interval=10, cache=tmp_path)
    best = ev.best_static(runs)
    assert all(np.mean(best["series"]) >= np.mean(r["series"]) for r in runs)
    default = run_static(BACKEND, setup, 300, 10)
    assert ev.improvement(best["series"], default) >= ev.improvement(runs[0]["series"], default) - 1e-12
    # cached: a second sweep reads the same numbers back
    again = ev.sweep_oracle(BACKEND, setup, grid, duration=300, interval=10, cache=tmp_path)
    assert [r["series"] for r in again] == [r["series"] for r in runs]
    assert len(list(tmp_path.glob("oracle-*.json"))) == 1


def test_late_oracle_runs_the_defaults_until_the_warm_up_ends(tmp_path):
    """The late oracle re-runs the sweep's best configurations, each applied only after the warm-up:
    until then its readings are the defaults' own, after it they follow the configuration."""
    space = KnobSpace(load_catalog(BACKEND))
    grid = ev.oracle_grid(BACKEND, space.names, 1)
    setup = SimSetup(workload="gups")
    runs = ev.sweep_oracle(BACKEND, setup, grid, duration=300, interval=10, cache=tmp_path)
    late = ev.late_oracle(BACKEND, setup, runs, start_interval=6, duration=300, interval=10, top=2, cache=tmp_path)
    ranked = sorted(runs, key=lambda r: -np.mean(r["series"]))
    assert [r["config"] for r in late] == [r["config"] for r in ranked[:2]]
    default = run_static(BACKEND, setup, 300, 10)
    for r in late:
        assert len(r["series"]) == len(default)
        assert r["series"][:6] == default[:6]
    best_from_start = ranked[0]
    assert best_from_start["config"] != space.defaults()  # gups has headroom on upm: the check below means something
    assert late[0]["series"][6:] != default[6:]
    assert late[0]["series"] != best_from_start["series"]
    again = ev.late_oracle(BACKEND, setup, runs, start_interval=6, duration=300, interval=10, top=2, cache=tmp_path)
    assert [r["series"] for r in again] == [r["series"] for r in late]
    assert len(list(tmp_path.glob("late-oracle-*.json"))) == 1


def test_grid_is_legal_and_on_ladders():
    for backend in ("autonuma", "tpp"):
        space = KnobSpace(load_catalog(backend))
        grid = ev.oracle_grid(backend, space.names, 2)
        assert grid and all(space.legal(c) for c in grid)
        varied = {n for c in grid for n, v in c.items() if v != space.defaults()[n]}
        assert varied <= set(space.names[:2])


def test_headroom_fraction_and_t90():
    assert ev.headroom_fraction(0.05, 0.10, 0.01) == pytest.approx(0.5)
    assert ev.headroom_fraction(0.05, 0.005, 0.01) is None
    assert ev.headroom_fraction(-0.02, 0.2, 0.01) == pytest.approx(-0.1)
    default = [100.0] * 40
    ramp = [100.0] * 10 + [110.0] * 30
    assert ev.intervals_to_90(ramp, default) == 15  # first full 5-interval window at +10%
    assert ev.intervals_to_90(default, default) is None
    thr = ev.noise_threshold(default, [100.0 + (i % 2) * 20 for i in range(40)])
    assert thr > ev.MIN_HEADROOM


def test_phase_segments_and_per_phase_oracle():
    segs = ev.phase_segments("ycsb-shift", 30, 10)
    assert segs[0] == (0, 12) and segs[-1][1] == 30 and len(segs) == 3
    assert ev.phase_segments("gups-growth", 180, 10) == [(0, 12), (12, 36), (36, 180)]
    assert ev.phase_segments("gups", 30, 10) == [(0, 30)]
    runs = [{"config": {"a": 1}, "series": [1.0, 1.0, 3.0, 3.0]},
            {"config": {"a": 2}, "series": [2.0, 2.0, 1.0, 1.0]}]
    per = ev.per_phase_oracle(runs, [(0, 2), (2, 4)])
    assert per == [2.0, 2.0, 3.0, 3.0]
    assert np.mean(per) >= max(np.mean(r["series"]) for r in runs)


@pytest.mark.parametrize("backend", ["autonuma", "tpp"])
def test_random_and_tpe_stay_on_ladders_and_legal(backend):
    space = KnobSpace(load_catalog(backend))
    for propose in (random_proposer(space, 1), TPEProposer(space, 1)):
        for _ in range(25):
            cfg = propose([])
            assert space.legal(cfg)
            assert all(cfg[lad.name] in lad.values for lad in space.ladders)
            if isinstance(propose, TPEProposer):
                propose.tell(1.0)


def test_search_run_keeps_best_measured_block():
    run = run_search(BACKEND, SimSetup(workload="gups"), "random", duration=300, interval=10, block=5)
    assert len(run.series) == 30 and len(run.configs) == 30
    best_score = max(s for _, s in run.tried)
    assert dict(run.best) == next(c for c, s in run.tried if s == best_score)
    assert run.configs[-1] == run.best  # exploit the best from the end of exploration on


def test_leave_one_out_excludes_evaluated_workload(table):
    model = leave_one_out(table, BACKEND, "gups")
    assert "gups" not in model.workload_names
    assert set(model.workload_names) == set(table["workload"]) - {"gups"}
    assert model.meta["left_out"] == "gups"

def test_suite_method_runs_and_ranks_knobs(table):
    ranked = ev.ranked_knobs(table, BACKEND)
    assert set(ranked) == set(KnobSpace(load_catalog(BACKEND)).names)
    best = ev.sweep_best_configs(table)
    assert len(best) == table["workload"].nunique()
    run = ev.run_method("db_only", BACKEND, SimSetup(workload="gups"), duration=300, interval=10,
                        query_model=leave_one_out(table, BACKEND, "gups"))
    assert len(run.series) == 30 and all(v > 0 for v in run.series)
    assert set(run.final_config) == set(KnobSpace(load_catalog(BACKEND)).names)


def test_the_oracle_adds_the_configurations_the_methods_ended_with() -> None:
    """A method that ends outside the grid has its final configuration run by the oracle as well,
    once, under the first method that ended there; one the grid holds adds nothing."""
    space = KnobSpace(load_catalog(BACKEND))
    grid = ev.oracle_grid(BACKEND, space.names, 1)
    inside = dict(grid[-1])
    second = space.names[1]  # the grid varies the first knob only
    other = next(v for v in space.ladder(second).values if v != space.defaults()[second])
    outside = {**space.defaults(), second: other}
    assert outside not in grid
    beyond = ev.finals_beyond(grid, {"hybrid": outside, "rl_only": inside, "tpe": dict(outside)})
    assert beyond == {"hybrid": outside}
    assert ev.finals_beyond(grid, {"db_only": inside}) == {}


def test_an_earlier_evaluation_gives_each_run_its_best_configurations_once() -> None:
    """--oracle-from: per (backend, workload, seed), the earlier oracle's, late oracle's and every
    method's ending, each configuration once and in that order, over every file given; a run with
    none of them is absent."""
    space = KnobSpace(load_catalog(BACKEND))
    d = space.defaults()
    a, b = ({**d, name: next(v for v in space.ladder(name).values if v != d[name])} for name in space.names[:2])
    runs = [{"backend": BACKEND, "workload": "gups", "seed": 1, "oracle_config": a, "late_oracle_config": dict(a),
             "final_configs": {"hybrid": b, "db_only": d, "rl_only": dict(b)}},
            {"backend": BACKEND, "workload": "stream", "seed": 0, "final_configs": {}}]
    found = ev.prior_candidates(runs)
    assert list(found) == [(BACKEND, "gups", 1)]
    assert found[(BACKEND, "gups", 1)] == [a, b, d]
    c = {**d, space.names[2]: next(v for v in space.ladder(space.names[2]).values if v != d[space.names[2]])}
    later = {"backend": BACKEND, "workload": "gups", "seed": 1, "oracle_config": b, "final_configs": {"hybrid": c}}
    assert ev.prior_candidates([*runs, later])[(BACKEND, "gups", 1)] == [a, b, d, c]  # a second file adds
