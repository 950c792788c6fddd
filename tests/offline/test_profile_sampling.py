"""Samplers: counts, determinism, bounds, catalog rules, the default-first plan."""

from __future__ import annotations

import pytest

from ptmt.catalog import load_catalog
from ptmt.errors import PtmtError
from ptmt.offline.sampling import STRATEGIES, Sampler, knob_values, plan_configurations


@pytest.fixture(scope="module")
def tpp():
    return load_catalog("tpp")


@pytest.mark.parametrize("strategy", ["random", "sobol", "lhs"])
def test_counts_seeds_and_bounds(tpp, strategy):
    sampler = Sampler(tpp)
    a = sampler.sample(strategy, 40, seed=3)
    assert len(a) == 40
    assert a == sampler.sample(strategy, 40, seed=3)  # same seed, same list, same order
    assert a != sampler.sample(strategy, 40, seed=4)
    assert len({tuple(sorted(c.items())) for c in a}) == 40  # distinct
    for config in a:
        assert set(config) == set(tpp.knobs)
        for name, value in config.items():
            assert value in tpp.knobs[name].candidates
            assert tpp.knobs[name].check(value) is None
        assert config["scan_period_min_ms"] <= config["scan_period_max_ms"]


def test_rules_are_repaired_not_just_filtered(tpp):
    # min candidates reach 2000 ms, max candidates start at 1000 ms: unrepaired draws would break the rule
    configs = Sampler(tpp).sample("random", 300, seed=0)
    assert all(c["scan_period_min_ms"] <= c["scan_period_max_ms"] for c in configs)
    assert any(c["scan_period_min_ms"] == 2000 for c in configs)


def test_grid_full_and_within_budget(tpp):
    sampler = Sampler(tpp, knobs=["scan_size_mb", "hot_threshold_ms"])
    full = sampler.grid()
    assert len(full) == 5 * 6
    coarse = sampler.sample("grid", 12, seed=0)
    assert 1 < len(coarse) <= 12
    sizes = {c["scan_size_mb"] for c in coarse}
    assert {64, 1024} <= sizes  # a coarser grid keeps each knob's extremes
    # a knob reduced to one level stays at its default
    single = Sampler(tpp).grid(budget=2)
    assert all(c["demote_scale_factor"] in (200, 50, 800) for c in single)


def test_grid_respects_rules(tpp):
    configs = Sampler(tpp, knobs=["scan_period_min_ms", "scan_period_max_ms"]).grid()
    assert len(configs) == sum(1 for lo in (100, 250, 500, 1000, 2000)
                               for hi in (1000, 5000, 15000, 30000, 60000) if lo <= hi)


def test_small_space_gives_what_exists(tpp):
    configs = Sampler(tpp, knobs=["scan_size_mb"]).sample("sobol", 50, seed=1)
    assert sorted(c["scan_size_mb"] for c in configs) == [64, 128, 256, 512, 1024]


def test_plan_starts_with_defaults(tpp):
    for strategy in STRATEGIES:
        plan = plan_configurations(tpp, strategy, 10, seed=2)
        assert len(plan) == 10 if strategy != "grid" else 1 < len(plan) <= 10  # a grid fits the budget
        assert plan[0] == tpp.defaults()
        assert tpp.defaults() not in plan[1:]


def test_one_at_a_time_moves_one_knob_from_the_defaults_far_ends_first(tpp):
    sampler = Sampler(tpp)
    base = tpp.defaults()
    screen = sampler.sample("oat", None)
    # every other value of every knob exactly once, each with all the other knobs at their defaults
    expected = {(d.name, v) for d in sampler.dims for v in d.values if v != base[d.name]}
    moved = []
    for config in screen:
        diff = [k for k in config if config[k] != base[k]]
        assert len(diff) == 1, config
        moved.append((diff[0], config[diff[0]]))
    assert sorted(moved, key=str) == sorted(expected, key=str) and len(moved) == len(set(moved))
    ends = {(d.name, d.values[0]) for d in sampler.dims} | {(d.name, d.values[-1]) for d in sampler.dims}
    ends = {e for e in ends if e[1] != base[e[0]]}
    assert set(moved[:len(ends)]) == ends  # far ends first: a budget cuts the values nearest the default
    cut = sampler.sample("oat", 5)
    assert cut == screen[:5]
    assert plan_configurations(tpp, "oat", None)[0] == base  # a plan still measures the defaults first


def test_one_at_a_time_leaves_out_what_breaks_a_rule(tpp):
    sampler = Sampler(tpp, knobs=["scan_period_min_ms", "scan_period_max_ms"])
    assert len(sampler.sample("oat", None)) == 4 + 4  # with tpp's defaults (1000, 60000) all 8 hold
    # with the max at 1000, raising the min to 2000 alone breaks scan_period_min_ms <= scan_period_max_ms
    sampler._defaults = {**sampler._defaults, "scan_period_max_ms": 1000}
    screen = sampler.sample("oat", None)
    assert {"scan_period_min_ms": 2000, "scan_period_max_ms": 1000} not in screen
    assert len(screen) == 3 + 4
    assert all(c["scan_period_min_ms"] <= c["scan_period_max_ms"] for c in screen)


def test_ranges_without_candidates_are_log_spaced():
    from ptmt.catalog import Knob

    knob = Knob(name="x", type="int", default=10, description="", path="/proc/sys/vm/x", min=1, max=100000)
    values = knob_values(knob)
    assert values[0] == 1 and values[-1] == 100000 and len(values) == 8
    assert values[1] / values[0] == pytest.approx(values[-1] / values[-2], rel=0.2)
    assert knob_values(Knob(name="b", type="bool", default=False, description="", path="/proc/sys/vm/b")) == (False, True)


def test_bad_requests(tpp):
    with pytest.raises(PtmtError, match="--strategy must be one of grid, random, sobol, lhs, oat"):
        Sampler(tpp).sample("halton", 4)
    with pytest.raises(PtmtError, match="--budget must be at least 1"):
        Sampler(tpp).sample("sobol", 0)
    with pytest.raises(PtmtError, match="no tunable knob"):
        Sampler(tpp, knobs=[])
