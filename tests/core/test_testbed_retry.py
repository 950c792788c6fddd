"""The testbed runner boots again when the guest kernel dies before userspace, and only then.

No guest is booted here: ``TierVM._boot`` is replaced by a script of results, so these run everywhere."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ptmt.testbed import vm
from ptmt.testbed.vm import RunResult, TierVM, died_before_userspace

PANIC = "[    2.281613] Kernel panic - not syncing: Fatal exception in interrupt\n"


def _result(*, booted: bool, console: str = "", rc: int | None = 0, timed_out: bool = False) -> RunResult:
    return RunResult(returncode=rc, stdout="", stderr="", console=console, outdir=Path("."), accel="tcg",
                     boot_seconds=3.0 if booted else None, total_seconds=5.0, timed_out=timed_out,
                     error=None if booted else "guest ended without an exit status (qemu rc=0)")


def _runner(monkeypatch: pytest.MonkeyPatch, results: list[RunResult], **kw) -> tuple[TierVM, list[str]]:  # noqa: ANN003
    monkeypatch.setattr(vm, "choose_accel", lambda qemu: ("tcg", "test"))
    monkeypatch.setenv("PTMT_TIERVM_PARALLEL", "1")  # no lock file in the cache
    logs: list[str] = []
    setup = SimpleNamespace(qemu="qemu-system-x86_64")
    runner = TierVM(setup=setup, log=logs.append, **kw)  # type: ignore[arg-type]
    script = iter(results)
    monkeypatch.setattr(runner, "_boot", lambda *a, **k: next(script))
    return runner, logs


def test_a_boot_panic_is_booted_again(monkeypatch):
    good = _result(booted=True, rc=0)
    runner, logs = _runner(monkeypatch, [_result(booted=False, console=PANIC, rc=None), good])
    assert runner.run(["true"]) is good
    assert logs[-1] == ("the guest kernel died before userspace (guest ended without an exit status "
                        "(qemu rc=0)); booting it again")


def test_retries_are_bounded(monkeypatch):
    panics = [_result(booted=False, console=PANIC, rc=None) for _ in range(4)]
    runner, logs = _runner(monkeypatch, panics, boot_retries=2)
    assert runner.run(["true"]) is panics[2]
    assert sum("booting it again" in m for m in logs) == 2


@pytest.mark.parametrize("first", [
    _result(booted=True, console="TIERVM_BOOTED\n" + PANIC, rc=None),  # crashed while the command ran
    _result(booted=False, console="no panic here\n", rc=None),  # never booted, but nothing crashed
    _result(booted=False, console=PANIC, rc=None, timed_out=True),  # the hard timeout is final
])
def test_other_failures_are_returned_as_they_are(monkeypatch, first):
    runner, logs = _runner(monkeypatch, [first, _result(booted=True)])
    assert runner.run(["true"]) is first
    assert not any("booting it again" in m for m in logs)


def test_died_before_userspace_reads_the_console():
    assert died_before_userspace(_result(booted=False, console="BUG: kernel NULL pointer dereference\n"))
    assert not died_before_userspace(_result(booted=True, console=PANIC))
