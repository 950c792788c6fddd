"""Sensitivity analysis: which knobs move the objective, in which direction, and their best value.

Method: a random-forest surrogate of the objective as a function of the knob values is fitted on
the finished trials; each knob's importance is its *permutation importance* on held-out folds
(K-fold cross-validation, each knob's column shuffled several times): how much the surrogate's
squared error grows when that knob's information is destroyed, as a share of the objective's
variance. Held-out scoring keeps a noisy knob from looking important because the forest memorised
noise. Direction and best value come from the surrogate's partial dependence (the mean prediction
with the knob forced to each of its measured values).

Repetitions and noise: every repetition is one training row (the forest averages them); the
noise floor is the pooled standard deviation between repetitions of one configuration, and a knob
is *significant* when its importance is clearly above zero (mean > 2 standard errors over folds
and repeats) and its partial-dependence effect exceeds the noise floor's standard error.

Objectives are made "higher is better" (``1/x`` for studies whose direction is ``min``), and,
when several workloads are pooled, divided by each workload's median so that their scales mix;
the workload then enters the surrogate as an extra categorical input, so interactions survive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ptmt.errors import PtmtError

KNOB_PREFIX = "knob."


class AnalysisError(PtmtError):
    """Not enough (or unusable) data to analyse."""


# ---------------------------------------------------------------------------------- data loading

def load_trials(db: Any, backend: str, workload: str | None = None, *,
                catalog_hash: str | None = None) -> pd.DataFrame:
    """Finished trials of a backend (optionally one workload) with a ``perf`` column that is
    higher-is-better (``1/objective`` for ``min`` studies) and the study's catalog hash.

    Only studies recorded with *catalog_hash* are kept when it is given; a database whose studies
    all use another catalog version raises :class:`AnalysisError` naming the hashes it holds.
    """
    studies = db.studies_frame()
    studies = studies[studies["backend"] == backend]
    if workload is not None:
        studies = studies[studies["workload"] == workload]
    if studies.empty:
        what = f"backend {backend}" + (f", workload {workload}" if workload else "")
        raise AnalysisError(f"no studies of {what} in {db.url}; run `ptmt profile` first")
    if catalog_hash is not None:
        matching = studies[studies["catalog_hash"] == catalog_hash]
        if matching.empty:
            found = ", ".join(sorted(set(studies["catalog_hash"])))
            raise AnalysisError(
                f"the studies of backend {backend} were recorded with catalog hash {found}, "
                f"not the current {catalog_hash}; profile again with this catalog")
        studies = matching
    frames = []
    for sid in studies["study_id"]:
        t = db.trials_frame(int(sid), status="done")
        if not t.empty:
            frames.append(t)
    if not frames:
        raise AnalysisError(f"no finished trials for backend {backend}"
                            + (f", workload {workload}" if workload else ""))
    trials = pd.concat(frames, ignore_index=True)
    trials = trials[np.isfinite(pd.to_numeric(trials["objective"], errors="coerce"))].copy()
    direction = studies.set_index("study_id")["objective_direction"].fillna("max")
    trials["direction"] = trials["study_id"].map(direction).fillna("max")
    trials["catalog_hash"] = trials["study_id"].map(studies.set_index("study_id")["catalog_hash"])
    obj = trials["objective"].astype(float)
    minimise = trials["direction"] == "min"
    if (minimise & (obj <= 0)).any():
        raise AnalysisError("a study to minimise has non-positive objective values")
    trials["perf"] = np.where(minimise, 1.0 / obj.where(obj != 0, np.nan), obj)
    trials = trials[np.isfinite(trials["perf"])].reset_index(drop=True)
    if trials.empty:
        raise AnalysisError(f"no finished trials with an objective for backend {backend}")
    return trials


def knob_columns(trials: pd.DataFrame, knobs: Sequence[str] | None = None) -> list[str]:
    """Knob names present as ``knob.<name>`` columns (restricted to *knobs* when given)."""
    present = [c[len(KNOB_PREFIX):] for c in trials.columns if c.startswith(KNOB_PREFIX)]
    if knobs is None:
        return present
    return [k for k in knobs if k in present]


@dataclass
class KnobEncoder:
    """Knob values -> numbers for the surrogate: numbers as they are, booleans 0/1, anything else
    the index of the value in a fixed, sorted list."""

    knobs: list[str]
    categories: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def fit(cls, trials: pd.DataFrame, knobs: Sequence[str]) -> KnobEncoder:
        cats: dict[str, list[Any]] = {}
        for k in knobs:
            col = trials[KNOB_PREFIX + k]
            if not _numeric(col):
                cats[k] = sorted({_key(v) for v in col.dropna()}, key=str)
        return cls(list(knobs), cats)

    def encode_value(self, knob: str, value: Any) -> float:
        if knob in self.categories:
            key = _key(value)
            return float(self.categories[knob].index(key)) if key in self.categories[knob] else np.nan
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return np.nan
        return float(value)

    def transform(self, frame: pd.DataFrame, prefix: str = KNOB_PREFIX) -> np.ndarray:
        cols = []
        for k in self.knobs:
            col = frame[prefix + k]
            if k in self.categories:
                cols.append(np.array([self.encode_value(k, v) for v in col], float))
            else:
                cols.append(pd.to_numeric(col.map(lambda v: float(v) if isinstance(v, bool) else v),
                                          errors="coerce").to_numpy(float))
        return np.column_stack(cols) if cols else np.empty((len(frame), 0))


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _numeric(col: pd.Series) -> bool:
    values = col.dropna()
    return all(isinstance(v, (bool, int, float, np.integer, np.floating)) for v in values)


# ---------------------------------------------------------------------------------- analysis

@dataclass
class KnobSensitivity:
    knob: str
    importance: float  # increase of squared error when permuted, share of the objective's variance
    importance_std: float  # standard error over folds and repeats
    effect: float  # max - min of the partial dependence, relative to the mean objective
    direction: str  # "higher is better", "lower is better", "on is better", "non-monotonic", ...
    best_value: Any
    default_value: Any
    significant: bool
    values: list[Any] = field(default_factory=list)
    partial_dependence: list[float] = field(default_factory=list)  # relative to the mean objective

    def as_dict(self) -> dict[str, Any]:
        return {"knob": self.knob, "importance": self.importance,
                "importance_std": self.importance_std, "effect": self.effect,
                "direction": self.direction, "best_value": _json(self.best_value),
                "default_value": _json(self.default_value), "significant": self.significant,
                "values": [_json(v) for v in self.values],
                "partial_dependence": self.partial_dependence}


@dataclass
class Sensitivity:
    backend: str
    workloads: list[str]
    method: str
    n_trials: int
    n_configurations: int
    surrogate_r2: float  # cross-validated R² of the surrogate
    noise_cv: float | None  # pooled within-configuration std / mean (None without repetitions)
    knobs: list[KnobSensitivity]
    not_varied: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "workloads": self.workloads, "method": self.method,
                "n_trials": self.n_trials, "n_configurations": self.n_configurations,
                "surrogate_r2": self.surrogate_r2, "noise_cv": self.noise_cv,
                "knobs": [k.as_dict() for k in self.knobs], "not_varied": self.not_varied}

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([k.as_dict() for k in self.knobs])


METHOD = ("permutation importance of a random-forest surrogate on held-out folds "
          "(sklearn RandomForestRegressor + permutation_importance, K-fold CV)")


def _json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return v


def relative_perf(trials: pd.DataFrame) -> np.ndarray:
    """``perf`` divided by its workload's median: pooled workloads on one scale."""
    med = trials.groupby("workload")["perf"].transform("median")
    return (trials["perf"] / med.where(med != 0, 1.0)).to_numpy(float)


