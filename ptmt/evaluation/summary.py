"""Rows of an evaluation, their per-backend averages, and the evaluation's targets checked against them.

The rows (``aggregate``, from ``benchmarks/evaluate.py``'s runs) are one per (backend, workload,
method): the improvement over the same-seed default averaged over seeds, and the fraction of the
static oracle's headroom where the oracle beats the noise. The targets (docs/results.md) are judged for one method, PTMT's
hybrid as shipped:

- it captures at least 90% of the static oracle's headroom, averaged over the backend's workloads
  where the oracle has measurable headroom;
- its mean improvement is above every baseline's (rl_only, db_only, random, tpe) on the backend;
- no workload's improvement is more than 2% below the default;
- on every workload with phases it beats the static oracle.

Judging them in code, from the same rows the table is printed from, keeps docs/results.md's
verdicts reproducible: a re-measured table cannot keep an old verdict.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ptmt.evaluation.suite import DB_METHODS, METHODS, ORACLES, headroom_fraction
from ptmt.report.stats import compare

#: the methods a tuner is compared with (the oracles are bounds, not baselines)
BASELINES = ("rl_only", "db_only", "random", "tpe")
HEADROOM_TARGET = 0.90
WORST_ALLOWED = -0.02


class MergeError(ValueError):
    """Runs of several evaluations that cannot be put together (the message says which and why)."""


class EvaluationFileError(ValueError):
    """A file that is not an ``evaluate.py --json`` file (the message names it and says why)."""


def write_evaluation(path: Path, payload: Mapping[str, Any]) -> None:
    """Save an evaluation as JSON; gzip-compressed when *path* ends in ``.gz``, so the evaluation
    behind docs/results.md can be kept in the repository and rendered again (a few hundred kB
    per backend instead of megabytes: most of it is the per-interval series)."""
    text = json.dumps(payload, indent=1, default=str)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))  # mtime 0: the same runs, the same bytes
    else:
        path.write_text(text)


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The runs of an ``evaluate.py --json`` file (plain or ``.gz``), each with the sweep seed of
    the suite database it queried (files written before runs recorded it: the file's
    ``--sweep-seed``, 0 when it had none)."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        doc = json.loads(raw)
        runs = doc["runs"]
        fallback = int(doc.get("args", {}).get("sweep_seed", 0))
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EvaluationFileError(f"{path}: not an evaluate.py --json file ({exc})") from exc
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise EvaluationFileError(f"{path}: not an evaluate.py --json file ('runs' is not a list of runs)")
    return [{**r, "sweep_seed": int(r.get("sweep_seed", fallback))} for r in runs]


#: what a run records beside a method's own result, taken with the method when a later file replaces it
_RUN_KEYS = {"oracle": ("noise_threshold", "oracle_config", "oracle_from", "oracle_grid_size", "static_best_of_grid"),
             "late_oracle": ("late_noise_threshold", "late_oracle_config")}


def merge_runs(files: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
               replace: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The runs of several ``evaluate.py --json`` files as one evaluation.

    A run (backend, workload, seed) found in several files is merged method by method: a later
    file adds the methods an earlier one did not run, so a re-measured method can be put beside
    the baselines and oracle measured before. It must be the same run: its default objective must
    be the same in both files (the same seed on the same simulator), and a method measured in
    both is taken from the later file only when *replace* names it; otherwise ``MergeError``.

    The methods that query the suite database (``DB_METHODS``) are kept per sweep seed of that
    database: files of other sweep seeds add measurements, and a run's result is their mean
    (``sweep_seeds`` and ``per_sweep`` say of which), so one sweep's luck weighs less."""
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    origin: dict[tuple[str, str, int], str] = {}
    sweeps: dict[tuple[str, str, int], dict[str, dict[int, Mapping[str, Any]]]] = {}
    for name, runs in files:
        for run in runs:
            key = (run["backend"], run["workload"], int(run["seed"]))
            sweep = int(run.get("sweep_seed", 0))
            what = f"{key[0]} {key[1]} seed {key[2]} ({origin.get(key, name)} and {name})"
            for method in DB_METHODS:
                if method in run["methods"]:
                    by = sweeps.setdefault(key, {}).setdefault(method, {})
                    if sweep in by and method not in replace:
                        raise MergeError(f"{what}: both measured {method}"
                                         + (f" on sweep seed {sweep}" if sweep else "")
                                         + f"; pass --replace {method} to take the later file's")
                    by[sweep] = run["methods"][method]
            if key not in merged:
                merged[key] = {**run, "methods": dict(run["methods"])}
                origin[key] = name
                continue
            have = merged[key]["methods"]
            d_old = have.get("default", {}).get("mean")
            d_new = run["methods"].get("default", {}).get("mean")
            if d_old is None or d_new is None or not np.isclose(d_old, d_new, rtol=1e-9):
                raise MergeError(f"{what}: not the same run, the default objective differs "
                                 f"({d_old} vs {d_new}): another seed, duration or simulator")
            for method, result in run["methods"].items():
                if method == "default" or method in DB_METHODS:
                    continue
                if method in have and method not in replace:
                    raise MergeError(f"{what}: both measured {method}; pass --replace {method} to take "
                                     f"the later file's")
                have[method] = result
                for k in _RUN_KEYS.get(method, ()):  # a re-measured bound brings its noise and configuration
                    if k in run:
                        merged[key][k] = run[k]
            for k, v in run.items():  # what a later file measured beside its methods (the late oracle's noise)
                if k == "final_configs":  # each file's methods' endings add up
                    merged[key][k] = {**merged[key].get(k, {}), **v}
                else:
                    merged[key].setdefault(k, v)
    for key, run in merged.items():
        for method, by in sweeps.get(key, {}).items():
            run["methods"][method] = _over_sweeps(by)
        run.pop("sweep_seed", None)  # a merged run may stand for several
    return list(merged.values())


