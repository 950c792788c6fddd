"""The calibration sweep's 64 configurations per backend are all legal for that backend's catalog."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ptmt.backends.registry import open_backend
from ptmt.sim.host import SimHost
from ptmt.sim.knobs import kernel_for_backend

CALIBRATE = Path(__file__).resolve().parents[2] / "benchmarks" / "calibrate.py"


def _calibrate():
    spec = importlib.util.spec_from_file_location("ptmt_calibrate", CALIBRATE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grids_are_64_legal_configurations(tmp_path):
    cal = _calibrate()
    for backend in cal.GRIDS:
        configs = cal.configs(backend)
        assert len(configs) == 64 and len({tuple(sorted(c.items())) for c in configs}) == 64
        host = SimHost(tmp_path / backend, kernel=kernel_for_backend(backend), fast_gb=1, slow_gb=2,
                       footprint_gb=1, persist=False)
        b = open_backend(backend, host)
        for c in configs:
            b.plan(c, activate=True)  # raises ValidationError on an illegal value
