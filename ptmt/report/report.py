"""The report itself: per group the comparison, the pairs, the tuning history, the sensitivity
ranking and the provenance of every run, as one structure that the table, JSON and HTML outputs
render (``Report.as_dict`` is the JSON document, docs/report.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from ptmt.report.data import Group, ReportError, RunSet, load_runs, run_history
from ptmt.report.stats import Comparison, compare

#: Event kinds that move a knob or judge a move (the rest: phase changes and errors).
CHANGE_KINDS = ("model", "explore", "revert")


@dataclass
class GroupReport:
    group: Group
    comparison: Comparison
    pairs: list[dict[str, Any]]
    events: dict[int, list[dict[str, Any]]]  # tuned run id -> its events in order
    latest: tuple[int, int]  # the newest pair (default run, tuned run): the one plotted

    def as_dict(self) -> dict[str, Any]:
        g = self.group
        return {"backend": g.backend, "workload": g.workload, "platform": g.platform,
                "objective": g.objective_name, "objective_unit": g.objective_unit,
                "direction": g.direction, "interval_s": g.interval, "duration_s": g.duration,
                "comparison": self.comparison.as_dict(), "pairs": self.pairs,
                "history": [{"run_id": rid, "events": evs} for rid, evs in self.events.items()],
                "latest_pair": {"default_run": self.latest[0], "tuned_run": self.latest[1]},
                "replicates_left_out": [{"default_run": d, "tuned_run": t} for d, t in g.replicates]}


@dataclass
class Report:
    url: str
    generated_at: datetime
    groups: list[GroupReport]
    runs: pd.DataFrame  # every run the report mentions (RunSet.runs)
    unpaired: list[int]
    sensitivity: dict[str, dict[str, Any]]  # "backend/workload" -> Sensitivity.as_dict() or {"error": why}
    intervals: pd.DataFrame = field(default_factory=pd.DataFrame)  # of the runs in groups, knob.* columns

    def provenance(self) -> list[dict[str, Any]]:
        """Where and with what every run was measured, oldest first."""
        rows = []
        for _, r in self.runs.sort_values(["started_at", "run_id"]).iterrows():
            settings = r["settings"] if isinstance(r["settings"], dict) else {}
            rows.append({
                "run_id": int(r["run_id"]), "token": r["token"], "mode": r["mode"], "status": r["status"],
                "backend": r["backend"], "workload": r["workload"], "platform": r["platform"],
                "started_at": _iso(r["started_at"]), "finished_at": _iso(r["finished_at"]),
                "host": r["host"], "kernel": r["kernel"], "arch": _none(r.get("arch")),
                "topology": topology_summary(r.get("topology")), "tiers": _none(r.get("tiers")),
                "catalog_hash": r["catalog_hash"], "ptmt_version": r["ptmt_version"],
                "seed": None if pd.isna(r["seed"]) else int(r["seed"]), "label": _none(r["label"]),
                "interval_s": settings.get("interval"), "duration_s": settings.get("duration"),
                "mean_objective": _num(r["mean_objective"]), "intervals": int(r["intervals"])})
        return rows

    def as_dict(self) -> dict[str, Any]:
        from ptmt import __version__

        return {"database": self.url, "generated_at": self.generated_at.isoformat(),
                "ptmt_version": __version__, "groups": [g.as_dict() for g in self.groups],
                "unpaired_runs": self.unpaired, "sensitivity": self.sensitivity,
                "runs": self.provenance()}


def _iso(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


def _none(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def topology_summary(topology: Any) -> str:
    """One line for a host's topology: the simulated machine's description, or the real nodes."""
    if not isinstance(topology, dict) or not topology:
        return "unknown"
    if topology.get("description"):
        return str(topology["description"])
    nodes = topology.get("nodes")
    if isinstance(nodes, list) and nodes:
        parts = []
        for n in nodes:
            if not isinstance(n, dict):
                continue
            kb = n.get("mem_total_kb")
            size = f"{kb / 2**20:.0f} GiB" if isinstance(kb, (int, float)) else "? GiB"
            cpus = n.get("cpus") or []
            parts.append(f"node{n.get('id', '?')} {size}, {len(cpus)} CPUs, tier {n.get('tier', '?')}")
        return "; ".join(parts) or "unknown"
    return ", ".join(f"{k}={v}" for k, v in sorted(topology.items()) if not isinstance(v, (dict, list)))


def _events(frame: pd.DataFrame, run_id: int) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    rows = frame[frame["run_id"] == run_id]
    return [{"n": int(e["n"]), "seq": int(e["seq"]), "t_s": float(e["t_s"]), "kind": e["kind"],
             "knob": _none(e["knob"]), "old": _none(e["old"]), "new": _none(e["new"]), "reason": e["reason"]}
            for _, e in rows.iterrows()]


def _sensitivity(storage: Any, backend: str, workload: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``ptmt analyze`` of the profiling trials of this workload, else of the backend's, else why not."""
    from ptmt.catalog import load_catalog
    from ptmt.errors import PtmtError
    from ptmt.offline.analyze import analyze

    try:
        catalog = load_catalog(backend)
    except PtmtError:
        catalog = None
    errors = []
    for scope in (workload, None):
        key = f"{backend}/{scope or '*'}"
        if key not in cache:
            try:
                cache[key] = {"scope": scope or "all workloads",
                              **analyze(storage, backend, scope, catalog=catalog).as_dict()}
            except PtmtError as exc:
                cache[key] = {"error": str(exc)}
        if "error" not in cache[key]:
            return cache[key]
        errors.append(cache[key]["error"])
    return {"error": errors[-1] if errors else "no profiling trials"}


def build_report(storage: Any, backend: str | None = None, workload: str | None = None, *,
                 sensitivity: bool = True, seed: int = 0) -> Report:
    """Read, pair and compare the runs of *storage*; see :mod:`ptmt.report.data` for the pairing."""
    runset: RunSet = load_runs(storage, backend, workload)
    in_groups = [r for g in runset.groups for p in g.pairs for r in p]
    intervals, events = run_history(storage, in_groups)
    groups = []
    cache: dict[str, dict[str, Any]] = {}
    sens: dict[str, dict[str, Any]] = {}
    by_id = runset.runs.set_index("run_id")
    for g in runset.groups:
        default, tuned = runset.means(g)
        try:
            comparison = compare(default, tuned, direction=g.direction, seed=seed)
        except ValueError as exc:  # e.g. an objective that is not positive: no ratio to speak of
            raise ReportError(f"{g.key} (runs {', '.join(f'{d}/{t}' for d, t in g.pairs)}): {exc}") from None
        pairs = []
        for (d, t), dm, tm in zip(g.pairs, default, tuned, strict=True):
            seed_value = by_id.loc[t, "seed"]
            pairs.append({"default_run": d, "tuned_run": t, "seed": None if pd.isna(seed_value) else int(seed_value),
                          "default_mean": dm, "tuned_mean": tm,
                          "improvement": (tm / dm - 1.0) if g.direction == "max" else (dm / tm - 1.0)})
        groups.append(GroupReport(group=g, comparison=comparison, pairs=pairs,
                                  events={t: _events(events, t) for t in g.tuned_runs}, latest=g.pairs[-1]))
        if sensitivity:
            sens[f"{g.backend}/{g.workload}"] = _sensitivity(storage, g.backend, g.workload, cache)
    return Report(url=runset.url, generated_at=datetime.now(UTC), groups=groups, runs=runset.runs,
                  unpaired=runset.unpaired, sensitivity=sens, intervals=intervals)
