"""Reading tuned and default runs back from the performance database, and pairing them.

Only :class:`~ptmt.db.storage.Storage` DataFrames are used (``tuning_runs_frame``,
``hosts_frame``, ``tuning_intervals_frame``, ``tuning_events_frame``), so anything that records
runs through the storage API (``ptmt tune --db``, ``ptmt report --run-ab``, the evaluation suite)
can be reported.

Pairing. A *pair* is one default run and one tuned run measured under the same conditions, back to
back. Runs written by ``ptmt report --run-ab`` carry the pair's id in ``settings["ab_pair"]``;
other runs (``ptmt tune --db``) are paired when backend, catalog, workload, platform, host, seed,
interval and duration agree, each tuned run with the nearest default run in time. Runs that find
no partner are kept as *unpaired* (a tuning run on a real host has no default run to compare with).

A *group* is what one row of the report compares: the pairs of one backend and workload under one
objective, platform, interval and duration. On the simulated machine a run is determined by its seed,
so two pairs with the same seed are replicates, not independent samples: only the newest counts
(the others are listed as ``replicates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ptmt.db.models import RunStatus, TuningMode
from ptmt.errors import PtmtError


class ReportError(PtmtError):
    """Nothing to report, or a filter that matches nothing."""


#: Settings that must agree for two runs without an explicit pair id to be a pair.
PAIR_SETTINGS = ("interval", "duration")

#: Columns that identify the conditions of a pair (besides the settings above).
PAIR_COLUMNS = ("backend", "catalog_hash", "workload", "platform", "host_id", "seed")


@dataclass
class Group:
    """The pairs of one backend × workload under one objective, platform, interval and duration."""

    backend: str
    workload: str
    platform: str
    objective_name: str
    objective_unit: str | None
    direction: str
    interval: float | None
    duration: float | None
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (default run, tuned run), oldest first
    replicates: list[tuple[int, int]] = field(default_factory=list)  # older same-seed sim pairs, left out

    @property
    def key(self) -> str:
        parts = [self.backend, self.workload, self.platform]
        if self.duration is not None:
            parts.append(f"{self.duration:g}s")
        return "/".join(parts)

    @property
    def default_runs(self) -> list[int]:
        return [d for d, _ in self.pairs]

    @property
    def tuned_runs(self) -> list[int]:
        return [t for _, t in self.pairs]


@dataclass
class RunSet:
    """The runs a report covers: every finished run (with its host), paired into groups."""

    url: str
    runs: pd.DataFrame  # tuning_runs_frame rows joined with hosts_frame (arch, topology, tiers)
    groups: list[Group]
    unpaired: list[int]  # finished runs without a partner

    def run(self, run_id: int) -> pd.Series:
        return self.runs.loc[self.runs["run_id"] == run_id].iloc[0]

    def means(self, group: Group) -> tuple[list[float], list[float]]:
        """Mean objective of the default and of the tuned run of each pair, in pair order."""
        mean = self.runs.set_index("run_id")["mean_objective"]
        return ([float(mean[d]) for d, _ in group.pairs], [float(mean[t]) for _, t in group.pairs])


def _setting(settings: Any, key: str) -> Any:
    return settings.get(key) if isinstance(settings, dict) else None


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None or pd.isna(value) else float(value)
    except (TypeError, ValueError):
        return None


def direction_of(run: pd.Series) -> str:
    """``max`` or ``min``: recorded in the run's settings as ``objective_direction``, else max."""
    value = _setting(run["settings"], "objective_direction")
    return value if value in ("max", "min") else "max"


