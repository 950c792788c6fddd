"""``ptmt tune`` and ``ptmt train``: the online tuner and the agent's pretraining."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ptmt.cli_common import BackendOpt, CatalogDirOpt, JsonOpt, VerboseOpt, catalog_dirs, out, reports_errors
from ptmt.errors import PtmtError


@reports_errors
def tune(backend: BackendOpt,
         platform: Annotated[str, typer.Option("--platform", help="sim (a fresh simulated machine per run). The real-host daemon is being built.")] = "sim",
         workload: Annotated[str, typer.Option("--workload", "-w", help="Simulated workload (ptmt sim list).")] = "silo-ycsb",
         interval: Annotated[float, typer.Option("--interval", help="Seconds per tuning interval.")] = 10.0,
         duration: Annotated[float, typer.Option("--duration", help="Seconds to tune (simulated time on sim).")] = 1800.0,
         seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated machine (the default run uses the same).")] = 0,
         machine: Annotated[str | None, typer.Option("--machine", help="Simulated machine preset (ptmt sim list).")] = None,
         fast_gb: Annotated[float | None, typer.Option("--fast-gb", help="Simulated fast-tier size in GiB.")] = None,
         slow_gb: Annotated[float | None, typer.Option("--slow-gb", help="Simulated slow-tier size in GiB.")] = None,
         footprint_gb: Annotated[float | None, typer.Option("--footprint-gb", help="Simulated workload footprint in GiB.")] = None,
         model: Annotated[Path | None, typer.Option("--model", help="Trained agent file (ptmt train). Default: the agent shipped for the backend, if any (built-in catalog only).")] = None,
         search: Annotated[bool, typer.Option("--search", help="Use no agent: coordinate search proposes moves.")] = False,
         query_model: Annotated[Path | None, typer.Option("--query-model", help="Offline query model (ptmt model fit) asked at start and on phase changes.")] = None,
         catalog_dir: CatalogDirOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Tune a backend's knobs online: database advice, agent proposals, guard rails, phase changes."""
    from ptmt.catalog import load_catalog
    from ptmt.online.knobspace import KnobSpace
    from ptmt.online.simrun import SimSetup, tune_sim

    if platform != "sim":
        raise PtmtError(f"--platform {platform}: ptmt tune runs on the simulated machine for now (--platform sim); "
                        "the real-host daemon is not built yet")
    if interval <= 0 or duration <= 0:
        raise PtmtError(f"--interval and --duration must be positive (got {interval}, {duration})")
    if not verbose and not json_out:
        logging.getLogger("ptmt.tune").setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ptmt tune: %(message)s"))
        logging.getLogger("ptmt.tune").addHandler(handler)
        logging.getLogger("ptmt.tune").propagate = False
    catalog = load_catalog(backend, catalog_dirs(catalog_dir))
    space = KnobSpace(catalog)
    agent = None
    if model is None and not search and catalog_dir is None:
        from ptmt.online.agent import shipped_agent_path

        shipped = shipped_agent_path(backend)
        model = shipped if shipped.is_file() else None
    if model is not None and not search:
        from ptmt.online.agent import load_agent

        agent = load_agent(model, catalog=catalog, space=space)
    qm = None
    if query_model is not None:
        from ptmt.offline.model import load_model

        qm = load_model(query_model, backend=backend, catalog_hash=catalog.hash)
    setup = SimSetup(workload=workload, machine=machine, fast_gb=fast_gb, slow_gb=slow_gb,
                     footprint_gb=footprint_gb, seed=seed)
    report = tune_sim(backend, setup, duration=duration, interval=interval, agent=agent, query_model=qm,
                      catalog=catalog)
    if json_out:
        out.print_json(json.dumps(report.as_dict(), default=str))
        return
    out.print(f"{backend} on {workload}: default {report.default_objective:.4g} {report.result.objective_unit}, "
              f"tuned {report.tuned_objective:.4g} ({report.improvement:+.1%}); "
              f"{report.result.changes} change(s), {report.result.reverts} revert(s)", markup=False)
    out.print("final configuration: " + ", ".join(f"{k}={v}" for k, v in report.result.final_config.items()),
              markup=False)


@reports_errors
def train_cmd(backend: BackendOpt,
              output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the agent file.")] = Path("agent.ptmt-agent"),
              timesteps: Annotated[int, typer.Option("--timesteps", help="Environment steps (intervals) of PPO training.")] = 20000,
              envs: Annotated[int, typer.Option("--envs", help="Parallel simulated environments (processes).")] = 1,
              seed: Annotated[int, typer.Option("--seed", help="Seed of scenarios and PPO.")] = 0,
              catalog_dir: CatalogDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Pretrain a PPO agent on the simulated machine across workloads and machine sizes."""
    from ptmt.catalog import load_catalog
    from ptmt.online.agent import train

    if timesteps < 1 or envs < 1:
        raise PtmtError(f"--timesteps and --envs must be positive (got {timesteps}, {envs})")
    agent = train(backend, timesteps=timesteps, n_envs=envs, seed=seed,
                  catalog=load_catalog(backend, catalog_dirs(catalog_dir)))
    path = agent.save(output)
    out.print(f"agent for {backend} ({timesteps} steps, {agent.meta['train_seconds']} s) written to {path}", markup=False)
