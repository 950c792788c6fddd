"""``ptmt analyze`` (knob sensitivity) and ``ptmt model fit|show|query`` (the query model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ptmt.catalog import load_catalog
from ptmt.cli_common import BackendOpt, CatalogDirOpt, JsonOpt, VerboseOpt, catalog_dirs, err, out, reports_errors
from ptmt.db.engine import ENV_VAR
from ptmt.errors import PtmtError

DbOpt = Annotated[str | None, typer.Option(
    "--db", envvar=ENV_VAR, show_envvar=True,
    help="SQLAlchemy URL or SQLite file path [default: ${XDG_DATA_HOME:-~/.local/share}/ptmt/ptmt.db]")]
WorkloadOpt = Annotated[str | None, typer.Option("--workload", "-w", help="Only this workload's trials.")]
ModelPathOpt = Annotated[Path | None, typer.Option(
    "--model", "-m", help="Model file [default: ${XDG_DATA_HOME:-~/.local/share}/ptmt/models/BACKEND.npz].")]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


@reports_errors
def analyze(backend: BackendOpt, workload: WorkloadOpt = None, db: DbOpt = None,
            catalog_dir: CatalogDirOpt = None,
            seed: Annotated[int, typer.Option("--seed", help="Seed of the surrogate and the permutations.")] = 0,
            json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Rank a backend's knobs by their effect on the objective (permutation importance of a
    random-forest surrogate on held-out folds), with direction and best value."""
    from ptmt.db import open_storage
    from ptmt.offline.analyze import analyze as run

    catalog = load_catalog(backend, catalog_dirs(catalog_dir))
    with open_storage(db, create=False) as storage:
        result = run(storage, backend, workload, catalog=catalog, seed=seed)
    if json_out:
        out.print_json(json.dumps(result.as_dict(), default=str))
        return
    scope = ", ".join(result.workloads)
    table = Table("#", "knob", "importance", "effect", "direction", "best", "default", "significant",
                  title=f"Knob sensitivity: {backend} ({result.n_trials} trials, "
                        f"{result.n_configurations} configurations; workloads: {scope})",
                  title_justify="left")
    for i, k in enumerate(result.knobs, 1):
        table.add_row(str(i), k.knob, f"{k.importance:.3f} ± {k.importance_std:.3f}",
                      f"{100 * k.effect:.1f}%", k.direction, _fmt(k.best_value),
                      _fmt(k.default_value), "yes" if k.significant else "no")
    out.print(table)
    noise = "n/a (no repetitions)" if result.noise_cv is None else f"{100 * result.noise_cv:.1f}%"
    out.print(f"surrogate cross-validated R² {result.surrogate_r2:.2f}; repetition noise (CV) {noise}",
              markup=False)
    if result.not_varied:
        out.print(f"not varied in these trials: {', '.join(result.not_varied)}", markup=False)
    out.print("importance: growth of the surrogate's squared error when the knob is shuffled, as a share "
              "of the objective's variance; effect: spread of its partial dependence", markup=False)


model_app = typer.Typer(
    name="model",
    help="The query model the online tuner asks: workload fingerprint -> best known configuration.",
    no_args_is_help=True,
)