def pair_runs(runs: pd.DataFrame) -> tuple[list[tuple[int, int]], list[int]]:
    """Pairs ``(default run id, tuned run id)`` among finished runs, and the ids left unpaired."""
    runs = runs[runs["status"] == RunStatus.FINISHED.value]
    runs = runs[runs["mode"].isin([TuningMode.TUNE.value, TuningMode.DEFAULT.value])]
    runs = runs[runs["mean_objective"].notna()]
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    explicit = runs["settings"].map(lambda s: _setting(s, "ab_pair"))
    for _, members in runs[explicit.notna()].groupby(explicit[explicit.notna()]):
        defaults = members[members["mode"] == TuningMode.DEFAULT.value]
        tuned = members[members["mode"] == TuningMode.TUNE.value]
        if len(defaults) == 1 and len(tuned) == 1:
            d, t = int(defaults["run_id"].iloc[0]), int(tuned["run_id"].iloc[0])
            pairs.append((d, t))
            used |= {d, t}
    rest = runs[~runs["run_id"].isin(used) & explicit.isna()]
    conditions = pd.Series(
        ["|".join([*(str(r[c]) for c in PAIR_COLUMNS), *(str(_setting(r["settings"], k)) for k in PAIR_SETTINGS)])
         for _, r in rest.iterrows()], index=rest.index, dtype=object)
    for _, members in (rest.groupby(conditions) if len(rest) else ()):
        members = members.sort_values(["started_at", "run_id"])
        defaults = members[members["mode"] == TuningMode.DEFAULT.value]
        taken: set[int] = set()
        for _, t in members[members["mode"] == TuningMode.TUNE.value].iterrows():
            free = defaults[~defaults["run_id"].isin(taken)]
            if free.empty:
                break
            gap = (free["started_at"] - t["started_at"]).abs()
            d = int(free.loc[gap.idxmin(), "run_id"])
            taken.add(d)
            pairs.append((d, int(t["run_id"])))
            used |= {d, int(t["run_id"])}
    started = runs.set_index("run_id")["started_at"]
    pairs.sort(key=lambda p: (min(started[p[0]], started[p[1]]), p[1]))
    unpaired = [int(r) for r in runs["run_id"] if int(r) not in used]
    return pairs, unpaired


def group_pairs(runs: pd.DataFrame, pairs: Sequence[tuple[int, int]]) -> list[Group]:
    """Pairs grouped by backend, workload, platform, objective, interval and duration."""
    by_id = runs.set_index("run_id")
    groups: dict[tuple[Any, ...], Group] = {}
    for d, t in pairs:
        run = by_id.loc[t]
        interval = _float_or_none(_setting(run["settings"], "interval"))
        duration = _float_or_none(_setting(run["settings"], "duration"))
        key = (run["backend"], run["workload"] or "", run["platform"], run["objective_name"],
               interval, duration)
        if key not in groups:
            groups[key] = Group(backend=str(run["backend"]), workload=str(run["workload"] or "(unnamed)"),
                                platform=str(run["platform"]), objective_name=str(run["objective_name"]),
                                objective_unit=run["objective_unit"], direction=direction_of(run),
                                interval=interval, duration=duration)
        groups[key].pairs.append((d, t))
    for g in groups.values():
        if g.platform != "sim":
            continue
        newest: dict[Any, tuple[int, int]] = {}
        for d, t in g.pairs:  # oldest first: a later pair of the same seed replaces an earlier one
            seed = by_id.loc[t, "seed"]
            if not pd.isna(seed) and int(seed) in newest:
                g.replicates.append(newest[int(seed)])
            newest[None if pd.isna(seed) else int(seed)] = (d, t)
        g.pairs = [p for p in g.pairs if p not in g.replicates]
    return sorted(groups.values(), key=lambda g: (g.backend, g.workload, g.platform, g.duration or 0.0))


def load_runs(storage: Any, backend: str | None = None, workload: str | None = None) -> RunSet:
    """The runs of *storage* (optionally of one backend and workload), paired and grouped.

    Raises :class:`ReportError` naming what the database does hold when nothing matches.
    """
    everything = storage.tuning_runs_frame()
    if everything.empty:
        raise ReportError(f"no tuning runs in {storage.url}; record some with `ptmt tune --db URL` "
                          "or `ptmt report --run-ab --backend B --workload W --db URL`")
    runs = everything
    if backend is not None:
        runs = runs[runs["backend"] == backend]
        if runs.empty:
            held = ", ".join(sorted(set(everything["backend"])))
            raise ReportError(f"no tuning runs of backend {backend!r} in {storage.url} "
                              f"(it holds runs of: {held})")
    if workload is not None:
        scoped = runs
        runs = runs[runs["workload"] == workload]
        if runs.empty:
            held = ", ".join(sorted({str(w) for w in scoped["workload"] if w is not None})) or "none named"
            scope = f" of backend {backend!r}" if backend is not None else ""
            raise ReportError(f"no tuning runs{scope} on workload {workload!r} in {storage.url} "
                              f"(workloads: {held})")
    hosts = storage.hosts_frame()[["host_id", "arch", "topology", "tiers", "perf_available"]]
    runs = runs.merge(hosts, on="host_id", how="left").reset_index(drop=True)
    pairs, unpaired = pair_runs(runs)
    return RunSet(url=storage.url, runs=runs, groups=group_pairs(runs, pairs), unpaired=unpaired)


def run_history(storage: Any, run_ids: Sequence[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Intervals (with ``knob.*`` columns) and events of these runs."""
    if not run_ids:
        return pd.DataFrame(), pd.DataFrame()
    ids = [int(r) for r in run_ids]
    return storage.tuning_intervals_frame(ids), storage.tuning_events_frame(ids)
