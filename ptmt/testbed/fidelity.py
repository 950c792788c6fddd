"""Fidelity of the simulated machine against the real kernel: same workload, two settings of one knob,
do the counters move the same way in both?

The real side runs :mod:`ptmt.testbed.workload` scenarios in one testbed guest (a run per setting, each
with fresh worker processes). The simulated side runs the equivalent workload through
``ptmt sim run`` (see :func:`sim_available`). Each case names the knob, its two values, the counter
whose direction is compared with the direction the kernel's mechanism predicts, and the workload
(:data:`WORKLOADS`) it runs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptmt.testbed.vm import TierVM
from ptmt.testbed.workload import DEFAULT_SETTINGS

#: the name of the run with every setting at the scenario's (:data:`BASELINE`)
BASELINE_RUN = "baseline"


@dataclass(frozen=True)
class Case:
    knob: str
    low: int
    high: int
    counter: str
    expect: int  # +1: the counter rises from low to high; -1: it falls
    why: str
    fixed: tuple[tuple[str, str], ...] = ()  # other knobs held at these values in both runs
    workload: str = "hot-on-slow"  # a key of WORKLOADS

    @property
    def id(self) -> str:
        return f"{self.knob}:{self.counter}"

    def run_name(self, value: int) -> str:
        """Runs are named by their workload (unless the default one) and by how their settings
        differ from :data:`BASELINE`, so cases that need the same run share it."""
        diff = {k: v for k, v in sorted(self.settings(value).items()) if BASELINE.get(k) != v}
        name = ",".join(f"{k}={v}" for k, v in diff.items()) or BASELINE_RUN
        return name if self.workload == DEFAULT_WORKLOAD else f"{self.workload}:{name}"

    def settings(self, value: int) -> dict[str, str]:
        return {**dict(self.fixed), self.knob: str(value)}


# scan_size_mb is compared where the scan rate itself shows: a 4 MiB hot buffer alone on the slow node
# (the interpreter's own memory stays on the fast node, which mode 2 does not scan), written in a busy
# loop so that every page the scanner unmaps faults back long before the next window, and no promotion
# at all (rate limit 0: the period then never adapts, since task_numa_placement() only runs on faults
# counted on a top-tier node). task_scan_min() floors the period of one window at
# scan_size_mb / 2.56 ms (MAX_SCAN_WINDOW: at most 2560 MB/s), so with the periods held at 25 ms a
# 64 MB window is scanned every 25 ms and a 2048 MB window every 1000 ms. What the old case (32 vs
# 256 MB over a 250 MB hot set with promotion held back by hot_threshold_ms=1) measured was hint-fault
# throughput under emulation, and its direction varied between boots (docs/testbed.md).
SCAN_ONLY = (("scan_period_min_ms", "25"), ("scan_period_max_ms", "25"),
             ("numa_balancing_promote_rate_limit_MBps", "0"))
CASES: tuple[Case, ...] = (
    Case("scan_size_mb", 64, 2048, "numa_pte_updates", -1,
         "a bigger window has a longer period floor (task_scan_min: scan_size_mb / 2.56 ms), so the "
         "hot buffer is unmapped less often", SCAN_ONLY, "scan"),
    Case("scan_size_mb", 64, 2048, "numa_hint_faults", -1,
         "every page unmapped is written again before the next window: one hint fault per update",
         SCAN_ONLY, "scan"),
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

#: Workload of most cases on both sides: a cold hog nearly filling the fast node, a hot set on the slow node.
WORKLOAD: dict[str, Any] = {"cold_mb": 800, "hot_mb": 250, "seconds": 10}
DEFAULT_WORKLOAD = "hot-on-slow"

#: The simulated counterpart of the scan workload: 4 KiB frames of the testbed machine, filled up to
#: its low watermark by never-touched data standing for the interpreter (the fast node, not scanned
#: in mode 2), then 1025 frames (4 MiB) of hot data, which land on the slow node and take all the
#: accesses. One thread, as the guest's hot loop.
SIM_SCAN_WORKLOAD: dict[str, Any] = {
    "name": "testbed-scan", "description": "fidelity scan case: a 4 MiB hot buffer alone on the slow node",
    "footprint_gb": 0.80078, "pattern": "hotset", "hot_fraction": 0.0049, "hot_access_share": 1.0,
    "layout": "hot_last", "read_ratio": 0.0, "intensity": 5.0e7, "mlp": 1, "threads": 1,
    "accesses_per_op": 1, "instructions_per_access": 30}

#: Per workload: the guest scenario's arguments, and the simulated side's workload (a built-in name
#: or a spec) and engine step. The scan case needs steps shorter than its 25 ms scan period: the
#: simulator takes hint faults once per step, so with 1 s steps a page is unmapped at most once a
#: second whatever the period (ptmt.sim.runner.run).
WORKLOADS: dict[str, dict[str, Any]] = {
    "hot-on-slow": {"real": WORKLOAD, "sim": "testbed-hot-on-slow", "step": None},
    "scan": {"real": {"cold_mb": 0, "hot_mb": 4, "seconds": 10, "thp": False, "buffer_on_slow": True},
             "sim": SIM_SCAN_WORKLOAD, "step": 0.01},
}


def settings_runs(cases: tuple[Case, ...] = CASES) -> list[dict[str, Any]]:
    """One run per distinct (knob, value); every other knob stays at the scenario's setting."""
    runs: dict[str, dict[str, Any]] = {}
    for c in cases:
        for v in (c.low, c.high):
            runs.setdefault(c.run_name(v), {"name": c.run_name(v), "workload": c.workload,
                                            **WORKLOADS[c.workload]["real"], "settings": c.settings(v)})
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
SIM_WORKLOAD = WORKLOADS[DEFAULT_WORKLOAD]["sim"]
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

    import yaml

    out: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="ptmt-fidelity-") as tmp:
        for r in settings_runs(cases):
            w = WORKLOADS[r["workload"]]
            spec = w["sim"]
            if isinstance(spec, dict):  # not a built-in: the fixture is no workload to tune for
                path = Path(tmp) / f"{spec['name']}.yaml"
                path.write_text(yaml.safe_dump(spec))
                spec = str(path)
            settings = {k: v for k, v in {**BASELINE, **r["settings"]}.items() if k not in _ACTIVATION}
            res = sim_run("autonuma", spec, duration=float(w["real"]["seconds"]), interval=1.0,
                          settings=settings, seed=seed, step=w["step"], **SIM_MACHINE)
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


