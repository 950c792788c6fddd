"""The tuning environment: a ``gymnasium.Env`` over the simulated machine, a backend and an objective.

One step is one tuning interval: the action moves at most one knob one rung (``ptmt.online.knobspace``)
through the backend (validated, journaled, read back, exactly as on a real host), the machine runs
for the interval, telemetry samples the counters and the observation is built by
``ptmt.online.observation.observe`` — the same function the live tuner calls, so what the agent
learns from is what it will see.

Reward: ``log(objective / default objective) - change_penalty`` (the penalty when a knob moved:
migrations and re-learning cost). The default objective is measured, not guessed: a *shadow*
machine with the same workload, seed and noise runs the backend's defaults in lock-step, so the
reward is the tuned configuration's gain at that moment of the workload (phases included) and the
measurement noise, drawn from the same seeds on both machines, cancels.

Each ``reset`` draws a scenario (workload of the suite, machine preset, fast-tier size with the
footprint scaled alongside, seed): pretraining across them is what lets one agent serve workloads
it never saw.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ptmt.backends.registry import backend_for
from ptmt.catalog import Catalog, Value, load_catalog
from ptmt.journal import Journal
from ptmt.online import observation
from ptmt.online.knobspace import KnobSpace, Move
from ptmt.telemetry import Telemetry

#: Reward subtracted when the action changed a knob.
CHANGE_PENALTY = 0.003
#: Reward of an action that could not be carried out (off the ladder, against a catalog rule).
ILLEGAL_PENALTY = 0.01


@dataclass(frozen=True)
class Scenario:
    """One simulated episode's world."""

    workload: str
    machine: str = "dram-cxl-1to2"
    fast_gb: float | None = None  # None: the preset's size
    footprint_scale: float = 1.0  # footprint relative to the workload spec (scaled with fast_gb)
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Workloads the agent is pretrained on by default: the built-in suite minus the testbed fixture.
SUITE = ("btree", "gapbs-bfs", "gapbs-pr", "gups", "gups-growth", "npb-cg", "npb-mg", "silo-ycsb",
         "stream", "uniform-random", "xsbench", "ycsb-shift")
MACHINES = ("dram-cxl-1to1", "dram-cxl-1to2", "dram-cxl-1to4", "dram-optane-1to1", "dram-optane-1to2",
            "dram-optane-1to4")
FAST_GB = (8.0, 16.0, 32.0)


class ScenarioSampler:
    """Random scenarios: workload x machine preset x fast-tier size (footprint scaled to match)."""

    def __init__(self, workloads: Sequence[str] = SUITE, machines: Sequence[str] = MACHINES,
                 fast_gb: Sequence[float] = FAST_GB) -> None:
        if not workloads:
            raise ValueError("a scenario sampler needs at least one workload")
        self.workloads, self.machines, self.fast_gb = list(workloads), list(machines), list(fast_gb)

    def __call__(self, rng: np.random.Generator) -> Scenario:
        fast = float(rng.choice(self.fast_gb))
        return Scenario(workload=str(rng.choice(self.workloads)), machine=str(rng.choice(self.machines)),
                        fast_gb=fast, footprint_scale=fast / 32.0, seed=int(rng.integers(0, 2**31 - 1)))


