"""The report as one self-contained HTML file: inline CSS, plots as base64 PNG ``data:`` URIs,
no script and no network reference; every piece of text from the database is escaped."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from ptmt.report import plots
from ptmt.report.report import Report
from ptmt.report.table import ci_text, num, pct

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.better { color: #137333; font-weight: bold; } .worse { color: #c5221f; font-weight: bold; }
.nodiff { color: #b06000; } .few { color: #777; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""

_VERDICT_CLASS = {"better": "better", "worse": "worse", "no significant difference": "nodiff",
                  "not enough runs": "few"}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], *, raw: bool = False) -> str:
    """A table; cells are escaped unless *raw* (cells already built from escaped parts)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def render_html(report: Report) -> str:
    parts = [f"<h1>PTMT report</h1><p class=note>database {_e(report.url)}; generated "
             f"{_e(report.generated_at.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>", "<h2>Tuned vs default</h2>"]
    rows = []
    for gr in report.groups:
        g, c = gr.group, gr.comparison
        unit = f" {g.objective_unit}" if g.objective_unit else ""
        verdict = f'<span class="{_VERDICT_CLASS.get(c.verdict, "")}">{_e(c.verdict)}</span>'
        rows.append([_e(g.backend), _e(g.workload), _e(g.platform),
                     _e("-" if g.duration is None else f"{g.duration:g} s"), _e(c.n),
                     _e(num(c.default_mean) + unit), _e(num(c.tuned_mean) + unit), _e(pct(c.improvement)),
                     _e(ci_text(c)), _e("-" if c.effect_size is None else f"{c.effect_size:+.2f}"),
                     _e(pct(c.noise_floor, signed=False)), verdict, _e(c.note)])
    parts.append(_table(["backend", "workload", "platform", "duration", "n", "default", "tuned", "improvement",
                         "95% CI", "effect (Hedges' g)", "noise floor", "verdict", "note"], rows, raw=True))
    parts.append("<p class=note>improvement: mean over pairs of tuned/default &minus; 1 (each pair: the same "
                 "seed, measured back to back); CI: bootstrap over pairs; noise floor: run-to-run coefficient "
                 "of variation of the default runs.</p>")
    parts.append(_img(plots.improvement_plot(report), "improvement per workload"))
    if report.unpaired:
        parts.append(f"<p class=note>runs without a partner to compare with: "
                     f"{_e(', '.join(map(str, report.unpaired)))}</p>")
    for gr in report.groups:
        g = gr.group
        parts.append(f"<h2>{_e(g.backend)} / {_e(g.workload)} ({_e(g.platform)})</h2>")
        if g.replicates:
            runs = ", ".join(f"{d}/{t}" for d, t in g.replicates)
            parts.append(f"<p class=note>left out as replicates of a newer pair with the same seed "
                         f"(default/tuned runs): {_e(runs)}</p>")
        parts.append(_table(["pair", "seed", "default run", "tuned run", "default", "tuned", "improvement"],
                            [[i + 1, p["seed"], p["default_run"], p["tuned_run"], num(p["default_mean"]),
                              num(p["tuned_mean"]), pct(p["improvement"])] for i, p in enumerate(gr.pairs)]))
        parts.append(_img(plots.objective_plot(report, gr), f"objective over time, {g.backend}/{g.workload}"))
        parts.append(_img(plots.knob_plot(report, gr), f"knob values over time, {g.backend}/{g.workload}"))
        for run_id, events in gr.events.items():
            parts.append(f"<h3>Tuning history of run {_e(run_id)}</h3>")
            parts.append(_table(["t (s)", "kind", "knob", "old", "new", "reason"],
                                [[f"{e['t_s']:g}", e["kind"], e["knob"] or "", e["old"] or "", e["new"] or "",
                                  e["reason"]] for e in events]) if events else "<p class=note>no events</p>")
    if report.sensitivity:
        parts.append("<h2>Knob sensitivity</h2>")
        for key, sens in report.sensitivity.items():
            parts.append(f"<h3>{_e(key)}</h3>")
            if "error" in sens:
                parts.append(f"<p class=note>not available: {_e(sens['error'])}</p>")
                continue
            parts.append(f"<p class=note>profiling trials of {_e(sens.get('scope'))}: {_e(sens['n_trials'])} "
                         f"trials; {_e(sens['method'])}</p>")
            parts.append(_table(["#", "knob", "importance", "effect", "direction", "best", "significant"],
                                [[i, k["knob"], f"{k['importance']:.3f} ± {k['importance_std']:.3f}",
                                  pct(k["effect"], signed=False), k["direction"], k["best_value"],
                                  "yes" if k["significant"] else "no"] for i, k in enumerate(sens["knobs"], 1)]))
    parts.append("<h2>Provenance</h2>")
    prov = report.provenance()
    parts.append(_table(["run", "token", "mode", "status", "backend", "workload", "platform", "started", "finished",
                         "host", "kernel", "arch", "topology", "tiers", "catalog hash", "ptmt", "seed",
                         "interval (s)", "duration (s)", "label", "mean objective"],
                        [[r["run_id"], r["token"], r["mode"], r["status"], r["backend"], r["workload"], r["platform"],
                          r["started_at"], r["finished_at"], r["host"], r["kernel"], r["arch"] or "", r["topology"],
                          r["tiers"], r["catalog_hash"], r["ptmt_version"], r["seed"], r["interval_s"],
                          r["duration_s"], r["label"] or "", num(r["mean_objective"])] for r in prov]))
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>PTMT report</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
