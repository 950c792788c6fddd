"""Cost of the online tuner itself: CPU time per interval, decision latency, resident memory.

    python benchmarks/tuner_overhead.py [--backend autonuma] [--intervals 360] [--agent FILE]
                                        [--history N] [--memory]

The tuner runs on a simulated machine whose own simulation time is measured apart and
subtracted: what is left is what `ptmt tune` would cost on a real host (telemetry reads,
fingerprint, observation, agent, guard, knob writes). Targets: <= 1% of one core at a 10 s
interval (<= 100 ms CPU per interval), <= 50 ms per decision, <= 300 MB resident.

``--history N`` keeps the latest N intervals and events in memory, as the service does
(``ptmt.service.daemon.SERVICE_HISTORY``); ``--memory`` traces Python allocations (tracemalloc,
which slows the run: the CPU figures are then not the tuner's) and prints how much memory the
run holds on to per interval over its last three quarters: what a service tuning for days would
grow by.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import tracemalloc
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
    ap.add_argument("--history", type=int, default=None,
                    help="intervals and events kept in memory (default: the whole run; the service keeps 360)")
    ap.add_argument("--memory", action="store_true", help="trace allocations: memory held per interval")
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
                      settings=TuneSettings(interval=10, duration=10 * args.intervals, history=args.history,
                                            guard=GuardSettings(exploration_budget=10 ** 6)))
        held: dict[int, int] = {}  # interval -> bytes traced when it began
        if args.memory:
            tracemalloc.start()
            step = tuner.step

            def traced_step() -> None:
                step()
                if tuner.seq in (args.intervals // 4, args.intervals - 1):
                    held[tuner.seq] = tracemalloc.get_traced_memory()[0]

            tuner.step = traced_step  # type: ignore[method-assign]
        t0 = time.process_time()
        result = tuner.run()
        total = time.process_time() - t0
        tracemalloc.stop()
    per_interval = (total - sim_cpu) / result.interval_count
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    d = sorted(result.decision_ms)
    print(f"backend {args.backend}, workload {args.workload}, {result.interval_count} intervals of 10 s, "
          f"{'agent ' + args.agent if agent else 'coordinate search'}; {result.changes} changes")
    print(f"tuner CPU per interval: {per_interval * 1e3:.1f} ms = {per_interval / 10:.2%} of one core at 10 s "
          "(target <= 1%)")
    print(f"decision latency: median {statistics.median(d):.2f} ms, p99 {d[int(0.99 * (len(d) - 1))]:.2f} ms, "
          f"max {d[-1]:.2f} ms (target <= 50 ms)")
    print(f"peak resident memory: {rss_mb:.0f} MB (target <= 300 MB; includes the simulator)")
    if len(held) == 2:
        (a, ma), (b, mb) = sorted(held.items())
        per = (mb - ma) / (b - a)
        kept = "the whole run" if args.history is None else f"the latest {args.history}"
        print(f"memory held on to, intervals {a}-{b}, keeping {kept}: {per / 1024:+.2f} KiB per interval = "
              f"{per * 8640 / 2 ** 20:+.1f} MiB per day at 10 s (tracemalloc; CPU figures above include its cost)")


if __name__ == "__main__":
    main()
