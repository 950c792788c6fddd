"""The ``ptmt`` command line. Commands stay thin: they parse options, call the library, print."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ptmt import __version__
from ptmt.backends.registry import open_backend
from ptmt.cli_common import (
    BackendOpt,
    CatalogDirOpt,
    JsonOpt,
    PidOpt,
    PlatformOpt,
    RootOpt,
    StateOpt,
    VerboseOpt,
    catalog_dirs,
    err,
    open_cli_host,
    out,
    parse_sets,
    reports_errors,
)
from ptmt.errors import PtmtError
from ptmt.host import default_state_dir
from ptmt.journal import Journal
from ptmt.platforms import open_host, resolve_platform
from ptmt.restore import restore as restore_journal
from ptmt.sysinfo import system_status

app = typer.Typer(
    help="Auto-tuning of tiered-memory kernel knobs (AutoNUMA tiering, TPP, Colloid, UPM, ...).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ---- commands ----------------------------------------------------------------------------------
@app.command()
@reports_errors
def status(root: RootOpt = None, state_dir: StateOpt = None, platform: PlatformOpt = None,
           catalog_dir: CatalogDirOpt = None, pid: PidOpt = None, json_out: JsonOpt = False,
           verbose: VerboseOpt = False) -> None:
    """What this machine supports: kernel, NUMA nodes, tiers, debugfs, perf, DAMON, and each backend."""
    host, state = open_cli_host(platform, root, state_dir)
    info = system_status(host, catalog_dirs(catalog_dir), {"upm": {"pid": pid}} if pid else None)
    info["journal"] = {"path": str(Journal(state).path), "entries": len(Journal(state).entries())}
    if json_out:
        out.print_json(json.dumps(info))
        return
    out.print(f"[bold]platform[/] {info['platform']}   [bold]kernel[/] {info['kernel']}   root {info['root']}")
    nodes = Table("node", "cpus", "memory", "free", "tier", title="NUMA nodes", title_justify="left")
    for n in info["nodes"]:
        gib = lambda kb: f"{kb / 2**20:.1f} GiB" if kb is not None else "?"  # noqa: E731
        nodes.add_row(str(n["id"]), _cpus(n["cpus"]), gib(n["mem_total_kb"]), gib(n["mem_free_kb"]), str(n["tier"]))
    out.print(nodes)
    tiers = ", ".join(f"tier {t['id']}: nodes {t['nodes']}" for t in info["tiers"]) or "none"
    targets = ", ".join(f"{k}->{v}" for k, v in info["demotion_targets"].items()) or "none"
    out.print(f"memory tiers: {tiers}   demotion targets: {targets}")
    out.print(f"debugfs: {'mounted' if info['debugfs_mounted'] else 'not mounted (mount -t debugfs none /sys/kernel/debug)'}"
              f"   perf: {info['perf']['detail']}   DAMON: {'present' if info['damon'] else 'absent'}")
    table = Table("backend", "usable", "knobs present", "why not / notes", title="Backends", title_justify="left")
    for name, b in info["backends"].items():
        present = sum(k["present"] for k in b["knobs"])
        table.add_row(name, "[green]yes[/]" if b["usable"] else "[red]no[/]", f"{present}/{len(b['knobs'])}",
                      "\n".join(b["reasons"] + b["notes"]))
    out.print(table)
    j = info["journal"]
    out.print(f"rollback journal: {j['path']} ({j['entries']} original value(s) held; ptmt restore puts them back)")


def _cpus(cpus: list[int]) -> str:
    return ",".join(map(str, cpus)) if cpus else "none (CPU-less)"


@app.command()
@reports_errors
def knobs(backend: BackendOpt, root: RootOpt = None, state_dir: StateOpt = None, platform: PlatformOpt = None,
          catalog_dir: CatalogDirOpt = None, pid: PidOpt = None, json_out: JsonOpt = False,
          verbose: VerboseOpt = False) -> None:
    """List a backend's activation settings and knobs with their current values on this host."""
    host, _ = open_cli_host(platform, root, state_dir, announce=not json_out, backend=backend)
    b = open_backend(backend, host, catalog_dirs(catalog_dir), {"pid": pid})
    states = b.probe()
    if json_out:
        doc = {"backend": b.name, "title": b.catalog.title, "catalog": str(b.catalog.source),
               "catalog_hash": b.catalog.hash, "platform": host.platform,
               "activation": [dict(s.as_dict(), value=s.knob.activation_value) for s in states if s.knob.name in b.catalog.activation],
               "knobs": [s.as_dict() for s in states if s.knob.name in b.catalog.knobs],
               "rules": [str(r) for r in b.catalog.rules]}
        out.print_json(json.dumps(doc))
        return
    table = Table("knob", "current", "default", "candidates", "unit",
                  title=f"{b.catalog.title} [{b.name}, catalog {b.catalog.hash}]", title_justify="left")
    for s in states:
        k = s.knob
        name = f"{k.name} (activation: {_show(k.activation_value)})" if k.name in b.catalog.activation else k.name
        table.add_row(name, _show(s.current) if s.present else "[red]missing[/]", _show(k.default),
                      ", ".join(map(_show, k.candidates)), k.unit)
    out.print(table)
    for r in b.catalog.rules:
        out.print(f"rule: {r}")
    for s in states:
        if not s.present:
            out.print(f"missing {s.knob.name}: {s.problem}", markup=False)


