"""Workload phase changes, told apart from the tuner's own effects.

Every knob change moves the counters (that is what knobs are for), so a fingerprint that differs
from the one before a change says nothing about the workload. The detector therefore compares only
intervals under one unchanged configuration: after each change (and ``settle`` intervals of
migration), it takes the next interval as the reference, and declares a new phase when, for
``confirm`` intervals in a row, either

- the fingerprint moved away from the reference by more than ``distance`` (Euclidean, over the
  features both measured, each feature scaled by a floor of 0.5 so near-zero rates do not
  dominate), or
- the objective left the reference level by more than ``objective_shift`` (relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PhaseSettings:
    distance: float = 2.5
    objective_shift: float = 0.12
    confirm: int = 2
    settle: int = 1


class PhaseDetector:
    def __init__(self, settings: PhaseSettings | None = None) -> None:
        self.s = settings or PhaseSettings()
        self.ref_fp: np.ndarray | None = None
        self.ref_obj: float | None = None
        self.wait = self.s.settle
        self.strikes = 0
        self.last_reason = ""

    def config_changed(self) -> None:
        """The tuner changed a knob: the next intervals reflect that, not the workload."""
        self.ref_fp, self.ref_obj, self.wait, self.strikes = None, None, self.s.settle, 0

    def distance(self, fp: np.ndarray) -> float:
        if self.ref_fp is None:
            return 0.0
        both = np.isfinite(fp) & np.isfinite(self.ref_fp)
        if not both.any():
            return 0.0
        scale = np.maximum(0.5, np.abs(self.ref_fp[both]))
        return float(np.sqrt((((fp[both] - self.ref_fp[both]) / scale) ** 2).sum()))

    def update(self, fp: np.ndarray, objective: float | None) -> bool:
        """Feed one interval under an unchanged configuration; True when a new phase began."""
        if self.wait > 0:
            self.wait -= 1
            return False
        if self.ref_fp is None:
            self.ref_fp, self.ref_obj = np.array(fp, float), objective
            return False
        d = self.distance(fp)
        shift = abs(objective / self.ref_obj - 1.0) if objective and self.ref_obj else 0.0
        if d > self.s.distance or shift > self.s.objective_shift:
            self.strikes += 1
            self.last_reason = (f"fingerprint distance {d:.1f} (limit {self.s.distance})" if d > self.s.distance
                                else f"objective moved {shift:+.0%} under an unchanged configuration")
        else:
            self.strikes = 0
            # a slowly drifting workload: the reference follows it
            self.ref_fp = 0.8 * self.ref_fp + 0.2 * np.where(np.isfinite(fp), fp, self.ref_fp)
            if objective and self.ref_obj:
                self.ref_obj = 0.8 * self.ref_obj + 0.2 * objective
        if self.strikes >= self.s.confirm:
            self.config_changed()
            self.wait = 0
            return True
        return False
