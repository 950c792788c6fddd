"""Tuned vs default: the improvement, its bootstrap confidence interval, effect size and noise floor.

Everything here works on plain numbers (one mean objective per run), not on the database, so the
evaluation suite can compare any two methods the same way ``ptmt report`` compares tuned runs with
default runs.

The measurements are *pairs*: the default run and the tuned run of pair *i* share a seed (on the
simulated machine) and were measured back to back, so whatever drifts between pairs (placement
randomness, a busy neighbour, thermal state) mostly cancels in the pair's ratio. The statistic is
the mean over pairs of ``tuned_i / default_i - 1`` (for an objective to minimise,
``default_i / tuned_i - 1``: positive is always better).

- Confidence interval: ``scipy.stats.bootstrap`` over the pairs (BCa; percentile when BCa cannot
  be computed), 95% by default. One pair gives no interval at all, rather than an invented one.
- Effect size: Hedges' g, the difference of the group means over their pooled standard deviation,
  with the small-sample correction ``1 - 3 / (4 (n_t + n_d) - 9)``.
- Noise floor: the coefficient of variation of the default runs (standard deviation / mean): how
  much the same configuration moves from run to run. A difference below it is within the noise
  even when the interval excludes zero.
- Verdict: ``better`` / ``worse`` when the whole interval is above / below zero, ``no significant
  difference`` when it contains zero, ``not enough runs`` with a single pair.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no significant difference"
NOT_ENOUGH = "not enough runs"

#: Below this many pairs the bootstrap interval tends to be too narrow; the result says so.
FEW_PAIRS = 5


@dataclass(frozen=True)
class Comparison:
    """Tuned vs default over *n* pairs of runs; ``improvement`` and the interval are fractions."""

    n: int
    direction: str
    default_mean: float
    tuned_mean: float
    improvement: float
    ci_low: float | None
    ci_high: float | None
    confidence: float
    ci_method: str | None
    effect_size: float | None  # Hedges' g; None with fewer than two runs per side
    noise_floor: float | None  # coefficient of variation of the default runs; None with one
    verdict: str
    note: str

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    @property
    def above_noise(self) -> bool | None:
        """Whether the improvement is larger than the run-to-run noise of the defaults."""
        if self.noise_floor is None:
            return None
        return abs(self.improvement) > self.noise_floor

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["above_noise"] = self.above_noise
        return {k: _plain(v) for k, v in d.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def relative_improvements(default: Sequence[float], tuned: Sequence[float],
                          direction: str = "max") -> np.ndarray:
    """Per-pair improvement of tuned over default (positive is better for either direction)."""
    d = np.asarray(default, dtype=float)
    t = np.asarray(tuned, dtype=float)
    if d.shape != t.shape or d.ndim != 1:
        raise ValueError(f"default and tuned need one value per pair each (got {d.shape} and {t.shape})")
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min' (got {direction!r})")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(t))):
        raise ValueError("every run needs a finite mean objective")
    if np.any(d <= 0) or np.any(t <= 0):
        raise ValueError("a relative improvement needs positive objectives")
    return t / d - 1.0 if direction == "max" else d / t - 1.0


def hedges_g(default: Sequence[float], tuned: Sequence[float], direction: str = "max") -> float | None:
    """Hedges' g of tuned vs default (positive: tuned better); None when it is undefined."""
    d = np.asarray(default, dtype=float)
    t = np.asarray(tuned, dtype=float)
    nd, nt = len(d), len(t)
    if nd < 2 or nt < 2:
        return None
    pooled = math.sqrt(((nd - 1) * d.var(ddof=1) + (nt - 1) * t.var(ddof=1)) / (nd + nt - 2))
    diff = (t.mean() - d.mean()) if direction == "max" else (d.mean() - t.mean())
    if pooled == 0:
        return None if diff == 0 else math.copysign(math.inf, diff)
    return float(diff / pooled * (1 - 3 / (4 * (nd + nt) - 9)))


def noise_floor(default: Sequence[float]) -> float | None:
    """Run-to-run coefficient of variation of the default runs; None with fewer than two."""
    d = np.asarray(default, dtype=float)
    if len(d) < 2 or d.mean() == 0:
        return None
    return float(d.std(ddof=1) / abs(d.mean()))


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int | None = 0) -> tuple[float, float, str] | None:
    """Bootstrap interval of the mean of *values*: ``(low, high, method)``, None for fewer than 2."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    if np.ptp(x) == 0:  # every resample has the same mean
        return float(x[0]), float(x[0]), "degenerate (all pairs equal)"
    import inspect

    # scipy 1.15 renamed random_state to rng
    key = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa on tiny samples warns; we fall back below
            res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                            method=method, **{key: np.random.default_rng(seed)})
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high, f"bootstrap {method}, {n_resamples} resamples"
    return None


def compare(default: Sequence[float], tuned: Sequence[float], *, direction: str = "max",
            confidence: float = 0.95, n_resamples: int = 9999, seed: int | None = 0) -> Comparison:
    """Compare paired runs: ``default[i]`` and ``tuned[i]`` are the mean objectives of pair *i*."""
    rel = relative_improvements(default, tuned, direction)
    n = len(rel)
    if n == 0:
        raise ValueError("no pairs to compare")
    d = np.asarray(default, dtype=float)
    t = np.asarray(tuned, dtype=float)
    improvement = float(rel.mean())
    ci = bootstrap_ci(rel, confidence=confidence, n_resamples=n_resamples, seed=seed)
    if ci is None:
        low = high = method = None
        verdict = NOT_ENOUGH
        note = (f"n={n}: one pair of runs gives no confidence interval; "
                "repeat the comparison (ptmt report --run-ab --repeat N) for one")
    else:
        low, high, method = ci
        if low > 0:
            verdict = BETTER
        elif high < 0:
            verdict = WORSE
        else:
            verdict = NO_DIFFERENCE
        note = ""
        if n < FEW_PAIRS:
            note = f"only {n} pairs: the bootstrap interval is likely too narrow; use {FEW_PAIRS} or more"
    floor = noise_floor(d)
    if verdict in (BETTER, WORSE) and floor is not None and abs(improvement) <= floor:
        note = "; ".join(filter(None, [note, "the difference is within the defaults' run-to-run noise"]))
    return Comparison(n=n, direction=direction, default_mean=float(d.mean()), tuned_mean=float(t.mean()),
                      improvement=improvement, ci_low=low, ci_high=high, confidence=confidence,
                      ci_method=method, effect_size=hedges_g(d, t, direction), noise_floor=floor,
                      verdict=verdict, note=note)
