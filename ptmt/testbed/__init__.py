"""Real-kernel tiered-memory testbed: a QEMU guest with a CPU-less slow NUMA node in a lower tier.

``ensure_setup()`` installs and caches what is needed; ``TierVM(Topology(...)).run([...])`` boots a
guest, runs a command on the host's file system inside it and returns its status and output.
"""

from ptmt.testbed.provision import Setup, TestbedUnavailable, cache_dir, ensure_setup
from ptmt.testbed.vm import RunResult, TierVM, Topology, choose_accel, run

__all__ = [
    "RunResult",
    "Setup",
    "TestbedUnavailable",
    "TierVM",
    "Topology",
    "cache_dir",
    "choose_accel",
    "ensure_setup",
    "run",
]
