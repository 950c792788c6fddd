"""Workload phase changes, told apart from the tuner's own effects.

Every knob change moves the counters (that is what knobs are for), so a fingerprint that differs
from the one before a change says nothing about the workload. The detector therefore compares only
intervals under one configuration: after each change (and ``settle`` intervals of migration), it
takes the next interval as the reference, and declares a new phase when, for ``confirm``
intervals in a row, either

- the fingerprint moved away from the reference by more than ``distance`` (Euclidean, over the
  features both measured except the policy's own migration rates, :data:`POLICY_FEATURES`, each
  feature scaled by a floor of 0.5 so near-zero rates do not dominate), or
- the objective left the reference level by more than ``objective_shift`` (relative).

A tuner that is exploring changes the configuration every few intervals, so a reference taken
after each change would never see the workload move. The detector therefore remembers the
reference of every configuration it measured in this phase (an *anchor*); when the tuner returns
to one (a revert to the best known configuration), the first settled interval is compared with
that configuration's anchor, and :attr:`PhaseDetector.pending` asks the tuner to hold still until
the comparison (and its confirmation, when it failed) is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ptmt.errors import ConfigError
from ptmt.offline.fingerprint import FEATURE_NAMES

#: Fingerprint features that record what the tiering policy did, not what the workload does.
#: Under one configuration and a steady workload they still switch on and off: on the simulated
#: TPP and Colloid machines npb-cg promotes nothing for intervals 4-8 and ~300 pages/s/GiB from
#: interval 9 on while its hint faults stay within 5%, which read as a distance of 21 ("a new
#: phase") on five workloads without phases. The workload's own side (hint faults, their local
#: share, PTE updates, promotion candidates, fast-tier free memory, perf features) and the objective
#: still see a phase.
POLICY_FEATURES: tuple[str, ...] = ("promote", "demote", "demote_direct_share", "migrate", "migrate_fail")


@dataclass
class PhaseSettings:
    distance: float = 2.5
    objective_shift: float = 0.12
    confirm: int = 2
    settle: int = 1
    ignore_features: tuple[str, ...] = POLICY_FEATURES

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ignore_features": list(self.ignore_features)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "phase") -> PhaseSettings:
        """Settings from a config mapping; every error names the key (``At 'phase.confirm': ...``)."""
        known = [f.name for f in fields(cls)]
        errors: list[str] = []
        values: dict[str, Any] = {}
        for key, raw in data.items():
            at = f"At '{where}.{key}'"
            if key not in known:
                errors.append(f"{at}: unknown setting (allowed: {', '.join(known)})")
            elif key == "ignore_features":
                if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
                    errors.append(f"{at}: must be a list of fingerprint feature names (got {raw!r})")
                elif bad := [n for n in raw if n not in FEATURE_NAMES]:
                    errors.append(f"{at}: unknown feature(s) {', '.join(bad)} (allowed: {', '.join(FEATURE_NAMES)})")
                else:
                    values[key] = tuple(raw)
            elif key in ("confirm", "settle"):
                least = 1 if key == "confirm" else 0
                if not isinstance(raw, int) or isinstance(raw, bool) or raw < least:
                    kind = "a positive integer" if least else "a non-negative integer"
                    errors.append(f"{at}: must be {kind} (got {raw!r})")
                else:
                    values[key] = raw
            else:
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw > 0:
                    errors.append(f"{at}: must be a positive number (got {raw!r})")
                else:
                    values[key] = float(raw)
        if errors:
            raise ConfigError("\n".join(errors))
        return cls(**values)


class PhaseDetector:
    #: anchors kept per phase (the configurations visited most recently)
    max_anchors = 16

    def __init__(self, settings: PhaseSettings | None = None) -> None:
        self.s = settings or PhaseSettings()
        self.ref_fp: np.ndarray | None = None
        self.ref_obj: float | None = None
        self.key: str | None = None
        self.anchors: dict[str, tuple[np.ndarray, float | None]] = {}
        self.wait = self.s.settle
        self.strikes = 0
        self.last_reason = ""
        unknown = set(self.s.ignore_features) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"phase.ignore_features: unknown feature(s) {sorted(unknown)} "
                             f"(allowed: {', '.join(FEATURE_NAMES)})")
        self._used = np.array([n not in self.s.ignore_features for n in FEATURE_NAMES])

    def config_changed(self, key: str | None = None) -> None:
        """The tuner changed a knob (to the configuration *key*): the next intervals reflect that,
        not the workload."""
        self.ref_fp, self.ref_obj, self.wait, self.strikes = None, None, self.s.settle, 0
        self.key = key

    def new_phase(self, key: str | None, fp: np.ndarray, objective: float | None) -> None:
        """A phase begins under configuration *key*, measured as *fp* and *objective*: the anchors of
        the previous phase no longer describe the workload."""
        self.anchors = {}
        self.config_changed(key)
        self.wait = 0
        self._take_reference(np.array(fp, float), objective)

    @property
    def pending(self) -> bool:
        """True while a return to an anchored configuration has not been checked yet, or a check
        failed once and waits for its confirmation: the tuner should not change anything now."""
        return self.strikes > 0 or (self.ref_fp is None and self.key is not None and self.key in self.anchors)

    def distance(self, fp: np.ndarray) -> float:
        if self.ref_fp is None:
            return 0.0
        both = np.isfinite(fp) & np.isfinite(self.ref_fp)
        if len(both) == len(self._used):
            both &= self._used
        if not both.any():
            return 0.0
        scale = np.maximum(0.5, np.abs(self.ref_fp[both]))
        return float(np.sqrt((((fp[both] - self.ref_fp[both]) / scale) ** 2).sum()))

    def _take_reference(self, fp: np.ndarray, objective: float | None) -> None:
        self.ref_fp, self.ref_obj = fp, objective
        if self.key is not None:
            self.anchors.pop(self.key, None)
            self.anchors[self.key] = (fp, objective)
            while len(self.anchors) > self.max_anchors:
                self.anchors.pop(next(iter(self.anchors)))

    def update(self, fp: np.ndarray, objective: float | None) -> bool:
        """Feed one interval under an unchanged configuration; True when a new phase began."""
        if self.wait > 0:
            self.wait -= 1
            return False
        if self.ref_fp is None:
            if self.key is None or self.key not in self.anchors:
                self._take_reference(np.array(fp, float), objective)
                return False
            self.ref_fp, self.ref_obj = self.anchors[self.key]  # back at a known configuration: compare
        d = self.distance(fp)
        shift = abs(objective / self.ref_obj - 1.0) if objective and self.ref_obj else 0.0
        if d > self.s.distance or shift > self.s.objective_shift:
            self.strikes += 1
            self.last_reason = (f"fingerprint distance {d:.1f} (limit {self.s.distance})" if d > self.s.distance
                                else f"objective moved {shift:+.0%} under an unchanged configuration")
        else:
            self.strikes = 0
            # a slowly drifting workload: the reference follows it
            ref_fp = 0.8 * self.ref_fp + 0.2 * np.where(np.isfinite(fp), fp, self.ref_fp)
            ref_obj = 0.8 * self.ref_obj + 0.2 * objective if objective and self.ref_obj else self.ref_obj
            self._take_reference(ref_fp, ref_obj)
        if self.strikes >= self.s.confirm:
            self.config_changed(self.key)
            self.anchors = {}
            self.wait = 0
            return True
        return False