#: a boot whose baseline run promoted less than this fraction of the hot set measured a guest too
#: slow to promote at all (usually the whole hot set, 64,576 of 64,000 pages; once 20,553, in a
#: boot whose run without demotion promoted 21,014 instead of the usual ~2,100)
WEAK_BOOT_FRACTION = 0.5


def weak(deltas: dict[str, dict[str, int]]) -> str | None:
    """Why the boot's promotions were too weak to say anything about directions, or None: the
    baseline run (every setting at the scenario's, demotion on) promoted less than
    ``WEAK_BOOT_FRACTION`` of the hot set's 4 KiB pages."""
    got = deltas.get(BASELINE_RUN, {}).get("pgpromote_success")
    pages = int(WORKLOAD["hot_mb"]) * 256  # 4 KiB pages per MiB
    if got is None or got >= WEAK_BOOT_FRACTION * pages:
        return None
    return (f"the baseline run promoted {got} pages, under {WEAK_BOOT_FRACTION:.0%} of the hot set's "
            f"{pages}")


def markdown(real: dict[str, dict[str, int]], sim: dict[str, dict[str, int]] | None,
             cases: tuple[Case, ...] = CASES) -> str:
    """A side-by-side table for docs/simulator.md."""
    lines = ["| knob | low → high | workload | held | counter | real low | real high | sim low | sim high | agree |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        lo, hi = c.run_name(c.low), c.run_name(c.high)
        held = ", ".join(f"{k}={v}" for k, v in c.fixed) or "—"
        s_lo = s_hi = "—"
        agree = "—"
        if sim is not None:
            s_lo, s_hi = str(sim[lo][c.counter]), str(sim[hi][c.counter])
            agree = "yes" if direction(real, c) == direction(sim, c) else "NO"
        lines.append(f"| {c.knob} | {c.low} → {c.high} | {c.workload} | {held} | {c.counter} | {real[lo][c.counter]} | "
                     f"{real[hi][c.counter]} | {s_lo} | {s_hi} | {agree} |")
    return "\n".join(lines) + "\n"


__all__ = ["CASES", "Case", "WORKLOAD", "WORKLOADS", "direction", "markdown", "run_real", "run_sim",
           "settings_runs", "sim_available"]
