"""Which configurations a study measures: grid, random, Sobol or Latin-hypercube points over a catalog,
or a one-knob-at-a-time screen.

Every strategy draws points in the unit cube (``scipy.stats.qmc`` for Sobol and LHS, numpy's seeded
generator for random) and maps each coordinate to one knob value: a knob's candidate list where the
catalog gives one (the values worth exploring), else its legal range (log-spaced when it spans more than
two decades). Points that break a catalog rule (``scan_period_min_ms <= scan_period_max_ms``) are
repaired by moving the rule's right-hand knob to the nearest value that satisfies it, or dropped when no
value does. Duplicates are dropped too and more points drawn, so a budget buys distinct configurations.
The same catalog, strategy, budget and seed always give the same list, in the same order: that is what
makes a study resumable.

``tpe`` is the adaptive one: a Sobol start (a third of the budget, at least 8 points with the
defaults), then rounds of ``TPE_ROUND`` points from Optuna's tree-structured Parzen estimator fitted
on what the study measured so far (:meth:`Sampler.suggest`). Random points on a kernel policy mostly
lose (every knob moves at once, and one bad value spoils the rest); a database of losers teaches the
query model nothing, while the adaptive points gather where this workload gains. Each round depends
only on the measured history and the seed, so rerunning the command resumes the same study.

``oat`` (one knob at a time) is the screening design: every other value of each knob with the
rest at their defaults, the far ends of every knob first. It measures each knob's own effect
(what a sysadmin asks first, and where a single knob moved away from its default often holds most
of the headroom) where random points, which move every knob at once, rarely land.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ptmt.catalog import Catalog, Knob, Rule, Value
from ptmt.errors import PtmtError

Strategy = Literal["grid", "random", "sobol", "lhs", "oat", "tpe"]
STRATEGIES: tuple[Strategy, ...] = ("grid", "random", "sobol", "lhs", "oat", "tpe")
#: Strategies whose later points depend on the measured earlier ones (planned in rounds).
ADAPTIVE: tuple[Strategy, ...] = ("tpe",)
#: Points a ``tpe`` study adds per round once every earlier trial has settled.
TPE_ROUND = 4
#: Values taken along a knob that has a range but no candidate list.
RANGE_LEVELS = 8


@dataclass(frozen=True)
class Dimension:
    """One knob and the ordered values a sampler may give it."""

    knob: Knob
    values: tuple[Value, ...]

    @property
    def name(self) -> str:
        return self.knob.name

    def at(self, u: float) -> Value:
        """The value for a unit-interval coordinate (equal-width bins over the value list)."""
        i = min(int(u * len(self.values)), len(self.values) - 1)
        return self.values[i]


def knob_values(knob: Knob, levels: int = RANGE_LEVELS) -> tuple[Value, ...]:
    """The values worth exploring for one knob, in increasing order."""
    if knob.candidates:
        vals = list(knob.candidates)
        return tuple(sorted(vals) if all(isinstance(v, int) for v in vals) else vals)
    if knob.type == "bool":
        return (False, True)
    if knob.type == "enum":
        return knob.values
    if knob.type == "bitmask":
        return tuple(sorted({sum(c) for r in range(len(knob.bits) + 1)
                             for c in itertools.combinations(knob.bits, r)}))
    lo = knob.min if knob.min is not None else 0
    hi = knob.max if knob.max is not None else max(lo, int(knob.default)) * 4 or 1  # type: ignore[arg-type]
    if lo > 0 and hi / lo > 100:
        grid = np.geomspace(lo, hi, levels)
    else:
        grid = np.linspace(lo, hi, levels)
    return tuple(sorted({int(round(v)) for v in grid}))


def dimensions(catalog: Catalog, knobs: Iterable[str] | None = None) -> list[Dimension]:
    """The search space: the catalog's tunables (or just *knobs*, e.g. those this kernel has)."""
    names = list(catalog.knobs) if knobs is None else [n for n in catalog.knobs if n in set(knobs)]
    if not names:
        raise PtmtError(f"backend {catalog.name}: no tunable knob to sample")
    return [Dimension(catalog.knobs[n], knob_values(catalog.knobs[n])) for n in names]


def _repair(config: dict[str, Value], rules: Sequence[Rule], dims: Mapping[str, Dimension],
            defaults: Mapping[str, Value]) -> dict[str, Value] | None:
    """Make *config* satisfy every rule (moving a rule's right-hand knob, then its left), or None."""
    for rule in rules:
        if rule.left not in config and rule.right not in config:
            continue
        values = {n: config.get(n, defaults[n]) for n in (rule.left, rule.right)}
        if rule.holds(values):
            continue
        for side in (rule.right, rule.left):
            if side not in config:
                continue
            current = config[side]
            legal = [v for v in dims[side].values if rule.holds({**values, side: v})]
            if legal:
                config[side] = min(legal, key=lambda v: abs(float(v) - float(current)))  # type: ignore[arg-type]
                break
        else:
            return None
    if all(rule.holds({n: config.get(n, defaults[n]) for n in (rule.left, rule.right)}) for rule in rules):
        return config
    return None


