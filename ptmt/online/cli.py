"""``ptmt tune`` and ``ptmt train``: the online tuner and the agent's pretraining."""

from __future__ import annotations

import json
import logging
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


TuneBackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="Tiering solution: autonuma, tpp, colloid, upm, tiering08, memtis, or a user catalog. Default: backend: in the configuration file.")]


@reports_errors
def tune(backend: TuneBackendOpt = None,
         config: Annotated[Path | None, typer.Option("--config", help="Service configuration file (docs/service.md). Default: /etc/ptmt/ptmt.yaml when it exists. Flags given here override it.")] = None,
         platform: Annotated[str | None, typer.Option("--platform", help="sim (a fresh simulated machine per run, compared with a default run) or linux (this machine, wall-clock). Default: linux on a machine with two memory tiers, sim otherwise.")] = None,
         workload: Annotated[str | None, typer.Option("--workload", "-w", help="Simulated workload (ptmt sim list; default silo-ycsb); on linux only a label for the records.")] = None,
         interval: Annotated[float | None, typer.Option("--interval", help="Seconds per tuning interval (default 10).")] = None,
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
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Advice mode (linux): decide and log every change it would make, write nothing to the kernel.")] = False,
         leave_alone: Annotated[list[str] | None, typer.Option("--leave-alone", help="A knob never to write (repeatable; adds to leave_alone: in the configuration file).")] = None,
         metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (linux).")] = None,
         status_: Annotated[bool, typer.Option("--status", help="Show the state of the running (or last) tuning service and exit.")] = False,
         root: RootOpt = None, state_dir: StateOpt = None,
         catalog_dir: CatalogDirOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Tune a backend's knobs online: database advice, agent proposals, guard rails, phase changes."""
    from ptmt.catalog import load_catalog
    from ptmt.online.knobspace import KnobSpace
    from ptmt.platforms import resolve_platform
    from ptmt.service.config import check_against_catalog, load_config

    if status_:
        _show_status(state_dir, config, json_out)
        return
    flags = {"backend": backend, "platform": platform, "interval": interval, "database": db, "label": label,
             "model": model, "search": search, "query_model": query_model, "dry_run": dry_run,
             "metrics_port": metrics_port, "state_dir": state_dir, "catalog_dirs": catalog_dirs(catalog_dir) or None}
    file_cfg = load_config(config)
    if leave_alone:
        flags["leave_alone"] = list(dict.fromkeys([*file_cfg.leave_alone, *leave_alone]))
    cfg = file_cfg.overlay(**flags)

    def reload_config() -> Any:
        fresh = load_config(config if config is not None else file_cfg.path)
        extra = {"leave_alone": list(dict.fromkeys([*fresh.leave_alone, *leave_alone]))} if leave_alone else {}
        return fresh.overlay(**flags, **extra)

    if cfg.backend is None:
        raise PtmtError("which backend? give --backend (or backend: in the configuration file)")
    backend = cfg.backend
    chosen = resolve_platform(cfg.platform, root)
    if duration is not None and duration <= 0:
        raise PtmtError(f"--interval and --duration must be positive (got {cfg.interval}, {duration})")
    if cfg.interval <= 0:
        raise PtmtError(f"--interval and --duration must be positive (got {cfg.interval}, {duration})")
    if cfg.metrics_port is not None and not 1 <= cfg.metrics_port <= 65535:
        raise PtmtError(f"--metrics-port must be a TCP port between 1 and 65535 (got {cfg.metrics_port})")
    if not verbose and not json_out:
        from ptmt.service.logfmt import tune_log_handler

        logging.getLogger("ptmt.tune").setLevel(logging.INFO)
        logging.getLogger("ptmt.tune").addHandler(tune_log_handler())
        logging.getLogger("ptmt.tune").propagate = False
    dirs = cfg.catalog_dirs
    catalog = load_catalog(backend, dirs)
    check_against_catalog(cfg, catalog)
    source = None
    if objective is not None:
        from ptmt.online.objective import parse_objective

        source = parse_objective(objective, regex=objective_regex, json_path=objective_json, rate=objective_rate,
                                 direction=objective_direction, unit=objective_unit, timeout_s=objective_timeout)
    elif any(v is not None for v in (objective_regex, objective_json, objective_unit)) or objective_rate:
        raise PtmtError("--objective-regex/-json/-rate/-unit describe a cmd:, file: or http source: give it "
                        "with --objective")
    elif cfg.objective is not None:
        from ptmt.online.objective import objective_from_mapping

        source = objective_from_mapping(cfg.objective)
    qm = None
    if cfg.query_model is not None:
        from ptmt.offline.model import load_model

        qm = load_model(cfg.query_model, backend=backend, catalog_hash=catalog.hash)
    catalog_dir_given = catalog_dir or cfg.catalog_dirs or None
    if chosen == "sim":
        if source is not None and getattr(source, "name", "") != "sim":
            raise PtmtError(f"--objective {objective or cfg.objective}: on the simulated machine the objective is its "
                            "ops/s (--objective sim), so that the default run can be compared; use another "
                            "objective with --platform linux")
        if cfg.dry_run or cfg.metrics_port is not None:
            raise PtmtError("--dry-run and --metrics-port are for the service on a real host (--platform linux)")
        _tune_sim(backend, catalog, KnobSpace(catalog), workload=workload or "silo-ycsb", machine=machine, fast_gb=fast_gb,
                  slow_gb=slow_gb, footprint_gb=footprint_gb, seed=seed, interval=cfg.interval,
                  duration=duration or 1800.0, agent=_agent(backend, catalog, cfg.model, cfg.search, catalog_dir_given),
                  qm=qm, db=cfg.database, label=cfg.label, json_out=json_out, guard=cfg.guard, phase=cfg.phase)
        return
    _tune_linux(cfg, catalog, root=root, source=source, duration=duration, catalog_dir=catalog_dir_given, qm=qm,
                workload=workload, json_out=json_out, reload_config=reload_config)


def _show_status(state_dir: Path | None, config: Path | None, json_out: bool) -> None:
    from ptmt.host import default_state_dir
    from ptmt.service.config import load_config
    from ptmt.service.state import describe, read_states

    state = state_dir or load_config(config).state_dir or default_state_dir("linux")
    docs = read_states(state)
    if json_out:
        out.print_json(json.dumps(docs, default=str))
        return
    if not docs:
        out.print(f"no ptmt tune service has run with state directory {state}", markup=False)
        return
    for doc in docs:
        for line in describe(doc):
            out.print(line, markup=False)


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
    """A started recorder; the settings carry the objective's direction, so a report compares the right way."""
    from ptmt.online.recording import open_recorder

    direction = getattr(source, "direction", "max")
    return open_recorder(db, catalog, host, platform=platform, mode=mode,
                         objective_name=getattr(source, "name", "sim"), objective_unit=getattr(source, "unit", "ops/s"),
                         workload=workload, settings={**settings, "objective_direction": direction}, seed=seed,
                         label=label)


def _tune_sim(backend: str, catalog: Any, space: Any, *, workload: str, machine: str | None, fast_gb: float | None,
              slow_gb: float | None, footprint_gb: float | None, seed: int, interval: float, duration: float,
              agent: Any, qm: Any, db: str | None, label: str | None, json_out: bool,
              guard: Any = None, phase: Any = None) -> None:
    import shutil
    import tempfile

    from ptmt.online.simrun import SimSetup, tune_sim
    from ptmt.online.tuner import TuneSettings

    setup = SimSetup(workload=workload, machine=machine, fast_gb=fast_gb, slow_gb=slow_gb,
                     footprint_gb=footprint_gb, seed=seed)
    settings = TuneSettings(interval=interval, duration=duration)
    if guard is not None:
        settings.guard = guard
    if phase is not None:
        settings.phase = phase
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
        from ptmt.online.recording import record_static_run

        record_static_run(default_rec, report.default_series, interval, space.defaults())
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


def _tune_linux(cfg: Any, catalog: Any, *, root: Path | None, source: Any, duration: float | None,
                catalog_dir: Any, qm: Any, workload: str | None, json_out: bool, reload_config: Any) -> None:
    from ptmt.online.hostrun import prepare_host
    from ptmt.service.daemon import Service

    backend = catalog.name
    knobs = [k for k in catalog.knobs if k not in cfg.leave_alone] if cfg.leave_alone else None
    prepared = prepare_host(backend, root=root or "/", state_dir=cfg.state_dir, catalog=catalog, objective=source,
                            catalog_dirs=cfg.catalog_dirs, knobs=knobs)
    host, _journal, space, source = prepared
    agent = _agent(backend, catalog, cfg.model, cfg.search, catalog_dir, space=space)
    service = Service(config=cfg, catalog=catalog, prepared=prepared, agent=agent, query_model=qm, duration=duration,
                      reload_config=reload_config)
    rec = None
    if cfg.database is not None:
        rec = _recorder(cfg.database, catalog, host, platform="linux", source=source, mode="tune", workload=workload,
                        settings=service.tuner.s.as_dict(), seed=None, label=cfg.label)
        service.tuner.recorder = rec
    status, result = "finished", None
    try:
        result = service.run()
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException:
        status = "failed"
        raise
    finally:
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
         "kept_gain": result.kept_gain, "intervals": result.interval_count,
         # the service keeps the latest events in memory (SERVICE_HISTORY); the database has them all
         "events": [e.as_dict() for e in result.events], "events_total": result.event_count,
         "dry_run": cfg.dry_run, "advice": list(service.backend.advice), "released": dict(service.tuner.released)}
    if rec is not None:
        d["run_token"] = rec.token
    if json_out:
        out.print_json(json.dumps(d, default=str))
        return
    mean = "no reading" if result.mean_objective is None else f"{result.mean_objective:.4g} {source.unit}"
    what = "nothing written (dry run)" if cfg.dry_run else "original values restored"
    out.print(f"{backend}: mean objective {mean} over {result.interval_count} interval(s); "
              f"{result.changes} change(s), {result.reverts} revert(s); {what}", markup=False)


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
