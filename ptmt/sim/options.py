"""Typer options of the simulated machine, shared so they mean the same on every command
(``sim run`` now; ``profile``, ``tune``, ``report`` later)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

MachineOpt = Annotated[str | None, typer.Option(
    "--machine", help="Simulated machine preset (dram-cxl-1to1|1to2|1to4, dram-optane-1to1|1to2|1to4) or a YAML file. Default: dram-cxl-1to2.")]
FastGbOpt = Annotated[float | None, typer.Option("--fast-gb", min=0.05, help="Simulated fast (DRAM) node size in GiB, overriding the preset.")]
SlowGbOpt = Annotated[float | None, typer.Option("--slow-gb", min=0.05, help="Simulated slow (CXL/Optane) node size in GiB, overriding the preset.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", min=0, help="Seed of the simulated machine (placement, sampling, measurement noise).")]
WorkloadOpt = Annotated[str, typer.Option("--workload", "-w", help="Built-in workload name (configs/workloads) or a workload YAML file.")]
FootprintOpt = Annotated[float | None, typer.Option("--footprint-gb", min=0.01, help="Run the workload over this footprint instead of its own (small machines, quick runs).")]


def sim_options(machine: str | None = None, fast_gb: float | None = None, slow_gb: float | None = None,
                seed: int | None = None, workload: str | None = None,
                footprint_gb: float | None = None) -> dict[str, Any]:
    """The SimHost keyword arguments those options give (None ones left out, so a saved machine keeps its own)."""
    given = {"machine": machine, "fast_gb": fast_gb, "slow_gb": slow_gb, "seed": seed, "workload": workload,
             "footprint_gb": footprint_gb}
    return {k: v for k, v in given.items() if v is not None}


def workload_arg(value: str) -> str:
    """A workload given as a path is passed on as an absolute path (commands may change directory)."""
    p = Path(value)
    return str(p.resolve()) if p.suffix in (".yaml", ".yml") or "/" in value else value
