"""The report's plots (matplotlib, Agg backend, PNG bytes): objective over time default vs tuned,
knob values over time with change and revert markers, improvement per workload with its interval."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ptmt.report.report import GroupReport, Report  # noqa: E402

KNOB_PREFIX = "knob."
_MARKERS = {"revert": ("x", "tab:red"), "keep": ("o", "tab:green"), "reject": ("v", "tab:orange"),
            "model": ("*", "tab:purple"), "explore": ("^", "tab:blue")}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _series(intervals: pd.DataFrame, run_id: int) -> pd.DataFrame:
    if intervals.empty:
        return intervals
    return intervals[intervals["run_id"] == run_id].sort_values("seq")


def objective_plot(report: Report, gr: GroupReport) -> bytes:
    """Objective per interval of the newest pair: the default run and the tuned run."""
    d, t = gr.latest
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for run, name, style in ((d, "default", {"color": "tab:gray"}), (t, "tuned", {"color": "tab:blue"})):
        s = _series(report.intervals, run)
        if not s.empty:
            ax.plot(s["t_s"], s["objective"], label=f"{name} (run {run})", lw=1.2, **style)
    unit = gr.group.objective_unit or ""
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{gr.group.objective_name} {unit}".strip())
    ax.set_title(f"{gr.group.backend} / {gr.group.workload}: objective over time")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def knob_plot(report: Report, gr: GroupReport) -> bytes | None:
    """Each knob the tuned run moved, over time, with its change and revert events marked."""
    t = gr.latest[1]
    s = _series(report.intervals, t)
    if s.empty:
        return None
    knobs = [c for c in s.columns if c.startswith(KNOB_PREFIX) and s[c].nunique(dropna=True) > 1]
    if not knobs:
        return None
    events = gr.events.get(t, [])
    fig, axes = plt.subplots(len(knobs), 1, figsize=(8, 1.6 * len(knobs) + 0.6), sharex=True, squeeze=False)
    for ax, col in zip(axes[:, 0], knobs, strict=True):
        name = col[len(KNOB_PREFIX):]
        values = s[col]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            y = numeric.astype(float)
        else:  # booleans and words: one level per distinct value
            levels = {v: i for i, v in enumerate(sorted(values.astype(str).unique()))}
            y = values.astype(str).map(levels).astype(float)
            ax.set_yticks(list(levels.values()), list(levels.keys()))
        ax.step(s["t_s"], y, where="post", lw=1.2, color="tab:blue")
        if numeric.notna().all() and (numeric > 0).all() and numeric.max() / numeric.min() >= 50:
            ax.set_yscale("log")
        for e in events:
            if e["knob"] != name or e["kind"] not in _MARKERS:
                continue
            marker, color = _MARKERS[e["kind"]]
            at = s[s["t_s"] >= e["t_s"]]
            yv = y.loc[at.index[0]] if not at.empty else y.iloc[-1]
            ax.plot([e["t_s"]], [yv], marker=marker, color=color, ls="none", ms=7)
        ax.set_ylabel(name, fontsize=8, rotation=0, ha="right")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [plt.Line2D([], [], marker=m, color=c, ls="none", label=k) for k, (m, c) in _MARKERS.items()]
    axes[0, 0].legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7,
                      ncol=len(handles), frameon=False)
    axes[0, 0].set_title(f"{gr.group.backend} / {gr.group.workload}: knob values of tuned run {t}", pad=18)
    return _png(fig)


def improvement_plot(report: Report) -> bytes | None:
    """Improvement per group with its confidence interval (a bare point where n=1)."""
    if not report.groups:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(report.groups) + 1.4))
    ys = np.arange(len(report.groups))
    for y, gr in zip(ys, report.groups, strict=True):
        c = gr.comparison
        x = 100 * c.improvement
        if c.has_ci:
            err = [[x - 100 * c.ci_low], [100 * c.ci_high - x]]
            ax.errorbar([x], [y], xerr=err, fmt="o", color="tab:blue", capsize=4)
        else:
            ax.plot([x], [y], "o", mfc="white", color="tab:gray")
        ax.annotate(f"n={c.n}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys, [f"{gr.group.backend}/{gr.group.workload}" for gr in report.groups])
    ax.invert_yaxis()
    ax.set_xlabel("improvement over default (%), 95% bootstrap CI")
    ax.set_title("Tuned vs default per workload")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)
