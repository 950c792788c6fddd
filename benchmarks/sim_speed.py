"""Speed of the simulated machine: 64 GiB footprint at 2 MiB frames, 3,600 simulated seconds in 1 s steps.

Target (issue 3): <= 5 s wall time on one core and <= 200 MB peak memory. Run:

    python benchmarks/sim_speed.py [--backend autonuma] [--seconds 3600]

Pins itself to one CPU and one BLAS thread; prints wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ptmt.sim.host import SimHost  # noqa: E402
from ptmt.sim.knobs import kernel_for_backend  # noqa: E402
from ptmt.sim.runner import apply_backend  # noqa: E402

FOOTPRINT_GB = 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="autonuma")
    ap.add_argument("--workload", default="gups")
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--machine", default="dram-cxl-1to2")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp:
        host = SimHost(Path(tmp) / "m", machine=args.machine, workload=args.workload, footprint_gb=FOOTPRINT_GB,
                       kernel=kernel_for_backend(args.backend), persist=False)
        apply_backend(host, args.backend, {}, Path(tmp) / "state")
        start = time.perf_counter()
        host.advance(args.seconds)
        wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frames = host.engine.mem.n_alloc
    print(f"{args.workload} {FOOTPRINT_GB} GiB ({frames} frames of 2 MiB), backend {args.backend}, "
          f"{args.seconds:.0f} simulated s in 1 s steps: wall {wall:.2f} s "
          f"({wall / args.seconds * 1e3:.2f} ms/step), peak RSS {peak_mb:.0f} MB")
    print(f"targets: wall <= 5 s {'OK' if wall <= 5 else 'MISSED'}, peak <= 200 MB {'OK' if peak_mb <= 200 else 'MISSED'}")


if __name__ == "__main__":
    main()
