"""How long a change takes to show on the simulated machine, against what a tuner's trial sees of it.

    python benchmarks/response_time.py --configs-from eval.json [--method oracle] [--backends tpp]
        [--workloads gups,stream] [--seeds 0] [--switch-at 6] [--intervals 60] [--json out.json]
    python benchmarks/response_time.py --backends tpp --set numa_balancing_promote_rate_limit_MBps=256

For every backend, workload and seed: the workload runs under the defaults for ``--switch-at``
intervals (the tuner's warm-up), then the machine is forked; one fork gets the configuration, the
other keeps the defaults (``ptmt.evaluation.response``). Printed per run:

- ``steady``: the gain once built up (second half of the intervals);
- ``trial sees``: the gain over the intervals a trial of the shipped guard judges
  (``settle_intervals`` skipped, then ``evaluate_intervals``), with no drift and no noise;
- ``arrives``: the first interval after the switch from which 5 intervals reach 90% of the steady gain;
- the gain per 5-interval window.

The configurations come from an evaluation JSON (``benchmarks/evaluate.py --json``): the static
oracle's configuration of each run (``--method oracle``) or the configuration a method ended with
(``--method hybrid``), or one ``--set`` configuration for every workload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ptmt.catalog import load_catalog
from ptmt.evaluation.response import measure_response
from ptmt.online.guard import GuardSettings
from ptmt.online.knobspace import describe
from ptmt.online.simrun import SimSetup
from ptmt.sim.specs import builtin_names


def configs_from(path: Path, method: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    data = json.loads(path.read_text())
    out = {}
    for run in data.get("runs", []):
        key = (run["backend"], run["workload"], int(run["seed"]))
        if method == "oracle":
            cfg = run.get("oracle_config")
        else:
            cfg = (run.get("final_configs") or {}).get(method)
        if cfg:
            out[key] = cfg
    if not out:
        sys.exit(f"{path}: no run has a configuration for method {method!r} "
                 "(oracle_config, or final_configs.<method>)")
    return out


def parse_set(text: str, backend: str) -> dict[str, Any]:
    catalog = load_catalog(backend)
    out = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep or name not in catalog.knobs:
            sys.exit(f"--set: {item!r} is not KNOB=VALUE with a knob of {backend} "
                     f"({', '.join(catalog.knobs)})")
        out[name] = catalog.knobs[name].coerce(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="autonuma,tpp,colloid,upm")
    ap.add_argument("--workloads", default=None)
    ap.add_argument("--seeds", default="0")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--configs-from", type=Path, help="an evaluation JSON (benchmarks/evaluate.py --json)")
    src.add_argument("--set", help="KNOB=VALUE,... applied on every workload")
    ap.add_argument("--method", default="oracle", help="whose configuration to take from --configs-from")
    ap.add_argument("--switch-at", type=int, default=GuardSettings().warmup_intervals)
    ap.add_argument("--intervals", type=int, default=60)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--show-config", action="store_true", help="add a column with the knobs each configuration changes")
    a = ap.parse_args()

    guard = GuardSettings()
    settle, evaluate = guard.settle_intervals, guard.evaluate_intervals
    backends = a.backends.split(",")
    workloads = a.workloads.split(",") if a.workloads else builtin_names("workloads")
    seeds = [int(s) for s in a.seeds.split(",")]
    given = configs_from(a.configs_from, a.method) if a.configs_from else None

    console = Console(width=max(Console().width, 150))
    table = Table(title=f"the change switched in after {a.switch_at} intervals, against the defaults continued "
                        f"(a trial judges intervals {settle + 1}-{settle + evaluate})")
    cols = ["backend", "workload", "seed", "steady", "trial sees", "arrives", "per 5 intervals"]
    for col in cols + (["configuration"] if a.show_config else []):
        table.add_column(col, justify="left" if col in ("backend", "workload", "configuration") else "right",
                         no_wrap=col == "per 5 intervals")
    rows: list[dict[str, Any]] = []
    for b in backends:
        defaults = load_catalog(b).defaults()
        for w in workloads:
            for s in seeds:
                cfg = parse_set(a.set, b) if a.set else (given or {}).get((b, w, s))
                if cfg is None:
                    continue
                r = measure_response(b, SimSetup(workload=w, seed=s), cfg, switch_at=a.switch_at,
                                     intervals=a.intervals, interval=a.interval)
                row = {"backend": b, "workload": w, "seed": s, "config": cfg,
                       "trial_sees": r.judged(settle, evaluate), **r.as_dict()}
                rows.append(row)
                changed = {k: v for k, v in cfg.items() if defaults.get(k) != v}
                table.add_row(b, w, str(s), f"{row['steady']:+.1%}", f"{row['trial_sees']:+.1%}",
                              "-" if row["arrival"] is None else str(row["arrival"]),
                              " ".join(f"{g:+.0%}" for g in row["windows"]),
                              *([describe(changed) or "(the defaults)"] if a.show_config else []))
    console.print(table)
    gaining = [r for r in rows if r["steady"] >= 0.01]
    if gaining:
        seen = statistics.median(r["trial_sees"] / r["steady"] for r in gaining)
        late = [r["arrival"] for r in gaining if r["arrival"] is not None]
        console.print(f"{len(gaining)} of {len(rows)} changes gain 1% or more once built up; a trial sees a median "
                      f"{seen:.0%} of that gain; 90% of it arrives after a median of "
                      f"{statistics.median(late) if late else float('nan'):.0f} intervals "
                      f"({sum(1 for x in late if x > settle + evaluate)} of {len(late)} arrive after a trial's verdict, "
                      f"interval {settle + evaluate})")
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "settle": settle,
                                      "evaluate": evaluate, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
