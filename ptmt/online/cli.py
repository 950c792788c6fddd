"""``ptmt tune`` and ``ptmt train``: the online tuner and the agent's pretraining."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ptmt.cli_common import (
    BackendOpt,
    CatalogDirOpt,
    JsonOpt,
    RootOpt,
    StateOpt,
    VerboseOpt,
    catalog_dirs,
    out,
    reports_errors,
)
from ptmt.errors import PtmtError


ObjOpt = Annotated[str | None, typer.Option("--objective", help="What to maximise: sim, ipc, proxy, cmd:COMMAND, file:PATH or http(s)://URL (docs/objectives.md). Default: sim on the simulated machine, else ipc where perf works, else proxy.")]


@reports_errors
def tune(backend: BackendOpt,
         platform: Annotated[str | None, typer.Option("--platform", help="sim (a fresh simulated machine per run, compared with a default run) or linux (this machine, wall-clock). Default: linux on a machine with two memory tiers, sim otherwise.")] = None,
         workload: Annotated[str | None, typer.Option("--workload", "-w", help="Simulated workload (ptmt sim list; default silo-ycsb); on linux only a label for the records.")] = None,
         interval: Annotated[float, typer.Option("--interval", help="Seconds per tuning interval.")] = 10.0,
         duration: Annotated[float | None, typer.Option("--duration", help="Seconds to tune. Default: 1800 simulated seconds on sim, until stopped (Ctrl-C, SIGTERM) on linux.")] = None,
         seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated machine (the default run uses the same).")] = 0,
         machine: Annotated[str | None, typer.Option("--machine", help="Simulated machine preset (ptmt sim list).")] = None,
         fast_gb: Annotated[float | None, typer.Option("--fast-gb", help="Simulated fast-tier size in GiB.")] = None,
         slow_gb: Annotated[float | None, typer.Option("--slow-gb", help="Simulated slow-tier size in GiB.")] = None,
         footprint_gb: Annotated[float | None, typer.Option("--footprint-gb", help="Simulated workload footprint in GiB.")] = None,
         model: Annotated[Path | None, typer.Option("--model", help="Trained agent file (ptmt train). Default: the agent shipped for the backend, if any (built-in catalog only).")] = None,
         search: Annotated[bool, typer.Option("--search", help="Use no agent: coordinate search proposes moves.")] = False,
         query_model: Annotated[Path | None, typer.Option("--query-model", help="Offline query model (ptmt model fit) asked at start and on phase changes.")] = None,
         objective: ObjOpt = None,
         objective_regex: Annotated[str | None, typer.Option("--objective-regex", help="Regex whose first group (or match) is the number, for cmd:/file:/http sources.")] = None,
         objective_json: Annotated[str | None, typer.Option("--objective-json", help="Dotted JSON path to the number (a.b.0.c), for cmd:/file:/http sources.")] = None,
         objective_rate: Annotated[bool, typer.Option("--objective-rate", help="The number is a growing counter: tune its rate per second.")] = False,
         objective_direction: Annotated[str, typer.Option("--objective-direction", help="max (throughput) or min (latency).")] = "max",
         objective_unit: Annotated[str | None, typer.Option("--objective-unit", help="Unit of the number, for logs and records.")] = None,
         objective_timeout: Annotated[float, typer.Option("--objective-timeout", help="Seconds a command or HTTP read may take.")] = 5.0,
         db: Annotated[str | None, typer.Option("--db", help="Record the run (intervals, events, configurations) in this database (SQLAlchemy URL; env PTMT_DB is not used unless given here).")] = None,
         label: Annotated[str | None, typer.Option("--label", help="A label stored with the recorded run.")] = None,
         root: RootOpt = None, state_dir: StateOpt = None,
         catalog_dir: CatalogDirOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Tune a backend's knobs online: database advice, agent proposals, guard rails, phase changes."""
    from ptmt.catalog import load_catalog
    from ptmt.online.knobspace import KnobSpace
    from ptmt.platforms import resolve_platform

    chosen = resolve_platform(platform, root)
    if interval <= 0 or (duration is not None and duration <= 0):
        raise PtmtError(f"--interval and --duration must be positive (got {interval}, {duration})")
    if not verbose and not json_out:
        logging.getLogger("ptmt.tune").setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ptmt tune: %(message)s"))
        logging.getLogger("ptmt.tune").addHandler(handler)
        logging.getLogger("ptmt.tune").propagate = False
    dirs = catalog_dirs(catalog_dir)
    catalog = load_catalog(backend, dirs)
    source = None
    if objective is not None:
        from ptmt.online.objective import parse_objective

        source = parse_objective(objective, regex=objective_regex, json_path=objective_json, rate=objective_rate,
                                 direction=objective_direction, unit=objective_unit, timeout_s=objective_timeout)
    elif any(v is not None for v in (objective_regex, objective_json, objective_unit)) or objective_rate:
        raise PtmtError("--objective-regex/-json/-rate/-unit describe a cmd:, file: or http source: give it "
                        "with --objective")
    qm = None
    if query_model is not None:
        from ptmt.offline.model import load_model

        qm = load_model(query_model, backend=backend, catalog_hash=catalog.hash)
    if chosen == "sim":
        if source is not None and getattr(source, "name", "") != "sim":
            raise PtmtError(f"--objective {objective}: on the simulated machine the objective is its ops/s "
                            "(--objective sim), so that the default run can be compared; use another "
                            "objective with --platform linux")
        _tune_sim(backend, catalog, KnobSpace(catalog), workload=workload or "silo-ycsb", machine=machine, fast_gb=fast_gb,
                  slow_gb=slow_gb, footprint_gb=footprint_gb, seed=seed, interval=interval,
                  duration=duration or 1800.0, agent=_agent(backend, catalog, model, search, catalog_dir),
                  qm=qm, db=db, label=label, json_out=json_out)
        return
    _tune_linux(backend, catalog, dirs, root=root, state_dir=state_dir, source=source, interval=interval,
                duration=duration, model=model, search=search, catalog_dir=catalog_dir, qm=qm, db=db,
                label=label, workload=workload, json_out=json_out)


