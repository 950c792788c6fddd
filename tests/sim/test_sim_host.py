"""SimHost behaves like a Linux host: kernel files and formats, EINVAL, persistence, UPM, time."""

from __future__ import annotations

import re

import pytest

from ptmt.errors import ConfigError, KernelRejected, NeedsRoot, PathNotAllowed
from ptmt.host import Host, memory_tier_count
from ptmt.sim.host import SimHost
from ptmt.sim.workload import load_workload

SMALL = {"machine": "dram-cxl-1to2", "fast_gb": 1, "slow_gb": 2, "footprint_gb": 2, "workload": "silo-ycsb"}


@pytest.fixture
def host(tmp_path):
    return SimHost(tmp_path / "m", seed=1, **SMALL)


def test_satisfies_host_protocol(host):
    h: Host = host
    assert h.platform == "sim"
    assert h.now() == 0.0
    assert memory_tier_count(h.fs) == 2
    assert h.fs.read("/proc/sys/kernel/osrelease").startswith("6.12")
    assert h.fs.debugfs_mounted()


def test_kernel_defaults_and_formats(host):
    fs = host.fs
    assert fs.read("/proc/sys/kernel/numa_balancing") == "0"
    assert fs.read("/sys/kernel/mm/numa/demotion_enabled") == "false"
    assert fs.read("/sys/kernel/debug/sched/numa_balancing/scan_size_mb") == "256"
    assert fs.read("/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps") == "65536"
    assert fs.read("/sys/devices/system/node/node1/cpulist") == ""
    assert fs.read("/sys/devices/virtual/memory_tiering/memory_tier4/nodelist") == "0"
    assert fs.read("/sys/devices/virtual/memory_tiering/memory_tier22/nodelist") == "1"
    assert re.search(r"^Node 0 MemTotal:\s+1048576 kB$", fs.read("/sys/devices/system/node/node0/meminfo"), re.M)
    assert re.search(r"^numa_hit \d+$", fs.read("/sys/devices/system/node/node0/numastat"), re.M)
    vm = dict(line.split() for line in fs.read("/proc/vmstat").splitlines())
    for name in ("numa_pte_updates", "numa_hint_faults", "numa_hint_faults_local", "numa_pages_migrated",
                 "pgmigrate_success", "pgmigrate_fail", "pgpromote_success", "pgpromote_candidate",
                 "pgdemote_kswapd", "pgdemote_direct", "nr_free_pages"):
        assert name in vm
    assert not fs.exists("/proc/sys/vm/demote_scale_factor")  # upstream kernel: no TPP patch


def test_writes_validated_like_the_kernel(host):
    fs = host.fs
    fs.write("/sys/kernel/mm/numa/demotion_enabled", "1")
    assert fs.read("/sys/kernel/mm/numa/demotion_enabled") == "true"
    fs.write("/sys/kernel/mm/numa/demotion_enabled", "n")
    assert fs.read("/sys/kernel/mm/numa/demotion_enabled") == "false"
    for path, bad in [("/proc/sys/kernel/numa_balancing", "4"), ("/proc/sys/kernel/numa_balancing", "x"),
                      ("/proc/sys/vm/watermark_scale_factor", "0"), ("/proc/sys/vm/watermark_scale_factor", "3001"),
                      ("/sys/kernel/mm/numa/demotion_enabled", "maybe"),
                      ("/sys/kernel/debug/sched/numa_balancing/scan_size_mb", "-1")]:
        with pytest.raises(KernelRejected):
            fs.write(path, bad)
    with pytest.raises(NeedsRoot):
        fs.write("/sys/devices/system/node/node0/numastat", "1")
    with pytest.raises(PathNotAllowed):
        fs.write("/proc/vmstat", "1")


def test_colloid_kernel_accepts_mode_6(tmp_path):
    h = SimHost(tmp_path / "c", kernel="colloid", **SMALL)
    h.fs.write("/proc/sys/kernel/numa_balancing", "6")
    assert h.fs.read("/sys/kernel/mm/colloid/delta_percent") == "5"
    assert h.fs.read("/proc/sys/vm/demote_scale_factor") == "200"
    assert h.knobs().colloid


