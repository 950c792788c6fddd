"""Telemetry deltas under the kernel's counter names, read through the host's files."""

from __future__ import annotations

from ptmt.host import LinuxHost
from ptmt.telemetry import TIERING_COUNTERS, Telemetry, parse_counters, read_nodes


class SteppedHost(LinuxHost):
    """A fake-tree Linux host whose clock advances by hand."""

    def __init__(self, root):
        super().__init__(root)
        self.clock = 100.0

    def advance(self, seconds: float) -> None:
        self.clock += seconds

    def now(self) -> float:
        return self.clock


def write_vmstat(root, **values):
    (root / "proc/vmstat").write_text("".join(f"{k} {v}\n" for k, v in values.items()) + "nr_free_pages 12\n")


def test_deltas_and_rates(fake_root):
    host = SteppedHost(fake_root)
    write_vmstat(fake_root, pgpromote_success=1000, numa_hint_faults=50, pgdemote_kswapd=7)
    (fake_root / "sys/devices/system/node/node1/numastat").write_text("numa_hit 10\nnuma_miss 2\nother_node 3\n")
    tel = Telemetry(host, counters=TIERING_COUNTERS)
    tel.start()
    write_vmstat(fake_root, pgpromote_success=1600, numa_hint_faults=250, pgdemote_kswapd=7)
    host.advance(2.0)
    s = tel.sample()
    assert s.interval_s == 2.0
    assert s.counters["pgpromote_success"] == 600 and s.counters["numa_hint_faults"] == 200
    assert s.counters["pgdemote_kswapd"] == 0 and s.counters["pgmigrate_fail"] == 0  # absent counter: 0
    assert set(s.counters) == set(TIERING_COUNTERS)
    assert s.rate("pgpromote_success") == 300.0
    assert s.nodes[0]["MemFree"] == 524288 and s.nodes[1]["numa_miss"] == 2
    assert s.perf == {}  # a fake tree has no hardware counters: samples simply lack them


def test_parse_counters_skips_other_lines():
    assert parse_counters("a 1\nbogus line here\nb -2\n\nc x\n") == {"a": 1, "b": -2}


def test_read_nodes_survives_missing_files(fake_root):
    (fake_root / "sys/devices/system/node/node1/meminfo").unlink()
    nodes = read_nodes(LinuxHost(fake_root))
    assert nodes[1] == {} and nodes[0]["MemTotal"] == 1048576