def _agent(backend: str, catalog: Any, model: Path | None, search: bool, catalog_dir: Any,
           space: Any | None = None) -> Any:
    """The agent file given, else the one shipped for the backend (built-in catalog), else none."""
    from ptmt.online.agent import load_agent, shipped_agent_path
    from ptmt.online.knobspace import KnobSpace

    if search:
        return None
    if model is None and catalog_dir is None:
        shipped = shipped_agent_path(backend)
        model = shipped if shipped.is_file() else None
    if model is None:
        return None
    return load_agent(model, catalog=catalog, space=space or KnobSpace(catalog))


def _recorder(db: str, catalog: Any, host: Any, *, platform: str, source: Any, mode: str, workload: str | None,
              settings: dict[str, Any], seed: int | None, label: str | None) -> Any:
    from ptmt.online.recording import DbRecorder
    from ptmt.sysinfo import host_identity

    rec = DbRecorder(db, backend=catalog.name, catalog_hash=catalog.hash, catalog=catalog.data,
                     host=host_identity(host), platform=platform, objective_name=getattr(source, "name", "sim"),
                     objective_unit=getattr(source, "unit", "ops/s"), mode=mode, workload=workload,
                     settings=settings, seed=seed, label=label)
    rec.start()
    return rec


def _tune_sim(backend: str, catalog: Any, space: Any, *, workload: str, machine: str | None, fast_gb: float | None,
              slow_gb: float | None, footprint_gb: float | None, seed: int, interval: float, duration: float,
              agent: Any, qm: Any, db: str | None, label: str | None, json_out: bool) -> None:
    import shutil
    import tempfile

    from ptmt.online.simrun import SimSetup, tune_sim
    from ptmt.online.tuner import TuneSettings

    setup = SimSetup(workload=workload, machine=machine, fast_gb=fast_gb, slow_gb=slow_gb,
                     footprint_gb=footprint_gb, seed=seed)
    settings = TuneSettings(interval=interval, duration=duration)
    rec = None
    if db is not None:
        tmp = Path(tempfile.mkdtemp(prefix="ptmt-ident-"))
        try:
            probe = setup.host(tmp / "machine", backend)
            rec = _recorder(db, catalog, probe, platform="sim", source=None, mode="tune", workload=workload,
                            settings=settings.as_dict(), seed=seed, label=label)
            default_rec = _recorder(db, catalog, probe, platform="sim", source=None, mode="default",
                                    workload=workload, settings=settings.as_dict(), seed=seed, label=label)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        report = tune_sim(backend, setup, duration=duration, interval=interval, agent=agent, query_model=qm,
                          catalog=catalog, recorder=rec, settings=settings)
    except BaseException:
        if rec is not None:
            rec.close("failed")
            default_rec.close("failed")
        raise
    if rec is not None:
        summary = {k: v for k, v in report.as_dict().items() if k not in ("events", "intervals")}
        rec.close("finished", report.result.final_config, summary)
        defaults = space.defaults()
        for n, v in enumerate(report.default_series):
            default_rec.interval({"seq": n + 1, "t_s": (n + 1) * interval, "objective": v, "baseline": None,
                                  "config": defaults, "phase": 0, "fingerprint": None, "counters": None})
        default_rec.close("finished", defaults, {"mean_objective": report.default_objective})
    if json_out:
        d = report.as_dict()
        if rec is not None:
            d["run_token"], d["default_run_token"] = rec.token, default_rec.token
        out.print_json(json.dumps(d, default=str))
        return
    out.print(f"{backend} on {workload}: default {report.default_objective:.4g} {report.result.objective_unit}, "
              f"tuned {report.tuned_objective:.4g} ({report.improvement:+.1%}); "
              f"{report.result.changes} change(s), {report.result.reverts} revert(s)", markup=False)
    out.print("final configuration: " + ", ".join(f"{k}={v}" for k, v in report.result.final_config.items()),
              markup=False)
    if rec is not None:
        out.print(f"recorded as run {rec.token} (defaults: run {default_rec.token}) in {db}", markup=False)


