"""The statistics: a real difference is found, a null one is not, the interval covers the truth."""

from __future__ import annotations

import numpy as np
import pytest

from ptmt.report.stats import (
    BETTER,
    NO_DIFFERENCE,
    NOT_ENOUGH,
    WORSE,
    compare,
    hedges_g,
    noise_floor,
    relative_improvements,
)


def _pairs(rng: np.random.Generator, n: int, gain: float, drift: float = 0.05, noise: float = 0.01):
    """Pairs whose level drifts from pair to pair (shared within a pair) and whose tuned run is
    *gain* better, with independent measurement noise on every run."""
    level = 100.0 * (1 + drift * rng.standard_normal(n))
    default = level * (1 + noise * rng.standard_normal(n))
    tuned = level * (1 + gain) * (1 + noise * rng.standard_normal(n))
    return default, tuned


def test_a_known_difference_is_detected() -> None:
    d, t = _pairs(np.random.default_rng(1), 10, gain=0.05)
    c = compare(d, t)
    assert c.verdict == BETTER
    assert c.ci_low > 0 and c.ci_low < 0.05 < c.ci_high
    assert c.effect_size is not None and c.effect_size > 0
    worse = compare(t, d)
    assert worse.verdict == WORSE and worse.ci_high < 0


def test_a_null_difference_is_no_significant_difference() -> None:
    d, t = _pairs(np.random.default_rng(2), 10, gain=0.0)
    c = compare(d, t)
    assert c.verdict == NO_DIFFERENCE
    assert c.ci_low < 0 < c.ci_high


def test_pairing_cancels_drift_between_pairs() -> None:
    """The level drifts by 5% between pairs, far more than the 2% gain: the paired ratio still sees
    the gain, while the defaults' noise floor reports the drift."""
    d, t = _pairs(np.random.default_rng(3), 8, gain=0.02, drift=0.05, noise=0.002)
    c = compare(d, t)
    assert c.verdict == BETTER
    assert c.noise_floor is not None and c.noise_floor > 0.02
    assert "within the defaults' run-to-run noise" in c.note


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(4)
    gain, trials, hits = 0.03, 200, 0
    for _ in range(trials):
        d, t = _pairs(rng, 12, gain=gain, noise=0.02)
        c = compare(d, t, n_resamples=999, seed=int(rng.integers(1 << 30)))
        hits += c.ci_low <= gain <= c.ci_high  # E[tuned/default] - 1 is the gain (up to noise², 4e-4)
    coverage = hits / trials
    assert 0.85 <= coverage <= 0.995, coverage


def test_one_pair_gives_no_interval() -> None:
    c = compare([100.0], [110.0])
    assert c.n == 1 and not c.has_ci and c.ci_low is None
    assert c.verdict == NOT_ENOUGH and "n=1" in c.note
    assert c.improvement == pytest.approx(0.10)
    assert c.effect_size is None and c.noise_floor is None
    d = c.as_dict()
    assert d["ci_low"] is None and d["verdict"] == NOT_ENOUGH


def test_few_pairs_are_flagged_and_identical_pairs_do_not_crash() -> None:
    c = compare([100.0, 101.0, 99.0], [105.0, 106.5, 103.0])
    assert c.has_ci and "only 3 pairs" in c.note
    same = compare([100.0, 100.0], [110.0, 110.0])
    assert same.ci_low == pytest.approx(0.10) == same.ci_high


def test_direction_min_counts_a_lower_objective_as_better() -> None:
    lat_default = np.array([10.0, 10.2, 9.9, 10.1, 10.0])
    lat_tuned = lat_default * 0.8
    c = compare(lat_default, lat_tuned, direction="min")
    assert c.verdict == BETTER and c.improvement == pytest.approx(0.25)
    assert hedges_g(lat_default, lat_tuned, "min") > 0
    assert relative_improvements([10.0], [8.0], "max")[0] == pytest.approx(-0.2)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per pair"):
        compare([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        compare([0.0], [1.0])
    with pytest.raises(ValueError, match="direction"):
        compare([1.0], [1.0], direction="up")
    assert noise_floor([5.0]) is None
    assert noise_floor([9.0, 11.0]) == pytest.approx(np.std([9.0, 11.0], ddof=1) / 10.0)
