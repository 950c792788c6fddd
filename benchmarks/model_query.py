"""Query-model benchmark: a database with 1,000,000 samples, then fit time and query latency.

    python benchmarks/model_query.py [--samples 1000000] [--db PATH] [--keep]

Fills a SQLite database with synthetic studies (ptmt.offline.synthetic: 12 workloads in 3 groups,
random configurations of the autonuma catalog, bulk inserts), fits the query model from it the way
`ptmt model fit` does, and prints: fill time, load time (reading samples and computing
fingerprints), fit time, model file size, and p50/p99 latency of single queries with the model in
memory (target: <= 20 ms). Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--workloads-per-group", type=int, default=4)
    ap.add_argument("--configs", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    ap.add_argument("--method", default="workload")
    args = ap.parse_args()

    from ptmt.catalog import load_catalog
    from ptmt.db import open_storage
    from ptmt.offline import synthetic
    from ptmt.offline.fingerprint import FEATURE_NAMES
    from ptmt.offline.model import fit, load_model

    tmp = tempfile.TemporaryDirectory()
    path = args.db or Path(tmp.name) / "bench.db"
    n_workloads = 3 * args.workloads_per_group
    intervals = max(1, round(args.samples / (n_workloads * args.configs)))
    cat = load_catalog("autonuma")
    with open_storage(f"sqlite:///{path}") as db:
        t0 = time.perf_counter()
        if not db.studies_frame().shape[0]:
            synthetic.fill(db, per_group=args.workloads_per_group, n_configs=args.configs,
                           intervals=intervals, bulk=True)
        fill_s = time.perf_counter() - t0
        with db.engine.connect() as conn:
            from sqlalchemy import func, select

            from ptmt.db.models import Sample
            n_samples = conn.execute(select(func.count()).select_from(Sample)).scalar_one()
        print(f"database: {n_samples:,} samples, {n_workloads * args.configs:,} trials "
              f"({n_workloads} workloads x {args.configs} configurations x {intervals} intervals)")
        print(f"fill (bulk insert):        {fill_s:8.1f} s")
        t0 = time.perf_counter()
        model = fit(db, "autonuma", cat, method=args.method)
        total = time.perf_counter() - t0
    print(f"load (samples+fingerprints): {model.meta['load_seconds']:6.1f} s")
    print(f"fit (weights, k-means, KNN, surrogates): {model.meta['fit_seconds']:.1f} s "
          f"({len(model.a['centroids'])} clusters); total {total:.1f} s")
    out = Path(tmp.name) / "model.npz"
    t0 = time.perf_counter()
    model.save(out)
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_model(out, backend="autonuma", catalog_hash=cat.hash)
    load_s = time.perf_counter() - t0
    print(f"model file {out.stat().st_size / 1e6:.1f} MB; save {save_s:.2f} s, load {load_s:.2f} s")

    rng = np.random.default_rng(0)
    pts = model.a["points"]
    # queries: training fingerprints back in feature space, jittered
    idx = rng.choice(len(pts), size=args.queries)
    feats = pts[idx] / np.where(np.sqrt(model.a["weights"]) > 0, np.sqrt(model.a["weights"]), 1)
    feats = feats * model.a["scale"] + model.a["mean"]
    feats += rng.normal(0, 0.05, size=feats.shape) * model.a["scale"]
    for _ in range(50):
        model.query(feats[0])
    lat = []
    for f in feats:
        t0 = time.perf_counter()
        model.query(f)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1e3
    print(f"query latency over {args.queries} queries ({len(FEATURE_NAMES)} features, k="
          f"{model.meta['knn_k']}): p50 {np.percentile(lat_ms, 50):.3f} ms, "
          f"p99 {np.percentile(lat_ms, 99):.3f} ms, max {lat_ms.max():.3f} ms (target <= 20 ms)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
