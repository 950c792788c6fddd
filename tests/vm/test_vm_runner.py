"""The runner itself: topology options reach the guest kernel, exit status and output come back, the
hard timeout holds, and without HMAT the CPU-less node is not a lower tier (negative control)."""

from __future__ import annotations

import json

import pytest

from ptmt.testbed import TierVM, Topology

pytestmark = pytest.mark.vm

PROBE = r"""
import json, os, sys
from pathlib import Path
node = Path("/sys/devices/system/node")
tiers = {t.name: (t / "nodelist").read_text().strip()
         for t in Path("/sys/devices/virtual/memory_tiering").glob("memory_tier*")}
mem = {}
for n in sorted(node.glob("node[0-9]*")):
    for line in (n / "meminfo").read_text().splitlines():
        if "MemTotal:" in line:
            mem[n.name] = int(line.split()[-2]) // 1024
cpus = {n.name: (n / "cpulist").read_text().strip() for n in sorted(node.glob("node[0-9]*"))}
print(json.dumps({"tiers": tiers, "mem_mb": mem, "cpus": cpus, "env_out": os.environ.get("TIERVM_OUT"),
                  "uid": os.getuid()}))
print("to stderr", file=sys.stderr)
sys.exit(3)
"""


def _nodes(nodelist: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, nodelist.split(",")):
        lo, _, hi = part.partition("-")
        out |= set(range(int(lo), int(hi or lo) + 1))
    return out


def _tier(tiers: dict[str, str], node: str) -> int:
    found = [int(k.removeprefix("memory_tier")) for k, v in tiers.items() if int(node) in _nodes(v)]
    assert found, f"node {node} in no tier: {tiers}"
    return found[0]


def test_custom_topology_status_and_output(tiervm_setup, guest_python):
    topo = Topology(fast_mb=768, slow_mb=512, cpus=1, slow_latency_ns=300, slow_bandwidth="8G")
    r = TierVM(topo, setup=tiervm_setup).run([guest_python, "-c", PROBE], timeout=120)
    assert r.returncode == 3, r.describe()
    assert r.stderr.strip() == "to stderr"
    info = json.loads(r.stdout)
    assert info["uid"] == 0 and info["env_out"] == str(r.outdir)
    assert 600 <= info["mem_mb"]["node0"] <= 768 and 400 <= info["mem_mb"]["node1"] <= 512, info
    assert info["cpus"] == {"node0": "0", "node1": ""}
    assert _tier(info["tiers"], "0") < _tier(info["tiers"], "1"), info["tiers"]
    assert r.boot_seconds is not None and r.boot_seconds < r.total_seconds


def test_without_hmat_the_slow_node_joins_the_top_tier(tiervm_setup, guest_python):
    r = TierVM(Topology(hmat=False), setup=tiervm_setup).run([guest_python, "-c", PROBE], timeout=120)
    assert r.returncode == 3, r.describe()
    tiers = json.loads(r.stdout)["tiers"]
    assert _tier(tiers, "0") == _tier(tiers, "1"), tiers


def test_hard_timeout_kills_the_guest(tiervm):
    r = tiervm.run(["sleep", "600"], timeout=10)
    assert r.timed_out and r.returncode is None and not r.ok
    assert r.total_seconds < 30
    assert "hard timeout" in (r.error or "")
