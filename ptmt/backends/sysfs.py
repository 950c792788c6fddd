"""The generic backend for every catalog whose knobs are kernel files (sysctl, sysfs, debugfs)."""

from __future__ import annotations

from ptmt.backends.base import Backend
from ptmt.catalog import Knob


class SysfsBackend(Backend):
    """AutoNUMA, TPP, Colloid, Tiering-0.8, MEMTIS: one file per knob, through the host's KernelFS."""

    def _path(self, knob: Knob) -> str:
        if knob.path is None:
            raise ValueError(f"{knob.name} has no kernel file (field {knob.field!r} needs a daemon backend)")
        return knob.path

    def read_raw(self, knob: Knob) -> str:
        return self.host.fs.read(self._path(knob))

    def write_raw(self, knob: Knob, text: str) -> None:
        self.host.fs.write(self._path(knob), text)

    def target(self, knob: Knob) -> str:
        return self._path(knob)