class SimHostPair:
    """A simulated machine running the tuned configuration and its lock-step default twin."""

    def __init__(self, backend: str, catalog: Catalog, scenario: Scenario, interval: float) -> None:
        from ptmt.offline.trial import scratch_dir
        from ptmt.sim.host import SimHost
        from ptmt.sim.knobs import kernel_for_backend
        from ptmt.sim.machine import load_machine
        from ptmt.sim.workload import load_workload

        self.scenario = scenario
        self.tmp = Path(tempfile.mkdtemp(prefix="ptmt-env-", dir=scratch_dir()))
        spec = load_workload(scenario.workload)
        preset = load_machine(scenario.machine)
        fast_gb = scenario.fast_gb or preset.fast.capacity_gb
        slow_gb = fast_gb * preset.slow.capacity_gb / preset.fast.capacity_gb
        footprint = spec.footprint_gb * scenario.footprint_scale
        hosts = [SimHost(self.tmp / name, machine=scenario.machine, fast_gb=fast_gb, slow_gb=slow_gb,
                         workload=scenario.workload, seed=scenario.seed, kernel=kernel_for_backend(backend),
                         footprint_gb=footprint, persist=False)
                 for name in ("tuned", "default")]
        self.host, self.shadow = hosts
        self.backend = backend_for(catalog, self.host)
        self.shadow_backend = backend_for(catalog, self.shadow)
        self.journal = Journal(self.tmp / "state-tuned")
        self.backend.apply(self.backend.plan({}, activate=True), self.journal)
        self.shadow_backend.apply(self.shadow_backend.plan({}, activate=True), Journal(self.tmp / "state-default"))
        self.interval = interval

    def advance(self) -> None:
        self.host.advance(self.interval)
        self.shadow.advance(self.interval)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class SimTuningEnv(gym.Env):
    """Pretraining environment on the simulated machine (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, backend: str, *, scenarios: ScenarioSampler | Sequence[Scenario] | None = None,
                 interval: float = 10.0, episode_intervals: int = 60, knobs: Sequence[str] | None = None,
                 catalog: Catalog | None = None, change_penalty: float = CHANGE_PENALTY,
                 start: str = "default") -> None:
        super().__init__()
        self.backend_name = backend
        self.catalog = catalog or load_catalog(backend)
        self.space = KnobSpace(self.catalog, knobs)
        if scenarios is None:
            scenarios = ScenarioSampler()
        self._fixed = list(scenarios) if not callable(scenarios) else None
        self._sampler = scenarios if callable(scenarios) else None
        self.interval = float(interval)
        self.episode_intervals = int(episode_intervals)
        self.change_penalty = float(change_penalty)
        self.start = start  # "default" or "random": where episodes begin on the ladders
        n_obs = len(observation.feature_names(self.space.names))
        self.observation_space = gym.spaces.Box(-observation.CLIP, observation.CLIP, (n_obs,), np.float32)
        self.action_space = gym.spaces.Discrete(self.space.n_actions)
        self.pair: SimHostPair | None = None
        self._episode = 0

    # -- gymnasium API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.close()
        if options and "scenario" in options:
            scenario = options["scenario"]
        elif self._fixed is not None:
            scenario = self._fixed[int(self.np_random.integers(len(self._fixed)))]
        else:
            assert self._sampler is not None
            scenario = self._sampler(self.np_random)
        self._episode += 1
        self.pair = SimHostPair(self.backend_name, self.catalog, scenario, self.interval)
        self.config: dict[str, Value] = self.space.defaults()
        if self.start == "random":
            rng = self.np_random
            cand = {ladder.name: ladder.values[int(rng.integers(len(ladder.values)))] for ladder in self.space.ladders}
            if self.space.legal(cand):
                self._apply(cand)
        self.telemetry = Telemetry(self.pair.host)
        self.telemetry.start()
        self.steps = 0
        self.since_change = 10
        self.previous: float | None = None
        self.pair.advance()
        obs, info = self._observe(changed=False)
        return obs, info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.pair is not None, "call reset() first"
        move = self.space.move(int(action))
        new = self.space.apply_move(self.config, move)
        changed = bool(new is not None and move.knob is not None)
        penalty = 0.0
        if new is None:
            penalty = ILLEGAL_PENALTY
        elif changed:
            self._apply(new)
            penalty = self.change_penalty
        self.since_change = 0 if changed else self.since_change + 1
        self.pair.advance()
        self.steps += 1
        obs, info = self._observe(changed)
        tuned, default = info["objective"], info["default_objective"]
        gain = math.log(tuned / default) if tuned and default and tuned > 0 and default > 0 else 0.0
        info.update(move=str(move), gain=gain)
        truncated = self.steps >= self.episode_intervals
        return obs, float(gain - penalty), False, truncated, info

    def close(self) -> None:
        if self.pair is not None:
            self.pair.close()
            self.pair = None

    # -- helpers -------------------------------------------------------------------------------------
    def _apply(self, config: dict[str, Value]) -> None:
        assert self.pair is not None
        b = self.pair.backend
        b.apply(b.plan(config), self.pair.journal)
        self.config = dict(config)

    def _observe(self, changed: bool) -> tuple[np.ndarray, dict[str, Any]]:
        assert self.pair is not None
        sample = self.telemetry.sample()
        objective = sample.objective
        default = self.pair.shadow.objective()
        obs = observation.observe(sample, positions=self.space.positions(self.config), objective=objective,
                                  previous=self.previous, baseline=default, since_change=self.since_change)
        self.previous = objective
        return obs, {"objective": objective, "default_objective": default, "config": dict(self.config),
                     "scenario": self.pair.scenario.as_dict(), "changed": changed}

    def action_masks(self) -> np.ndarray:
        """Legal actions in the current configuration (for maskable algorithms and the live tuner)."""
        return np.array(self.space.legal_moves(self.config), dtype=bool)

    def legal(self, move: Move) -> bool:
        return self.space.apply_move(self.config, move) is not None