@model_app.command("fit")
@reports_errors
def fit_cmd(backend: BackendOpt, db: DbOpt = None,
            output: Annotated[Path | None, typer.Option(
                "--output", "-o", help="Where to write the model [default: ${XDG_DATA_HOME:-~/.local/share}/ptmt/models/BACKEND.npz].")] = None,
            method: Annotated[str, typer.Option(help="workload (default) or original (the original PTMT's best-neighbour rule).")] = "workload",
            clusters: Annotated[int | None, typer.Option("--clusters", help="K-means clusters [default: chosen by silhouette].")] = None,
            neighbours: Annotated[int, typer.Option("--neighbours", "-k", help="Neighbours per query.")] = 15,
            evaluate: Annotated[bool, typer.Option("--evaluate", help="Also run a leave-one-workload-out evaluation of every method and store the figures.")] = False,
            catalog_dir: CatalogDirOpt = None, seed: Annotated[int, typer.Option("--seed", help="Seed of K-means and of the evaluation splits.")] = 0,
            json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Fit the query model of a backend from the database and save it."""
    from ptmt.db import open_storage
    from ptmt.offline.model import default_model_path, fit

    catalog = load_catalog(backend, catalog_dirs(catalog_dir))
    with open_storage(db, create=False) as storage:
        model = fit(storage, backend, catalog, method=method, n_clusters=clusters, knn_k=neighbours,
                    seed=seed, evaluate_methods=evaluate)
    path = model.save(output or default_model_path(backend))
    summary = model.summary()
    if json_out:
        out.print_json(json.dumps({"path": str(path), **summary}, default=str))
        return
    m = model.meta
    out.print(f"{backend}: model fitted from {m['n_trials']} trials ({m['n_samples']} samples) of "
              f"{len(m['workloads'])} workloads, {len(summary['clusters'])} clusters, method "
              f"{m['method']}; loaded in {m['load_seconds']:.1f} s, fitted in {m['fit_seconds']:.1f} s",
              markup=False)
    out.print(f"saved to {path}", markup=False)
    if summary.get("evaluation"):
        _print_evaluation(summary["evaluation"])


def _print_evaluation(ev: dict[str, Any]) -> None:
    table = Table("method", "achieved gain", "oracle gain", "regret", "predicted gain", "outliers",
                  title=f"Held-out evaluation ({ev['protocol']}, {len(ev['workloads'])} workloads)",
                  title_justify="left")
    for name, r in ev["methods"].items():
        table.add_row(name, f"{100 * r['achieved_gain']:.1f}%", f"{100 * r['oracle_gain']:.1f}%",
                      f"{100 * r['regret']:.1f}%", f"{100 * r['predicted_gain']:.1f}%",
                      f"{100 * r['outlier_rate']:.0f}%")
    out.print(table)


def _load(backend: str | None, model: Path | None, catalog_dir: list[Path] | None) -> Any:
    from ptmt.offline.model import default_model_path, load_model

    if backend is None and model is None:
        raise PtmtError("give --backend (for the default model file) or --model PATH")
    path = model or default_model_path(backend)  # type: ignore[arg-type]
    if backend is None:  # learn the backend from the file, then check it against the catalog
        backend = load_model(path).backend
    catalog = load_catalog(backend, catalog_dirs(catalog_dir))
    return load_model(path, backend=backend, catalog_hash=catalog.hash), path


@model_app.command("show")
@reports_errors
def show_cmd(backend: Annotated[str | None, typer.Option("--backend", "-b", help="Backend whose model to show.")] = None,
             model: ModelPathOpt = None, catalog_dir: CatalogDirOpt = None,
             json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Describe a fitted model: what it was fitted on, its clusters, each workload's best configuration."""
    qm, path = _load(backend, model, catalog_dir)
    s = qm.summary()
    if json_out:
        out.print_json(json.dumps({"path": str(path), **s}, default=str))
        return
    out.print(f"model {path}", markup=False)
    out.print(f"backend {s['backend']}  catalog {s['catalog_hash']}  fingerprint v{s['fingerprint_version']}  "
              f"method {s['method']}  k={s['knn_k']}  fitted {s['fitted_at']} from {s['database']}", markup=False)
    out.print(f"{s['n_trials']} trials, {s['n_samples']} samples; fit {s['fit_seconds']:.1f} s", markup=False)
    weights = ", ".join(f"{k} {v:.2f}" for k, v in sorted(s["feature_weights"].items(), key=lambda kv: -kv[1]))
    out.print(f"feature weights: {weights}", markup=False)
    ct = Table("cluster", "trials", "outlier threshold", "workloads", title="Clusters", title_justify="left")
    for c in s["clusters"]:
        ct.add_row(str(c["cluster"]), str(c["trials"]), f"{c['threshold']:.2f}",
                   ", ".join(f"{w} ({n})" for w, n in c["workloads"].items()))
    out.print(ct)
    defaults = qm.meta["defaults"]
    wt = Table("workload", "expected gain", "best known configuration (changes from default)",
               title="Best known configuration per workload", title_justify="left")
    for w, b in s["workloads"].items():
        changes = {k: v for k, v in b["configuration"].items() if defaults.get(k) != v}
        wt.add_row(w, f"{100 * b['expected_gain']:+.1f}%",
                   ", ".join(f"{k}={_fmt(v)}" for k, v in changes.items()) or "(the defaults)")
    out.print(wt)
    if s.get("evaluation"):
        _print_evaluation(s["evaluation"])


@model_app.command("query")
@reports_errors
def query_cmd(fingerprint: Annotated[str, typer.Argument(help="Fingerprint as JSON {feature: value}, or @FILE (a JSON fingerprint, or a JSON list of samples).")],
              backend: Annotated[str | None, typer.Option("--backend", "-b", help="Backend whose model to ask.")] = None,
              model: ModelPathOpt = None, catalog_dir: CatalogDirOpt = None,
              json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Ask the model for the best known configuration of a fingerprint."""
    qm, _ = _load(backend, model, catalog_dir)
    text = Path(fingerprint[1:]).read_text() if fingerprint.startswith("@") else fingerprint
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PtmtError(f"the fingerprint is not valid JSON: {exc}") from None
    result = qm.query(value)
    if json_out:
        out.print_json(json.dumps(result.as_dict(), default=str))
        return
    flag = "[red]outlier[/] (unlike anything profiled: let the online agent explore)" if result.outlier else "known"
    out.print(f"workload: {flag}; nearest: " + ", ".join(f"{w} {p:.0%}" for w, p in result.workloads.items()))
    out.print(f"expected gain over default {100 * result.expected_gain:+.1f}%, confidence {result.confidence:.2f}",
              markup=False)
    for k, v in result.configuration.items():
        out.print(f"  {k} = {_fmt(v)}", markup=False)
    if result.outlier:
        err.print(f"ptmt: distance {result.distance:.2f} > cluster threshold {result.threshold:.2f}", markup=False)
