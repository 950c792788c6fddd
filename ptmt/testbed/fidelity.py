"""Fidelity of the simulated machine against the real kernel: same workload, two settings of one knob,
do the counters move the same way in both?

The real side runs :mod:`ptmt.testbed.workload` scenarios in one testbed guest (a run per setting, each
with a fresh cold hog and hot set). The simulated side runs the equivalent workload through
``ptmt sim run`` (see :func:`sim_available`). Each case names the knob, its two values, and the counter
whose direction is compared, with the direction the kernel's mechanism predicts.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptmt.testbed.vm import TierVM
from ptmt.testbed.workload import DEFAULT_SETTINGS


@dataclass(frozen=True)
class Case:
    knob: str
    low: int
    high: int
    counter: str
    expect: int  # +1: the counter rises from low to high; -1: it falls
    why: str
    fixed: tuple[tuple[str, str], ...] = ()  # other knobs held at these values in both runs

    @property
    def id(self) -> str:
        return f"{self.knob}:{self.counter}"

    def run_name(self, value: int) -> str:
        """Runs are named by how their settings differ from :data:`BASELINE`, so cases that need
        the same settings share one run."""
        diff = {k: v for k, v in sorted(self.settings(value).items()) if BASELINE.get(k) != v}
        return ",".join(f"{k}={v}" for k, v in diff.items()) or "baseline"

    def settings(self, value: int) -> dict[str, str]:
        return {**dict(self.fixed), self.knob: str(value)}


# scan_size_mb is compared with promotion held back (hot_threshold_ms=1): with promotion free, the
# whole hot set is promoted within seconds under either setting and scanning runs out of slow-tier
# pages, so the totals say nothing about the scan window. Measured on 6.12 (docs/testbed.md): a
# SMALLER window unmaps and faults MORE in total (about 1.5-2x for 32 vs 256 MB over a 250 MB hot
# set), because the kernel sizes the scan period by the number of windows in the address space
# (task_scan_min/task_scan_max), so small windows are scanned much more often. Pinning
# scan_period_min_ms = scan_period_max_ms did not reverse it. A faithful simulator must show the same.
NO_PROMOTION = (("hot_threshold_ms", "1"),)
CASES: tuple[Case, ...] = (
    Case("scan_size_mb", 32, 256, "numa_pte_updates", -1,
         "a small scan window is scanned more often (period scales with windows per address space)",
         NO_PROMOTION),
    Case("scan_size_mb", 32, 256, "numa_hint_faults", -1,
         "more pages unmapped in total, more hint faults", NO_PROMOTION),
    Case("numa_balancing_promote_rate_limit_MBps", 4, 65536, "pgpromote_success", +1,
         "a lower rate limit admits fewer promotions"),
    Case("hot_threshold_ms", 1, 5000, "pgpromote_success", +1,
         "a lower hot threshold qualifies fewer hint faults as hot"),
    Case("demotion_enabled", 0, 1, "pgdemote_kswapd", +1,
         "without demotion kswapd cannot move cold pages down (no swap)"),
    Case("demotion_enabled", 0, 1, "pgpromote_success", +1,
         "without demotion the fast node stays full and promotions find no room"),
)

#: The scenario's settings plus the kernel defaults of the knobs the cases vary.
BASELINE: dict[str, str] = {**DEFAULT_SETTINGS, "scan_size_mb": "256",
                            "numa_balancing_promote_rate_limit_MBps": "65536"}

#: Workload shared by both sides: a cold hog nearly filling the fast node, a hot set on the slow node.
WORKLOAD: dict[str, Any] = {"cold_mb": 800, "hot_mb": 250, "seconds": 10}


def settings_runs(cases: tuple[Case, ...] = CASES) -> list[dict[str, Any]]:
    """One run per distinct (knob, value); every other knob stays at the scenario's setting."""
    runs: dict[str, dict[str, Any]] = {}
    for c in cases:
        for v in (c.low, c.high):
            runs.setdefault(c.run_name(v), {"name": c.run_name(v), "settings": c.settings(v)})
    # A run without demotion goes last: kswapd fails to reclaim anything there (no swap), and after
    # 16 failed rounds the kernel stops waking it for the node (pgdat->kswapd_failures), so every
    # later run in the same boot would see no demotion and few promotions.
    return sorted(runs.values(), key=lambda r: r["settings"].get("demotion_enabled") == "0")


