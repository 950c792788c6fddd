"""The configurations other workloads' studies found best, planned as a study of one more workload.

A sweep that gathers where one workload gains (``--strategy tpe``) measures that workload's best
configurations on that workload only. The query model can advise a configuration only for the
workloads that measured it, so a configuration that is good nearly everywhere stays invisible when
one workload's search happened to find it: on the simulated tpp, the one configuration that npb-mg's
sweep found measures +5.4% averaged over the suite's 13 workloads (900 s each, seeds 0-2), where the
hybrid reached +2.45% on a database without shared studies, and +3.64% with them
(docs/results-history.md, "A shared study per workload").

``ptmt profile --strategy shared`` measures, on the workload it profiles, the best configurations
the database's other workloads found: each workload's best first, then each one's second best, and
so on, only configurations that beat that workload's defaults, the defaults first, *budget* in all.

Its trials are tagged with the strategy ``shared``, and a configuration counts as found by a
workload only through that workload's own studies: ``ptmt.offline.suite_db.leave_one_out`` drops
the shared trials of configurations only the left-out workload's own sweep had measured, so no
held-out workload's search leaks into its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ptmt.catalog import Catalog, Value
from ptmt.db.canonical import config_hash, normalize
from ptmt.errors import PtmtError
from ptmt.offline.analyze import KNOB_PREFIX, AnalysisError, load_trials
from ptmt.offline.sampling import Sampler

#: the strategy name of such studies (``ptmt profile --strategy shared``)
SHARED = "shared"


def shared_configurations(db: Any, catalog: Catalog, workload: str, budget: int,
                          knobs: Sequence[str]) -> list[dict[str, Value]]:
    """The plan of a ``shared`` study of *workload*: the defaults, then the other workloads' best
    configurations round by round (best of each, then second best of each, ...), *budget* in all
    or fewer when the others found fewer configurations that beat their defaults.

    Raises :class:`PtmtError` when the database holds no other workload's finished trials of this
    backend and catalog, naming what to do."""
    try:
        trials = load_trials(db, catalog.name, catalog_hash=catalog.hash)
        own = trials[(trials["workload"] != workload) & (trials["strategy"] != SHARED)]
    except AnalysisError:
        own = pd.DataFrame()
    if own.empty:
        raise PtmtError(f"--strategy shared measures the configurations other workloads' studies found best, and "
                        f"the database holds no finished trial of backend {catalog.name} (catalog {catalog.hash}) "
                        f"for a workload other than {workload!r}: profile other workloads first")
    sampler = Sampler(catalog, knobs)
    defaults = sampler.default()
    default_key = config_hash(normalize(defaults))
    rankings = [_ranking(g, default_key, knobs) for _, g in sorted(own.groupby("workload"))]
    plan: list[dict[str, Value]] = [defaults]
    seen = {default_key}
    for rank in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if len(plan) >= budget:
                return plan
            if rank >= len(ranking) or any(pd.isna(ranking[rank][k]) for k in knobs):
                continue  # that workload found no more, or its study lacked a knob this host has
            cfg = {k: catalog.knobs[k].coerce(ranking[rank][k]) for k in knobs}
            key = config_hash(normalize(cfg))
            if key not in seen and sampler.valid(cfg):
                seen.add(key)
                plan.append(cfg)
    return plan


def _ranking(trials: pd.DataFrame, default_hash: str, knobs: Sequence[str]) -> list[dict[str, Any]]:
    """One workload's configurations that beat its defaults, best first (mean over repetitions)."""
    perf = trials.groupby("config_hash")["perf"].mean()
    if default_hash not in perf.index:
        return []  # nothing to say which of its configurations gained
    better = perf[perf > perf[default_hash]].sort_values(ascending=False, kind="stable")
    first = trials.drop_duplicates("config_hash").set_index("config_hash")
    return [{k: first.at[h, KNOB_PREFIX + k] for k in knobs} for h in better.index]


def found_by(table: pd.DataFrame) -> dict[str, set[str]]:
    """Per configuration hash: the workloads whose own studies (not ``shared`` ones) measured it."""
    own = table[table["strategy"] != SHARED]
    return {h: set(g["workload"]) for h, g in own.groupby("config_hash")}
