"""Real-kernel tiering: promotion, demotion and hint faults under numa_balancing=2 (issue 4, check 3).

One guest boot runs the testbed's scenario (``ptmt.testbed.workload``): a cold hog fills the fast
node, a hot set is moved to the slow node, NUMA balancing in tiering mode with demotion enabled does
the rest, until less than 100 MB of the hot set is left on the slow node or 45 s have passed (a
fixed 15 s once failed on a host busy with other jobs: 269 -> 154 MB). An unloaded host gets there
in about 5 s. Some boots promote far less than the rest (once 269 -> 142 MB in the whole 45 s; the
fidelity tests saw the same, see ``ptmt.testbed.fidelity.weak``): such a boot says nothing about
the mechanism, so the scenario is booted once more, and the checks read the JSON of the last boot.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vm


UNTIL_SLOW_MB = 100


def _run_scenario(tiervm, guest_python, repo_root, out) -> dict:
    res = tiervm.run(
        [guest_python, "-m", "ptmt.testbed.workload", "scenario", "--cold-mb", "800", "--hot-mb", "250",
         "--seconds", "45", "--until-slow-mb", str(UNTIL_SLOW_MB), "--telemetry",
         "--json", str(out / "result.json")],
        cwd=str(repo_root), outdir=out, timeout=300,
    )
    assert res.ok, res.describe()
    return res.json()


@pytest.fixture(scope="module")
def scenario(tiervm, guest_python, repo_root, tmp_path_factory):
    result = _run_scenario(tiervm, guest_python, repo_root, tmp_path_factory.mktemp("tiering"))
    if result["hot_on_slow_mb_end"] >= UNTIL_SLOW_MB:  # a weak boot: the stop condition never held
        first = {k: result.get(k) for k in ("hot_on_slow_mb_start", "hot_on_slow_mb_end", "free_end_mb")}
        result = _run_scenario(tiervm, guest_python, repo_root, tmp_path_factory.mktemp("tiering-again"))
        result["weak_first_boot"] = first
    return result


def _tier_of(tiers: dict[str, str], node: str) -> int:
    for name, nodelist in tiers.items():
        for part in nodelist.split(","):
            lo, _, hi = part.partition("-")
            if part and int(lo) <= int(node) <= int(hi or lo):
                return int(name.removeprefix("memory_tier"))
    raise AssertionError(f"node {node} in no tier: {tiers}")


def test_slow_node_is_in_a_lower_tier(scenario):
    tiers = scenario["tiers"]
    assert _tier_of(tiers, "0") < _tier_of(tiers, "1"), tiers


def test_settings_applied(scenario):
    s = scenario["settings"]
    assert s["numa_balancing"] == "2"
    assert s["demotion_enabled"] in ("true", "1", "Y"), s


@pytest.mark.parametrize("counter", ["pgpromote_success", "pgdemote_kswapd", "numa_hint_faults"])
def test_counter_rises(scenario, counter):
    assert scenario["delta"][counter] > 0, scenario["delta"]


def test_hot_set_is_promoted(scenario):
    start, end = scenario["hot_on_slow_mb_start"], scenario["hot_on_slow_mb_end"]
    assert start >= 0.8 * scenario["hot_mb"], f"hot set not placed on the slow node: {start} MB"
    assert end < start / 2, (f"hot MB on the slow node: {start} -> {end} "
                             f"(first boot: {scenario.get('weak_first_boot', 'not weak')})")


def test_promotions_are_numa_migrations(scenario):
    d = scenario["delta"]
    # In tiering mode every promotion is a NUMA-balancing migration (the two counters are bumped at
    # slightly different moments, so allow a few pages of skew).
    assert d["pgpromote_success"] > 0
    assert abs(d["numa_pages_migrated"] - d["pgpromote_success"]) <= max(64, d["pgpromote_success"] // 100), d


def test_telemetry_reads_vmstat_deltas(scenario):
    tel = scenario.get("telemetry")
    if not tel or "error" in tel:
        pytest.skip(f"ptmt telemetry not available in the guest: {tel and tel.get('error')}")
    # Summed per-interval deltas == the raw delta between the first and last /proc/vmstat texts the
    # telemetry was given, and the interval covers the whole workload.
    assert tel["intervals"] >= 2 and tel["vmstat_reads"] >= tel["intervals"] + 1
    assert tel["delta"] == tel["vmstat_delta"]
    assert tel["delta"]["pgpromote_success"] >= scenario["delta"]["pgpromote_success"] > 0
