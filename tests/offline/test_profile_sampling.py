"""Samplers: counts, determinism, bounds, catalog rules, the default-first plan."""

from __future__ import annotations

import pytest

from ptmt.catalog import load_catalog
from ptmt.errors import PtmtError
from ptmt.offline.sampling import STRATEGIES, Sampler, knob_values, plan_configurations, tpe_start


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
        # a grid fits the budget; tpe plans its Sobol start (8), the rest round by round
        assert {"grid": 1 < len(plan) <= 10, "tpe": len(plan) == 8}.get(strategy, len(plan) == 10)
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
    with pytest.raises(PtmtError, match="--strategy must be one of grid, random, sobol, lhs, oat, tpe"):
        Sampler(tpp).sample("halton", 4)
    with pytest.raises(PtmtError, match="--budget must be at least 1"):
        Sampler(tpp).sample("sobol", 0)
    with pytest.raises(PtmtError, match="no tunable knob"):
        Sampler(tpp, knobs=[])


def _peaked(config):
    """A synthetic objective with one good region (tpp's gups-like corner): every rung away costs."""
    target = {"numa_balancing_promote_rate_limit_MBps": 256, "scan_size_mb": 1024, "demote_scale_factor": 50,
              "watermark_scale_factor": 10}
    cost = 0.0
    for name, want in target.items():
        values = sorted(load_catalog("tpp").knobs[name].candidates)
        cost += abs(values.index(config[name]) - values.index(want))
    return 100.0 * 0.9 ** cost


def test_tpe_starts_with_sobol_then_gathers_where_the_objective_is_good(tpp):
    sampler = Sampler(tpp)
    start = plan_configurations(tpp, "tpe", 48, seed=2)
    assert len(start) == tpe_start(48) == 16 and tpe_start(12) == 8 and tpe_start(5) == 5
    assert start == plan_configurations(tpp, "sobol", 16, seed=2)  # the same start as a Sobol study
    history = [(c, _peaked(c)) for c in start]
    rounds = []
    for _ in range(8):
        new = sampler.suggest(history, 4, seed=2)
        assert len(new) == 4
        keys = {tuple(sorted(c.items())) for c, _ in history}
        assert not keys & {tuple(sorted(c.items())) for c in new}  # never a configuration already planned
        assert len({tuple(sorted(c.items())) for c in new}) == 4
        for c in new:
            assert all(c[k] in tpp.knobs[k].candidates for k in c) and sampler.valid(c)
        assert new == sampler.suggest(history, 4, seed=2)  # same history and seed, same round
        rounds.append(new)
        history += [(c, _peaked(c)) for c in new]
    late = [_peaked(c) for r in rounds[-4:] for c in r]
    sobol = [_peaked(c) for c in start[1:]]
    randoms = [_peaked(c) for c in sampler.sample("random", 16, seed=9)]
    assert sum(late) / len(late) > 1.3 * max(sum(sobol) / len(sobol), sum(randoms) / len(randoms))
    assert max(late) > max(sobol)
    # minimising the negated objective finds the same region
    low = [(c, -_peaked(c)) for c in start]
    for _ in range(6):
        low += [(c, -_peaked(c)) for c in sampler.suggest(low, 4, seed=2, direction="min")]
    assert sum(-v for _, v in low[-8:]) / 8 > 1.3 * sum(sobol) / len(sobol)


def test_tpe_takes_failed_trials_and_stops_when_the_space_is_spent(tpp):
    two = ["watermark_scale_factor", "demote_scale_factor"]
    sampler = Sampler(tpp, knobs=two)
    history = [(c, None) for c in plan_configurations(tpp, "tpe", sampler.size, knobs=two)]
    while True:
        new = sampler.suggest(history, 4, seed=0)
        if not new:
            break
        history += [(c, None) for c in new]
    assert len({tuple(sorted(c.items())) for c, _ in history}) == len(history) == sampler.size == 6 * 5