def _tune_linux(backend: str, catalog: Any, dirs: list[str], *, root: Path | None, state_dir: Path | None,
                source: Any, interval: float, duration: float | None, model: Path | None, search: bool,
                catalog_dir: Any, qm: Any, db: str | None, label: str | None, workload: str | None,
                json_out: bool) -> None:
    import signal

    from ptmt.online.hostrun import prepare_host, tune_host
    from ptmt.online.tuner import TuneSettings

    prepared = prepare_host(backend, root=root or "/", state_dir=state_dir, catalog=catalog, objective=source,
                            catalog_dirs=dirs)
    host, _journal, space, source = prepared
    agent = _agent(backend, catalog, model, search, catalog_dir, space=space)
    settings = TuneSettings(interval=interval, duration=duration)
    rec = None
    if db is not None:
        rec = _recorder(db, catalog, host, platform="linux", source=source, mode="tune", workload=workload,
                        settings=settings.as_dict(), seed=None, label=label)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through the tuner, which restores every original value

    old = signal.signal(signal.SIGTERM, on_term)
    status, result = "finished", None
    try:
        result = tune_host(backend, catalog=catalog, duration=duration, interval=interval, agent=agent,
                           query_model=qm, settings=settings, recorder=rec, prepared=prepared)
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException:
        status = "failed"
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        if rec is not None:
            summary = None
            if result is not None:
                summary = {"mean_objective": result.mean_objective, "changes": result.changes,
                           "reverts": result.reverts}
            rec.close(status, result.final_config if result is not None else None, summary)
    if result is None:
        out.print("ptmt tune: stopped; every original knob value is restored", markup=False)
        return
    d = {"platform": "linux", "backend": backend, "objective": source.describe(), "objective_unit": source.unit,
         "mean_objective": result.mean_objective, "start_config": dict(result.start_config),
         "final_config": dict(result.final_config), "changes": result.changes, "reverts": result.reverts,
         "intervals": len(result.intervals), "events": [e.as_dict() for e in result.events]}
    if rec is not None:
        d["run_token"] = rec.token
    if json_out:
        out.print_json(json.dumps(d, default=str))
        return
    mean = "no reading" if result.mean_objective is None else f"{result.mean_objective:.4g} {source.unit}"
    out.print(f"{backend}: mean objective {mean} over {len(result.intervals)} interval(s); "
              f"{result.changes} change(s), {result.reverts} revert(s); original values restored", markup=False)


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
