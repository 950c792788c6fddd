"""The tuning service against the real kernel (issue 7): SIGTERM in the middle of a trial puts every
knob back; after SIGKILL in the middle of a trial, `ptmt restore` (the boot unit's command) does.
One guest boot runs guest_service_checks.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.vm
GUEST_SCRIPT = Path(__file__).with_name("guest_service_checks.py")
RATE = "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"


@pytest.fixture(scope="module")
def guest(tiervm, guest_python, repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("service")
    res = tiervm.run([guest_python, str(GUEST_SCRIPT), str(out / "result.json")],
                     cwd=str(repo_root), outdir=out, timeout=800)
    assert res.ok, res.describe()
    return res.json()


def test_sigterm_mid_tuning_restores_the_real_kernels_knobs(guest):
    assert guest["during"] is not None, guest  # tuning changed the kernel before the signal
    assert guest["during"][RATE] != guest["before"][RATE]
    assert guest["during"]["/proc/sys/kernel/numa_balancing"] == "2"  # activation held during tuning
    assert guest["rc"] == 0, guest["stderr"]
    assert "stopped by SIGTERM: every original knob value is restored" in guest["stderr"]
    assert guest["after"] == guest["before"]
    assert not guest["journal_left"]


def test_sigkill_mid_tuning_then_ptmt_restore_puts_the_real_kernels_knobs_back(guest):
    k = guest["kill"]
    assert k["during"] is not None and k["killed_running"], k  # killed while a trial was in the kernel
    assert k["after_kill"][RATE] != k["before"][RATE]  # SIGKILL ran nothing: the trial's value stayed
    assert k["journal_after_kill"]
    assert k["restore_rc"] == 0, k["restore_err"]
    assert k["after_restore"] == k["before"]
    assert not k["journal_left"]
