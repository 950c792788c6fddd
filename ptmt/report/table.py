"""The report in the terminal: rich tables (comparison, tuning history, sensitivity, provenance)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from ptmt.report.report import CHANGE_KINDS, Report
from ptmt.report.stats import BETTER, NO_DIFFERENCE, NOT_ENOUGH, WORSE

#: Events shown per tuned run in the terminal (the JSON and HTML reports hold them all).
MAX_EVENTS = 25

_STYLE = {BETTER: "green", WORSE: "red", NO_DIFFERENCE: "yellow", NOT_ENOUGH: "dim"}


def pct(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.1f}%" if signed else f"{100 * x:.1f}%"


def ci_text(c: Any) -> str:
    if not c.has_ci:
        return "n/a (n=1)" if c.n == 1 else "n/a"
    return f"[{pct(c.ci_low)}, {pct(c.ci_high)}]"


def num(x: float | None) -> str:
    """A measurement in 4 significant digits, with k/M/G/T for large values (228.3M)."""
    if x is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.4g}{suffix}"
    return f"{x:.4g}"


def comparison_table(report: Report) -> Table:
    units = sorted({f"{g.group.objective_name} ({g.group.objective_unit})" if g.group.objective_unit
                    else g.group.objective_name for g in report.groups})
    fixed = {"no_wrap": True, "justify": "right"}
    t = Table(Column("backend/workload", overflow="fold", min_width=16), Column("n", **fixed),
              Column("default", **fixed), Column("tuned", **fixed), Column("gain", **fixed),
              Column("95% CI", no_wrap=True), Column("g", **fixed), Column("noise", **fixed),
              Column("verdict", overflow="fold", min_width=7), box=box.SIMPLE_HEAD, collapse_padding=True,
              pad_edge=False, title=f"Tuned vs default, mean objective per run: {', '.join(units)}",
              title_justify="left")
    for gr in report.groups:
        g, c = gr.group, gr.comparison
        run = ("" if g.platform == "sim" else f"{g.platform} ") + ("" if g.duration is None else f"{g.duration:g}s")
        t.add_row(f"{g.backend}/{g.workload} {run}".strip(), str(c.n), num(c.default_mean), num(c.tuned_mean),
                  pct(c.improvement), ci_text(c), "-" if c.effect_size is None else f"{c.effect_size:+.2f}",
                  pct(c.noise_floor, signed=False), Text(c.verdict, style=_STYLE.get(c.verdict, "")))
    return t


def history_table(report: Report, gr: Any) -> Table:
    tuned = gr.latest[1]
    events = gr.events.get(tuned, [])
    changes = sum(1 for e in events if e["kind"] in CHANGE_KINDS and e["knob"] is not None)
    reverts = len({e["n"] for e in events if e["kind"] == "revert"})
    t = Table("t (s)", "kind", "knob", "old → new", Column("reason", ratio=1),
              title=f"Tuning history of run {tuned} ({gr.group.backend}/{gr.group.workload}, newest pair): "
                    f"{changes} knob change(s), {reverts} revert(s)", title_justify="left")
    for e in events[:MAX_EVENTS]:
        move = f"{e['old']} → {e['new']}" if e["knob"] is not None else ""
        t.add_row(f"{e['t_s']:g}", e["kind"], e["knob"] or "", move, Text(e["reason"]))
    if len(events) > MAX_EVENTS:
        t.add_row("…", "", "", "", f"{len(events) - MAX_EVENTS} more (see --format html or json)")
    return t


def sensitivity_table(key: str, sens: dict[str, Any]) -> Table | str:
    if "error" in sens:
        return f"sensitivity ranking for {key}: not available ({sens['error']})"
    t = Table("#", "knob", "importance", "effect", "direction", "best", "significant",
              title=f"Knob sensitivity for {key} (profiling trials of {sens.get('scope')}: "
                    f"{sens['n_trials']} trials)", title_justify="left")
    for i, k in enumerate(sens["knobs"], 1):
        t.add_row(str(i), k["knob"], f"{k['importance']:.3f} ± {k['importance_std']:.3f}",
                  pct(k["effect"], signed=False), k["direction"], str(k["best_value"]),
                  "yes" if k["significant"] else "no")
    return t


ENV_KEYS = ("platform", "host", "kernel", "arch", "topology", "catalog_hash", "ptmt_version")


def environments(report: Report) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The distinct measurement environments, and each run's environment number (from 1)."""
    envs: list[dict[str, Any]] = []
    of_run: dict[int, int] = {}
    for r in report.provenance():
        env = {k: r[k] for k in ENV_KEYS}
        if env not in envs:
            envs.append(env)
        of_run[r["run_id"]] = envs.index(env) + 1
    return envs, of_run


def provenance_tables(report: Report) -> tuple[Table, Table]:
    envs, of_run = environments(report)
    e = Table("env", "host", "kernel", "topology", "catalog", "ptmt", title="Where the runs were measured",
              title_justify="left")
    for i, env in enumerate(envs, 1):
        e.add_row(str(i), env["host"], env["kernel"], Text(env["topology"]), (env["catalog_hash"] or "")[:12],
                  env["ptmt_version"])
    t = Table("run", "mode", "backend/workload", "started (UTC)", "seed", "mean", "env",
              title="Provenance of every run", title_justify="left")
    for r in report.provenance():
        t.add_row(str(r["run_id"]), r["mode"], f"{r['backend']}/{r['workload']}",
                  (r["started_at"] or "-")[5:19].replace("T", " "), "-" if r["seed"] is None else str(r["seed"]),
                  num(r["mean_objective"]), str(of_run[r["run_id"]]))
    return t, e


def print_report(report: Report, console: Console) -> None:
    console.print(comparison_table(report))
    for gr in report.groups:
        if gr.comparison.note:
            console.print(f"{gr.group.key}: {gr.comparison.note}", markup=False)
        if gr.group.replicates:
            console.print(f"{gr.group.key}: {len(gr.group.replicates)} older pair(s) repeat a seed of a newer one "
                          "(replicates on the simulated machine, left out of the statistics)", markup=False)
    if report.unpaired:
        console.print(f"runs without a partner to compare with (not in the table): "
                      f"{', '.join(map(str, report.unpaired))}", markup=False)
    for gr in report.groups:
        console.print(history_table(report, gr))
    for key, sens in report.sensitivity.items():
        table = sensitivity_table(key, sens)
        console.print(table, markup=False) if isinstance(table, str) else console.print(table)
    runs, envs = provenance_tables(report)
    console.print(runs)
    console.print(envs)
    console.print("gain: mean over pairs of tuned/default - 1; CI: bootstrap over pairs; g: Hedges' g; "
                  "noise: run-to-run CV of the default runs (docs/report.md)", markup=False)