def _noise(trials: pd.DataFrame, y: np.ndarray) -> float | None:
    frame = pd.DataFrame({"w": trials["workload"].to_numpy(), "c": trials["config_hash"].to_numpy(),
                          "y": y})
    g = frame.groupby(["w", "c"])["y"]
    n = g.count()
    var = g.var(ddof=1)
    ok = n >= 2
    if not ok.any():
        return None
    pooled = float(np.sqrt(((n[ok] - 1) * var[ok]).sum() / (n[ok] - 1).sum()))
    return pooled / float(np.mean(y))


def sensitivity(trials: pd.DataFrame, backend: str, *, knobs: Sequence[str] | None = None,
                defaults: Mapping[str, Any] | None = None, seed: int = 0, folds: int = 5,
                repeats: int = 5, n_estimators: int = 100) -> Sensitivity:
    """Rank the knobs of *trials* (from :func:`load_trials`) by their effect on the objective."""
    from scipy.stats import spearmanr
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import KFold

    defaults = dict(defaults or {})
    names = knob_columns(trials, knobs)
    if not names:
        raise AnalysisError("the trials carry no knob values")
    varied = [k for k in names if trials[KNOB_PREFIX + k].map(_key).nunique(dropna=True) > 1]
    not_varied = [k for k in names if k not in varied]
    if not varied:
        raise AnalysisError("no knob takes more than one value in these trials")
    n_cfg = trials["config_hash"].nunique()
    if len(trials) < 8 or n_cfg < 4:
        raise AnalysisError(f"too little data for a sensitivity analysis: {len(trials)} trials "
                            f"of {n_cfg} configurations (need at least 8 trials, 4 configurations)")
    enc = KnobEncoder.fit(trials, varied)
    X = enc.transform(trials)
    X = np.where(np.isnan(X), np.nanmedian(X, axis=0), X)
    workloads = sorted(trials["workload"].unique())
    y = relative_perf(trials)
    if len(workloads) > 1:
        X = np.column_stack([X, trials["workload"].map({w: i for i, w in enumerate(workloads)})])
    var_y = float(np.var(y))
    mean_y = float(np.mean(y))

    def forest() -> RandomForestRegressor:
        return RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=2,
                                     random_state=seed, n_jobs=1)

    k = max(2, min(folds, len(trials) // 4))
    imps: list[np.ndarray] = []
    preds = np.empty_like(y)
    for train, test in KFold(k, shuffle=True, random_state=seed).split(X):
        rf = forest().fit(X[train], y[train])
        preds[test] = rf.predict(X[test])
        res = permutation_importance(rf, X[test], y[test], scoring="neg_mean_squared_error",
                                     n_repeats=repeats, random_state=seed, n_jobs=1)
        imps.append(res.importances[: len(varied)])
    allimp = np.concatenate(imps, axis=1) / (var_y if var_y > 0 else 1.0)
    imp_mean = allimp.mean(axis=1)
    imp_se = allimp.std(axis=1, ddof=1) / np.sqrt(allimp.shape[1])
    r2 = 1.0 - float(np.mean((preds - y) ** 2)) / var_y if var_y > 0 else 0.0
    noise_cv = _noise(trials, y)

    full = forest().fit(X, y)
    rng = np.random.default_rng(seed)
    base = X[rng.choice(len(X), size=min(len(X), 400), replace=False)]
    results = []
    for j, knob in enumerate(varied):
        raw_values = sorted({_key(v) for v in trials[KNOB_PREFIX + knob].dropna()},
                            key=lambda v: (enc.encode_value(knob, v), str(v)))
        if len(raw_values) > 24:  # many distinct values: quantiles of the measured ones
            idx = np.unique(np.linspace(0, len(raw_values) - 1, 24).round().astype(int))
            raw_values = [raw_values[i] for i in idx]
        codes = [enc.encode_value(knob, v) for v in raw_values]
        pd_curve = []
        for c in codes:
            Xc = base.copy()
            Xc[:, j] = c
            pd_curve.append(float(full.predict(Xc).mean()) / mean_y)
        pd_arr = np.array(pd_curve)
        effect = float(pd_arr.max() - pd_arr.min())
        best = raw_values[int(pd_arr.argmax())]
        noise_se = (noise_cv or 0.0) / np.sqrt(max(1.0, len(trials) / max(1, len(raw_values))))
        significant = bool(imp_mean[j] > 2 * imp_se[j] and imp_mean[j] > 0 and effect > noise_se)
        direction = _direction(knob, raw_values, codes, pd_arr, enc, significant, spearmanr)
        results.append(KnobSensitivity(
            knob=knob, importance=float(imp_mean[j]), importance_std=float(imp_se[j]),
            effect=effect, direction=direction, best_value=best,
            default_value=defaults.get(knob), significant=significant,
            values=list(raw_values), partial_dependence=[round(p, 6) for p in pd_curve]))
    results.sort(key=lambda r: r.importance, reverse=True)
    return Sensitivity(backend=backend, workloads=workloads, method=METHOD,
                       n_trials=len(trials), n_configurations=int(n_cfg), surrogate_r2=r2,
                       noise_cv=noise_cv, knobs=results, not_varied=not_varied)


def _direction(knob: str, values: list[Any], codes: list[float], pd_arr: np.ndarray,
               enc: KnobEncoder, significant: bool, spearmanr: Any) -> str:
    if not significant:
        return "no clear effect"
    if all(isinstance(v, bool) for v in values):
        return "on is better" if pd_arr[values.index(True)] > pd_arr[values.index(False)] \
            else "off is better"
    if knob in enc.categories:
        return f"best: {values[int(pd_arr.argmax())]}"
    if len(values) == 2:
        return "higher is better" if pd_arr[1] > pd_arr[0] else "lower is better"
    rho = float(spearmanr(codes, pd_arr).statistic)
    best = int(pd_arr.argmax())
    if rho >= 0.7 and best == len(values) - 1:
        return "higher is better"
    if rho <= -0.7 and best == 0:
        return "lower is better"
    if 0 < best < len(values) - 1:
        return "best in the middle"
    return "non-monotonic"


def analyze(db: Any, backend: str, workload: str | None = None, *,
            catalog: Any = None, seed: int = 0) -> Sensitivity:
    """Load a backend's trials from *db* and rank its knobs (restricted to the catalog's knobs and
    recorded with its hash when a catalog is given)."""
    trials = load_trials(db, backend, workload,
                         catalog_hash=catalog.hash if catalog is not None else None)
    knobs = list(catalog.knobs) if catalog is not None else None
    defaults = catalog.defaults() if catalog is not None else None
    return sensitivity(trials, backend, knobs=knobs, defaults=defaults, seed=seed)
