"""The simulator digest keys cached simulated results: it must move whenever the simulator's code
or its built-in data does, and only then."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import ptmt.sim.digest as digest
from ptmt.sim.specs import builtin_dir


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the simulator's code and data that the digest reads instead."""
    code = tmp_path / "sim"
    shutil.copytree(Path(digest.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    for kind in digest._DATA:
        shutil.copytree(builtin_dir(kind), tmp_path / kind)
    monkeypatch.setattr(digest, "_files", lambda: [
        *[(f"sim/{p.name}", p) for p in sorted(code.glob("*.py"))],
        *[(f"{k}/{p.name}", p) for k in digest._DATA for p in sorted((tmp_path / k).glob("*.yaml"))]])
    digest.simulator_digest.cache_clear()
    yield tmp_path
    digest.simulator_digest.cache_clear()


def test_the_digest_covers_code_machines_workloads_and_catalogs(copy: Path) -> None:
    names = {name for name, _ in digest._files()}
    assert {"sim/engine.py", "machines/dram-cxl-1to2.yaml", "workloads/gups.yaml", "backends/tpp.yaml"} <= names
    before = digest.simulator_digest()
    assert before == digest.simulator_digest() and len(before) == 10
    for changed in ("sim/engine.py", "workloads/gups.yaml", "backends/tpp.yaml"):
        path = copy / changed
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        digest.simulator_digest.cache_clear()
        assert digest.simulator_digest() != before, changed
        path.write_bytes(original)
        digest.simulator_digest.cache_clear()
        assert digest.simulator_digest() == before


def test_the_digest_of_the_installed_simulator_is_stable() -> None:
    digest.simulator_digest.cache_clear()
    first = digest.simulator_digest()
    digest.simulator_digest.cache_clear()
    assert digest.simulator_digest() == first
    assert all(c in "0123456789abcdef" for c in first)
