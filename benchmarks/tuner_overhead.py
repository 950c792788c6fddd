"""Cost of the online tuner itself: CPU time per interval, decision latency, resident memory.

    python benchmarks/tuner_overhead.py [--backend autonuma] [--intervals 360] [--agent FILE]

The tuner runs on a simulated machine whose own simulation time is measured apart and
subtracted: what is left is what `ptmt tune` would cost on a real host (telemetry reads,
fingerprint, observation, agent, guard, knob writes). Targets: <= 1% of one core at a 10 s
interval (<= 100 ms CPU per interval), <= 50 ms per decision, <= 300 MB resident.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from ptmt.backends.registry import backend_for
from ptmt.catalog import load_catalog
from ptmt.journal import Journal
from ptmt.online.guard import GuardSettings
from ptmt.online.knobspace import KnobSpace
from ptmt.online.simrun import HostObjective
from ptmt.online.tuner import Tuner, TuneSettings
from ptmt.sim.host import SimHost
from ptmt.sim.knobs import kernel_for_backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="autonuma")
    ap.add_argument("--workload", default="gups")
    ap.add_argument("--intervals", type=int, default=360)
    ap.add_argument("--agent", default=None, help="a .ptmt-agent file (default: coordinate search)")
    args = ap.parse_args()
    cat = load_catalog(args.backend)
    space = KnobSpace(cat)
    agent = None
    if args.agent:
        from ptmt.online.agent import load_agent

        agent = load_agent(args.agent, catalog=cat, space=space)
    with tempfile.TemporaryDirectory() as tmp:
        # the kernel the backend needs (Colloid's tiering mode exists only on a Colloid kernel)
        host = SimHost(Path(tmp) / "m", workload=args.workload, seed=0, kernel=kernel_for_backend(args.backend),
                       persist=False)
        sim_cpu = 0.0
        advance = host.advance

        def timed_advance(seconds: float) -> None:
            nonlocal sim_cpu
            t = time.process_time()
            advance(seconds)
            sim_cpu += time.process_time() - t

        host.advance = timed_advance  # type: ignore[method-assign]
        tuner = Tuner(host, backend_for(cat, host), Journal(Path(tmp) / "state"), objective=HostObjective(),
                      space=space, agent=agent,
                      settings=TuneSettings(interval=10, duration=10 * args.intervals,
                                            guard=GuardSettings(exploration_budget=10 ** 6)))
        t0 = time.process_time()
        result = tuner.run()
        total = time.process_time() - t0
    per_interval = (total - sim_cpu) / len(result.intervals)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    d = sorted(result.decision_ms)
    print(f"backend {args.backend}, workload {args.workload}, {len(result.intervals)} intervals of 10 s, "
          f"{'agent ' + args.agent if agent else 'coordinate search'}; {result.changes} changes")
    print(f"tuner CPU per interval: {per_interval * 1e3:.1f} ms = {per_interval / 10:.2%} of one core at 10 s "
          "(target <= 1%)")
    print(f"decision latency: median {statistics.median(d):.2f} ms, p99 {d[int(0.99 * (len(d) - 1))]:.2f} ms, "
          f"max {d[-1]:.2f} ms (target <= 50 ms)")
    print(f"peak resident memory: {rss_mb:.0f} MB (target <= 300 MB; includes the simulator)")


if __name__ == "__main__":
    main()
