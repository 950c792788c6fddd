"""All-or-nothing apply, the persistent journal, and restore."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from ptmt.backends.registry import open_backend
from ptmt.errors import KernelRejected, NeedsRoot, ValidationError
from ptmt.host import LinuxHost
from ptmt.journal import Journal
from ptmt.restore import restore

DEBUG = "/sys/kernel/debug/sched/numa_balancing"


@pytest.fixture
def host(fs):
    h = LinuxHost(fs.root)
    h.fs = fs  # with the fault-injecting IO
    return h


@pytest.fixture
def journal(tmp_path) -> Journal:
    return Journal(tmp_path / "state")


def kernel(root: Path, path: str) -> str:
    return (root / path.lstrip("/")).read_text().strip()


def opener(host):
    return lambda platform, root: host


def test_invalid_configuration_writes_nothing_and_journals_nothing(host, journal, faulty):
    tpp = open_backend("autonuma", host)
    with pytest.raises(ValidationError) as e:
        tpp.plan({"scan_size_mb": "512", "scan_period_min_ms": "90000", "hot_threshold_ms": "-1"})
    assert "hot_threshold_ms: must be >= 1 (got -1)" in str(e.value)
    assert "rule 'scan_period_min_ms <= scan_period_max_ms' violated (scan_period_min_ms=90000, scan_period_max_ms=60000)" in str(e.value)
    assert faulty.writes == [] and journal.entries() == []


def test_cross_knob_rule_uses_the_new_values_of_both(host):
    plan = open_backend("autonuma", host).plan({"scan_period_min_ms": "90000", "scan_period_max_ms": "120000"})
    assert [c.knob.name for c in plan.changes] == ["scan_period_min_ms", "scan_period_max_ms"]


def test_apply_journals_before_writing_then_writes_in_catalog_order(host, journal, faulty, fake_root):
    b = open_backend("tpp", host)
    seen_journal_at_first_write = []
    original_write = faulty.write_text

    def spy(path, data):
        seen_journal_at_first_write.append(len(journal.entries()))
        original_write(path, data)

    faulty.write_text = spy
    plan = b.plan({"scan_size_mb": 512, "hot_threshold_ms": 500}, activate=True)
    b.apply(plan, journal)
    assert seen_journal_at_first_write[0] == 4  # every original on disk before the first kernel write
    assert [w[0] for w in faulty.writes] == [
        "/sys/kernel/mm/numa/demotion_enabled", "/proc/sys/kernel/numa_balancing",
        f"{DEBUG}/hot_threshold_ms", f"{DEBUG}/scan_size_mb"]
    assert kernel(fake_root, f"{DEBUG}/scan_size_mb") == "512"
    assert kernel(fake_root, "/proc/sys/kernel/numa_balancing") == "2"
    entries = {e.knob: e for e in journal.entries()}
    assert entries["numa_balancing"].original == "1" and entries["numa_balancing"].written == "2"
    assert entries["demotion_enabled"].original == "0"  # written back in the form kstrtobool accepts


def test_failure_midway_rolls_back_what_was_written(host, journal, faulty, fake_root):
    faulty.reject[f"{DEBUG}/scan_size_mb"] = {"1024"}
    b = open_backend("autonuma", host)
    plan = b.plan({"hot_threshold_ms": 250, "scan_delay_ms": 100, "scan_size_mb": 1024})
    with pytest.raises(KernelRejected) as e:
        b.apply(plan, journal)
    assert str(e.value) == (f"{DEBUG}/scan_size_mb: kernel rejected value '1024' (EINVAL: Invalid argument); "
                            "rolled back 2 knob(s) written before it")
    assert kernel(fake_root, f"{DEBUG}/hot_threshold_ms") == "1000"
    assert kernel(fake_root, f"{DEBUG}/scan_delay_ms") == "1000"
    assert journal.entries() == []  # everything is back, nothing left to restore


def test_readback_mismatch_counts_as_failure(host, journal, faulty, fake_root):
    faulty.clamp[f"{DEBUG}/scan_size_mb"] = {"512": "128"}  # a kernel that silently clamps
    b = open_backend("autonuma", host)
    with pytest.raises(KernelRejected, match=r"kernel kept 128 after PTMT wrote '512'"):
        b.apply(b.plan({"scan_size_mb": 512}), journal)
    assert kernel(fake_root, f"{DEBUG}/scan_size_mb") == "256"


def test_failed_rollback_keeps_the_original_in_the_journal(host, journal, faulty, fake_root):
    b = open_backend("autonuma", host)
    plan = b.plan({"hot_threshold_ms": 250, "scan_size_mb": 1024})
    faulty.reject[f"{DEBUG}/scan_size_mb"] = {"1024"}
    faulty.reject[f"{DEBUG}/hot_threshold_ms"] = {"1000"}  # cannot go back
    with pytest.raises(KernelRejected, match="could NOT roll back hot_threshold_ms"):
        b.apply(plan, journal)
    assert {e.knob: e.original for e in journal.entries()}["hot_threshold_ms"] == "1000"


def test_permission_error_is_reported_with_the_fix(host, journal, faulty):
    faulty.write_faults["/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"] = errno.EACCES
    b = open_backend("autonuma", host)
    with pytest.raises(NeedsRoot, match="needs root; rolled back 0 knob"):
        b.apply(b.plan({"numa_balancing_promote_rate_limit_MBps": 1024}), journal)


def test_first_original_wins_and_restore_is_idempotent(host, journal, fake_root):
    b = open_backend("autonuma", host)
    b.apply(b.plan({"scan_size_mb": 512}), journal)
    b.apply(b.plan({"scan_size_mb": 1024, "hot_threshold_ms": 500}), journal)
    assert {e.knob: e.original for e in journal.entries()} == {"scan_size_mb": "256", "hot_threshold_ms": "1000"}
    report = restore(journal, opener(host))
    assert sorted(e.knob for e in report.restored) == ["hot_threshold_ms", "scan_size_mb"] and not report.failed
    assert kernel(fake_root, f"{DEBUG}/scan_size_mb") == "256"
    assert kernel(fake_root, f"{DEBUG}/hot_threshold_ms") == "1000"
    assert not journal.path.exists()
    again = restore(journal, opener(host))
    assert again.restored == [] and again.failed == []


def test_restore_keeps_entries_it_cannot_write(host, journal, faulty):
    b = open_backend("autonuma", host)
    b.apply(b.plan({"scan_size_mb": 512, "hot_threshold_ms": 500}), journal)
    faulty.write_faults[f"{DEBUG}/scan_size_mb"] = errno.ENOENT
    report = restore(journal, opener(host))
    assert [e.knob for e in report.restored] == ["hot_threshold_ms"]
    assert [e.knob for e, _ in report.failed] == ["scan_size_mb"]
    assert [e.knob for e in journal.entries()] == ["scan_size_mb"]


def test_unchanged_values_produce_an_empty_plan(host, journal):
    b = open_backend("autonuma", host)
    plan = b.plan({"scan_size_mb": 256})
    assert plan.changes == []
    b.apply(plan, journal)
    assert journal.entries() == []


def test_journal_file_is_plain_json_with_everything_needed_to_restore(host, journal):
    b = open_backend("autonuma", host)
    b.apply(b.plan({"scan_size_mb": 512}), journal)
    doc = json.loads(journal.path.read_text())
    (entry,) = doc["entries"]
    assert doc["version"] == 1
    assert entry["target"] == f"{DEBUG}/scan_size_mb" and entry["root"] == str(host.fs.root)
    assert entry["platform"] == "linux" and entry["backend"] == "autonuma" and entry["original"] == "256"


def test_probe_reports_missing_patch_knob_with_reason(host):
    states = {s.knob.name: s for s in open_backend("tpp", host).probe()}
    assert states["scan_size_mb"].present and states["scan_size_mb"].current == 256
    assert not states["demote_scale_factor"].present
    assert states["demote_scale_factor"].problem == (
        "/proc/sys/vm/demote_scale_factor: not supported by this kernel (file does not exist) "
        "(needs out-of-tree TPP patch, kernel >= 6.1)")
    usable, reasons = open_backend("tpp", host).usability()
    assert usable and reasons == []


def test_backend_needs_two_tiers_on_linux(host, fake_root):
    import shutil

    shutil.rmtree(fake_root / "sys/devices/virtual/memory_tiering/memory_tier22")
    usable, reasons = open_backend("autonuma", host).usability()
    assert not usable and reasons[0].startswith("needs 2 memory tiers, this machine has 1")
