"""The query model: workload fingerprint -> best known configuration of a backend.

Fitting (from the performance database, one point per finished trial):

1. Each trial's fingerprint (:mod:`ptmt.offline.fingerprint`, its intervals aggregated) is
   standardised (training mean/std; NaN -> the mean; a *query's* missing features are ignored by
   the distance and taken from the nearest centroid) and multiplied by the square root of a
   per-feature weight: the feature importances of a random forest predicting log(objective)
   from the fingerprint (the original PTMT's "feature-importance weights"), floored so that no
   feature is ignored entirely by the outlier test.
2. K-means clusters these weighted points (k chosen by silhouette when not given). Each cluster
   keeps a KD-tree of its members (the "KNN per cluster") and an outlier threshold: 1.5 x the 99th
   percentile of its members' distances to the centroid.
3. Each workload's objective under the default configuration is its measured mean when the
   defaults were profiled, else a random-forest surrogate's prediction; every trial's *relative*
   performance is its objective / that default.

Querying a fingerprint: nearest centroid (outlier when farther than that cluster's threshold), the
k nearest trials in that cluster, then, by method:

- ``original`` — the configuration of the neighbour with the best objective (the original PTMT).
- ``workload`` — the neighbours vote (weight 1/distance) for the workloads they belong to; each
  measured configuration is scored by the vote-weighted relative performance it has on those
  workloads (repetitions averaged; a workload's surrogate fills configurations it never ran),
  and the best-scoring one is returned. It uses everything known about the matched workloads
  rather than the best of k noisy neighbours, and objectives of different scales never compete.

Evaluated leave-one-workload-out (:func:`evaluate`); see docs/model.md for the figures that made
``workload`` the default.

Persistence: one ``.npz`` file (NumPy arrays plus a JSON header, loaded with
``allow_pickle=False``: no code runs on load) holding the backend, catalog hash, fingerprint schema
version and feature names; :func:`load_model` refuses a file whose backend, catalog hash or
feature schema differs from the caller's, naming what differs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ptmt.errors import PtmtError
from ptmt.offline.analyze import KNOB_PREFIX, AnalysisError, KnobEncoder, load_trials
from ptmt.offline.fingerprint import FEATURE_NAMES, FINGERPRINT_VERSION, fingerprint, fingerprint_frame

MODEL_FORMAT = 1
METHODS = ("workload", "original")
DEFAULT_METHOD = "workload"
_EPS = 1e-9
#: width of the response likelihood (log ratio): online readings averaged over 4-8 intervals and the
#: database's 180 s trials each carry about 1 % of noise; workloads that differ by less than about
#: 3 % in how they answer a configuration are not told apart
RESPONSE_SIGMA = 0.03


class ModelError(PtmtError):
    """The model cannot be fitted, read or used."""


class NothingLeft(ModelError):
    """A query that excluded every candidate configuration."""


class ModelMismatch(ModelError):
    """A stored model was fitted for another backend, catalog or fingerprint schema."""


def default_model_path(backend: str) -> Path:
    """``<data dir>/ptmt/models/<backend>.npz``, beside the default database."""
    from ptmt.db.engine import default_path

    return default_path().parent / "models" / f"{backend}.npz"


# ---------------------------------------------------------------------------------- data

def _host_memory(db: Any) -> dict[int, tuple[dict[int, int], list[int]]]:
    """Study id -> (MemTotal kB per node, fast-tier nodes) from the study's recorded host."""
    from sqlalchemy import select

    from ptmt.db.models import Host, Study

    out: dict[int, tuple[dict[int, int], list[int]]] = {}
    with db.engine.connect() as conn:
        for sid, topology, tiers in conn.execute(
                select(Study.id, Host.topology, Host.tiers).join(Host, Study.host_id == Host.id)):
            totals = {int(n["id"]): int(n["mem_total_kb"])
                      for n in (topology or {}).get("nodes", [])
                      if n.get("mem_total_kb") is not None}
            fast: list[int] = []
            if tiers:  # the tier with the lowest id holds the fastest memory
                first = min(tiers, key=lambda t: int(t))
                fast = [int(n) for n in tiers[first]]
            out[int(sid)] = (totals, fast)
    return out


