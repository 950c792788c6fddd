"""Fixtures for the guest tests: one idempotent, cached testbed set-up per session.

These tests boot Debian's 6.12 kernel in QEMU with a CPU-less slow node in a lower memory tier and run
checks inside it (see docs/testbed.md). The set-up installs what it needs from apt on first use.
``PTMT_TIERVM=skip`` skips them on purpose; a host that cannot run them at all (not Linux/x86-64, or
packages missing with no apt-get or not root) skips them with the reason; a set-up that should work
but fails (no package reachable, a broken kernel package) fails them with the set-up's message.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from ptmt.testbed import TestbedUnavailable, TierVM, Topology, ensure_setup
from ptmt.testbed.provision import host_supported, missing_packages


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the guest tests ``vm`` and run them after everything else, so the fast tests report first."""
    here = Path(__file__).parent
    guest = [i for i in items if Path(str(i.fspath)).is_relative_to(here)]
    for item in guest:
        item.add_marker(pytest.mark.vm)
    if guest and len(guest) < len(items):
        ids = {id(i) for i in guest}
        items[:] = [i for i in items if id(i) not in ids] + guest


@pytest.fixture(scope="session")
def tiervm_setup():
    if os.environ.get("PTMT_TIERVM") == "skip":
        pytest.skip("guest tests disabled by PTMT_TIERVM=skip")
    why = host_supported()
    if why:
        pytest.skip(why)
    missing = missing_packages()
    if missing and shutil.which("apt-get") is None:
        pytest.skip(f"guest tests need {' '.join(missing)} and this host has no apt-get to install them")
    if missing and os.geteuid() != 0:
        pytest.skip(f"guest tests need {' '.join(missing)} and installing them needs root "
                    f"(sudo apt-get install {' '.join(missing)}, or run as root)")
    try:
        return ensure_setup()
    except TestbedUnavailable as e:
        pytest.fail(f"tiered-memory testbed set-up failed: {e}", pytrace=False)


@pytest.fixture(scope="session")
def tiervm(tiervm_setup) -> TierVM:
    """A runner with the default topology: node0 1 GiB + 2 CPUs, node1 1 GiB CPU-less, HMAT-described
    as 4x the latency and 1/5 of the bandwidth."""
    return TierVM(Topology(), setup=tiervm_setup)


@pytest.fixture(scope="session")
def guest_python() -> str:
    """This interpreter: the guest sees the host's root, so the same path runs the same venv inside."""
    return sys.executable


@pytest.fixture(scope="session")
def repo_root() -> Path:
    import ptmt

    return Path(ptmt.__file__).resolve().parents[1]
