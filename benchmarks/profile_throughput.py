"""Database throughput of profiling: trials recorded per second into SQLite and PostgreSQL.

    python benchmarks/profile_throughput.py [--trials 300] [--samples 10] [--writers 1,2]
                                            [--pg postgresql+psycopg://user:pw@host/db]

One recorded trial is what a profiling worker writes: claim (with row locking), its samples (counter
deltas under the kernel's names), heartbeat, finish. No workload runs, so the figure is the ceiling the
database puts on ``ptmt profile``. PostgreSQL comes from --pg / $PTMT_BENCH_POSTGRES_URL, else a
throw-away local server started the way the database tests start theirs (skipped when there is none).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ptmt.db import open_storage
from ptmt.db.storage import worker_id
from ptmt.telemetry import TIERING_COUNTERS

COUNTERS = [*TIERING_COUNTERS, "nr_free_pages", "pgfault", "pgmajfault", "numa_hit", "numa_miss",
            "perf.instructions", "perf.cycles", "node0.MemFree_kB", "node1.MemFree_kB"]


def _plan(url: str, trials: int) -> int:
    with open_storage(url) as db:
        host = db.register_host("bench", "6.12.0", platform="sim")
        backend = db.register_backend("tpp", "bench")
        workload = db.register_workload(f"bench-{time.time_ns()}", {"kind": "bench"})
        study, _ = db.study(backend, workload, host, strategy="random", budget=trials, seed=0)
        rng = random.Random(0)
        db.plan_trials(study, [{"scan_size_mb": rng.choice([64, 128, 256, 512, 1024]),
                                "hot_threshold_ms": rng.randint(1, 5000), "i": i} for i in range(trials)])
        return study.id


def _record(url: str, study: int, samples: int, ready: Any, go: Any, out: mp.Queue) -> None:
    rng = random.Random(os.getpid())
    n = 0
    with open_storage(url, create=False) as db:
        me = worker_id()
        db.progress(study)  # connected and warm before the clock starts
        ready.release()
        go.wait()
        while (trial := db.claim_trial(study, worker=me)) is not None:
            rows = [{"seq": s, "t_s": s + 1.0, "dt_s": 1.0, "objective": rng.random() * 1e6,
                     "counters": {c: rng.randint(0, 10**6) for c in COUNTERS}} for s in range(samples)]
            db.heartbeat(trial)
            db.add_samples(trial, rows)
            db.finish_trial(trial, objective=rng.random() * 1e6, unit="ops/s")
            n += 1
    out.put(n)


def measure(url: str, trials: int, samples: int, writers: int) -> tuple[float, int]:
    study = _plan(url, trials)
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_record, args=(url, study, samples, ready, go, q)) for _ in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:  # process start-up (imports, connecting) is not what is measured
        ready.acquire()
    t0 = time.perf_counter()
    go.set()
    done = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return time.perf_counter() - t0, done


@contextlib.contextmanager
def postgres(explicit: str | None) -> Iterator[str | None]:
    url = explicit or os.environ.get("PTMT_BENCH_POSTGRES_URL")
    if url:
        yield url
        return
    conftest = Path(__file__).resolve().parents[1] / "tests" / "db" / "conftest.py"
    spec = importlib.util.spec_from_file_location("ptmt_db_test_fixtures", conftest)
    if spec is None or spec.loader is None or not conftest.is_file():
        yield None
        return
    pg = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(pg)
    bindir = pg._pg_bindir()
    if bindir is None:
        yield None
        return
    server, base, ctx = pg._start_cluster(bindir)
    import shutil
    import subprocess

    try:
        yield server.create_database().render_as_string(hide_password=False)
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(ctx["data"]), "-m", "immediate", "-w", "stop"],
                       capture_output=True, env=ctx["env"], cwd=base, timeout=60, **ctx["run_as"])
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--samples", type=int, default=10, help="samples per trial")
    ap.add_argument("--writers", default="1,2", help="concurrent worker processes, comma-separated")
    ap.add_argument("--pg", default=None, help="PostgreSQL URL (default: a throw-away local server)")
    args = ap.parse_args()
    writers = [int(w) for w in args.writers.split(",")]
    print(f"{args.trials} trials x {args.samples} samples of {len(COUNTERS)} counters each")
    print(f"{'database':<12}{'writers':>8}{'trials/s':>10}{'samples/s':>11}")
    with tempfile.TemporaryDirectory(prefix="ptmt-bench-") as tmp, postgres(args.pg) as pg_url:
        targets = [("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        if pg_url:
            targets.append(("postgresql", pg_url))
        else:
            print("postgresql: no server (give --pg URL or install the postgresql server binaries)")
        for name, url in targets:
            for w in writers:
                secs, done = measure(url, args.trials, args.samples, w)
                print(f"{name:<12}{w:>8}{done / secs:>10.1f}{done * args.samples / secs:>11.0f}")


if __name__ == "__main__":
    main()
