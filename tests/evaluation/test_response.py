"""ptmt.evaluation.response: a change measured against the unchanged configuration from one state."""

from __future__ import annotations

import pytest

from ptmt.evaluation.response import Response, measure_response
from ptmt.online.simrun import SimSetup

SETUP = SimSetup(workload="gups", machine="dram-cxl-1to2", fast_gb=1, slow_gb=2, footprint_gb=2, seed=3)


def test_the_defaults_against_themselves_show_nothing():
    r = measure_response("autonuma", SETUP, {}, switch_at=2, intervals=6)
    assert r.changed == r.unchanged
    assert r.steady == 0.0 and r.arrival() is None


def test_a_change_differs_from_the_unchanged_fork():
    # the promotion rate limit's far end: almost nothing is promoted any more
    r = measure_response("autonuma", SETUP, {"numa_balancing_promote_rate_limit_MBps": 1}, switch_at=2, intervals=6)
    assert len(r.changed) == len(r.unchanged) == 6
    assert r.changed != r.unchanged


def test_gain_windows_and_arrival_of_a_building_effect():
    # the changed fork gains 0%, 0%, 10%, 20%, 20%, 20%: the steady gain is the second half's
    r = Response(changed=(100, 100, 110, 120, 120, 120), unchanged=(100,) * 6)
    assert r.steady == pytest.approx(0.2)
    assert r.judged(1, 2) == pytest.approx(0.05)
    assert r.windows(2) == pytest.approx([0.0, 0.15, 0.2])
    assert r.arrival(size=2) == 4  # intervals 4-5 average +20% >= 90% of +20%; intervals 3-4 only +15%
    assert Response(changed=(90,) * 4, unchanged=(100,) * 4).arrival() is None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="intervals >= 1"):
        measure_response("autonuma", SETUP, {}, intervals=0)

