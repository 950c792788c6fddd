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
#: Cases where the simulated machine is known to disagree with the kernel (measured figures in
#: docs/testbed.md): the test reports XFAIL (or XPASS once it agrees). None today: the scan_size_mb
#: cases that were here measure the scan rate itself now (ptmt.testbed.fidelity, "scan" workload).
KNOWN_SIM_DISAGREEMENTS: dict[str, str] = {}

#: Cases whose direction the real kernel itself does not reproduce from boot to boot under software
#: emulation: they stay in the table for the record, but their direction is not asserted. None today.
UNSTABLE_IN_THE_KERNEL: dict[str, str] = {}


@pytest.fixture(scope="module")
def real(tiervm, tmp_path_factory):
    deltas = fidelity.run_real(tiervm, tmp_path_factory.mktemp("fidelity"))
    # a boot in which a mechanism never ran (seen once: pgdemote_kswapd 0 -> 0 under demotion_enabled),
    # or whose baseline promoted a third of the usual (seen once), says nothing: boot once more
    if fidelity.silent(deltas) or fidelity.weak(deltas):
        deltas = fidelity.run_real(tiervm, tmp_path_factory.mktemp("fidelity-again"))
    return deltas


@pytest.fixture(scope="module")
def sim():
    why = fidelity.sim_available()
    if why:
        pytest.skip(f"simulated machine not available: {why}")
    return fidelity.run_sim()


@pytest.mark.parametrize("case_id", [
    pytest.param(c, marks=pytest.mark.xfail(reason=UNSTABLE_IN_THE_KERNEL[c], strict=False))
    if c in UNSTABLE_IN_THE_KERNEL else c for c in CASES])
def test_real_kernel_moves_counter_as_mechanism_predicts(real, case_id):
    c = CASES[case_id]
    lo, hi = real[c.run_name(c.low)][c.counter], real[c.run_name(c.high)][c.counter]
    assert fidelity.direction(real, c) == c.expect, f"{c.why}: {c.counter} {lo} -> {hi}"


@pytest.mark.parametrize("case_id", [
    pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN_SIM_DISAGREEMENTS[c], strict=False))
    if c in KNOWN_SIM_DISAGREEMENTS else c for c in CASES])
def test_simulator_moves_counter_like_the_kernel(real, sim, case_id):
    c = CASES[case_id]
    assert fidelity.direction(sim, c) == fidelity.direction(real, c), fidelity.markdown(real, sim, (c,))