class Sampler:
    """Draws distinct, rule-respecting configurations of a catalog's knobs."""

    def __init__(self, catalog: Catalog, knobs: Iterable[str] | None = None) -> None:
        self.catalog = catalog
        self.dims = dimensions(catalog, knobs)
        self._by_name = {d.name: d for d in self.dims}
        self._rules = [r for r in catalog.rules if r.left in self._by_name or r.right in self._by_name]
        self._defaults = catalog.defaults()

    @property
    def size(self) -> int:
        """Number of points in the full grid of values."""
        return math.prod(len(d.values) for d in self.dims)

    def default(self) -> dict[str, Value]:
        """The catalog defaults of the sampled knobs (the baseline every study measures)."""
        return {d.name: self._defaults[d.name] for d in self.dims}

    def valid(self, config: Mapping[str, Value]) -> bool:
        return all(r.holds({n: config.get(n, self._defaults[n]) for n in (r.left, r.right)}) for r in self._rules)

    def sample(self, strategy: str, budget: int | None, seed: int = 0) -> list[dict[str, Value]]:
        """*budget* configurations (fewer when the space has fewer distinct valid points)."""
        if strategy not in STRATEGIES:
            raise PtmtError(f"--strategy must be one of {', '.join(STRATEGIES)} (got {strategy!r})")
        if budget is not None and budget < 1:
            raise PtmtError(f"--budget must be at least 1 (got {budget})")
        if strategy == "grid":
            return self.grid(budget)
        if strategy == "oat":
            return self.one_at_a_time(budget)
        if budget is None:
            raise PtmtError(f"--strategy {strategy} needs --budget N")
        if strategy == "tpe":  # the Sobol start; suggest() plans the rest from what it measures
            return self._draw("sobol", tpe_start(budget), seed)
        return self._draw(strategy, budget, seed)

    def suggest(self, history: Sequence[tuple[Mapping[str, Value], float | None]], n: int, seed: int,
                direction: str = "max") -> list[dict[str, Value]]:
        """*n* new configurations from Optuna's TPE fitted on *history* ((configuration, objective or
        None when the trial failed), in plan order): distinct from each other and from every
        configuration in the history, rule-respecting. Each knob is an ordered index into its values,
        so that TPE sees 256 < 1024 < 16384 rather than unrelated labels. Deterministic: the same
        history and seed give the same points. Fewer than *n* when the space runs out or TPE, asked
        50 times per point, keeps proposing measured ones: a small space it has mapped (upm's 120
        points) ends its study there rather than on random leftovers."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = {d.name: optuna.distributions.IntDistribution(0, len(d.values) - 1) for d in self.dims}
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=seed * 1_000_003 + len(history), n_startup_trials=0, multivariate=True))
        sign = 1.0 if direction == "max" else -1.0
        seen: set[tuple[Value, ...]] = set()
        by_config: dict[tuple[Value, ...], list[float]] = {}
        for config, objective in history:
            key = tuple(config.get(d.name) for d in self.dims)
            seen.add(key)
            if objective is not None and math.isfinite(objective):
                by_config.setdefault(key, []).append(objective)
        for key, values in by_config.items():
            if any(v not in d.values for v, d in zip(key, self.dims, strict=True)):
                continue  # a value outside the ladders (another strategy's range point)
            mean = float(np.mean(values))
            score = sign * (math.log(mean) if mean > 0 else mean)
            params = {d.name: d.values.index(v) for v, d in zip(key, self.dims, strict=True)}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=score))
        out: list[dict[str, Value]] = []
        for _ in range(50 * n):
            if len(out) == n or len(seen) >= self.size:
                break
            trial = study.ask(dists)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # a proposal, not a measurement
            config = _repair({d.name: d.values[trial.params[d.name]] for d in self.dims},
                             self._rules, self._by_name, self._defaults)
            if config is None:
                continue
            key = tuple(config[d.name] for d in self.dims)
            if key not in seen:
                seen.add(key)
                out.append(config)
        return out

    def grid(self, budget: int | None = None) -> list[dict[str, Value]]:
        """The full factorial of the values; with a budget, the finest grid that fits it (levels are
        taken away from the knob with the most, keeping each knob's extremes)."""
        levels = [list(d.values) for d in self.dims]
        if budget is not None:
            while math.prod(map(len, levels)) > budget:
                i = max(range(len(levels)), key=lambda j: (len(levels[j]), -j))
                if len(levels[i]) == 1:
                    break
                full = self.dims[i].values
                keep = len(levels[i]) - 1
                if keep == 1:  # a knob held fixed stays at its default
                    dflt = self._defaults[self.dims[i].name]
                    levels[i] = [dflt if dflt in full else full[len(full) // 2]]
                else:
                    idx = sorted({round(k * (len(full) - 1) / (keep - 1)) for k in range(keep)})
                    levels[i] = [full[k] for k in idx]
        names = [d.name for d in self.dims]
        return [c for c in (dict(zip(names, combo, strict=True)) for combo in itertools.product(*levels))
                if self.valid(c)]

    def one_at_a_time(self, budget: int | None = None) -> list[dict[str, Value]]:
        """Each knob alone at each of its other values, the rest at their defaults: the far ends of
        every knob first, then the values nearer the default (so a budget cuts the least telling
        points). Configurations that break a catalog rule are left out."""
        base = self.default()
        ranked: list[tuple[int, int, int, dict[str, Value]]] = []
        for k, dim in enumerate(self.dims):
            values = list(dim.values)
            at = values.index(base[dim.name]) if base[dim.name] in values else None
            for i, v in enumerate(values):
                if v == base[dim.name]:
                    continue
                far = i in (0, len(values) - 1)
                rung = -abs(i - at) if at is not None else 0
                ranked.append((0 if far else 1, rung, k, {**base, dim.name: v}))
        ranked.sort(key=lambda r: r[:3])
        out = [c for *_, c in ranked if self.valid(c)]
        return out if budget is None else out[:budget]

    def _unit_points(self, strategy: str, n: int, seed: int, skip: int) -> np.ndarray:
        d = len(self.dims)
        if strategy == "random":
            rng = np.random.default_rng([seed, skip])
            return rng.random((n, d))
        from scipy.stats import qmc  # imported here: scipy.stats costs half a second at start-up

        engine: qmc.QMCEngine
        if strategy == "sobol":
            engine = qmc.Sobol(d, scramble=True, rng=seed)
        else:
            engine = qmc.LatinHypercube(d, rng=np.random.default_rng([seed, skip]))
        if skip and strategy == "sobol":
            engine.fast_forward(skip)
        with warnings.catch_warnings():  # Sobol prefers powers of two; any n is fine for us
            warnings.simplefilter("ignore", category=UserWarning)
            return engine.random(n)

    def _draw(self, strategy: str, budget: int, seed: int) -> list[dict[str, Value]]:
        out: list[dict[str, Value]] = []
        seen: set[tuple[Value, ...]] = set()
        drawn = 0
        cap = min(budget, self.size)
        # a few rounds of more points top the list up after rejections and duplicates
        for _ in range(64):
            want = max(cap - len(out), 1) * 2 if out else budget
            points = self._unit_points(strategy, want, seed, drawn)
            drawn += want
            for row in points:
                config = _repair({dim.name: dim.at(u) for dim, u in zip(self.dims, row, strict=True)},
                                 self._rules, self._by_name, self._defaults)
                if config is None:
                    continue
                key = tuple(config[d.name] for d in self.dims)
                if key in seen:
                    continue
                seen.add(key)
                out.append(config)
                if len(out) == budget:
                    return out
            if len(out) >= cap:
                break
        return out


def tpe_start(budget: int) -> int:
    """Points of a ``tpe`` study's Sobol start, the defaults included: a third of the budget, at
    least 8 (TPE models nothing from fewer), at most the budget."""
    return min(budget, max(8, budget // 3))


def plan_configurations(catalog: Catalog, strategy: str, budget: int | None, seed: int = 0,
                        knobs: Iterable[str] | None = None,
                        include_default: bool = True) -> list[dict[str, Value]]:
    """The configurations of a study: the catalog defaults first (the baseline gains are measured
    against), then the sampler's points, *budget* in all (for ``tpe``, its Sobol start: the rest is
    planned round by round from the measurements, :meth:`Sampler.suggest`)."""
    if strategy == "tpe" and budget is not None:
        strategy, budget = "sobol", tpe_start(budget)
    sampler = Sampler(catalog, knobs)
    if not include_default:
        return sampler.sample(strategy, budget, seed)
    base = sampler.default()
    rest = sampler.sample(strategy, None if budget is None else budget + 1, seed)
    configs = [base] + [c for c in rest if c != base]
    return configs if budget is None else configs[:budget]
