"""The query model on synthetic databases with known ground truth: per-group best configurations,
outlier detection, persistence with refusal of mismatched models, fingerprints from live samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ptmt.catalog import load_catalog
from ptmt.db import open_storage
from ptmt.offline import synthetic
from ptmt.offline.fingerprint import FEATURE_NAMES, FINGERPRINT_VERSION, fingerprint, fingerprint_frame
from ptmt.offline.model import ModelMismatch, NothingLeft, evaluate, fit, load_model, load_table
from ptmt.telemetry import Sample

CAT = load_catalog("autonuma")


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('model') / 'ptmt.db'}"
    with open_storage(url) as db:
        synthetic.fill(db, per_group=2, n_configs=40, intervals=3, bulk=True)
    return url


@pytest.fixture(scope="module")
def model(db_url: str):  # noqa: ANN201
    with open_storage(db_url) as db:
        return fit(db, "autonuma", CAT)


@pytest.fixture(scope="module")
def table(db_url: str):  # noqa: ANN201
    with open_storage(db_url) as db:
        return load_table(db, "autonuma", CAT.hash)


def _fp(table, workload: str, i: int = 0) -> np.ndarray:  # noqa: ANN001
    return table[table["workload"] == workload].iloc[i][list(FEATURE_NAMES)].to_numpy(float)


@pytest.mark.parametrize("workload, scan_size, rate_limit", [
    ("hot-1", 1024, 65536), ("thrash-0", 64, 256)])
def test_known_cluster_gets_its_best_configuration(model, table, workload: str, scan_size: int,
                                                   rate_limit: int) -> None:
    for i in range(3):  # whatever configuration the fingerprint was measured under
        r = model.query(_fp(table, workload, i))
        assert not r.outlier
        assert r.configuration["scan_size_mb"] == scan_size
        w = next(x for x in synthetic.workloads(2) if x.name == workload)
        best = max(synthetic.true_perf(w, c) for c in model.configs)  # best profiled
        assert synthetic.true_perf(w, r.configuration) >= 0.97 * best
        assert (r.configuration["numa_balancing_promote_rate_limit_MBps"] > 4096) == \
            (rate_limit > 4096)
        assert r.expected_gain > 0.1
        assert 0.3 < r.confidence <= 1.0
        assert next(iter(r.workloads)) == workload
        assert set(r.configuration) == set(CAT.knobs)


def test_original_method_is_available(model, table) -> None:
    r = model.query(_fp(table, "hot-0"), method="original")
    assert r.method == "original" and set(r.configuration) == set(CAT.knobs)


@pytest.mark.parametrize("method", ["workload", "original"])
def test_query_excluding_configurations_gives_the_next_best(model, table, method: str) -> None:
    """The tuner asks again after advice that did not pay: the answer is never an excluded
    configuration, ranks no better than the first, and nothing left to offer is an error."""
    fp = _fp(table, "hot-1")
    first = model.query(fp, method=method)
    second = model.query(fp, method=method, exclude=[first.configuration])
    assert second.configuration != first.configuration
    assert second.expected_gain <= first.expected_gain
    as_ints = {k: int(v) for k, v in first.configuration.items()}  # typed as the tuner holds them
    assert model.query(fp, method=method, exclude=[as_ints]).configuration == second.configuration
    with pytest.raises(NothingLeft, match="excluded"):
        model.query(fp, method=method, exclude=model.configs)


def _ratio(workload: str, config: dict) -> float:
    """*workload*'s true objective under *config* over its defaults' (what the tuner would measure)."""
    w = next(x for x in synthetic.workloads(2) if x.name == workload)
    return synthetic.true_perf(w, config) / synthetic.true_perf(w, CAT.defaults())


def test_measured_response_moves_the_advice_to_the_workload_that_answers_alike(model, table) -> None:
    """The fingerprint says hot-1, but the configuration advised for it measured the way thrash-0
    answers it: the workloads are re-weighted by that response and the next answer is thrash-0's best,
    with the gain expected over the configuration kept."""
    fp = _fp(table, "hot-1")
    first = model.query(fp)
    assert next(iter(first.workloads)) == "hot-1"
    measured = [(first.configuration, _ratio("thrash-0", first.configuration))]
    r = model.query(fp, evidence=measured, current=first.configuration, exclude=[first.configuration])
    assert r.evidence_used == 1
    assert next(iter(r.workloads)).startswith("thrash")
    assert r.configuration["scan_size_mb"] == 64 and r.configuration["numa_balancing_promote_rate_limit_MBps"] <= 4096
    assert r.gain_over_current is not None and r.gain_over_current > 0.1
    # a response like the fingerprint's own keeps the advice in the hot group, with little to gain
    alike = [(first.configuration, _ratio("hot-1", first.configuration))]
    again = model.query(fp, evidence=alike, current=first.configuration, exclude=[first.configuration])
    assert next(iter(again.workloads)).startswith("hot") and again.configuration["scan_size_mb"] == 1024
    assert again.gain_over_current is not None and abs(again.gain_over_current) < 0.05


def test_measurements_of_configurations_the_database_lacks_are_skipped(model, table) -> None:
    fp = _fp(table, "hot-1")
    unknown = {**CAT.defaults(), "scan_size_mb": 333}
    r = model.query(fp, evidence=[(unknown, 0.5)], current=unknown)
    assert r.evidence_used == 0 and r.gain_over_current is None
    assert r.configuration == model.query(fp).configuration
    assert model.query(fp, evidence=[(unknown, 0.5)], reference=unknown).evidence_used == 0


def test_foreign_fingerprint_is_an_outlier(model, table) -> None:
    foreign = _fp(table, "mid-0").copy()
    foreign[FEATURE_NAMES.index("hint_faults")] += 6.0  # e^6 = 400x more hint faults
    foreign[FEATURE_NAMES.index("fast_free")] = 0.95
    r = model.query(foreign)
    assert r.outlier and r.confidence == 0.0 and r.distance > r.threshold
    assert not model.query(_fp(table, "mid-0")).outlier


def test_missing_features_are_imputed(model, table) -> None:
    fp = _fp(table, "hot-0")
    partial = {n: float(v) for n, v in zip(FEATURE_NAMES, fp, strict=True)
               if n not in ("ipc", "fast_access_share")}  # a VM without perf
    r = model.query(partial)
    assert not r.outlier and r.configuration["scan_size_mb"] == 1024


def test_persisted_model_round_trip_and_refusals(model, table, tmp_path: Path) -> None:
    path = model.save(tmp_path / "m.npz")
    loaded = load_model(path, backend="autonuma", catalog_hash=CAT.hash)
    fp = _fp(table, "hot-0")
    assert loaded.query(fp).as_dict() == model.query(fp).as_dict()
    with pytest.raises(ModelMismatch) as e:
        load_model(path, backend="autonuma", catalog_hash="0123456789abcdef")
    assert str(e.value) == (
        f"model {path}: fitted with catalog hash {CAT.hash} of backend autonuma, the current "
        "catalog hash is 0123456789abcdef; refit with `ptmt model fit --backend autonuma`")
    with pytest.raises(ModelMismatch) as e:
        load_model(path, backend="tpp")
    assert str(e.value) == (f"model {path}: fitted for backend autonuma, not tpp; refit with "
                            "`ptmt model fit --backend tpp`")
    # a model written with another fingerprint schema version
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["fingerprint_version"] = FINGERPRINT_VERSION + 1
    old = tmp_path / "old.npz"
    np.savez(old, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ModelMismatch) as e:
        load_model(old, backend="autonuma", catalog_hash=CAT.hash)
    assert str(e.value) == (
        f"model {old}: fingerprint feature schema version {FINGERPRINT_VERSION + 1} "
        f"({len(FEATURE_NAMES)} features), this PTMT computes version {FINGERPRINT_VERSION} "
        f"({len(FEATURE_NAMES)} features); refit with `ptmt model fit --backend autonuma`")


def test_fingerprint_of_live_samples_matches_the_database(db_url: str) -> None:
    with open_storage(db_url) as db:
        frame = db.samples_frame(study=1)
    trial = frame[frame["trial_id"] == frame["trial_id"].iloc[0]]
    expected = fingerprint_frame(trial).to_numpy(float)[0]
    live = []
    for row in trial.to_dict("records"):
        c = {k: int(v) for k, v in row.items() if k in synthetic.interval.__code__.co_names or
             k.startswith(("numa_", "pg"))}
        nodes = {n: {"MemTotal": int(row[f"node{n}.MemTotal"]), "MemFree": int(row[f"node{n}.MemFree"])}
                 for n in (0, 1)}
        perf = {k: float(row[k]) for k in ("instructions", "cycles", "loads_fast", "loads_slow")}
        live.append(Sample(t=row["t_s"], interval_s=row["dt_s"], counters=c, nodes=nodes, perf=perf))
    assert np.allclose(fingerprint(live), expected, equal_nan=True)
    assert np.allclose(fingerprint([s.as_dict() for s in live]), expected, equal_nan=True)
    # without perf and without demotion counters (older kernel): NaN, not an error
    bare = [Sample(t=1, interval_s=1, counters={"numa_hint_faults": 10}, nodes={}) for _ in range(2)]
    fp = dict(zip(FEATURE_NAMES, fingerprint(bare), strict=True))
    assert np.isnan(fp["ipc"]) and np.isnan(fp["demote"]) and np.isnan(fp["hint_faults"])
    fp = dict(zip(FEATURE_NAMES, fingerprint(bare, mem_total_kb=2**20), strict=True))
    assert fp["hint_faults"] == pytest.approx(np.log1p(10.0))


def test_held_out_workloads(table) -> None:
    ev = evaluate(table, backend="autonuma", catalog_hash=CAT.hash, knob_names=list(CAT.knobs),
                  defaults=CAT.defaults(), queries_per_workload=5)
    wl, orig = ev["methods"]["workload"], ev["methods"]["original"]
    assert wl["regret"] < 0.05 and wl["achieved_gain"] > 0.15
    assert wl["regret"] <= orig["regret"]
    assert abs(wl["predicted_gain"] - wl["achieved_gain"]) < 0.1


def test_generalist_is_the_best_configuration_across_workloads(model) -> None:
    """For an outlier the neighbours say nothing; the generalist is the configuration whose median
    gain over the workloads' defaults is highest, never the defaults, and ``exclude`` moves on."""
    ws = synthetic.workloads(2)
    defaults = CAT.defaults()

    def median_gain(config: dict) -> float:
        full = {**defaults, **config}
        return float(np.median([synthetic.true_perf(w, full) / synthetic.true_perf(w, defaults) for w in ws]))

    g = model.generalist()
    assert g is not None and g.outlier and g.method == "generalist"
    candidates = [c for c in model.configs if {**defaults, **c} != defaults]
    assert median_gain(g.configuration) >= max(median_gain(c) for c in candidates) - 0.03
    assert g.expected_gain == pytest.approx(median_gain(g.configuration) - 1, abs=0.05)
    assert 0.5 <= g.confidence <= 1.0 and len(g.workloads) == 3
    nxt = model.generalist(exclude=[g.configuration])
    assert nxt is not None and nxt.configuration != g.configuration and nxt.expected_gain <= g.expected_gain
    assert model.generalist(exclude=model.configs) is None
