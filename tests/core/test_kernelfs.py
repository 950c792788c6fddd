"""The kernel filesystem layer: typed errors with fixes, and refusal to write outside knob locations."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from ptmt.errors import DebugfsNotMounted, KernelRejected, KnobMissing, NeedsRoot, PathNotAllowed
from ptmt.kernelfs import KernelFS

RATE = "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"
SCAN = "/sys/kernel/debug/sched/numa_balancing/scan_size_mb"


def test_read_strips_and_write_adds_newline(fs, fake_root):
    assert fs.read(RATE) == "65536"
    fs.write(RATE, "1024")
    assert (fake_root / RATE[1:]).read_text() == "1024\n"


def test_missing_file_says_kernel_lacks_it(fs):
    with pytest.raises(KnobMissing) as e:
        fs.read("/proc/sys/vm/demote_scale_factor")
    assert str(e.value) == "/proc/sys/vm/demote_scale_factor: not supported by this kernel (file does not exist)"


def test_missing_debugfs_tells_how_to_mount(fake_root, faulty):
    (fake_root / "proc/mounts").write_text("proc /proc proc rw 0 0\n")
    shutil.rmtree(fake_root / "sys/kernel/debug/sched")
    fs = KernelFS(fake_root, io=faulty)
    with pytest.raises(DebugfsNotMounted) as e:
        fs.write(SCAN, "512")
    assert str(e.value) == f"{SCAN}: debugfs not mounted: mount -t debugfs none /sys/kernel/debug"
    assert not fs.debugfs_mounted()


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_permission_errors_say_needs_root(fs, faulty, code):
    faulty.write_faults[RATE] = code
    with pytest.raises(NeedsRoot) as e:
        fs.write(RATE, "1024")
    assert str(e.value) == f"{RATE}: permission denied ({errno.errorcode[code]}): needs root"


def test_rejected_value_is_named(fs, faulty):
    faulty.reject[RATE] = {"-5"}
    with pytest.raises(KernelRejected) as e:
        fs.write(RATE, "-5")
    assert str(e.value) == f"{RATE}: kernel rejected value '-5' (EINVAL: Invalid argument)"


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/mem", "/sys/class/net/eth0/mtu", "relative/path",
                                  "/proc/sys/../../etc/shadow"])
def test_writes_outside_knob_locations_are_refused(fs, path):
    with pytest.raises(PathNotAllowed):
        fs.write(path, "1")


def test_symlink_escaping_the_knob_tree_is_refused(fake_root, fs, tmp_path):
    outside = tmp_path / "victim"
    outside.write_text("precious\n")
    os.symlink(outside, fake_root / "proc/sys/vm/evil")
    with pytest.raises(PathNotAllowed) as e:
        fs.write("/proc/sys/vm/evil", "0")
    assert "outside the root" in str(e.value)
    assert outside.read_text() == "precious\n"


def test_symlink_inside_root_but_outside_knob_locations_is_refused(fake_root, fs):
    (fake_root / "etc").mkdir()
    (fake_root / "etc/important").write_text("x\n")
    os.symlink(fake_root / "etc/important", fake_root / "proc/sys/vm/link")
    with pytest.raises(PathNotAllowed) as e:
        fs.write("/proc/sys/vm/link", "0")
    assert "is a link to /etc/important" in str(e.value)
    assert (fake_root / "etc/important").read_text() == "x\n"


def test_reads_are_limited_to_proc_and_sys(fs):
    with pytest.raises(PathNotAllowed):
        fs.read("/etc/hostname")


def test_listdir_of_missing_directory_is_empty(fs):
    assert fs.listdir("/sys/kernel/mm/damon/admin") == []
    assert fs.listdir("/sys/devices/system/node") == ["node0", "node1"]


def test_root_is_resolved(tmp_path: Path):
    (tmp_path / "a").mkdir()
    assert KernelFS(tmp_path / "a" / ".." / "a").root == (tmp_path / "a").resolve()
