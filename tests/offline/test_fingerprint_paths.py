"""The per-interval fast path (``fingerprint``) and the fitter's path (``fingerprint_frame``) agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptmt.offline.fingerprint import fingerprint, fingerprint_frame
from ptmt.sim.host import SimHost
from ptmt.telemetry import Telemetry


@pytest.fixture(scope="module")
def sim_samples(tmp_path_factory: pytest.TempPathFactory) -> list:
    host = SimHost(tmp_path_factory.mktemp("fp") / "m", workload="gups", seed=3, fast_gb=4, slow_gb=8,
                   footprint_gb=6, persist=False)
    host.fs.write("/proc/sys/kernel/numa_balancing", "2")
    host.fs.write("/sys/kernel/mm/numa/demotion_enabled", "1")
    tel = Telemetry(host)
    tel.start()
    out = []
    for _ in range(6):
        host.advance(5)
        out.append(tel.sample())
    return out


@pytest.mark.parametrize("window", [1, 3, 6])
def test_live_samples_give_the_frames_fingerprint(sim_samples: list, window: int) -> None:
    samples = sim_samples[-window:]
    rows = []
    for s in samples:  # flat, as the database returns samples (perf. prefix, node columns)
        row = {"dt_s": s.interval_s, **s.counters, **{f"perf.{k}": v for k, v in s.perf.items()}}
        for node, values in s.nodes.items():
            row.update({f"node{node}.{k}": v for k, v in values.items() if k in ("MemTotal", "MemFree")})
        rows.append(row)
    frame = pd.DataFrame.from_records(rows).assign(trial_id=1)
    expected = fingerprint_frame(frame).to_numpy(float)[0]
    assert np.isfinite(expected[:10]).sum() >= 8  # the simulated machine measures nearly everything
    assert np.allclose(fingerprint(samples), expected, equal_nan=True)
    assert np.allclose(fingerprint(rows), expected, equal_nan=True)


def test_rows_missing_counters_and_nodes_agree() -> None:
    rows = [{"dt_s": 10, "numa_hint_faults": 100, "numa_hint_faults_local": 40, "node0.MemTotal": 2**20,
             "node0.MemFree": 2**18, "node1.MemTotal": 2**21},
            {"dt_s": 5, "numa_hint_faults": 50, "pgdemote_kswapd": 7, "node0.MemTotal": 2**20,
             "node0.MemFree": 2**19, "node1.MemTotal": 2**21, "perf.instructions": 10, "perf.cycles": 0}]
    frame = pd.DataFrame.from_records(rows).assign(trial_id=1)
    expected = fingerprint_frame(frame).to_numpy(float)[0]
    got = fingerprint(rows)
    assert np.allclose(got, expected, equal_nan=True)
    assert np.isnan(got[-1])  # IPC with zero cycles is not measurable, not infinite
