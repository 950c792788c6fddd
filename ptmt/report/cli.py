"""``ptmt report``: tuned vs default from the database, optionally after running the pairs itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ptmt.cli_common import CatalogDirOpt, VerboseOpt, catalog_dirs, err, out, reports_errors
from ptmt.db.engine import ENV_VAR
from ptmt.errors import PtmtError

FORMATS = ("table", "json", "html")


def _open_existing(db: str | None):  # noqa: ANN202 - a Storage
    """Open a database for reading; a SQLite file that does not exist is an error, not a new file."""
    from ptmt.db import open_storage
    from ptmt.db.engine import mask, resolve_url, sqlite_file

    url = resolve_url(db)
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise PtmtError(f"no database at {mask(url)} (no such file); give --db URL of a database that "
                        "`ptmt tune --db` or `ptmt report --run-ab` recorded into")
    return open_storage(url, create=False)


@reports_errors
def report(
    db: Annotated[str | None, typer.Option("--db", envvar=ENV_VAR, show_envvar=True, help="SQLAlchemy URL or SQLite file path [default: ${XDG_DATA_HOME:-~/.local/share}/ptmt/ptmt.db].")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Only this backend's runs (with --run-ab: the backend to tune).")] = None,
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="Only this workload's runs (with --run-ab: the simulated workload, ptmt sim list).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table (terminal), json or html (one self-contained file).")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to this file instead of the terminal.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the HTML report to this file (with any --format).")] = None,
    sensitivity: Annotated[bool, typer.Option("--sensitivity/--no-sensitivity", help="Rank knobs from the profiling trials in the database (ptmt analyze), where there are any.")] = True,
    run_ab: Annotated[bool, typer.Option("--run-ab", help="First run --repeat interleaved pairs (default, tuned) on the simulated machine and record them.")] = False,
    repeat: Annotated[int, typer.Option("--repeat", "-n", help="Pairs to run with --run-ab.")] = 5,
    duration: Annotated[float, typer.Option("--duration", help="Simulated seconds per run with --run-ab.")] = 600.0,
    interval: Annotated[float, typer.Option("--interval", help="Seconds per tuning interval with --run-ab.")] = 10.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first pair with --run-ab (pair i uses seed+i); also seeds the bootstrap.")] = 0,
    search: Annotated[bool, typer.Option("--search", help="With --run-ab: no agent, coordinate search proposes moves.")] = False,
    query_model: Annotated[Path | None, typer.Option("--query-model", help="With --run-ab: offline query model (ptmt model fit) the tuner asks.")] = None,
    label: Annotated[str | None, typer.Option("--label", help="With --run-ab: a label stored with the recorded runs.")] = None,
    catalog_dir: CatalogDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Tuned vs default per backend and workload: mean, bootstrap 95% CI, effect size, noise floor,
    tuning history, knob sensitivity and provenance (docs/report.md)."""
    from ptmt.report.report import build_report

    if fmt not in FORMATS:
        raise PtmtError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if run_ab:
        _run_ab(db, backend, workload, repeat=repeat, duration=duration, interval=interval, seed=seed,
                search=search, query_model=query_model, label=label, catalog_dir=catalog_dir, quiet=fmt != "table")
    elif backend is not None:
        from ptmt.catalog import load_catalog

        load_catalog(backend, catalog_dirs(catalog_dir))  # an unknown backend names the known ones
    with _open_existing(db) as storage:
        rep = build_report(storage, backend, workload, sensitivity=sensitivity, seed=seed)
    if html is not None:
        from ptmt.report.html import render_html

        html.write_text(render_html(rep), encoding="utf-8")
    if fmt == "json":
        text = json.dumps(rep.as_dict(), default=str, indent=2)
        if output is None:
            out.print_json(text)
        else:
            output.write_text(text + "\n", encoding="utf-8")
    elif fmt == "html":
        from ptmt.report.html import render_html

        page = render_html(rep)
        if output is None:
            out.file.write(page)
        else:
            output.write_text(page, encoding="utf-8")
    else:
        from ptmt.report.table import print_report

        if output is None:
            print_report(rep, out)
        else:
            from rich.console import Console

            with output.open("w", encoding="utf-8") as fh:
                print_report(rep, Console(file=fh, width=160, highlight=False, soft_wrap=True))
    for path, what in ((output, f"{fmt} report"), (html, "HTML report")):
        if path is not None:
            err.print(f"ptmt report: {what} written to {path.resolve()}", markup=False)


def _run_ab(db: str | None, backend: str | None, workload: str | None, *, repeat: int, duration: float,
            interval: float, seed: int, search: bool, query_model: Path | None, label: str | None,
            catalog_dir: list[Path] | None, quiet: bool) -> None:
    from ptmt.catalog import load_catalog
    from ptmt.online.cli import _agent
    from ptmt.report.ab import run_ab

    if backend is None or workload is None:
        raise PtmtError("--run-ab needs --backend B and --workload W (the simulated workload to compare on)")
    catalog = load_catalog(backend, catalog_dirs(catalog_dir))
    agent = _agent(backend, catalog, None, search, catalog_dir)  # the agent `ptmt tune` would use
    qm = None
    if query_model is not None:
        from ptmt.offline.model import load_model

        qm = load_model(query_model, backend=backend, catalog_hash=catalog.hash)

    def progress(i: int, r: object) -> None:
        if not quiet:
            err.print(f"ptmt report: pair {i + 1}/{repeat} (seed {r.seed}): default {r.default_objective:.4g}, "  # type: ignore[attr-defined]
                      f"tuned {r.tuned_objective:.4g} ({r.tuned_objective / r.default_objective - 1:+.1%})",  # type: ignore[attr-defined]
                      markup=False)

    run_ab(backend, workload, repeat=repeat, db=db, duration=duration, interval=interval, seed=seed,
           catalog=catalog, agent=agent, query_model=qm, label=label, progress=progress)
