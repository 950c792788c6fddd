"""A fake tiered host and an in-process tuning service whose objective can act at chosen intervals
(an administrator's write, a signal, a scrape), so every service behaviour is tested against the real
loop in a second or two."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ptmt.catalog import load_catalog
from ptmt.online.hostrun import prepare_host
from ptmt.service.config import ServiceConfig
from ptmt.service.daemon import Service
from ptmt.service.notify import Notifier

RATE = "proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"
BEST = 256


def knob_files(root: Path) -> dict[str, str]:
    """Every file of the tree as text, booleans spelled one way (the kernel takes 0/1 and false/true)."""
    same = {"false": "0", "true": "1"}
    return {str(p.relative_to(root)): same.get(p.read_text().strip(), p.read_text().strip())
            for p in sorted(root.rglob("*")) if p.is_file()}


def knob_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class ScriptedObjective:
    """Best (120) when the promotion rate limit is at the bottom of its ladder, else 100; runs
    ``actions[n]`` when it takes its n-th reading."""

    unit = "ops/s"
    name = "scripted"

    def __init__(self, root: Path, actions: dict[int, Callable[[], Any]] | None = None) -> None:
        self.root, self.actions, self.n = root, actions or {}, 0
        self.rates: list[int] = []

    def measure(self, host: Any, sample: Any) -> float:
        self.n += 1
        if (act := self.actions.get(self.n)) is not None:
            act()
        rate = int((self.root / RATE).read_text())
        self.rates.append(rate)
        return 120.0 if rate == BEST else 100.0

    def check(self, host: Any) -> None:
        pass

    def describe(self) -> str:
        return "scripted"


@pytest.fixture
def host_tree(fake_root: Path, tmp_path: Path) -> dict[str, Path]:
    (fake_root / "proc/vmstat").write_text("numa_hint_faults 10\npgpromote_success 5\npgdemote_kswapd 1\n")
    return {"root": fake_root, "state": tmp_path / "state"}


@pytest.fixture
def make_service(host_tree: dict[str, Path]) -> Callable[..., Service]:
    def make(objective: Any, *, duration: float | None = None, reload_config: Any = None, **cfg: Any) -> Service:
        catalog = load_catalog("autonuma")
        config = ServiceConfig(backend="autonuma", platform="linux", interval=cfg.pop("interval", 0.02),
                               state_dir=host_tree["state"], search=True, **cfg)
        knobs = [k for k in catalog.knobs if k not in config.leave_alone] if config.leave_alone else None
        prepared = prepare_host("autonuma", root=host_tree["root"], state_dir=host_tree["state"], catalog=catalog,
                                objective=objective, knobs=knobs)
        return Service(config=config, catalog=catalog, prepared=prepared, duration=duration,
                       reload_config=reload_config, notifier=Notifier({}))
    return make


def ensure_systemd_analyze() -> str:
    """systemd-analyze, installing Debian's systemd package when it is missing (as CI's fresh machine
    needs); fails with the reason when it cannot be had (never skips)."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail("systemd-analyze is needed to check the units: install the systemd package "
                    "(apt-get install systemd); this test cannot install it without apt-get and root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "systemd"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=900)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    found = shutil.which("systemd-analyze")
    if r.returncode != 0 or not found:
        pytest.fail(f"apt-get install systemd failed, so the units cannot be checked:\n{r.stderr[-2000:]}")
    return found


@pytest.fixture
def helpers() -> Any:
    """The helpers above, for test modules (pytest's importlib mode does not import conftest by name)."""
    class H:
        pass
    h = H()
    h.knob_files, h.knob_bytes, h.Objective = knob_files, knob_bytes, ScriptedObjective  # type: ignore[attr-defined]
    h.RATE, h.BEST, h.ensure_systemd_analyze = RATE, BEST, ensure_systemd_analyze  # type: ignore[attr-defined]
    return h
