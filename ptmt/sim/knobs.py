"""The simulated kernel's knob files: where they are, their defaults, and what the kernel accepts.

These are facts about the kernel the simulator imitates (DESIGN §3), not a tuning catalog: the
catalogs in configs/backends say what a tuner may write, this module says what the simulated kernel
accepts (EINVAL otherwise) and how it reads a value back (``demotion_enabled`` answers true/false).

Kernel flavours: ``upstream`` (Linux 6.12), ``tpp`` (plus the TPP patch's demote_scale_factor) and
``colloid`` (TPP plus Colloid: numa_balancing bit 4 and its δ/ε, exposed only by the simulator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

KERNELS = ("upstream", "tpp", "colloid")
NB_DEBUGFS = "/sys/kernel/debug/sched/numa_balancing"
UINT_MAX = 4294967295
INT_MAX = 2147483647


class Rejected(ValueError):
    """The simulated kernel refuses the value (EINVAL)."""


def _int(lo: int, hi: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            v = int(text.strip(), 0) if text.strip().lower().startswith("0x") else int(text.strip())
        except ValueError:
            raise Rejected(f"not an integer: {text.strip()!r}") from None
        if not lo <= v <= hi:
            raise Rejected(f"{v} outside {lo}..{hi}")
        return str(v)

    return parse


def _bool(text: str) -> str:
    """kstrtobool(): 1/0, y/n, true/false, on/off; reads back as true/false."""
    t = text.strip().lower()
    if t in ("1", "y", "yes", "true", "on"):
        return "true"
    if t in ("0", "n", "no", "false", "off"):
        return "false"
    raise Rejected(f"not a boolean: {text.strip()!r}")


def _mask(allowed: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        v = _int(0, INT_MAX)(text)
        if int(v) & ~allowed:
            raise Rejected(f"bits {int(v) & ~allowed:#x} not supported (allowed mask {allowed:#x})")
        return v

    return parse


def _zone_reclaim(text: str) -> str:
    return _mask(0x7)(text)


@dataclass(frozen=True)
class KnobFile:
    name: str
    path: str
    default: str
    parse: Callable[[str], str]  #: normalised text to store, or raises Rejected
    kernels: tuple[str, ...] = KERNELS


def knob_files(kernel: str) -> dict[str, KnobFile]:
    """Knob name -> file for one kernel flavour."""
    nb_mask = 0x7 if kernel == "colloid" else 0x3
    files = [
        # Upstream default is 0; Debian (and most distributions) boot with 1 on multi-node machines.
        KnobFile("numa_balancing", "/proc/sys/kernel/numa_balancing", "0", _mask(nb_mask)),
        KnobFile("numa_balancing_promote_rate_limit_MBps",
                 "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps", "65536", _int(0, INT_MAX)),
        KnobFile("hot_threshold_ms", f"{NB_DEBUGFS}/hot_threshold_ms", "1000", _int(0, UINT_MAX)),
        KnobFile("scan_delay_ms", f"{NB_DEBUGFS}/scan_delay_ms", "1000", _int(0, UINT_MAX)),
        KnobFile("scan_period_min_ms", f"{NB_DEBUGFS}/scan_period_min_ms", "1000", _int(0, UINT_MAX)),
        KnobFile("scan_period_max_ms", f"{NB_DEBUGFS}/scan_period_max_ms", "60000", _int(0, UINT_MAX)),
        KnobFile("scan_size_mb", f"{NB_DEBUGFS}/scan_size_mb", "256", _int(1, UINT_MAX)),
        KnobFile("demotion_enabled", "/sys/kernel/mm/numa/demotion_enabled", "false", _bool),
        KnobFile("watermark_scale_factor", "/proc/sys/vm/watermark_scale_factor", "10", _int(1, 3000)),
        KnobFile("zone_reclaim_mode", "/proc/sys/vm/zone_reclaim_mode", "0", _zone_reclaim),
        KnobFile("demote_scale_factor", "/proc/sys/vm/demote_scale_factor", "200", _int(1, 1000),
                 ("tpp", "colloid")),
        KnobFile("colloid_delta_percent", "/sys/kernel/mm/colloid/delta_percent", "5", _int(1, 50),
                 ("colloid",)),
        KnobFile("colloid_epsilon_percent", "/sys/kernel/mm/colloid/epsilon_percent", "1", _int(1, 10),
                 ("colloid",)),
    ]
    return {f.name: f for f in files if kernel in f.kernels}


def by_path(kernel: str) -> dict[str, KnobFile]:
    return {f.path: f for f in knob_files(kernel).values()}


def kernel_for_backend(backend: str | None) -> str:
    """The simulated kernel a backend needs: TPP and Colloid are patched kernels."""
    return {"tpp": "tpp", "colloid": "colloid"}.get(backend or "", "upstream")


@dataclass(frozen=True)
class KnobValues:
    """Parsed knob values the policies read every step (missing files read as their defaults)."""

    numa_balancing: int = 0
    promote_rate_limit_mbps: int = 65536
    hot_threshold_ms: int = 1000
    scan_delay_ms: int = 1000
    scan_period_min_ms: int = 1000
    scan_period_max_ms: int = 60000
    scan_size_mb: int = 256
    demotion_enabled: bool = False
    watermark_scale_factor: int = 10
    zone_reclaim_mode: int = 0
    demote_scale_factor: int | None = None  #: None: not a TPP kernel
    colloid_delta_percent: int = 5
    colloid_epsilon_percent: int = 1

    @property
    def normal(self) -> bool:
        return bool(self.numa_balancing & 1)

    @property
    def tiering(self) -> bool:
        return bool(self.numa_balancing & 2)

    @property
    def colloid(self) -> bool:
        return bool(self.numa_balancing & 4) and self.tiering

    @classmethod
    def from_texts(cls, texts: dict[str, str]) -> KnobValues:
        def i(name: str, default: int) -> int:
            try:
                return int(texts[name])
            except (KeyError, ValueError):
                return default

        return cls(
            numa_balancing=i("numa_balancing", 0),
            promote_rate_limit_mbps=i("numa_balancing_promote_rate_limit_MBps", 65536),
            hot_threshold_ms=i("hot_threshold_ms", 1000),
            scan_delay_ms=i("scan_delay_ms", 1000),
            scan_period_min_ms=i("scan_period_min_ms", 1000),
            scan_period_max_ms=i("scan_period_max_ms", 60000),
            scan_size_mb=max(1, i("scan_size_mb", 256)),
            demotion_enabled=texts.get("demotion_enabled", "false") == "true",
            watermark_scale_factor=i("watermark_scale_factor", 10),
            zone_reclaim_mode=i("zone_reclaim_mode", 0),
            demote_scale_factor=i("demote_scale_factor", 200) if "demote_scale_factor" in texts else None,
            colloid_delta_percent=i("colloid_delta_percent", 5),
            colloid_epsilon_percent=i("colloid_epsilon_percent", 1),
        )