def test_time_moves_only_on_advance_and_writes_take_effect(host):
    fs = host.fs
    fs.write("/proc/sys/kernel/numa_balancing", "2")
    fs.write("/sys/kernel/mm/numa/demotion_enabled", "1")
    assert host.now() == 0.0
    host.advance(30)
    assert host.now() == 30.0
    c1 = host.counters()
    assert c1["numa_hint_faults"] > 0
    assert c1["numa_pte_updates"] % 512 == 0  # 2 MiB frames counted in 4 KiB pages
    fs.write("/proc/sys/kernel/numa_balancing", "0")
    host.advance(10)
    c2 = host.counters()
    assert c2["numa_hint_faults"] == c1["numa_hint_faults"]
    assert host.objective() > 0
    perf = host.perf_counters()
    assert perf["instructions"] > 0 and perf["cycles"] > 0 and perf["mem_loads_fast"] > 0


def test_state_persists_across_instances(tmp_path):
    root = tmp_path / "m"
    a = SimHost(root, seed=2, **SMALL)
    a.fs.write("/proc/sys/vm/watermark_scale_factor", "200")
    a.fs.write("/proc/sys/kernel/numa_balancing", "2")
    a.advance(20)
    upm = a.upm_transport("127.0.0.1", 10086)
    assert upm.request(f"enable -p {a.workload_pid} -h 3 -m 2 -d 500").startswith("OK")
    b = SimHost(root)  # another process, no options: the same machine
    assert b.fs.read("/proc/sys/vm/watermark_scale_factor") == "200"
    assert b.now() == 20.0
    assert b.counters() == a.counters()
    assert b.upm_transport("127.0.0.1", 10086).request(f"status -p {a.workload_pid}") == "OK enabled=1 h=3 m=2 d=500"
    assert b.upm_transport("", 0).request("status -p 1").startswith("ERR")


def test_objective_noise_is_seeded(tmp_path):
    vals = []
    for i in range(2):
        h = SimHost(tmp_path / f"s{i}", seed=5, **SMALL)
        h.advance(10)
        vals.append(h.objective())
    assert vals[0] == vals[1]


def test_workload_schema_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\nfootprint_gb: 4\npattern: zipf\nskew: 0.9\nintensity: 1.0e+8\n"
                   "phases:\n  - {duration_s: 10, shift: 2}\n")
    with pytest.raises(ConfigError, match=r"x.yaml: At 'phases\[0\].shift': must be <= 1|x.yaml: At 'phases\[0\].shift'"):
        load_workload(str(bad))
    bad.write_text("name: x\nfootprint_gb: 4\npattern: hotset\nintensity: 1.0e+8\n")
    with pytest.raises(ConfigError, match="hot_fraction"):
        load_workload(str(bad))
    with pytest.raises(ConfigError, match="unknown workload"):
        load_workload("no-such-workload")


def test_all_builtin_workloads_and_machines_load():
    from ptmt.sim.machine import load_machine
    from ptmt.sim.specs import builtin_names

    assert len(builtin_names("workloads")) >= 11
    for name in builtin_names("workloads"):
        assert load_workload(name).footprint_gb > 0
    for name in builtin_names("machines"):
        assert load_machine(name).fast_frames > 0


def test_fork_continues_identically_and_independently(host, tmp_path):
    """Two forks of one instant read the same until one of them is changed; the original is untouched."""
    for _ in range(3):
        host.advance(10)
    a, b = host.fork(tmp_path / "a"), host.fork(tmp_path / "b")
    assert a.now() == b.now() == host.now()
    assert a.fs.read("/proc/vmstat") == host.fs.read("/proc/vmstat")
    a.advance(10)
    b.advance(10)
    assert a.objective() == b.objective()
    a.fs.write("/proc/sys/kernel/numa_balancing", "2")
    assert host.fs.read("/proc/sys/kernel/numa_balancing") == "0"
    assert b.fs.read("/proc/sys/kernel/numa_balancing") == "0"
    for _ in range(3):
        a.advance(10)
        b.advance(10)
    assert a.objective() != b.objective()
    assert host.now() == 30.0 and a.now() == b.now() == 70.0


def test_fork_refuses_a_used_directory(host, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("1")
    with pytest.raises(ValueError, match="not empty"):
        host.fork(tmp_path / "used")