def load_table(db: Any, backend: str, catalog_hash: str | None, *,
               fast_nodes: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per finished trial: fingerprint features, ``perf`` (higher is better), workload,
    configuration hash, knob columns, and ``n_samples``. Samples without per-node MemTotal get it
    from the study's recorded host topology; the fast-tier nodes are *fast_nodes* or the host's
    first memory tier (node 0 when unknown)."""
    trials = load_trials(db, backend, catalog_hash=catalog_hash)
    hosts = _host_memory(db)
    feats = []
    counts = []
    for sid in sorted(trials["study_id"].unique()):
        samples = db.samples_frame(study=int(sid))
        if samples.empty:
            continue
        totals, host_fast = hosts.get(int(sid), ({}, []))
        for node, kb in totals.items():
            has = any(str(c).lower() in (f"node{node}.memtotal", f"node{node}.memtotal_kb")
                      for c in samples.columns)
            if not has:
                samples[f"node{node}.MemTotal"] = kb
        fast = list(fast_nodes) if fast_nodes is not None else (host_fast or [0])
        feats.append(fingerprint_frame(samples, "trial_id", fast_nodes=fast))
        counts.append(samples.groupby("trial_id").size())
    if not feats:
        raise ModelError(f"the trials of backend {backend} have no telemetry samples")
    f = pd.concat(feats)
    n = pd.concat(counts).rename("n_samples")
    table = trials.join(f, on="trial_id", how="inner").join(n, on="trial_id")
    if table.empty:
        raise ModelError(f"no finished trial of backend {backend} has telemetry samples")
    return table.reset_index(drop=True)


# ---------------------------------------------------------------------------------- the model

@dataclass
class QueryResult:
    configuration: dict[str, Any]
    expected_gain: float  # relative to the default configuration: 0.12 = 12 % better
    confidence: float  # 0..1
    outlier: bool
    method: str
    cluster: int
    distance: float  # to the cluster's centroid, weighted standardised units
    threshold: float  # the cluster's outlier threshold
    workloads: dict[str, float] = field(default_factory=dict)  # matched workloads and weights
    #: with evidence and a predictable ``current`` configuration: the gain expected over it
    gain_over_current: float | None = None
    #: how many evidence readings the weights used (0: the fingerprint's alone)
    evidence_used: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "expected_gain": self.expected_gain,
                "confidence": self.confidence, "outlier": self.outlier, "method": self.method,
                "cluster": self.cluster, "distance": self.distance, "threshold": self.threshold,
                "workloads": self.workloads, "gain_over_current": self.gain_over_current,
                "evidence_used": self.evidence_used}


class QueryModel:
    """A fitted model held in memory. Build with :func:`fit` or :func:`load_model`."""

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.meta = meta
        self.a = arrays
        self.configs: list[dict[str, Any]] = meta["configs"]
        self.workload_names: list[str] = meta["workloads"]
        self._build()

    def _build(self) -> None:
        from scipy.spatial import cKDTree

        a = self.a
        self._sqrt_w = np.sqrt(a["weights"])
        self._knob_names = sorted({n for c in self.configs for n in c})
        self._config_keys = [_config_key(c, self._knob_names) for c in self.configs]
        self._config_index = {key: j for j, key in enumerate(self._config_keys)}
        self._trees = []
        self._members = []
        for c in range(len(a["centroids"])):
            idx = np.flatnonzero(a["point_cluster"] == c)
            self._members.append(idx)
            self._trees.append(cKDTree(a["points"][idx]) if len(idx) else None)
        # per configuration, over the workloads that measured it: how many, the median of its
        # performance relative to each workload's defaults, and the share at least as good as them
        rel, measured = a["rel_table"], a["measured"].astype(bool)
        cols = [rel[measured[:, j], j] for j in range(rel.shape[1])]
        self._measured_on = np.array([len(c) for c in cols])
        self._median_rel = np.array([float(np.median(c)) if len(c) else np.nan for c in cols])
        self._share_no_worse = np.array([float(np.mean(c >= 1.0)) if len(c) else np.nan for c in cols])

    def value_outlook(self, knob: str, value: Any) -> float | None:
        """What the database says of ``knob=value`` on its own: the best, over the measured
        configurations holding that value, of their median performance relative to each workload's
        defaults. Below 1 means every configuration with this value lost on most workloads; None
        means no measured configuration holds it."""
        held = [j for j, c in enumerate(self.configs)
                if knob in c and str(c[knob]) == str(value) and self._measured_on[j]]
        return max(float(self._median_rel[j]) for j in held) if held else None

    # -- properties ---------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return str(self.meta["backend"])

    @property
    def catalog_hash(self) -> str:
        return str(self.meta["catalog_hash"])

    @property
    def method(self) -> str:
        return str(self.meta["method"])

    # -- querying -----------------------------------------------------------------------------
    def embed(self, fp: Any) -> np.ndarray:
        """A fingerprint (vector, ``{feature: value}``, or a list of samples) -> weighted space."""
        if isinstance(fp, Mapping):
            x = np.array([np.nan if fp.get(n) is None else float(fp[n]) for n in FEATURE_NAMES])
        elif isinstance(fp, np.ndarray) or (isinstance(fp, Sequence) and fp and
                                            isinstance(fp[0], (int, float, np.floating))):
            x = np.asarray(fp, float)
        else:
            x = fingerprint(fp, fast_nodes=self.meta.get("fast_nodes", (0,)))
        if x.shape != (len(FEATURE_NAMES),):
            raise ModelError(f"a fingerprint has {len(FEATURE_NAMES)} features, got shape {x.shape}")
        z = (x - self.a["mean"]) / self.a["scale"]
        return z * self._sqrt_w  # NaN where not measured: see query()

    def _ratios(self, config: Mapping[str, Any]) -> np.ndarray | None:
        """Every workload's performance under *config* relative to its defaults, or None when the
        database holds no such configuration."""
        key = _config_key(config, self._knob_names)
        if key == _config_key(self.meta.get("defaults", {}), self._knob_names):
            return np.ones(len(self.workload_names))
        j = self._config_index.get(key)
        return None if j is None else np.asarray(self.a["rel_table"][:, j], float)

    def response_weights(self, prior: np.ndarray, evidence: Sequence[tuple[Mapping[str, Any], float]],
                         reference: Mapping[str, Any]) -> tuple[np.ndarray, int]:
        """Re-weight the workloads by how they answered the configurations already measured online.

        *evidence* holds (configuration, measured objective relative to *reference*'s). A database
        workload whose own ratios for those configurations are close to the measured ones is likely
        the one running (the workload-mapping step of OtterTune, Van Aken et al., SIGMOD 2017, done on
        the knob response instead of internal metrics). The prior (the fingerprint's votes) is mixed
        half and half with a uniform one, so that a workload the fingerprint missed can still be
        recognised by its response; the likelihood is Gaussian in log ratio, ``RESPONSE_SIGMA`` wide.
        Readings of configurations the database does not hold are skipped; returns the weights and
        how many readings were used."""
        ref = self._ratios(reference)
        if ref is None or not len(evidence):
            return prior, 0
        logl = np.zeros(len(prior))
        used = 0
        for config, measured in evidence:
            r = self._ratios(config)
            if r is None or measured <= 0:
                continue
            logl -= (np.log(r / ref) - np.log(measured)) ** 2 / (2 * RESPONSE_SIGMA ** 2)
            used += 1
        if not used:
            return prior, 0
        base = 0.5 * prior / max(prior.sum(), 1e-12) + 0.5 / len(prior)
        post = np.log(base) + logl
        post = np.exp(post - post.max())
        return post / post.sum(), used

    def query(self, fp: Any, *, k: int | None = None, method: str | None = None,
              exclude: Collection[Mapping[str, Any]] = (),
              evidence: Sequence[tuple[Mapping[str, Any], float]] = (),
              reference: Mapping[str, Any] | None = None,
              current: Mapping[str, Any] | None = None) -> QueryResult:
        """Best known configuration for the workload whose fingerprint is *fp*, leaving out the
        configurations in *exclude* (the tuner asks again after its first advice measured badly;
        :class:`NothingLeft` when that excludes every candidate).

        *evidence* (configuration, objective relative to *reference*, the defaults when None) is what
        the tuner measured so far in this phase: the workloads are then weighted by their response as
        well (:meth:`response_weights`; the ``workload`` method only), and with *current* (the best
        known configuration) the result says how much better than it the advice is expected to be."""
        method = method or self.method
        used, over = 0, None
        banned = {_config_key(c, self._knob_names) for c in exclude}
        allowed = np.array([key not in banned for key in self._config_keys], bool)
        k = k or int(self.meta["knn_k"])
        z = self.embed(fp)
        a = self.a
        seen = np.isfinite(z)
        # features the query could not measure (no perf here, an older kernel): the distance
        # uses the measured ones, and the missing ones are taken from the nearest centroid
        diff = np.where(seen, a["centroids"] - np.where(seen, z, 0.0), 0.0)
        d_cent = np.sqrt((diff ** 2).sum(axis=1))
        c = int(d_cent.argmin())
        z = np.where(seen, z, a["centroids"][c])
        dist, thr = float(d_cent[c]), float(a["thresholds"][c])
        outlier = dist > thr
        tree = self._trees[c]
        kk = min(k, len(self._members[c]))
        nd, ni = tree.query(z, k=kk)
        nd, ni = np.atleast_1d(nd), np.atleast_1d(ni)
        idx = self._members[c][ni]
        w = 1.0 / (nd + 0.05)
        pw = a["point_workload"][idx]
        votes = np.bincount(pw, weights=w, minlength=len(self.workload_names))
        votes /= votes.sum()
        closeness = max(0.0, 1.0 - dist / thr) if thr > 0 else 0.0
        if method == "original":
            ok = allowed[a["point_config"][idx]]
            if not ok.any():
                raise NothingLeft("every configuration near this fingerprint is excluded")
            best = idx[ok][int(a["point_perf"][idx][ok].argmax())]
            cfg = int(a["point_config"][best])
            gain = float(a["point_rel"][best]) - 1.0
            identity = float(votes[a["point_workload"][best]])
            support = 1.0
        elif method == "workload":
            ref_cfg = reference if reference is not None else self.meta.get("defaults", {})
            votes, used = self.response_weights(votes, evidence, ref_cfg)
            matched = np.flatnonzero(votes > 0)
            pi = votes[matched]
            scores = np.where(allowed, pi @ a["rel_table"][matched], -np.inf)
            if not allowed.any():
                raise NothingLeft("every configuration of the database is excluded")
            cfg = int(scores.argmax())
            gain = float(scores[cfg]) - 1.0
            identity = float(pi.max())
            support = float(pi @ a["measured"][matched, cfg])
            now = self._ratios(current) if current is not None else None
            if now is not None:
                over = float(scores[cfg]) / float(pi @ now[matched]) - 1.0
        else:
            raise ModelError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
        confidence = closeness * (0.5 + 0.5 * identity) * (0.5 + 0.5 * support)
        top = np.argsort(votes)[::-1][:3]
        return QueryResult(configuration=dict(self.configs[cfg]), expected_gain=gain,
                           confidence=float(confidence), outlier=bool(outlier), method=method,
                           cluster=c, distance=dist, threshold=thr,
                           workloads={self.workload_names[i]: round(float(votes[i]), 4)
                                      for i in top if votes[i] > 0},
                           gain_over_current=over, evidence_used=used)

    def generalist(self, *, exclude: Collection[Mapping[str, Any]] = ()) -> QueryResult | None:
        """The configuration that does best across the database's workloads, for a workload unlike
        any of them (an outlier), where the nearest neighbours say nothing: the highest median,
        over the workloads that measured it, of its performance relative to each workload's
        defaults. ``expected_gain`` is that median minus 1 and ``confidence`` the share of those
        workloads on which it was at least as good as the defaults. None when nothing but the
        defaults (or an excluded configuration) is left, or nothing was measured on at least half
        of the workloads."""
        banned = {_config_key(c, self._knob_names) for c in exclude}
        banned.add(_config_key(self.meta.get("defaults", {}), self._knob_names))
        candidates = [j for j, key in enumerate(self._config_keys)
                      if key not in banned and 2 * self._measured_on[j] >= len(self.workload_names)]
        if not candidates:
            return None
        j = max(candidates, key=lambda k: self._median_rel[k])
        rel, measured = self.a["rel_table"][:, j], self.a["measured"][:, j].astype(bool)
        wins = {self.workload_names[i]: round(float(rel[i]), 4) for i in np.argsort(-rel)[:3] if measured[i]}
        return QueryResult(configuration=dict(self.configs[j]), expected_gain=float(self._median_rel[j]) - 1.0,
                           confidence=float(self._share_no_worse[j]), outlier=True, method="generalist",
                           cluster=-1, distance=float("nan"), threshold=float("nan"), workloads=wins)

    # -- description --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        m = self.meta
        a = self.a
        clusters = []
        for c in range(len(a["centroids"])):
            members = self._members[c]
            wl = np.bincount(a["point_workload"][members], minlength=len(self.workload_names))
            clusters.append({"cluster": c, "trials": int(len(members)),
                             "threshold": float(a["thresholds"][c]),
                             "workloads": {self.workload_names[i]: int(wl[i])
                                           for i in np.argsort(wl)[::-1] if wl[i] > 0}})
        best = {}
        for i, name in enumerate(self.workload_names):
            j = int(a["rel_table"][i].argmax())
            best[name] = {"configuration": self.configs[j],
                          "expected_gain": float(a["rel_table"][i, j]) - 1.0,
                          "default_objective": float(a["default_perf"][i])}
        keys = ("backend", "catalog_hash", "fingerprint_version", "features", "method", "knn_k",
                "fitted_at", "fit_seconds", "database", "n_trials", "n_samples", "format")
        return {**{k: m.get(k) for k in keys},
                "feature_weights": dict(zip(FEATURE_NAMES, map(float, a["weights"]), strict=True)),
                "clusters": clusters, "workloads": best, "evaluation": m.get("evaluation")}

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.array(json.dumps(self.meta, default=_jsonable)),
                                **self.a)
        tmp.replace(path)
        return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def load_model(path: str | Path, *, backend: str | None = None,
               catalog_hash: str | None = None) -> QueryModel:
    """Read a model; raise :class:`ModelMismatch` when its backend, catalog hash or fingerprint
    schema differs from *backend*, *catalog_hash* and this PTMT's fingerprint schema."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no model at {path}; fit one with `ptmt model fit --backend "
                         f"{backend or 'B'}`")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not a PTMT model file ({exc})") from None
    refit = f"refit with `ptmt model fit --backend {backend or meta.get('backend')}`"
    if meta.get("format") != MODEL_FORMAT:
        raise ModelMismatch(f"model {path}: file format {meta.get('format')}, this PTMT reads "
                            f"format {MODEL_FORMAT}; {refit}")
    if meta.get("fingerprint_version") != FINGERPRINT_VERSION or \
            list(meta.get("features", [])) != list(FEATURE_NAMES):
        raise ModelMismatch(
            f"model {path}: fingerprint feature schema version {meta.get('fingerprint_version')} "
            f"({len(meta.get('features', []))} features), this PTMT computes version "
            f"{FINGERPRINT_VERSION} ({len(FEATURE_NAMES)} features); {refit}")
    if backend is not None and meta.get("backend") != backend:
        raise ModelMismatch(f"model {path}: fitted for backend {meta.get('backend')}, "
                            f"not {backend}; {refit}")
    if catalog_hash is not None and meta.get("catalog_hash") != catalog_hash:
        raise ModelMismatch(
            f"model {path}: fitted with catalog hash {meta.get('catalog_hash')} of backend "
            f"{meta.get('backend')}, the current catalog hash is {catalog_hash}; {refit}")
    return QueryModel(meta, arrays)


# ---------------------------------------------------------------------------------- fitting

def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # features nobody measured: all NaN
        mean = np.nanmean(X, axis=0)
        std = np.nanstd(X, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    small = ~np.isfinite(std) | (std < 1e-9)
    scale = np.where(small, np.maximum(np.abs(mean) * 0.05, 0.01), std)
    return mean, scale


def _canon(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        if v.is_integer():
            return int(v)
    return v


def _config_key(knobs: Mapping[str, Any], names: Sequence[str]) -> str:
    return json.dumps({n: _canon(knobs.get(n)) for n in names}, sort_keys=True, default=str)


def _relative_table(table: pd.DataFrame, knob_names: list[str], configs: list[dict[str, Any]],
                    defaults: Mapping[str, Any], workloads: list[str],
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per workload: default objective, relative performance of every configuration (measured
    mean, else surrogate), and whether it was measured."""
    from sklearn.ensemble import RandomForestRegressor

    enc = KnobEncoder.fit(table, knob_names)
    cfg_frame = pd.DataFrame([{KNOB_PREFIX + k: c.get(k) for k in knob_names} for c in configs])
    Xc = enc.transform(cfg_frame)
    default_frame = pd.DataFrame([{KNOB_PREFIX + k: defaults.get(k) for k in knob_names}])
    Xd = enc.transform(default_frame)
    default_key = _config_key(defaults, knob_names)
    W, C = len(workloads), len(configs)
    rel = np.ones((W, C))
    measured = np.zeros((W, C))
    default_perf = np.ones(W)
    for i, w in enumerate(workloads):
        sub = table[table["workload"] == w]
        by_cfg = sub.groupby("config_index")["perf"].mean()
        X = enc.transform(sub)
        fill = np.nanmedian(X, axis=0) if len(X) else np.zeros(X.shape[1])
        X = np.where(np.isnan(X), fill, X)
        rf = None
        if len(sub) >= 5 and sub["config_index"].nunique() >= 3:
            rf = RandomForestRegressor(n_estimators=60, min_samples_leaf=2, random_state=seed,
                                       n_jobs=1, max_samples=min(len(sub), 5000))
            rf.fit(X, np.log(sub["perf"].to_numpy(float)))
        dkeys = sub.loc[sub["config_key"] == default_key, "perf"]
        if len(dkeys):
            default_perf[i] = float(dkeys.mean())
        elif rf is not None:
            default_perf[i] = float(np.exp(rf.predict(np.where(np.isnan(Xd), fill, Xd))[0]))
        else:
            default_perf[i] = float(sub["perf"].median())
        pred = np.exp(rf.predict(np.where(np.isnan(Xc), fill, Xc))) if rf is not None \
            else np.full(C, float(sub["perf"].median()))
        row = pred.copy()
        row[by_cfg.index.to_numpy()] = by_cfg.to_numpy()
        measured[i, by_cfg.index.to_numpy()] = 1.0
        rel[i] = row / default_perf[i]
    return default_perf, rel, measured


def fit_table(table: pd.DataFrame, *, backend: str, catalog_hash: str,
              knob_names: Sequence[str], defaults: Mapping[str, Any],
              method: str = DEFAULT_METHOD, n_clusters: int | None = None, knn_k: int = 15,
              max_points_per_cluster: int = 50_000, seed: int = 0,
              fast_nodes: Sequence[int] = (0,), extra_meta: Mapping[str, Any] | None = None
              ) -> QueryModel:
    """Fit a model from a per-trial table (see :func:`load_table`)."""
    from sklearn.cluster import KMeans
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import silhouette_score

    if method not in METHODS:
        raise ModelError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    t0 = time.perf_counter()
    knob_names = [k for k in knob_names if KNOB_PREFIX + k in table.columns]
    if not knob_names:
        raise ModelError("the trials carry none of the catalog's knobs")
    table = table.copy()
    table["config_key"] = [_config_key({k: r[KNOB_PREFIX + k] for k in knob_names}, knob_names)
                           for r in table[[KNOB_PREFIX + k for k in knob_names]].to_dict("records")]
    keys = list(dict.fromkeys(table["config_key"]))
    key_index = {k: i for i, k in enumerate(keys)}
    table["config_index"] = table["config_key"].map(key_index)
    configs = [json.loads(k) for k in keys]
    workloads = sorted(table["workload"].unique())
    if len(table) < 4:
        raise ModelError(f"too few trials to fit a model ({len(table)})")
    rng = np.random.default_rng(seed)

    X = table[list(FEATURE_NAMES)].to_numpy(float)
    mean, scale = _standardise(X)
    Z = (X - mean) / scale
    Z = np.where(np.isfinite(Z), Z, 0.0)
    measurable = np.isfinite(X).any(axis=0)

    # feature-importance weights (importance for predicting the objective), floored
    sub = rng.choice(len(Z), size=min(len(Z), 20_000), replace=False)
    rf = RandomForestRegressor(n_estimators=100, max_depth=12, min_samples_leaf=3,
                               random_state=seed, n_jobs=-1 if len(sub) > 5000 else 1)
    rf.fit(Z[sub], np.log(table["perf"].to_numpy(float)[sub]))
    imp = rf.feature_importances_ * measurable
    imp = imp / imp.sum() * measurable.sum() if imp.sum() > 0 else measurable.astype(float)
    weights = np.where(measurable, np.maximum(imp, 0.2), 0.0)
    P = Z * np.sqrt(weights)

    # K-means, k by silhouette on a subsample
    ksub = P[rng.choice(len(P), size=min(len(P), 20_000), replace=False)]
    if n_clusters is None:
        candidates = range(2, max(3, min(12, len(workloads) * 2, len(ksub) // 5) + 1))
        ssub = ksub[:3000]
        best_k, best_s = 1, -1.0
        for kc in candidates:
            if kc >= len(ssub):
                break
            km = KMeans(kc, n_init=2, random_state=seed).fit(ksub)
            labels = km.predict(ssub)
            if len(set(labels)) < 2:
                continue
            s = silhouette_score(ssub, labels)
            if s > best_s:
                best_k, best_s = kc, s
        n_clusters = best_k
    km = KMeans(n_clusters, n_init=4, random_state=seed).fit(ksub)
    centroids = km.cluster_centers_
    labels = np.empty(len(P), dtype=np.int64)
    for start in range(0, len(P), 200_000):
        chunk = P[start:start + 200_000]
        d = ((chunk[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        labels[start:start + 200_000] = d.argmin(axis=1)
    dist = np.sqrt(((P - centroids[labels]) ** 2).sum(axis=1))
    thresholds = np.zeros(len(centroids))
    keep = np.zeros(len(P), dtype=bool)
    for c in range(len(centroids)):
        members = np.flatnonzero(labels == c)
        if len(members):
            thresholds[c] = 1.5 * float(np.quantile(dist[members], 0.99)) + 1e-6
            if len(members) > max_points_per_cluster:
                members = rng.choice(members, size=max_points_per_cluster, replace=False)
            keep[members] = True
    # a cluster of near-identical trials (a workload no knob moves) would otherwise call every
    # query near it an outlier: no threshold below half the clusters' median
    positive = thresholds[thresholds > 1e-3]
    if len(positive):
        thresholds = np.maximum(thresholds, 0.5 * float(np.median(positive)))

    default_perf, rel_table, measured = _relative_table(table, knob_names, configs, defaults,
                                                        workloads, seed)
    w_index = {w: i for i, w in enumerate(workloads)}
    point_workload = table["workload"].map(w_index).to_numpy(np.int64)
    perf = table["perf"].to_numpy(float)
    arrays = {
        "mean": mean, "scale": scale, "weights": weights, "centroids": centroids,
        "thresholds": thresholds, "points": P[keep], "point_cluster": labels[keep],
        "point_config": table["config_index"].to_numpy(np.int64)[keep],
        "point_workload": point_workload[keep], "point_perf": perf[keep],
        "point_rel": (perf / default_perf[point_workload])[keep],
        "default_perf": default_perf, "rel_table": rel_table, "measured": measured,
    }
    meta = {
        "format": MODEL_FORMAT, "backend": backend, "catalog_hash": catalog_hash,
        "fingerprint_version": FINGERPRINT_VERSION, "features": list(FEATURE_NAMES),
        "method": method, "knn_k": int(knn_k), "knobs": list(knob_names),
        "defaults": {k: defaults.get(k) for k in knob_names}, "configs": configs,
        "workloads": workloads, "fast_nodes": list(fast_nodes),
        "n_trials": int(len(table)), "n_samples": int(table.get("n_samples", pd.Series([0])).sum()),
        "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fit_seconds": round(time.perf_counter() - t0, 3), **dict(extra_meta or {}),
    }
    return QueryModel(json.loads(json.dumps(meta, default=_jsonable)), arrays)


def fit(db: Any, backend: str, catalog: Any, *, method: str = DEFAULT_METHOD,
        n_clusters: int | None = None, knn_k: int = 15, seed: int = 0,
        fast_nodes: Sequence[int] | None = None, evaluate_methods: bool = False) -> QueryModel:
    """Fit the query model of *backend* from the database (trials recorded with *catalog*'s hash)."""
    t0 = time.perf_counter()
    try:
        table = load_table(db, backend, catalog.hash, fast_nodes=fast_nodes)
    except AnalysisError as exc:
        raise ModelError(str(exc)) from None
    load_s = time.perf_counter() - t0
    extra: dict[str, Any] = {"database": db.url, "load_seconds": round(load_s, 3)}
    if evaluate_methods:
        extra["evaluation"] = evaluate(table, backend=backend, catalog_hash=catalog.hash,
                                       knob_names=list(catalog.knobs),
                                       defaults=catalog.defaults(), n_clusters=n_clusters,
                                       knn_k=knn_k, seed=seed)
    return fit_table(table, backend=backend, catalog_hash=catalog.hash,
                     knob_names=list(catalog.knobs), defaults=catalog.defaults(), method=method,
                     n_clusters=n_clusters, knn_k=knn_k, seed=seed,
                     fast_nodes=fast_nodes if fast_nodes is not None else (0,), extra_meta=extra)


# ---------------------------------------------------------------------------------- evaluation

def evaluate(table: pd.DataFrame, *, backend: str, catalog_hash: str, knob_names: Sequence[str],
             defaults: Mapping[str, Any], methods: Iterable[str] = METHODS,
             n_clusters: int | None = None, knn_k: int = 15, queries_per_workload: int = 20,
             seed: int = 0) -> dict[str, Any]:
    """Leave-one-workload-out: for each workload, fit on the others, query with fingerprints of
    the held-out workload's trials, and score the recommended configuration by the held-out
    workload's own measured relative performance (its surrogate when it never ran that
    configuration). Returns, per method, mean achieved gain over default, the oracle gain (best
    configuration measured on that workload), regret, outlier rate, and mean predicted gain."""
    methods = list(methods)
    workloads = sorted(table["workload"].unique())
    if len(workloads) < 2:
        raise ModelError("leave-one-workload-out needs at least two workloads")
    knob_names = [k for k in knob_names if KNOB_PREFIX + k in table.columns]
    rng = np.random.default_rng(seed)
    per: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for w in workloads:
        train = table[table["workload"] != w]
        test = table[table["workload"] == w]
        model = fit_table(train, backend=backend, catalog_hash=catalog_hash,
                          knob_names=knob_names, defaults=defaults, n_clusters=n_clusters,
                          knn_k=knn_k, seed=seed)
        union = list(model.configs)
        keys = {_config_key(c, knob_names): j for j, c in enumerate(union)}
        for c in test[[KNOB_PREFIX + k for k in knob_names]].to_dict("records"):
            key = _config_key({k: c[KNOB_PREFIX + k] for k in knob_names}, knob_names)
            if key not in keys:
                keys[key] = len(union)
                union.append(json.loads(key))
        t = test.copy()
        t["config_key"] = [_config_key({k: r[KNOB_PREFIX + k] for k in knob_names}, knob_names)
                           for r in t[[KNOB_PREFIX + k for k in knob_names]].to_dict("records")]
        t["config_index"] = t["config_key"].map(keys)
        _, rel, measured = _relative_table(t, knob_names, union, defaults, [w], seed)
        truth, was_measured = rel[0], measured[0] > 0
        oracle = float(truth[was_measured].max()) - 1.0
        q = test.iloc[rng.choice(len(test), size=min(len(test), queries_per_workload),
                                 replace=False)]
        for m in methods:
            achieved, predicted, outliers, measured_hits = [], [], [], 0
            for fp in q[list(FEATURE_NAMES)].to_numpy(float):
                r = model.query(fp, method=m)
                j = keys[_config_key(r.configuration, knob_names)]
                achieved.append(float(truth[j]) - 1.0)
                measured_hits += int(was_measured[j])
                predicted.append(r.expected_gain)
                outliers.append(r.outlier)
            per[m].append({"workload": w, "achieved_gain": float(np.mean(achieved)),
                           "oracle_gain": oracle, "predicted_gain": float(np.mean(predicted)),
                           "outlier_rate": float(np.mean(outliers)),
                           "measured_share": measured_hits / len(achieved)})
    summary = {}
    for m, rows in per.items():
        frame = pd.DataFrame(rows)
        summary[m] = {
            "achieved_gain": float(frame["achieved_gain"].mean()),
            "oracle_gain": float(frame["oracle_gain"].mean()),
            "regret": float((frame["oracle_gain"] - frame["achieved_gain"]).mean()),
            "outlier_rate": float(frame["outlier_rate"].mean()),
            "predicted_gain": float(frame["predicted_gain"].mean()),
            "per_workload": rows,
        }
    return {"protocol": "leave-one-workload-out", "workloads": workloads, "methods": summary}
