"""Every knob moves the counters the way the kernel's mechanism does (issue 3, "Must hold").

Small machines and short runs keep this quick; the long sweeps live in benchmarks/calibrate.py.
"""

from __future__ import annotations

from ptmt.sim.runner import run

SMALL = {"fast_gb": 2, "slow_gb": 4, "footprint_gb": 4}


def mean_ops(r):
    return r.throughput_ops_s


def test_larger_scan_size_more_hint_faults():
    # Below MAX_SCAN_WINDOW (2560 MB) the kernel divides the scan period by the number of windows, so
    # the scan rate hardly depends on scan_size_mb; past it the 2.56 GB/s floor no longer binds.
    common = {"scan_period_max_ms": "1000"}  # = scan_period_min_ms: no back-off
    small = run("autonuma", "silo-ycsb", duration=120, settings={**common, "scan_size_mb": "256"}, **SMALL)
    large = run("autonuma", "silo-ycsb", duration=120, settings={**common, "scan_size_mb": "4096"}, **SMALL)
    assert large.counters["numa_hint_faults"] > 1.2 * small.counters["numa_hint_faults"]
    assert large.counters["numa_pte_updates"] > small.counters["numa_pte_updates"]


def test_lower_promote_rate_limit_fewer_promotions_never_above_limit():
    fast = run("autonuma", "gups", duration=120, interval=10, settings={}, **SMALL)
    limit = 32
    slow = run("autonuma", "gups", duration=120, interval=10,
               settings={"numa_balancing_promote_rate_limit_MBps": str(limit)}, **SMALL)
    assert slow.counters["pgpromote_success"] < fast.counters["pgpromote_success"] / 3
    frame_mb = 2.0
    for i in slow.intervals:
        assert i.promoted_mb_s <= limit * 1.1 + frame_mb / 10, i
    total_mb = slow.counters["pgpromote_success"] * 4096 / 2**20
    assert total_mb / slow.duration_s <= limit
    assert slow.counters["pgpromote_candidate"] >= slow.counters["pgpromote_success"]


def test_no_demotion_promotions_stall_when_fast_full():
    on = run("autonuma", "silo-ycsb", duration=120, interval=20, **SMALL)
    off = run("autonuma", "silo-ycsb", duration=120, interval=20, settings={"demotion_enabled": "false"}, **SMALL)
    assert off.counters["pgdemote_kswapd"] == 0
    assert on.counters["pgdemote_kswapd"] > 0
    assert on.counters["pgpromote_success"] > 100 * max(1, off.counters["pgpromote_success"])
    assert all(i.promoted_mb_s == 0 for i in off.intervals[1:])
    assert off.counters["numa_hint_faults"] > 0  # faults keep coming, promotions do not


def test_higher_watermark_scale_factor_more_demotion_more_free_fast():
    low = run("autonuma", "silo-ycsb", duration=120, interval=20, **SMALL)
    high = run("autonuma", "silo-ycsb", duration=120, interval=20, settings={"watermark_scale_factor": "1000"},
               **SMALL)
    assert high.counters["pgdemote_kswapd"] > low.counters["pgdemote_kswapd"]
    assert high.intervals[-1].free_fast_mb > 2 * low.intervals[-1].free_fast_mb


def test_uniform_random_gains_little():
    # No placement helps uniform access: no configuration beats the better of "no tiering" and the
    # defaults by much (eager defaults may lose to no tiering through churn; that is not a gain).
    base = max((run("autonuma", "uniform-random", duration=120, **SMALL),
                run("none", "uniform-random", duration=120, **SMALL)), key=mean_ops)
    others = [
        run("autonuma", "uniform-random", duration=120, settings={"numa_balancing_promote_rate_limit_MBps": "64"},
            **SMALL),
        run("autonuma", "uniform-random", duration=120, settings={"scan_period_max_ms": "2000"}, **SMALL),
        run("tpp", "uniform-random", duration=120, **SMALL),
    ]
    best = max(mean_ops(r) for r in others)
    assert best / mean_ops(base) < 1.08


def test_oversized_hot_set_with_eager_promotion_thrashes():
    # gups: 25% hot; 12 GiB footprint -> 3 GiB hot set on a 2 GiB fast node
    machine = {"fast_gb": 2, "slow_gb": 12, "footprint_gb": 12}
    eager = run("autonuma", "gups", duration=120, settings={"scan_period_max_ms": "1000",
                                                            "hot_threshold_ms": "5000"}, **machine)
    calm = run("autonuma", "gups", duration=120, settings={"numa_balancing_promote_rate_limit_MBps": "16"}, **machine)
    for name in ("pgpromote_success", "pgdemote_kswapd"):
        assert eager.counters[name] > 10 * calm.counters[name], name
    assert mean_ops(eager) < mean_ops(calm)


def test_colloid_beats_tpp_under_bandwidth_saturation():
    machine = {"fast_gb": 4, "slow_gb": 8, "footprint_gb": 3}
    tpp = run("tpp", "stream", duration=120, **machine)
    colloid = run("colloid", "stream", duration=120, **machine)
    assert mean_ops(colloid) > 1.05 * mean_ops(tpp)
    assert colloid.counters["pgdemote_kswapd"] > 0  # it moved hot pages to the slow tier


def test_mode2_scan_backoff_and_short_max_keeps_promoting():
    # TESTBED.md "Pitfalls seen": slow-node hint faults are not the task's NUMA faults in mode 2, so the
    # scan period doubles up to scan_period_max_ms and promotion stalls; a short max keeps it going.
    machine = {"fast_gb": 2, "slow_gb": 6, "footprint_gb": 6}
    default = run("autonuma", "ycsb-shift", duration=240, interval=20, **machine)
    short = run("autonuma", "ycsb-shift", duration=240, interval=20, settings={"scan_period_max_ms": "1000"},
                **machine)
    early = sum(i.hint_faults_s for i in default.intervals[:2])
    late = sum(i.hint_faults_s for i in default.intervals[-2:])
    assert late < early / 4
    late_short = sum(i.hint_faults_s for i in short.intervals[-2:])
    assert late_short > 4 * late
    assert sum(i.promoted_mb_s for i in short.intervals[-4:]) > 2 * sum(i.promoted_mb_s for i in default.intervals[-4:])
