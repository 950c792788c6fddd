"""Calibration sweep: for every built-in workload and backend, the best of 64 static configurations
against the backend's defaults (issue 3). Produces the calibration table of docs/simulator.md.

    python benchmarks/calibrate.py [--duration 300] [--jobs 2] [--workloads a,b] [--json out.json]

Every configuration runs with the same seed, so placement randomness and measurement noise are common
to all of them and the comparison is paired. Gains are mean throughput over the whole run (warm-up
included, like an execution time), best configuration / defaults - 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

from ptmt.sim.runner import run  # noqa: E402
from ptmt.sim.specs import builtin_names  # noqa: E402

RATE = ("numa_balancing_promote_rate_limit_MBps", ["64", "256", "1024", "65536"])
SCAN_MAX = ("scan_period_max_ms", ["1000", "5000", "20000", "60000"])
HOT = ("hot_threshold_ms", ["1", "10", "100", "1000"])
#: 4 x 4 x 4 = 64 configurations per backend, over knobs of three different mechanisms each.
GRIDS: dict[str, list[tuple[str, list[str]]]] = {
    "autonuma": [RATE, SCAN_MAX, HOT],
    "tpp": [RATE, HOT, ("demote_scale_factor", ["50", "200", "400", "800"])],
    "colloid": [RATE, HOT, ("colloid_delta_percent", ["2", "5", "10", "20"])],
    "upm": [("hot_page_threshold", ["2", "3", "4", "8"]), ("page_migration_interval", ["1", "2", "5", "10"]),
            ("read_sample_period", ["200", "1000", "5000", "10000"])],
}


#: Built-in workloads that need a machine of their own (not part of the sweep on the default machine).
FIXTURES = {"testbed-hot-on-slow"}


def configs(backend: str) -> list[dict[str, str]]:
    names = [n for n, _ in GRIDS[backend]]
    return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in GRIDS[backend]))]


def one(job: tuple[str, str, dict[str, str], float]) -> tuple[str, str, dict[str, str], float, float]:
    workload, backend, settings, duration = job
    r = run(backend, workload, duration=duration, interval=30, settings=settings, seed=0)
    return workload, backend, settings, r.throughput_ops_s, r.fast_tier_access_ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workloads", default=",".join(n for n in builtin_names("workloads") if n not in FIXTURES))
    ap.add_argument("--backends", default=",".join(GRIDS))
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    workloads, backends = args.workloads.split(","), args.backends.split(",")
    jobs = [(w, b, {}, args.duration) for w in workloads for b in ["none", *backends]]
    jobs += [(w, b, c, args.duration) for w in workloads for b in backends for c in configs(b)]
    start = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, jobs, chunksize=4))
    table: dict[str, dict[str, object]] = {}
    for w, b, s, ops, fs in results:
        row = table.setdefault(w, {})
        key = b if s else f"{b}:default"
        if not s:
            row[key] = (ops, fs)
        elif b not in row or ops > row[b][0]:  # type: ignore[index]
            row[b] = (ops, fs, s)
    print(f"{len(jobs)} runs of {args.duration:.0f} simulated s in {time.time() - start:.0f} s\n")
    print("| workload | no tiering | " + " | ".join(f"{b} default → best (gain)" for b in backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    out = {}
    for w in workloads:
        row = table[w]
        none = row["none:default"][0]  # type: ignore[index]
        cells = []
        for b in backends:
            d_ops, d_fs = row[f"{b}:default"]  # type: ignore[misc]
            b_ops, b_fs, b_set = row[b]  # type: ignore[misc]
            gain = b_ops / d_ops - 1
            cells.append(f"{d_ops / none:.2f} → {b_ops / none:.2f} (**{gain:+.0%}**)")
            out.setdefault(w, {})[b] = {"default_ops": d_ops, "default_fast_share": d_fs, "best_ops": b_ops,
                                        "best_fast_share": b_fs, "best": b_set, "gain": gain}
        out[w]["none"] = {"ops": none}
        print(f"| {w} | 1.00 | " + " | ".join(cells) + " |")
    print("\nbest configurations:")
    for w in workloads:
        for b in backends:
            print(f"  {w:15s} {b:9s} {out[w][b]['best']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