def _over_sweeps(by_sweep: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One method's result on one run, averaged over the suite databases of several sweep seeds
    (the result itself when there is one)."""
    seeds = sorted(by_sweep)
    per_sweep = {str(s): float(by_sweep[s]["improvement"]) for s in seeds}
    if len(seeds) == 1:
        return {**by_sweep[seeds[0]], "sweep_seeds": seeds, "per_sweep": per_sweep}
    rs = [by_sweep[s] for s in seeds]
    t90 = [r["intervals_to_90"] for r in rs if r.get("intervals_to_90") is not None]
    out: dict[str, Any] = {
        "improvement": float(np.mean([r["improvement"] for r in rs])), "mean": float(np.mean([r["mean"] for r in rs])),
        "intervals_to_90": float(np.median(t90)) if t90 else None, "sweep_seeds": seeds, "per_sweep": per_sweep}
    if all("series" in r for r in rs) and len({len(r["series"]) for r in rs}) == 1:
        out["series"] = [float(v) for v in np.mean([r["series"] for r in rs], axis=0)]
    if all(r.get("kept_gain") is not None for r in rs):
        out["kept_gain"] = float(np.mean([r["kept_gain"] for r in rs]))
    return out


class Verdict(NamedTuple):
    """One target on one backend: met or not, and the figures that decide it."""

    target: str
    backend: str
    met: bool | None  # None: nothing to judge (no headroom, no phases, method not run)
    detail: str


def aggregate(results: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """One row per (backend, workload, method), mean over seeds, CI across seeds (ptmt.report.stats).

    The headroom fraction compares like with like: the method's mean over the seeds that also ran
    the oracle, against the oracle's mean over those seeds. ``reachable_fraction`` is the same
    against the late oracle (the oracle's configurations applied after the warm-up)."""
    rows = []
    keys = sorted({(r["backend"], r["workload"]) for r in results})
    for b, w in keys:
        rs = [r for r in results if r["backend"] == b and r["workload"] == w]
        for m in methods:
            have = [r for r in rs if m in r["methods"]]
            if not have:
                continue
            imp = float(np.mean([r["methods"][m]["improvement"] for r in have]))
            ci = None
            if len(have) > 1:
                c = compare([r["default_mean"] for r in have], [r["methods"][m]["mean"] for r in have])
                ci = [c.ci_low, c.ci_high]
            t90 = [r["methods"][m]["intervals_to_90"] for r in have]
            t90 = [t for t in t90 if t is not None]
            rows.append({"backend": b, "workload": w, "method": m, "improvement": imp, "ci95": ci,
                         "seeds": len(have), "headroom_fraction": _fraction(rs, m, "oracle", "noise_threshold"),
                         "reachable_fraction": _fraction(rs, m, "late_oracle", "late_noise_threshold"),
                         "intervals_to_90": float(np.median(t90)) if t90 else None,
                         "agent": have[0]["agent"]})
    return rows


def _fraction(runs: Sequence[Mapping[str, Any]], method: str, bound: str, threshold: str) -> float | None:
    """*method*'s share of the *bound* method's gain, over the seeds that ran both (None when the
    bound was not run or its gain is within its noise *threshold*)."""
    both = [r for r in runs if bound in r["methods"] and method in r["methods"]]
    if not both:
        return None
    o = float(np.mean([r["methods"][bound]["improvement"] for r in both]))
    thr = float(np.mean([r.get(threshold, 0.0) for r in both]))
    return headroom_fraction(float(np.mean([r["methods"][method]["improvement"] for r in both])), o, thr)


def backend_means(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per backend and method: mean improvement over its workloads, and the mean headroom fraction
    over the workloads where the oracle has headroom (``of``: how many); likewise the reachable
    fraction, against the late oracle (``reachable_of``)."""
    out = []
    for b in sorted({r["backend"] for r in rows}):
        for m in methods:
            mine = [r for r in rows if r["backend"] == b and r["method"] == m]
            if not mine:
                continue
            fr = [r["headroom_fraction"] for r in mine if r.get("headroom_fraction") is not None]
            reach = [r["reachable_fraction"] for r in mine if r.get("reachable_fraction") is not None]
            out.append({"backend": b, "method": m, "improvement": float(np.mean([r["improvement"] for r in mine])),
                        "workloads": len(mine), "headroom_fraction": float(np.mean(fr)) if fr else None,
                        "of": len(fr), "reachable_fraction": float(np.mean(reach)) if reach else None,
                        "reachable_of": len(reach)})
    return out


def check_targets(rows: Sequence[Mapping[str, Any]], method: str = "hybrid") -> list[Verdict]:
    """The four targets for *method* on every backend of *rows*."""
    means = {(m["backend"], m["method"]): m for m in backend_means(rows, sorted({r["method"] for r in rows}))}
    verdicts: list[Verdict] = []
    for b in sorted({r["backend"] for r in rows}):
        me = means.get((b, method))
        if me is None:
            verdicts.append(Verdict("run", b, None, f"{method} was not run"))
            continue
        frac = me["headroom_fraction"]
        verdicts.append(Verdict(
            "headroom", b, None if frac is None else frac >= HEADROOM_TARGET,
            "no workload with measurable oracle headroom" if frac is None else
            f"{frac:.0%} of the oracle's headroom (mean of {me['of']} workloads; target {HEADROOM_TARGET:.0%})"))
        others = {m: means[(b, m)]["improvement"] for m in BASELINES if (b, m) in means}
        beaten = [m for m, v in others.items() if me["improvement"] <= v]
        verdicts.append(Verdict(
            "baselines", b, None if not others else not beaten,
            "no baseline was run" if not others else
            f"{method} {me['improvement']:+.2%}; " + ", ".join(f"{m} {v:+.2%}" for m, v in others.items())
            + (f" (not beaten: {', '.join(beaten)})" if beaten else "")))
        mine = [r for r in rows if r["backend"] == b and r["method"] == method]
        worst = min(mine, key=lambda r: r["improvement"])
        verdicts.append(Verdict(
            "worst", b, worst["improvement"] >= WORST_ALLOWED,
            f"worst workload {worst['workload']} {worst['improvement']:+.1%} (allowed {WORST_ALLOWED:+.0%})"))
        phased = sorted({r["workload"] for r in rows if r["backend"] == b and r["method"] == "phase_oracle"})
        static = {r["workload"]: r["improvement"] for r in rows if r["backend"] == b and r["method"] == "oracle"}
        mine_by = {r["workload"]: r["improvement"] for r in mine}
        judged = [w for w in phased if w in static and w in mine_by]
        lost = [w for w in judged if mine_by[w] <= static[w]]
        verdicts.append(Verdict(
            "phases", b, None if not judged else not lost,
            "no workload with phases" if not judged else
            "; ".join(f"{w} {mine_by[w]:+.1%} vs oracle {static[w]:+.1%}" for w in judged)))
    return verdicts


def summary_markdown(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], method: str = "hybrid") -> str:
    """The per-backend averages table and the targets table, as docs/results.md shows them."""
    shown = [m for m in methods if m != "default"]
    means = {(m["backend"], m["method"]): m for m in backend_means(rows, shown)}
    lines = ["| backend | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for b in sorted({r["backend"] for r in rows}):
        cells = []
        for m in shown:
            x = means.get((b, m))
            if x is None:
                cells.append("-")
                continue
            s = f"{x['improvement']:+.2%}"
            if x["headroom_fraction"] is not None and m not in ("oracle", "late_oracle"):
                s += f" ({x['headroom_fraction']:.0%} of {x['of']})"
            cells.append(s)
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += _reachable_lines(rows, means, method)
    lines += ["", f"| target ({method}) | backend | met | figures |", "|---|---|---|---|"]
    mark = {True: "yes", False: "**no**", None: "n/a"}
    lines += [f"| {v.target} | {v.backend} | {mark[v.met]} | {v.detail} |" for v in check_targets(rows, method)]
    return "\n".join(lines) + "\n"


def _reachable_lines(rows: Sequence[Mapping[str, Any]], means: Mapping[tuple[str, str], Mapping[str, Any]],
                     method: str) -> list[str]:
    """When the late oracle ran: per backend, the static and late oracles' means, the late oracle's
    share of the static oracle's headroom (about the most any tuner that starts under the defaults
    and measures them first can capture), and *method*'s share of each one's headroom (the
    reachable share is not a target: it says how much of the miss is out of reach)."""
    if not any(r["method"] == "late_oracle" for r in rows):
        return []

    def pct(x: Mapping[str, Any] | None) -> str:
        return "-" if x is None else f"{x['improvement']:+.2%}"

    def share(me: Mapping[str, Any] | None, frac: str, of: str) -> str:
        return "-" if me is None or me[frac] is None else f"{me[frac]:.0%} (of {me[of]})"

    lines = ["", f"| backend | oracle | late oracle (after the warm-up) | the late oracle's share of the oracle's "
             f"headroom | {method}: share of the oracle's headroom | share of the late oracle's |",
             "|---|---|---|---|---|---|"]
    for b in sorted({r["backend"] for r in rows}):
        me, late = means.get((b, method)), means.get((b, "late_oracle"))
        lines.append(f"| {b} | {pct(means.get((b, 'oracle')))} | {pct(late)} | {share(late, 'headroom_fraction', 'of')} | "
                     f"{share(me, 'headroom_fraction', 'of')} | {share(me, 'reachable_fraction', 'reachable_of')} |")
    return lines


def table_markdown(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> str:
    """One line per (backend, workload): each method's improvement, its share of the oracle's headroom
    and the intervals it took to reach 90% of its final gain (t90)."""
    def cell(r: Mapping[str, Any] | None) -> str:
        if r is None:
            return "-"
        s = f"{r['improvement']:+.1%}"
        if r["headroom_fraction"] is not None and r["method"] not in ("default", "oracle", "late_oracle"):
            s += f" ({r['headroom_fraction']:.0%})"
        if r["intervals_to_90"] is not None and r["method"] != "default" and r["method"] not in ORACLES:
            s += f" t90={r['intervals_to_90']:.0f}"
        return s
    head = "| backend | workload | " + " | ".join(methods) + " |\n|" + "---|" * (len(methods) + 2) + "\n"
    lines = []
    for b, w in sorted({(r["backend"], r["workload"]) for r in rows}):
        by = {r["method"]: r for r in rows if r["backend"] == b and r["workload"] == w}
        lines.append(f"| {b} | {w} | " + " | ".join(cell(by.get(m)) for m in methods) + " |")
    return head + "\n".join(lines) + "\n"


def render_files(paths: Sequence[Path], replace: Sequence[str] = ()) -> str:
    """The table, per-backend averages and targets of earlier ``evaluate.py --json`` files, merged
    (``merge_runs``: files of other seeds add seeds, files of the same runs add methods). This is
    how docs/results.md's table is made from the files kept beside it, so it can be checked."""
    runs = merge_runs([(p.name, read_runs(p)) for p in paths], replace)
    methods = [m for m in METHODS if any(m in r["methods"] for r in runs)]
    rows = aggregate(runs, methods)
    return table_markdown(rows, methods) + "\n" + summary_markdown(rows, methods) + sweep_markdown(runs)


def sweep_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """When the database's methods were measured on suite databases of several sweep seeds: per
    backend and method, the mean improvement on each sweep seed's database (over its workloads,
    each the mean over the seeds run on it) beside the mean the tables above show (*runs* as
    :func:`merge_runs` returns them). Empty otherwise."""
    seeds = sorted({int(s) for r in runs for m in DB_METHODS if m in r["methods"]
                    for s in r["methods"][m].get("per_sweep", {})})
    if len(seeds) < 2:
        return ""
    lines = ["", "| backend | method | " + " | ".join(f"sweep seed {s}" for s in seeds) + " | mean |",
             "|---|---|" + "---|" * (len(seeds) + 1)]
    for b in sorted({r["backend"] for r in runs}):
        for m in DB_METHODS:
            mine = [r for r in runs if r["backend"] == b and m in r["methods"]]
            if not mine:
                continue
            cells = []
            for s in [*seeds, None]:
                by_workload: dict[str, list[float]] = {}
                for r in mine:
                    res = r["methods"][m]
                    if s is None or str(s) in res["per_sweep"]:
                        by_workload.setdefault(r["workload"], []).append(
                            float(res["improvement"] if s is None else res["per_sweep"][str(s)]))
                cells.append("-" if not by_workload else
                             f"{np.mean([np.mean(v) for v in by_workload.values()]):+.2%}")
            lines.append(f"| {b} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
