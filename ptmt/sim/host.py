"""SimHost: the simulated tiered-memory machine behind the ``Host`` protocol (ptmt.host).

It materialises a Linux 6.x kernel's knob and counter files under ``root``, re-reads the knobs every
simulation step and rewrites the counters after every ``advance``. Time passes only in ``advance``.
The machine persists under ``root`` (``.ptmt-sim.json`` plus ``.ptmt-sim.npz``): a second SimHost on the
same root, in this process or another, continues the same machine with the same knob values and UPM
state, so ``apply`` in one command and ``restore`` in the next see one machine.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ptmt.host import Platform, UpmTransport
from ptmt.kernelfs import KernelFS
from ptmt.sim import constants as C
from ptmt.sim.engine import Engine, StepStats
from ptmt.sim.kfiles import SimFileIO, materialise_knobs, materialise_static, render_counters, write_file
from ptmt.sim.knobs import KERNELS, KnobValues, knob_files
from ptmt.sim.machine import DEFAULT_MACHINE, MachineSpec, load_machine
from ptmt.sim.workload import WorkloadSpec, load_workload, workload_from_dict

STATE_FILE = ".ptmt-sim.json"
ARRAYS_FILE = ".ptmt-sim.npz"
STATE_VERSION = 1
DEFAULT_WORKLOAD = "silo-ycsb"
#: The simulated workload's process id (what UPM is enabled for); any plausible pid works.
PID_BASE = 4200


class SimUpmTransport:
    """In-process stand-in for the TCP connection to the UPM daemon."""

    def __init__(self, host: SimHost) -> None:
        self.host = host

    def request(self, line: str) -> str:
        reply = self.host.engine.upm.handle(line, self.host.workload_pid, self.host.now())
        self.host.save()
        return reply.strip()


class SimHost:
    platform: Platform = "sim"

    def __init__(self, root: str | os.PathLike[str], machine: str | None = None, fast_gb: float | None = None,
                 slow_gb: float | None = None, workload: str | None = None, seed: int | None = None,
                 kernel: str | None = None, noise: float | None = None, interval: float | None = None,
                 frame_kb: int | None = None, footprint_gb: float | None = None, persist: bool = True) -> None:
        self.persist = persist
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        old = self._read_state()
        if kernel is not None and kernel not in KERNELS:
            raise ValueError(f"unknown simulated kernel {kernel!r} (one of {', '.join(KERNELS)})")
        self.kernel = kernel or (old or {}).get("kernel", "upstream")
        self.seed = int(seed if seed is not None else (old or {}).get("seed", 0))
        self.noise = float(noise if noise is not None else (old or {}).get("noise", C.DEFAULT_NOISE))
        self.interval = float(interval or (old or {}).get("interval", 1.0))
        self.machine = self._machine(old, machine, fast_gb, slow_gb, frame_kb)
        self.workload = self._workload(old, workload, footprint_gb)
        self.workload_pid = PID_BASE + self.seed % 10000
        self.fs = KernelFS(self.root, io=SimFileIO(self.root, self.kernel))
        self.engine = Engine(self.machine, self.workload, self.seed)
        same = old is not None and old.get("machine") == self.machine.as_dict() \
            and old.get("workload") == self.workload.as_dict() and old.get("seed") == self.seed
        if same:
            self._restore(old)
        self.advances = int(old.get("advances", 0)) if same and old else 0
        self.last: list[StepStats] = []
        materialise_static(self.root, self.machine.cpus, self.kernel, self.machine.frame_kb > 4)
        materialise_knobs(self.root, self.kernel, keep=old is not None)
        self._knob_stamp: tuple[Any, ...] = ()
        self._knobs = KnobValues()
        self.save()

    # -- construction helpers --------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any] | None:
        p = self.root / STATE_FILE
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return data if data.get("version") == STATE_VERSION else None

    @staticmethod
    def _machine(old: dict[str, Any] | None, name: str | None, fast_gb: float | None, slow_gb: float | None,
                 frame_kb: int | None) -> MachineSpec:
        if name is None and old and "machine" in old:
            spec = MachineSpec.from_dict(old["machine"])
            if fast_gb or slow_gb or frame_kb:
                spec = load_machine_from(spec, fast_gb, slow_gb, frame_kb)
            return spec
        return load_machine(name or DEFAULT_MACHINE, fast_gb, slow_gb, frame_kb)

    @staticmethod
    def _workload(old: dict[str, Any] | None, name: str | None, footprint_gb: float | None) -> WorkloadSpec:
        if name is None and old and "workload" in old:
            spec = workload_from_dict(old["workload"], "<saved workload>")
        else:
            spec = load_workload(name or DEFAULT_WORKLOAD)
        if footprint_gb:
            spec = replace(spec, footprint_gb=float(footprint_gb),
                           raw={**spec.raw, "footprint_gb": float(footprint_gb)})
        return spec

    def _restore(self, old: dict[str, Any]) -> None:
        arrays: dict[str, np.ndarray] = {}
        p = self.root / ARRAYS_FILE
        if p.is_file():
            with np.load(p) as z:
                arrays = {k: z[k] for k in z.files}
        self.engine.restore(old["engine"], arrays)

    # -- persistence -------------------------------------------------------------------------------
    def save(self) -> None:
        """Write counters, state and arrays (called after every advance and UPM request)."""
        for kpath, text in render_counters(self.engine.mem, self.workload_pid).items():
            write_file(self.root, kpath, text)
        if not self.persist:
            return
        state = {"version": STATE_VERSION, "kernel": self.kernel, "seed": self.seed, "noise": self.noise,
                 "interval": self.interval, "machine": self.machine.as_dict(),
                 "workload": self.workload.as_dict(), "advances": getattr(self, "advances", 0),
                 "engine": self.engine.scalars()}
        tmp = self.root / (ARRAYS_FILE + ".tmp.npz")
        np.savez(tmp, **self.engine.arrays())
        os.replace(tmp, self.root / ARRAYS_FILE)
        write_state = self.root / (STATE_FILE + ".tmp")
        write_state.write_text(json.dumps(state, default=_jsonable))
        os.replace(write_state, self.root / STATE_FILE)

    def fork(self, root: str | os.PathLike[str]) -> SimHost:
        """A copy of this machine at this instant under *root*: the same page placement, counters,
        knob files and clock, and the same measurement noise from here on (it is keyed by the
        advance count). Two forks given two configurations answer what either would have done from
        one state, which no real machine can: ``ptmt.evaluation.response`` measures with them how
        long a change takes to show."""
        dest = Path(root)
        if dest.exists() and any(dest.iterdir()):
            raise ValueError(f"fork target {dest} is not empty")
        shutil.copytree(self.root, dest, dirs_exist_ok=True)
        twin = copy.copy(self)
        twin.root = dest.resolve()
        twin.fs = KernelFS(twin.root, io=SimFileIO(twin.root, self.kernel))
        twin.engine = copy.deepcopy(self.engine)
        twin.last = list(self.last)
        twin._knob_stamp = ()
        twin._knobs = KnobValues()
        return twin

    # -- knobs -------------------------------------------------------------------------------------
    def knobs(self) -> KnobValues:
        """Current knob values, re-parsed only when a knob file changed (stat per file per step)."""
        files = knob_files(self.kernel)
        stamp = []
        for f in files.values():
            try:
                st = os.stat(self.root / f.path.lstrip("/"))
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamp.append(None)
        stamp.append(self.fs.io.writes)  # type: ignore[attr-defined]
        key = tuple(stamp)
        if key != self._knob_stamp:
            texts = {}
            for name, f in files.items():
                try:
                    texts[name] = (self.root / f.path.lstrip("/")).read_text().strip()
                except OSError:
                    continue
            self._knobs = KnobValues.from_texts(texts)
            self._knob_stamp = key
        return self._knobs

    def config(self) -> dict[str, str]:
        """Effective knob values as the kernel files read back."""
        out = {}
        for name, f in knob_files(self.kernel).items():
            try:
                out[name] = (self.root / f.path.lstrip("/")).read_text().strip()
            except OSError:
                continue
        return out

    # -- the Host protocol ---------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        remaining = float(seconds)
        self.last = []
        while remaining > 1e-9:
            dt = min(self.interval, remaining)
            self.last.append(self.engine.step(dt, self.knobs()))
            remaining -= dt
        self.advances += 1
        self.save()

    def now(self) -> float:
        return self.engine.t

    def upm_transport(self, address: str = "127.0.0.1", port: int = 10086) -> UpmTransport:
        return SimUpmTransport(self)

    # -- measurements --------------------------------------------------------------------------------
    def objective(self) -> float:
        """Workload operations per second over the last advance, with seeded measurement noise."""
        if not self.last:
            return 0.0
        total = sum(s.dt for s in self.last)
        mean = sum(s.ops_s * s.dt for s in self.last) / total
        rng = np.random.default_rng([self.seed, self.advances, zlib.crc32(self.workload.name.encode())])
        return float(mean * max(0.0, 1.0 + self.noise * rng.standard_normal()))

    def fast_tier_access_ratio(self) -> float:
        """Share of memory accesses served by the fast tier over the last advance."""
        if not self.last:
            return float((self.engine.p * self.engine.mem.fast_f).sum())
        acc = sum(s.accesses_s * s.dt for s in self.last)
        return sum(s.fast_share * s.accesses_s * s.dt for s in self.last) / acc if acc else 0.0

    def perf_counters(self) -> dict[str, int]:
        """Cumulative perf-like counters: instructions, cycles, loads served by each tier."""
        p = self.engine.perf
        return {"instructions": int(p["instructions"]), "cycles": int(p["cycles"]),
                "mem_loads_fast": int(p["loads_fast"]), "mem_loads_slow": int(p["loads_slow"]),
                "workload_ops": int(p["ops"])}

    def counters(self) -> dict[str, int]:
        """/proc/vmstat as numbers (what telemetry reads from the file)."""
        out = {}
        for line in self.fs.read("/proc/vmstat").splitlines():
            name, _, value = line.partition(" ")
            out[name] = int(value)
        return out


def load_machine_from(spec: MachineSpec, fast_gb: float | None, slow_gb: float | None,
                      frame_kb: int | None) -> MachineSpec:
    spec = spec.with_capacity(fast_gb, slow_gb)
    return replace(spec, frame_kb=frame_kb) if frame_kb else spec


def _jsonable(o: object) -> object:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, float) and o == float("inf"):
        return "inf"
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
