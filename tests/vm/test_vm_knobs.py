"""ptmt's command line against the real kernel's knobs (issue 4, checks 1 and 2).

One guest boot runs guest_knob_checks.py, which drives ``ptmt status``, ``ptmt knobs``, ``ptmt apply``
and ``ptmt restore`` inside the guest and records what the kernel held at every step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ptmt.catalog import load_catalog

pytestmark = pytest.mark.vm
BACKENDS = ("autonuma", "tpp")
GUEST_SCRIPT = Path(__file__).with_name("guest_knob_checks.py")


def _catalog_knobs() -> list[tuple[str, str]]:
    return [(b, k) for b in BACKENDS for k in load_catalog(b).all_knobs]


@pytest.fixture(scope="module")
def guest(tiervm, guest_python, repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("knobs")
    res = tiervm.run([guest_python, str(GUEST_SCRIPT), str(out / "result.json")],
                     cwd=str(repo_root), outdir=out, timeout=400)
    assert res.ok, res.describe()
    return res.json()


def _node(status: dict, nid: int) -> dict:
    return next(n for n in status["nodes"] if n["id"] == nid)


def test_status_entry_point_runs(guest):
    assert guest["status_proc"]["rc"] == 0, guest["status_proc"]
    assert "status" in guest, guest["status_proc"]


def test_status_two_nodes_slow_one_cpuless_in_lower_tier(guest):
    st = guest["status"]
    assert st["platform"] == "linux"
    assert sorted(n["id"] for n in st["nodes"]) == [0, 1]
    n0, n1 = _node(st, 0), _node(st, 1)
    assert n0["cpus"] and not n0["cpu_less"]
    assert n1["cpu_less"] and not n1["cpus"]
    # Lower tier = larger memory_tier id (abstract distance).
    assert n0["tier"] < n1["tier"], st["tiers"]
    assert len(st["tiers"]) == 2
    assert st["demotion_targets"].get("0") == [1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_backend_usable(guest, backend):
    b = guest["status"]["backends"][backend]
    assert b["usable"], b["reasons"]


def test_status_tpp_demote_scale_factor_missing_with_reason(guest):
    knobs = {k["name"]: k for k in guest["status"]["backends"]["tpp"]["knobs"]}
    dsf = knobs["demote_scale_factor"]
    assert dsf["present"] is False
    assert "not supported" in dsf["problem"] and "TPP" in dsf["problem"], dsf["problem"]


@pytest.mark.parametrize(("backend", "knob"), _catalog_knobs(), ids=lambda x: x)
def test_knob_apply_readback_restore(guest, backend, knob):
    rows = [r for r in guest["roundtrip"] if r["backend"] == backend and r["knob"] == knob]
    assert rows, f"{backend}.{knob} not listed by `ptmt knobs --backend {backend} --json` in the guest"
    r = rows[0]
    if not r["present"]:
        # Out-of-tree knob on an upstream kernel: refused by name, nothing written.
        assert r["apply"]["rc"] != 0
        assert "nothing written" in r["apply"]["stderr"] and knob in r["apply"]["stderr"], r["apply"]
        return
    assert r["writable"], r
    assert r["candidate"] is not None, f"no non-default legal candidate for {knob}"
    assert r["apply"]["rc"] == 0, r["apply"]
    assert r["readback"] == r["candidate"], (r["readback_raw"], r["candidate"])
    assert r["restore"]["rc"] == 0, r["restore"]
    assert r["restored_raw"] == r["original_raw"], (r["restored_raw"], r["original_raw"])


def test_activation_apply_and_restore(guest):
    a = guest["activate"]
    assert a["apply"]["rc"] == 0, a["apply"]
    assert a["during"]["numa_balancing"] == "2"
    assert a["during"]["demotion_enabled"] in ("true", "1")
    assert a["restore"]["rc"] == 0, a["restore"]
    assert a["after"] == a["before"]


@pytest.mark.parametrize("case", range(4), ids=["below-min", "not-a-number", "unknown-knob", "rule"])
def test_illegal_value_refused_before_any_write(guest, case):
    c = guest["illegal"][case]
    assert c["apply"]["rc"] != 0, c
    assert "nothing written" in c["apply"]["stderr"], c["apply"]["stderr"]
    assert c["after"] == c["before"]  # hot_threshold_ms=2000 in the same request was not written
    assert c["journal"] == []


def test_kernel_rejection_reported_and_rolled_back(guest):
    r = guest["rejected"]
    err = r["apply"]["stderr"]
    assert r["apply"]["rc"] != 0, r["apply"]
    assert "watermark_scale_factor" in err and "EINVAL" in err, err
    assert "rolled back 1" in err, err  # scan_size_mb had been written and was put back
    assert r["after"] == r["before"], (r["before"], r["after"])
    assert r["journal"] == []
