"""``ptmt sim ...``: run a workload on the simulated tiered-memory machine.

Registered by ptmt/cli.py with ``app.add_typer(sim_app, name="sim")``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ptmt.errors import PtmtError
from ptmt.sim.options import FastGbOpt, FootprintOpt, MachineOpt, SeedOpt, SlowGbOpt, WorkloadOpt, workload_arg

sim_app = typer.Typer(help="The simulated tiered-memory machine (no CXL or Optane needed).", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: Counters shown in the human summary, in the kernel's names.
SUMMARY_COUNTERS = ("numa_pte_updates", "numa_hint_faults", "numa_hint_faults_local", "pgpromote_candidate",
                    "pgpromote_success", "pgdemote_kswapd", "pgdemote_direct", "numa_pages_migrated",
                    "pgmigrate_success", "pgmigrate_fail")


def _parse_sets(items: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise PtmtError(f"--set expects KNOB=VALUE (got {item!r})")
        parsed[name.strip()] = value.strip()
    return parsed


@sim_app.command("run")
def run_cmd(
    backend: Annotated[str, typer.Option("--backend", "-b", help="autonuma, tpp, colloid, upm, or 'none' (no tiering).")],
    workload: WorkloadOpt,
    duration: Annotated[float, typer.Option("--duration", min=1, help="Simulated seconds to run.")] = 300.0,
    interval: Annotated[float, typer.Option("--interval", min=1, help="Seconds per reported interval.")] = 10.0,
    sets: Annotated[list[str] | None, typer.Option("--set", help="KNOB=VALUE of the backend's catalog; repeatable.")] = None,
    machine: MachineOpt = None,
    fast_gb: FastGbOpt = None,
    slow_gb: SlowGbOpt = None,
    seed: SeedOpt = None,
    footprint_gb: FootprintOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Run WORKLOAD under BACKEND (defaults, or --set knobs) and report throughput and kernel counters."""
    from ptmt.sim.runner import run

    try:
        result = run(backend, workload_arg(workload), duration=duration, interval=interval,
                     settings=_parse_sets(sets or []), machine=machine, fast_gb=fast_gb, slow_gb=slow_gb,
                     seed=seed or 0, footprint_gb=footprint_gb)
    except PtmtError as e:
        first, *rest = str(e).splitlines()
        err.print(f"ptmt: error: {first}", markup=False)
        for line in rest:
            err.print(f"  {line.strip()}", markup=False)
        raise typer.Exit(1) from None
    if as_json:
        out.print(json.dumps(result.as_dict(), indent=2), markup=False)
        return
    table = Table(title=f"{result.workload} on {result.machine}, backend {result.backend}", title_justify="left")
    for col in ("t (s)", "ops/s", "fast share", "promote MB/s", "demote MB/s", "hint faults/s", "free fast MB"):
        table.add_column(col, justify="right")
    for i in result.intervals:
        table.add_row(f"{i.t:.0f}", f"{i.ops_s:.4g}", f"{i.fast_share:.3f}", f"{i.promoted_mb_s:.1f}",
                      f"{i.demoted_mb_s:.1f}", f"{i.hint_faults_s:.0f}", f"{i.free_fast_mb:.0f}")
    out.print(table)
    out.print(f"throughput {result.throughput_ops_s:.4g} ops/s (mean), fast-tier access ratio "
              f"{result.fast_tier_access_ratio:.3f}", markup=False)
    out.print("config: " + " ".join(f"{k}={v}" for k, v in result.config.items()), markup=False)
    out.print("counters (4 KiB pages): " + " ".join(f"{k}={result.counters.get(k, 0)}" for k in SUMMARY_COUNTERS),
              markup=False)


@sim_app.command("list")
def list_cmd() -> None:
    """List the built-in workloads and machine presets."""
    from ptmt.sim.specs import builtin_names

    out.print("workloads: " + ", ".join(builtin_names("workloads")), markup=False)
    out.print("machines:  " + ", ".join(builtin_names("machines")), markup=False)
