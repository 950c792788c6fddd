"""Online baselines on the running simulated machine: random search and Optuna TPE over the ladders.

Both work in *blocks* of intervals: a candidate configuration is applied, its first interval is
left out (the migrations it triggers settle), and the mean of the block's other intervals is its
score. The first block measures the defaults, the incumbent. After ``explore_fraction`` of the
time budget the best-scoring configuration is applied and kept to the end (exploit). Every
interval counts in the run's mean objective, exploration included, as for PTMT.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptmt.backends.registry import backend_for
from ptmt.catalog import Value, load_catalog
from ptmt.journal import Journal
from ptmt.online.knobspace import KnobSpace
from ptmt.online.simrun import SimSetup


@dataclass
class SearchRun:
    series: list[float]
    configs: list[dict[str, Value]] = field(default_factory=list)  # one per interval
    tried: list[tuple[dict[str, Value], float]] = field(default_factory=list)
    best: dict[str, Value] = field(default_factory=dict)


def random_proposer(space: KnobSpace, seed: int) -> Callable[[list], dict[str, Value]]:
    """A uniformly random legal configuration of the ladders (rejection sampling)."""
    rng = random.Random(seed)

    def propose(_history: list) -> dict[str, Value]:
        for _ in range(1000):
            cfg = {lad.name: rng.choice(lad.values) for lad in space.ladders}
            if space.legal(cfg):
                return cfg
        return space.defaults()
    return propose


class TPEProposer:
    """Optuna's TPE sampler, ask/tell over each ladder's values as a categorical parameter."""

    def __init__(self, space: KnobSpace, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.space = space
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        self.pending: Any = None
        # the defaults are the first trial, so TPE knows the incumbent
        self.study.enqueue_trial({lad.name: lad.knob.default for lad in space.ladders})

    def __call__(self, _history: list) -> dict[str, Value]:
        for _ in range(200):
            trial = self.study.ask()
            cfg = {lad.name: trial.suggest_categorical(lad.name, list(lad.values)) for lad in self.space.ladders}
            if self.space.legal(cfg):
                self.pending = trial
                return cfg
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)  # costs no machine time
        return self.space.defaults()

    def tell(self, score: float) -> None:
        if self.pending is not None:
            self.study.tell(self.pending, score)
            self.pending = None


def run_search(backend: str, setup: SimSetup, method: str, *, duration: float, interval: float,
               block: int = 5, explore_fraction: float = 0.5, seed: int = 0) -> SearchRun:
    """Run *method* (``random`` or ``tpe``) online for *duration* simulated seconds."""
    catalog = load_catalog(backend)
    space = KnobSpace(catalog)
    if method == "random":
        propose: Callable[[list], dict[str, Value]] = random_proposer(space, seed)
        tell: Callable[[float], None] = lambda _s: None  # noqa: E731
    elif method == "tpe":
        tpe = TPEProposer(space, seed)
        propose, tell = tpe, tpe.tell
    else:
        raise ValueError(f"unknown search method {method!r}")
    n_total = int(round(duration / interval))
    explore_until = int(n_total * explore_fraction)
    tmp = Path(tempfile.mkdtemp(prefix="ptmt-eval-"))
    run = SearchRun(series=[])
    try:
        host = setup.host(tmp / "machine", backend)
        b = backend_for(catalog, host)
        journal = Journal(tmp / "state")
        current = space.defaults()
        b.apply(b.plan({}, activate=True), journal)

        def apply(cfg: Mapping[str, Value]) -> None:
            nonlocal current
            if dict(cfg) != current:
                b.apply(b.plan(dict(cfg)), journal)
                current = dict(cfg)

        def step() -> float:
            host.advance(interval)
            v = float(host.objective())
            run.series.append(v)
            run.configs.append(dict(current))
            return v

        first = True
        while len(run.series) + block <= explore_until:
            cfg = space.defaults() if first and method == "random" else propose(run.tried)
            first = False
            apply(cfg)
            vals = [step() for _ in range(block)]
            score = sum(vals[1:]) / (block - 1)
            run.tried.append((dict(cfg), score))
            tell(score)
        run.best = max(run.tried, key=lambda t: t[1])[0] if run.tried else space.defaults()
        apply(run.best)
        while len(run.series) < n_total:
            step()
        return run
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