def run_real(vm: TierVM, outdir: Path, cases: tuple[Case, ...] = CASES,
             timeout: float = 900) -> dict[str, dict[str, int]]:
    """Counter deltas per run name (``knob=value``) from the real kernel in one guest boot."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "runs.json").write_text(json.dumps(settings_runs(cases)))
    res = vm.run([sys.executable, "-m", "ptmt.testbed.workload", "scenario",
                  "--cold-mb", str(WORKLOAD["cold_mb"]), "--hot-mb", str(WORKLOAD["hot_mb"]),
                  "--seconds", str(WORKLOAD["seconds"]), "--runs", str(outdir / "runs.json"),
                  "--json", str(outdir / "real.json")], outdir=outdir, timeout=timeout)
    if not res.ok:
        raise RuntimeError("fidelity runs failed in the guest:\n" + res.describe())
    return {r["name"]: r["delta"] for r in res.json("real.json")}  # type: ignore[union-attr]


#: The simulated counterpart of the scenario: the simulator's own fixture workload for the testbed
#: (configs/workloads/testbed-hot-on-slow.yaml: a 1.05 GB footprint whose hot 24% is laid out last, so
#: it starts on the slow node) on the guest's own machine (configs/machines/testbed-tcg.yaml: 0.8 + 1 GiB,
#: 4 KiB pages as the scenario's hot set has, and the emulator's ~30 us hint faults).
SIM_WORKLOAD = "testbed-hot-on-slow"
SIM_MACHINE: dict[str, Any] = {"machine": "testbed-tcg"}
#: The simulator activates the backend itself (mode 2); the other activation setting,
#: demotion_enabled, is passed on like a knob.
_ACTIVATION = ("numa_balancing",)


def sim_available() -> str | None:
    """None when the simulated machine can run the fidelity workload, else why not."""
    try:
        import ptmt.sim.runner  # noqa: F401
        from ptmt.sim.specs import builtin_names
    except ImportError as e:
        return f"ptmt.sim.runner cannot be imported ({e})"
    if SIM_WORKLOAD not in builtin_names("workloads"):
        return f"the simulator has no {SIM_WORKLOAD!r} workload"
    return None


def run_sim(cases: tuple[Case, ...] = CASES, seed: int = 0) -> dict[str, dict[str, int]]:
    """Counter deltas per run name from the simulated machine, for the same settings as the guest."""
    from ptmt.sim.runner import run as sim_run

    out: dict[str, dict[str, int]] = {}
    for r in settings_runs(cases):
        settings = {k: v for k, v in {**BASELINE, **r["settings"]}.items() if k not in _ACTIVATION}
        res = sim_run("autonuma", SIM_WORKLOAD, duration=float(WORKLOAD["seconds"]), interval=1.0,
                      settings=settings, seed=seed, **SIM_MACHINE)
        out[r["name"]] = dict(res.counters)
    return out


def direction(deltas: dict[str, dict[str, int]], case: Case) -> int:
    lo = deltas[case.run_name(case.low)][case.counter]
    hi = deltas[case.run_name(case.high)][case.counter]
    return (hi > lo) - (hi < lo)


def silent(deltas: dict[str, dict[str, int]], cases: tuple[Case, ...] = CASES) -> list[Case]:
    """Cases whose counter stayed at 0 in both runs: the mechanism never ran in that boot (kswapd
    found no pressure, say), so the boot says nothing about its direction."""
    return [c for c in cases if c.expect != 0
            and deltas[c.run_name(c.low)][c.counter] == deltas[c.run_name(c.high)][c.counter] == 0]


def markdown(real: dict[str, dict[str, int]], sim: dict[str, dict[str, int]] | None,
             cases: tuple[Case, ...] = CASES) -> str:
    """A side-by-side table for docs/simulator.md."""
    lines = ["| knob | low → high | held | counter | real low | real high | sim low | sim high | agree |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        lo, hi = c.run_name(c.low), c.run_name(c.high)
        held = ", ".join(f"{k}={v}" for k, v in c.fixed) or "—"
        s_lo = s_hi = "—"
        agree = "—"
        if sim is not None:
            s_lo, s_hi = str(sim[lo][c.counter]), str(sim[hi][c.counter])
            agree = "yes" if direction(real, c) == direction(sim, c) else "NO"
        lines.append(f"| {c.knob} | {c.low} → {c.high} | {held} | {c.counter} | {real[lo][c.counter]} | "
                     f"{real[hi][c.counter]} | {s_lo} | {s_hi} | {agree} |")
    return "\n".join(lines) + "\n"


__all__ = ["CASES", "Case", "WORKLOAD", "direction", "markdown", "run_real", "run_sim",
           "settings_runs", "sim_available"]
