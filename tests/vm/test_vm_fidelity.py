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
#: docs/testbed.md). Remove an entry once the simulator is fixed; until then the test reports XFAIL
#: (or XPASS when it starts agreeing).
KNOWN_SIM_DISAGREEMENTS = {
    "scan_size_mb:numa_pte_updates": "the simulator unmaps about as much under either window (slightly more "
                                     "at 256 MB); it runs hot and cold data as one task, where the guest's "
                                     "cold hog is another, sleeping process, so the scanned RSS and the "
                                     "windows per pass differ; both sides are bound by hint-fault throughput",
    "scan_size_mb:numa_hint_faults": "follows from the numa_pte_updates disagreement",
}


#: Cases whose direction the real kernel itself does not reproduce from boot to boot under software
#: emulation: they stay in the table for the record, but their direction is not asserted.
UNSTABLE_IN_THE_KERNEL = {
    "scan_size_mb:numa_hint_faults": "the kernel's own direction varies between boots under TCG "
                                     "(309303 -> 110644 in one run, 96598 -> 122348 in another); "
                                     "numa_pte_updates moves the same way every time",
    "scan_size_mb:numa_pte_updates": "held in every idle-host run, then reversed in one run on a busy host "
                                      "(a second 2-core job beside the guest): 249838 updates at 32 MB, "
                                      "more at 256 MB; the guest's scan pace follows the host's CPU",
}


@pytest.fixture(scope="module")
def real(tiervm, tmp_path_factory):
    deltas = fidelity.run_real(tiervm, tmp_path_factory.mktemp("fidelity"))
    if fidelity.silent(deltas):  # seen once for demotion_enabled (pgdemote_kswapd 0 -> 0): boot once more
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
