"""The tuning service's configuration file: ``/etc/ptmt/ptmt.yaml`` (``ptmt tune --config PATH``).

One YAML mapping (schema ``ptmt/schemas/service.yaml``, example ``configs/ptmt.yaml``, reference
docs/service.md). Validation reports every problem at once, each naming the file and the key::

    /etc/ptmt/ptmt.yaml: At 'guard.revert_after': must be a positive integer (got 0)

The ``guard``, ``phase`` and ``objective`` sections go through the same validators the tuner uses, so the file
accepts exactly what the command line does. Command-line flags override the file (``overlay``).
Nothing here touches the kernel: a file that does not validate stops ``ptmt tune`` before any write,
and on SIGHUP the running service keeps its old configuration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptmt.errors import ConfigError, PtmtError
from ptmt.online.guard import GuardSettings
from ptmt.online.phase import PhaseSettings
from ptmt.schema import at, raise_if, read_yaml, schema_errors

#: Where the service looks when no ``--config`` is given (read only if it exists).
DEFAULT_CONFIG = Path("/etc/ptmt/ptmt.yaml")


@dataclass
class ServiceConfig:
    """Everything ``ptmt tune`` can take from the file; ``None`` means "not set here"."""

    backend: str | None = None
    platform: str | None = None
    interval: float = 10.0
    objective: Any = None  # a source string or mapping (docs/objectives.md), validated on load
    database: str | None = None
    label: str | None = None
    model: Path | None = None
    search: bool = False
    query_model: Path | None = None
    guard: GuardSettings = field(default_factory=GuardSettings)
    phase: PhaseSettings = field(default_factory=PhaseSettings)
    leave_alone: list[str] = field(default_factory=list)
    metrics_port: int | None = None
    dry_run: bool = False
    state_dir: Path | None = None
    catalog_dirs: list[str] = field(default_factory=list)
    #: where it came from: the file's path, or None for command-line flags and defaults only
    path: Path | None = None

    def overlay(self, **flags: Any) -> ServiceConfig:
        """A copy with every flag that was given (not None, not False for switches) taking precedence."""
        given = {k: v for k, v in flags.items() if v is not None and v is not False and v != []}
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise PtmtError(f"not configuration settings: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **given)

    def differences(self, other: ServiceConfig) -> list[str]:
        """Names of the settings that differ between two configurations (for reload messages)."""
        out = []
        for f in dataclasses.fields(self):
            if f.name == "path":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("guard", "phase"):
                a, b = a.as_dict(), b.as_dict()
            if a != b:
                out.append(f.name)
        return out

    def describe(self) -> str:
        """One line for logs and systemd's STATUS: where the configuration came from and what it says."""
        parts = [f"interval {self.interval:g} s"]
        if self.dry_run:
            parts.append("dry run (advice only)")
        if self.leave_alone:
            parts.append("leaving alone " + ", ".join(self.leave_alone))
        if self.database:
            parts.append("recording to the database")
        if self.metrics_port:
            parts.append(f"metrics on 127.0.0.1:{self.metrics_port}")
        parts.append(f"configuration {self.path}" if self.path else "no configuration file")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["guard"] = self.guard.as_dict()
        for k in ("model", "query_model", "state_dir", "path"):
            d[k] = None if d[k] is None else str(d[k])
        if d["database"]:
            d["database"] = _hide_password(d["database"])
        return d


def _hide_password(url: str) -> str:
    """A database URL fit for logs and the state file: no password."""
    scheme, sep, rest = url.partition("://")
    creds, at_sign, host = rest.rpartition("@")
    if not sep or not at_sign or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def _path(value: Any, base: Path) -> Path | None:
    """A path from the file; relative paths are taken from the file's directory."""
    if value is None:
        return None
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else base / p


def _section(data: Mapping[str, Any], key: str, settings: Any, errors: list[str]) -> Any:
    """The ``guard``/``phase`` section through its own validator (defaults when absent); its errors
    join *errors*."""
    if not isinstance(data.get(key), Mapping):
        return settings()
    try:
        return settings.from_mapping(data[key])
    except ConfigError as exc:
        errors.extend(str(exc).splitlines())
        return settings()


def parse_config(data: Any, source: str | Path, base: Path | None = None) -> ServiceConfig:
    """Validate a parsed mapping; raises ConfigError listing every problem, each prefixed by *source*."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a mapping of settings (see configs/ptmt.yaml), got {type(data).__name__}")
    errors = schema_errors(dict(data), "service")
    bad_keys = {e.split("'")[1].split(".")[0].split("[")[0] for e in errors if e.startswith("At '")}
    if "interval" in data and "interval" not in bad_keys:
        iv = data["interval"]
        if not iv > 0 or iv > 86400:
            errors.append(at(["interval"], f"must be a positive number of seconds up to 86400 (got {iv!r})"))
    if data.get("metrics_port") is not None and "metrics_port" not in bad_keys:
        port = data["metrics_port"]
        if not 1 <= port <= 65535:
            errors.append(at(["metrics_port"], f"must be a TCP port between 1 and 65535 (got {port!r})"))
    guard = _section(data, "guard", GuardSettings, errors)
    phase = _section(data, "phase", PhaseSettings, errors)
    if data.get("objective") is not None and "objective" not in bad_keys:
        from ptmt.online.objective import objective_from_mapping

        try:
            objective_from_mapping(data["objective"])
        except PtmtError as exc:
            errors.extend(str(exc).splitlines())
    raise_if(errors, source)
    base = base or Path.cwd()
    return ServiceConfig(
        backend=data.get("backend"), platform=data.get("platform"), interval=float(data.get("interval", 10.0)),
        objective=data.get("objective"), database=data.get("database"), label=data.get("label"),
        model=_path(data.get("model"), base), search=bool(data.get("search", False)),
        query_model=_path(data.get("query_model"), base), guard=guard, phase=phase,
        leave_alone=list(data.get("leave_alone") or []), metrics_port=data.get("metrics_port"),
        dry_run=bool(data.get("dry_run", False)), state_dir=_path(data.get("state_dir"), base),
        catalog_dirs=[str(_path(d, base)) for d in data.get("catalog_dirs") or []],
        path=Path(source) if not isinstance(source, Path) else source)


def load_config(path: str | os.PathLike[str] | None = None) -> ServiceConfig:
    """The configuration in *path*; without one, ``/etc/ptmt/ptmt.yaml`` when it exists, else defaults."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return ServiceConfig()
        path = DEFAULT_CONFIG
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such configuration file (see configs/ptmt.yaml for an example)")
    return parse_config(read_yaml(p), p, base=p.resolve().parent)


def check_against_catalog(config: ServiceConfig, catalog: Any) -> None:
    """Settings that need the backend's catalog: every knob to leave alone must be one of its knobs."""
    errors = [at(["leave_alone", i], f"backend {catalog.name} has no tunable knob {name!r} "
                 f"(tunables: {', '.join(catalog.knobs)})")
              for i, name in enumerate(config.leave_alone) if name not in catalog.knobs]
    raise_if(errors, config.path or "command line")
