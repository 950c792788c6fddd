"""Fidelity: knob effects in the real kernel vs the simulated machine (issue 4, check 4).

One guest boot runs the fidelity workload under each setting (ptmt.testbed.fidelity). The real
kernel's directions are checked against the mechanism first (so the cases are meaningful); the
simulated machine is then required to move each counter the same way.
"""

from __future__ import annotations

import pytest

from ptmt.testbed import fidelity

pytestmark = pytest.mark.vm
CASES = {c.id: c for c in fidelity.CASES}


@pytest.fixture(scope="module")
def real(tiervm, tmp_path_factory):
    return fidelity.run_real(tiervm, tmp_path_factory.mktemp("fidelity"))


@pytest.fixture(scope="module")
def sim():
    why = fidelity.sim_available()
    if why:
        pytest.skip(f"simulated machine not available: {why}")
    try:
        return fidelity.run_sim()
    except NotImplementedError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("case_id", list(CASES))
def test_real_kernel_moves_counter_as_mechanism_predicts(real, case_id):
    c = CASES[case_id]
    lo, hi = real[c.run_name(c.low)][c.counter], real[c.run_name(c.high)][c.counter]
    assert fidelity.direction(real, c) == c.expect, f"{c.why}: {c.counter} {lo} -> {hi}"


@pytest.mark.parametrize("case_id", list(CASES))
def test_simulator_moves_counter_like_the_kernel(real, sim, case_id):
    c = CASES[case_id]
    assert fidelity.direction(sim, c) == fidelity.direction(real, c), fidelity.markdown(real, sim, (c,))
