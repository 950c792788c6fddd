"""Guard rails: the rules that keep online tuning from making things worse.

The agent proposes; the guard decides what is tried, judges every trial by measurement and puts
back the best known configuration when a change does not pay:

- **one change per interval**, one rung of one knob (structural: the action space has no other
  moves), and at most ``max_moves_per_knob`` trial moves of one knob per phase;
- **settle, then judge**: after a change the next ``settle_intervals`` are not judged (migrations
  in flight; only a collapse past ``settle_abort_fraction`` ends the trial then), then
  ``evaluate_intervals`` readings are averaged and compared with the best known configuration's
  level just before the change. A change is kept only when it is at least
  ``accept_margin`` better (hysteresis: noise alone does not move the configuration), else the
  best known configuration is restored. A gain within the noise, or a loss smaller than
  ``extend_floor``, is measured ``extend_inconclusive`` intervals longer first: on the kernel's
  tiering policies a change's effect takes 10-15 intervals to build;
- **revert**: outside trials, when the objective stays more than ``revert_fraction`` below the
  best known level for ``revert_after`` intervals in a row under a configuration that is not the
  best known one, the best known configuration is restored;
- **tabu**: a configuration judged worse is not tried again until the best known configuration
  or the workload phase changes; a configuration that was the best known one and was left for a
  better one is not returned to within the phase (no flapping between two settings on noise);
  a trial that was *aborted* is not tried again, whatever the phase, while the best known level
  is within ``abort_fraction`` of the level it was aborted against: its damage lingers after the
  revert, the recovery can look like a new phase, and the new phase would try it again (a loop of
  the same loss); a level that moved means the workload did, and the verdict is stale;
- **a moving baseline**: when the warm-up's readings move along a line (``trend_t``), the
  phase's first advice is judged against that line projected to each reading, not against the
  flat mean (a workload still falling under any configuration would abort it); likewise a trial
  started while the best known configuration's own level still moves (``trend_trials``);
- **exploration budget**: ``exploration_budget`` trial moves per phase (``outlier_budget`` when
  the workload is unlike anything in the database); then the tuner holds the best configuration
  and only watches.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import linregress

from ptmt.catalog import Value
from ptmt.errors import ConfigError


@dataclass
class GuardSettings:
    settle_intervals: int = 1
    evaluate_intervals: int = 4
    accept_margin: float = 0.01
    revert_fraction: float = 0.05
    revert_after: int = 2
    exploration_budget: int = 16
    outlier_budget: int = 32
    max_moves_per_knob: int = 6
    #: the agent's probability of "stay" above which the tuner does not explore this interval
    stay_confidence: float = 0.6
    #: apply the offline model's configuration when its confidence reaches this (and no outlier)
    model_confidence: float = 0.25
    #: and when the gain it expects is at least this
    model_min_gain: float = 0.01
    #: advice below ``model_confidence`` is still tried when its confidence times its expected
    #: gain reaches this: a large promise from a loose match is worth one judged trial (0 = never)
    model_weighted_gain: float = 0.01
    #: intervals measured under the starting configuration before the first decision
    warmup_intervals: int = 6
    #: the first warm-up readings left out of the baseline (a workload or a tiering policy that
    #: is just starting runs slow or fast for a while; a baseline taken then flatters or damns
    #: every change judged against it)
    warmup_discard: int = 3
    #: a trial whose reading falls this far below the reference is rejected at once, without
    #: waiting for its other readings (a far-end trial can cost a third of the throughput)
    abort_fraction: float = 0.05
    #: a reading this far below the reference aborts the trial even while it settles (UPM applies
    #: a placement at once: read_sample_period 5000 -> 1000 costs 30% from the first interval;
    #: 0 = never judge a settling reading)
    settle_abort_fraction: float = 0.2
    #: a change must also beat the noise: its gain must exceed this many standard errors of the
    #: difference, estimated from the trial's own readings (0 = the plain accept_margin)
    noise_z: float = 1.0
    #: estimate that noise from the best known configuration's readings as well (``held_noise``:
    #: their successive differences, pooled with the trial's): four readings of a trial say little
    #: of a workload that swings 5% from one interval to the next (autonuma npb-cg kept
    #: scan_period_max 30 s -> 60 s at +1.4% on its own four readings' noise, and the run ended
    #: +1.6% where the advice held alone made +4.4%; false = the trial's readings only)
    held_noise: bool = True
    #: trial moves left for the phase once the database's advice has been measured and kept: good
    #: advice is exploited, not explored away (the coarse pass is skipped too); 0 = stop exploring
    confirmed_budget: int = 4
    #: kept advice is confirmed (exploited, not explored: confirmed_budget) only when it measured at
    #: least this much; a small gain may be the start-up drift the warm-up baseline missed, and a
    #: phase that stops exploring on it keeps a fraction of what the workload offers
    confirm_gain: float = 0.05
    #: kept advice below confirm_gain is held and watched this many intervals more before the phase
    #: explores on, and confirmed if its level over them reaches confirm_gain (an effect that builds
    #: for minutes shows only part of itself in the trial; 0 = explore on at once)
    confirm_watch: int = 8
    #: kept advice that is not confirmed still ends the phase's coarse pass (false): the far ends are
    #: for a phase that knows nothing, and from a configuration that measured a gain they mostly
    #: collapse (autonuma gapbs-bfs: 5 of 7 aborted at -5% to -22%); true: the far ends follow it
    coarse_after_advice: bool = False
    #: once the budget is spent, measure the phase's starting configuration again as a trial
    #: against the best known one
    check_start: bool = True
    #: database advice tried per phase: when an advised configuration does not pay, the database is
    #: asked again for the best configuration it has not tried (1 = the first answer only)
    advice_tries: int = 2
    #: readings added to a trial that measured a gain too small to be told from the noise (above
    #: ``-extend_floor``, below the margin it needs): its verdict is taken on all its readings,
    #: whose margin is smaller (0 = judge every trial on ``evaluate_intervals`` readings)
    extend_inconclusive: int = 8
    #: a trial that measured a loss smaller than this is extended too: on the kernel's tiering
    #: policies a change's effect builds over 10-15 intervals, after its migrations cost first,
    #: so a trial's first readings see a small part of it (docs/results-history.md, "How long a change
    #: takes to show"; 0 = only a gain above zero is extended)
    extend_floor: float = 0.02
    #: once advice is kept, the database is asked again with what the phase measured so far (its
    #: workloads weighted by how they answered those configurations); the answer is tried when it
    #: promises at least this much over the kept configuration (within ``advice_tries``; 0 = never,
    #: and the next best after failed advice then ignores the measurements too)
    refine_gain: float = 0.02
    #: a workload unlike anything in the database (an outlier) first tries the database's best
    #: configuration across its workloads (highest median gain over the defaults), as advice,
    #: when that configuration was at least as good as the defaults on this share of them
    #: (0 = never: an outlier only explores)
    generalist_share: float = 0.6
    #: advice below the bar (a fingerprint matched loosely, not an outlier) gives way to that
    #: configuration too, under the same share (false: the phase explores from where it is;
    #: autonuma npb-cg, matched to gapbs-bfs at confidence 0.16: -0.1/-0.2% -> +1.6/+4.1%, seeds 0-1)
    generalist_unsure: bool = True
    #: a warm-up whose readings move along a line, with a slope beyond this many standard errors,
    #: makes the phase's first trial judged against that line (projected to each of its readings,
    #: at most ``trend_horizon`` intervals past the warm-up) instead of the flat baseline; a
    #: workload whose level is still moving under an unchanged configuration would otherwise
    #: condemn (or credit) the first change with its own drift (0 = always the flat baseline)
    trend_t: int = 3
    trend_horizon: int = 6
    #: a move the agent ranks at this probability or more is tried before the coarse pass's next
    #: far end (once per phase for each move and configuration it starts from; 0 = the coarse pass
    #: always goes first)
    agent_first: float = 0.35
    #: an exploration trial started while the best known configuration's readings since it was
    #: applied move along a line (beyond ``trend_t`` standard errors) is judged against that line,
    #: projected at most ``trend_horizon`` intervals, as the phase's first advice is against the
    #: warm-up's: advice on the kernel's tiering policies builds for minutes, and a trial judged
    #: against the flat level before it is credited with that rise (autonuma xsbench: advice still
    #: building kept scan_period_max 30 s -> 60 s at +1.5%, and the run ended 3.5% below the advice
    #: alone; false = the flat level)
    trend_trials: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "guard") -> GuardSettings:
        """Settings from a config mapping; every error names the key (``At 'guard.revert_after': ...``)."""
        known = {f.name: f for f in fields(cls)}
        errors = []
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key not in known:
                errors.append(f"At '{where}.{key}': unknown setting (allowed: {', '.join(known)})")
                continue
            default = getattr(cls(), key)
            if isinstance(default, bool):
                if not isinstance(raw, bool):
                    errors.append(f"At '{where}.{key}': must be true or false (got {raw!r})")
                    continue
            elif isinstance(default, int):
                if not isinstance(raw, int) or isinstance(raw, bool) or raw < (0 if key in _MAY_BE_ZERO else 1):
                    kind = "a non-negative integer" if key in _MAY_BE_ZERO else "a positive integer"
                    errors.append(f"At '{where}.{key}': must be {kind} (got {raw!r})")
                    continue
            else:
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= float(raw) <= 1:
                    errors.append(f"At '{where}.{key}': must be a number between 0 and 1 (got {raw!r})")
                    continue
                raw = float(raw)
            values[key] = raw
        if errors:
            raise ConfigError("\n".join(errors))
        return cls(**values)


#: integer settings for which 0 is meaningful (no settling, nothing discarded, no more trials)
_MAY_BE_ZERO = ("settle_intervals", "warmup_discard", "confirmed_budget", "confirm_watch", "extend_inconclusive",
                "trend_t", "trend_horizon")


def config_key(config: Mapping[str, Value]) -> str:
    return json.dumps({k: config[k] for k in sorted(config)}, default=str)


class Failed(NamedTuple):
    """A trial that was aborted or rejected: when, what it measured, and the level it was judged against."""

    seq: int
    gain: float
    reference: float


class Trend(NamedTuple):
    """A level that moves: ``slope`` per interval, the interval ``at`` which the level is the
    reference, and the last interval (``until``) the line is projected to (flat after it)."""

    slope: float
    at: float
    until: int
    t: float  # the slope in standard errors


def warmup_trend(readings: list[float], *, t_min: float, at: float, until: int) -> Trend | None:
    """The least-squares line through *readings* (one per interval) when its slope is beyond
    *t_min* standard errors (a level that moves, not noise), else None; needs 5 readings."""
    if t_min <= 0 or len(readings) < 5:
        return None
    fit = linregress(np.arange(len(readings), dtype=float), np.asarray(readings, dtype=float))
    slope, se = float(fit.slope), float(fit.stderr)
    t = slope / se if se > 0 else (math.inf if slope else 0.0)
    return Trend(slope, at, until, t) if abs(t) > t_min else None


class Trial:
    """A change being judged."""

    def __init__(self, config: Mapping[str, Value], reference: float, started: int, what: str,
                 trend: Trend | None = None, noise: Sequence[float] = ()) -> None:
        self.config = dict(config)
        self.reference = reference
        self.started = started
        self.what = what
        self.trend = trend
        #: the best known configuration's readings before the trial (its noise: GuardSettings.held_noise)
        self.noise = list(noise)
        self.readings: list[float] = []
        #: the reference each reading is compared with (the flat reference, or the trend's line)
        self.references: list[float] = []
        #: readings the verdict waits for (more once the trial was found inconclusive)
        self.wanted = 0

    def reference_at(self, interval: int) -> float:
        if self.trend is None:
            return self.reference
        tr = self.trend
        return max(self.reference + tr.slope * (min(interval, tr.until) - tr.at), 0.0)


class Guard:
    """Book-keeping of the best known configuration, the trial under way, tabu list and budget."""

    def __init__(self, settings: GuardSettings) -> None:
        self.s = settings
        self.best: dict[str, Value] = {}
        self.best_level: float | None = None
        self.trial: Trial | None = None
        self.tabu: set[str] = set()
        #: configurations left behind for a better one this phase: never tried again in it
        self.superseded: set[str] = set()
        self.budget = settings.exploration_budget
        self.moves_per_knob: dict[str, int] = {}
        self.below = 0
        self.last_needed, self.last_aborted = settings.accept_margin, False
        #: whether the last aborted trial was aborted while it settled (see last_abort_floor)
        self.last_abort_settling = False
        #: aborted trials by configuration key, kept across phases (see aborted_here)
        self.aborted: dict[str, Failed] = {}
        #: trials rejected on their full readings, likewise (see rejected_here)
        self.rejected: dict[str, Failed] = {}

    def new_phase(self, config: Mapping[str, Value], outlier: bool = False) -> None:
        self.best = dict(config)
        self.best_level = None
        self.trial = None
        self.tabu = set()
        self.superseded = set()
        self.budget = self.s.outlier_budget if outlier else self.s.exploration_budget
        self.moves_per_knob = {}
        self.below = 0

    def observe_best(self, value: float) -> None:
        """A reading under the best known configuration: its level follows the workload (EMA)."""
        self.best_level = value if self.best_level is None else 0.7 * self.best_level + 0.3 * value

    def start_trial(self, config: Mapping[str, Value], interval: int, what: str, knob: str | None = None,
                    reference: float | None = None, trend: Trend | None = None,
                    noise: Sequence[float] = ()) -> None:
        """Judge *config* against *reference* (default: the best known level), moving along *trend*;
        *noise*: the best known configuration's recent readings (``held_noise``)."""
        ref = reference if reference is not None else self.best_level
        self.trial = Trial(config, ref or 0.0, interval, what, trend, noise)
        if knob is not None:
            self.moves_per_knob[knob] = self.moves_per_knob.get(knob, 0) + 1

    def judge(self, interval: int, value: float | None) -> tuple[str, float] | None:
        """Feed a reading of the trial under way; returns ``("keep"|"reject", gain)`` once decided, and
        ``("extend", gain)`` once when the gain is within the noise and the trial runs on
        (``extend_inconclusive``; ``last_needed`` says what it needed)."""
        t = self.trial
        if t is None:
            return None
        settling = interval - t.started <= self.s.settle_intervals
        if value is not None:
            ref = t.reference_at(interval)
            floor = self.s.settle_abort_fraction if settling else self.s.abort_fraction
            if ref > 0 and floor > 0 and value < ref * (1.0 - floor):
                self.trial = None
                self.tabu.add(config_key(t.config))
                self.last_needed, self.last_aborted, self.last_abort_settling = self.s.accept_margin, True, settling
                self.aborted[config_key(t.config)] = Failed(interval, value / ref - 1.0, t.reference)
                return "reject", value / ref - 1.0
            if not settling:
                t.readings.append(value)
                t.references.append(ref)
        if settling or len(t.readings) < max(t.wanted, self.s.evaluate_intervals):
            return None
        mean = sum(t.readings) / len(t.readings)
        ref = sum(t.references) / len(t.references)
        gain = mean / ref - 1.0 if ref > 0 else 0.0
        needed = self.margin(t.readings, t.noise)
        self.last_needed, self.last_aborted = needed, False
        # a loss against a warm-up's projected line is not waited out: past the line's horizon the
        # projection, not the change, decides the comparison
        floor = self.s.extend_floor if t.trend is None else 0.0
        if -floor < gain < needed and not t.wanted and self.s.extend_inconclusive > 0:
            t.wanted = len(t.readings) + self.s.extend_inconclusive
            return "extend", gain  # within the noise: the trial goes on
        self.trial = None
        if gain >= self.last_needed:
            self.superseded.add(config_key(self.best))
            self.best = dict(t.config)
            self.best_level = mean
            self.tabu = set()
            return "keep", gain
        self.tabu.add(config_key(t.config))
        self.rejected[config_key(t.config)] = Failed(interval, gain, t.reference)
        return "reject", gain

    @property
    def last_abort_floor(self) -> float:
        """The loss below which the last aborted trial was aborted."""
        return self.s.settle_abort_fraction if self.last_abort_settling else self.s.abort_fraction

    def margin(self, readings: list[float], held: Sequence[float] = ()) -> float:
        """The gain a trial needs: ``accept_margin``, or more when its readings are noisy. With
        ``held_noise`` and 4 or more *held* readings (the best known configuration's), the noise is
        estimated from the successive differences of both series (a moving level does not inflate
        them as it inflates a standard deviation)."""
        n = len(readings)
        if n < 2 or self.s.noise_z <= 0:
            return self.s.accept_margin
        if self.s.held_noise and len(held) >= 4:
            steps = [b - a for series in (readings, held) for a, b in itertools.pairwise(series)]
            level = sum(held) / len(held)
            spread = (sum(d * d for d in steps) / (2 * len(steps))) ** 0.5
        else:
            level = sum(readings) / n
            spread = (sum((r - level) ** 2 for r in readings) / (n - 1)) ** 0.5
        sd = spread / level if level > 0 else 0.0
        return max(self.s.accept_margin, self.s.noise_z * sd * (2.0 / n) ** 0.5)

    def watch(self, config: Mapping[str, Value], value: float | None) -> bool:
        """Outside trials: True when the objective has stayed too far below the best level under a
        configuration other than the best known one (time to revert)."""
        if value is None or self.best_level is None:
            return False
        if config_key(config) == config_key(self.best):
            self.below = 0
            return False
        if value < self.best_level * (1.0 - self.s.revert_fraction):
            self.below += 1
        else:
            self.below = 0
        return self.below >= self.s.revert_after

    def aborted_here(self, config: Mapping[str, Value]) -> Failed | None:
        """The abort of *config* when its verdict still holds: the best known level is within
        ``abort_fraction`` of the level it was aborted against."""
        return self._still_holds(self.aborted.get(config_key(config)))

    def rejected_here(self, config: Mapping[str, Value]) -> Failed | None:
        """The rejection of *config* on its full readings, when it still holds (as :meth:`aborted_here`)."""
        return self._still_holds(self.rejected.get(config_key(config)))

    def _still_holds(self, a: Failed | None) -> Failed | None:
        if a is None or a.reference <= 0 or self.best_level is None:
            return None
        return a if abs(self.best_level / a.reference - 1.0) < self.s.abort_fraction else None

    def allowed(self, knob: str, new_config: Mapping[str, Value]) -> bool:
        key = config_key(new_config)
        return (self.budget > 0 and key not in self.tabu and key not in self.superseded
                and self.moves_per_knob.get(knob, 0) < self.s.max_moves_per_knob
                and self.aborted_here(new_config) is None)