def _show(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@app.command()
@reports_errors
def apply(backend: BackendOpt,
          set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="KNOB=VALUE; repeatable.")] = None,
          activate: Annotated[bool, typer.Option("--activate", help="Also apply the backend's activation settings.")] = False,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the changes; write nothing.")] = False,
          root: RootOpt = None, state_dir: StateOpt = None, platform: PlatformOpt = None,
          catalog_dir: CatalogDirOpt = None, pid: PidOpt = None, verbose: VerboseOpt = False) -> None:
    """Validate a configuration as a whole, journal the originals, then write it (all or nothing)."""
    settings = parse_sets(set_ or [])
    if not settings and not activate:
        raise PtmtError("nothing to apply: give --set KNOB=VALUE and/or --activate")
    host, state = open_cli_host(platform, root, state_dir, backend=backend)
    b = open_backend(backend, host, catalog_dirs(catalog_dir), {"pid": pid})
    plan = b.plan(settings, activate=activate)
    if not plan.changes:
        out.print(f"{b.name}: nothing to change (every knob already holds the requested value)")
        return
    if dry_run:
        out.print(f"{b.name}: would change (dry run, nothing written):")
        for line in plan.describe():
            out.print(f"  {line}", markup=False)
        return
    journal = Journal(state)
    b.apply(plan, journal)
    for line in plan.describe():
        out.print(f"{b.name}: {line}", markup=False)
    out.print(f"originals journaled in {journal.path}; undo with: ptmt restore", markup=False)


@app.command()
@reports_errors
def restore(backend: Annotated[str | None, typer.Option("--backend", "-b", help="Only this backend's knobs.")] = None,
            state_dir: StateOpt = None, platform: PlatformOpt = None, verbose: VerboseOpt = False) -> None:
    """Put back every original value the journal holds (idempotent; works after a crash or SIGKILL)."""
    chosen = resolve_platform(platform, None) if platform else None
    states = [state_dir] if state_dir else [default_state_dir(chosen)] if chosen else \
        [default_state_dir("linux"), default_state_dir("sim")]
    total = 0
    failed = False
    for state in dict.fromkeys(states):
        journal = Journal(state)
        if not journal.path.exists():
            continue
        report = restore_journal(journal, lambda p, r: open_host(p, r, state_dir=state), backend)  # type: ignore[arg-type]
        for e in report.restored:
            out.print(f"restored {e.backend} {e.knob} = {e.original}  ({e.target})", markup=False)
        for e, why in report.failed:
            err.print(f"ptmt: error: could not restore {e.backend} {e.knob}: {why}", markup=False)
        total += len(report.restored)
        failed |= bool(report.failed)
    if failed:
        raise typer.Exit(1)
    if not total:
        out.print("nothing to restore: the journal holds no original values")


def _register_subcommands() -> None:
    """Command groups that live with their subsystem (ptmt db ..., ptmt sim ..., ptmt testbed ...)."""
    from ptmt.db.cli import db_app
    from ptmt.offline.cli import profile
    from ptmt.offline.model_cli import analyze, model_app
    from ptmt.online.cli import train_cmd, tune
    from ptmt.service.cli import install_service
    from ptmt.report.cli import report
    from ptmt.sim.cli import sim_app
    from ptmt.testbed.cli import testbed_app

    app.command("profile")(profile)
    app.command("analyze")(analyze)
    app.command("tune")(tune)
    app.command("train")(train_cmd)
    app.command("install-service")(install_service)
    app.command("report")(report)
    app.add_typer(model_app, name="model")
    app.add_typer(sim_app, name="sim")
    app.add_typer(db_app, name="db")
    app.add_typer(testbed_app, name="testbed")


_register_subcommands()


@app.command()
def version() -> None:
    """Print the PTMT version."""
    out.print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
