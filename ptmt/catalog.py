"""Knob catalogs: what each tiering solution exposes, as data.

A catalog (``configs/backends/NAME.yaml``) lists a solution's *activation* settings (the switches that
make it run, e.g. ``numa_balancing=2``) and its *knobs* (what the tuner may change), with types, legal
ranges, kernel defaults and the candidate values the tuner explores. Users add or override catalogs by
dropping YAML files into a catalog directory; no code changes. Every error names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from ptmt.errors import ConfigError, ValidationError
from ptmt.kernelfs import DEBUGFS, WRITABLE_PREFIXES
from ptmt.schema import at, raise_if, read_yaml, schema_errors

Value = int | bool | str
KnobType = Literal["int", "bool", "enum", "bitmask"]

_TRUE = {"1", "y", "yes", "true", "on", "t"}
_FALSE = {"0", "n", "no", "false", "off", "f"}
RULE_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
            "==": operator.eq, "!=": operator.ne}
_RULE_RE = re.compile(r"^\s*(\w+)\s*(<=|>=|==|!=|<|>)\s*(\w+)\s*$")


@dataclass(frozen=True)
class Requirements:
    kernel: str | None = None
    debugfs: bool = False
    patch: str | None = None
    platform: str | None = None
    tiers: int | None = None
    note: str | None = None

    def describe(self) -> str:
        parts = []
        if self.patch:
            parts.append(f"out-of-tree {self.patch} patch")
        if self.kernel:
            parts.append(f"kernel >= {self.kernel}")
        if self.debugfs:
            parts.append("debugfs mounted")
        if self.platform:
            parts.append(f"{self.platform} platform only")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class Knob:
    """One tunable (or activation switch) of one backend."""

    name: str
    type: KnobType
    default: Value
    description: str
    path: str | None = None
    field: str | None = None
    min: int | None = None
    max: int | None = None
    values: tuple[Value, ...] = ()
    bits: tuple[int, ...] = ()
    candidates: tuple[Value, ...] = ()
    unit: str = ""
    category: str = "switch"
    requires: Requirements = Requirements()
    activation_value: Value | None = None  # set for activation settings

    @property
    def location(self) -> str:
        return self.path or f"{self.field} (daemon protocol)"

    # -- values ---------------------------------------------------------------------------------
    def legal_description(self) -> str:
        if self.type == "bool":
            return "true or false"
        if self.type == "enum":
            return "one of " + ", ".join(map(str, self.values))
        if self.type == "bitmask":
            return "a combination (OR) of bits " + ", ".join(map(str, self.bits))
        lo = "-inf" if self.min is None else self.min
        hi = "inf" if self.max is None else self.max
        return f"an integer in [{lo}, {hi}]"

    def check(self, value: Value) -> str | None:
        """Why ``value`` is illegal for this knob, or None when it is legal."""
        if self.type == "bool":
            return None if isinstance(value, bool) else f"must be true or false (got {value!r})"
        if self.type == "enum":
            return None if value in self.values else f"must be {self.legal_description()} (got {value!r})"
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer (got {value!r})"
        if self.type == "bitmask":
            mask = 0
            for b in self.bits:
                mask |= b
            if value < 0 or value & ~mask:
                return f"must be {self.legal_description()} (got {value})"
            return None
        if self.min is not None and value < self.min:
            return f"must be >= {self.min} (got {value})"
        if self.max is not None and value > self.max:
            return f"must be <= {self.max} (got {value})"
        return None

    def coerce(self, raw: Value) -> Value:
        """A user-given value (``--set KNOB=RAW``) as a typed, legal value; raises ValidationError."""
        value: Value
        text = str(raw).strip()
        if self.type == "bool":
            if isinstance(raw, bool):
                value = raw
            elif text.lower() in _TRUE:
                value = True
            elif text.lower() in _FALSE:
                value = False
            else:
                raise ValidationError(f"{self.name}: must be true or false (got {text!r})")
        elif self.type == "enum":
            value = next((v for v in self.values if str(v) == text), text)
        else:
            try:
                value = raw if isinstance(raw, int) and not isinstance(raw, bool) else int(text, 0)
            except ValueError:
                raise ValidationError(f"{self.name}: must be an integer (got {text!r})") from None
        if problem := self.check(value):
            raise ValidationError(f"{self.name}: {problem}")
        return value

    def parse(self, text: str) -> Value:
        """The value the kernel shows in the knob file."""
        text = text.strip()
        if "[" in text and "]" in text:  # sysfs choice lists show the active one as [choice]
            text = text[text.index("[") + 1 : text.index("]")]
        if self.type == "bool":
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"{self.location}: cannot read {text!r} as a boolean")
        if self.type == "enum":
            return next((v for v in self.values if str(v) == text), text)
        return int(text.split()[0])

    def format(self, value: Value) -> str:
        """The text written to the knob file (booleans as 1/0, which every kstrtobool accepts)."""
        if isinstance(value, bool):
            return "1" if value else "0"
        return str(value)


@dataclass(frozen=True)
class Rule:
    left: str
    op: str
    right: str

    def holds(self, values: Mapping[str, Value]) -> bool:
        return RULE_OPS[self.op](values[self.left], values[self.right])

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class Catalog:
    """A validated catalog, inheritance resolved."""

    name: str
    title: str
    description: str
    driver: str
    source: Path
    activation: dict[str, Knob]
    knobs: dict[str, Knob]
    rules: tuple[Rule, ...] = ()
    requires: Requirements = Requirements()
    daemon: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def hash(self) -> str:
        """Identity of what the catalog says (inheritance resolved), stable across formatting."""
        blob = json.dumps(self.data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def knob(self, name: str) -> Knob:
        """A tunable or activation setting by name; unknown names list what exists."""
        if name in self.knobs:
            return self.knobs[name]
        if name in self.activation:
            return self.activation[name]
        raise ValidationError(
            f"unknown knob {name!r} for backend {self.name} (known: {', '.join(self.all_knobs)})"
        )

    @property
    def all_knobs(self) -> dict[str, Knob]:
        """Activation settings first, then tunables: the order in which they are written."""
        return {**self.activation, **self.knobs}

    def defaults(self) -> dict[str, Value]:
        return {n: k.default for n, k in self.knobs.items()}


# ---- loading ------------------------------------------------------------------------------------


def builtin_catalog_dir() -> Path:
    """``configs/backends`` of a source checkout, or the copy packed into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_configs" / "backends", here.parent / "configs" / "backends"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("built-in knob catalogs not found (broken installation?)")


def catalog_dirs(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Directories searched for catalogs, later ones overriding earlier ones by backend name:
    built-in, /etc/ptmt/backends, $XDG_CONFIG_HOME/ptmt/backends, $PTMT_CATALOG_PATH, --catalog-dir."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs = [builtin_catalog_dir(), Path("/etc/ptmt/backends"), config_home / "ptmt" / "backends"]
    dirs += [Path(p) for p in os.environ.get("PTMT_CATALOG_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) for p in extra]
    return dirs


def catalog_files(extra: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Path]:
    """Backend name -> the file that defines it (the last directory wins)."""
    found: dict[str, Path] = {}
    for d in catalog_dirs(extra):
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found[f.stem] = f
    return found


def load_catalog(name: str, extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> Catalog:
    files = catalog_files(extra_dirs)
    if name not in files:
        raise ConfigError(f"unknown backend {name!r} (known: {', '.join(sorted(files))})")
    return _load(files[name], files, ())


def load_all(extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Catalog]:
    files = catalog_files(extra_dirs)
    return {name: _load(path, files, ()) for name, path in files.items()}


def load_catalog_file(path: str | os.PathLike[str], extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> Catalog:
    """A catalog from an explicit file (its ``extends`` resolved among the known catalogs)."""
    path = Path(path)
    files = {**catalog_files(extra_dirs), path.stem: path}
    return _load(path, files, ())


def _load(path: Path, files: Mapping[str, Path], chain: tuple[str, ...]) -> Catalog:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping with keys backend, title, description, knobs")
    raise_if(schema_errors(data, "catalog"), path)
    errors: list[str] = []
    if data["backend"] != path.stem:
        errors.append(at(["backend"], f"must match the file name {path.stem!r} (got {data['backend']!r})"))
    raise_if(errors, path)

    merged: dict[str, Any] = {"activation": {}, "knobs": {}, "rules": []}
    if parent_name := data.get("extends"):
        if parent_name in chain + (path.stem,):
            raise ConfigError(f"{path}: At 'extends': circular inheritance through {parent_name!r}")
        if parent_name not in files:
            raise ConfigError(
                f"{path}: At 'extends': unknown backend {parent_name!r} (known: {', '.join(sorted(files))})"
            )
        parent = _load(files[parent_name], files, chain + (path.stem,))
        merged = json.loads(json.dumps(parent.data))
        dropped = set(data.get("drop_knobs", []))
        for name in sorted(dropped - set(merged["knobs"])):
            errors.append(at(["drop_knobs"], f"{name!r} is not a knob of {parent_name}"))
        merged["knobs"] = {n: k for n, k in merged["knobs"].items() if n not in dropped}
        merged["rules"] = [r for r in merged["rules"] if not dropped & set(_RULE_RE.match(r).group(1, 3))]  # type: ignore[union-attr]
    for key, value in data.items():
        if key in ("activation", "knobs"):
            merged[key] = {**merged.get(key, {}), **value}
        elif key == "rules":
            merged["rules"] = list(dict.fromkeys(merged.get("rules", []) + value))
        elif key not in ("extends", "drop_knobs"):
            merged[key] = value
    merged.setdefault("driver", "sysfs")

    activation = {n: _knob(n, spec, ["activation", n], merged, errors) for n, spec in merged["activation"].items()}
    knobs = {n: _knob(n, spec, ["knobs", n], merged, errors) for n, spec in merged["knobs"].items()}
    for n in set(activation) & set(knobs):
        errors.append(at(["knobs", n], "is also an activation setting; a setting is one or the other"))
    rules = []
    for i, text in enumerate(merged["rules"]):
        left, op, right = _RULE_RE.match(text).group(1, 2, 3)  # type: ignore[union-attr]
        for side in (left, right):
            if side not in knobs:
                errors.append(at(["rules", i], f"names unknown knob {side!r}"))
        rules.append(Rule(left, op, right))
    if merged["driver"] != "upm" and any(k.field for k in knobs.values()):
        errors.append(at(["driver"], "knobs with 'field' need a daemon driver such as 'upm'"))
    raise_if(errors, path)
    return Catalog(
        name=merged["backend"], title=merged["title"], description=merged["description"],
        driver=merged["driver"], source=path, activation=activation, knobs=knobs, rules=tuple(rules),
        requires=Requirements(**merged.get("requires", {})), daemon=merged.get("daemon", {}), data=merged,
    )


def _knob(name: str, spec: dict[str, Any], where: list[Any], catalog: dict[str, Any], errors: list[str]) -> Knob:
    """Build one knob, appending every semantic problem to ``errors`` as ``At 'key': message``."""
    ktype = spec["type"]
    path, fld = spec.get("path"), spec.get("field")
    if bool(path) == bool(fld):
        errors.append(at(where, "needs exactly one of 'path' (kernel file) or 'field' (daemon protocol)"))
    if path:
        if not any(path == p or path.startswith(p + "/") for p in WRITABLE_PREFIXES):
            errors.append(at(where + ["path"], f"must be under {', '.join(WRITABLE_PREFIXES)} (got {path})"))
        if ".." in path.split("/"):
            errors.append(at(where + ["path"], "must not contain '..'"))
    requires = {k: v for k, v in {**catalog.get("requires", {}), **spec.get("requires", {})}.items() if k != "tiers"}
    if path and path.startswith(DEBUGFS + "/") and not requires.get("debugfs"):
        errors.append(at(where + ["requires", "debugfs"], "must be true for a knob under /sys/kernel/debug"))
    for key, allowed in (("min", "int"), ("max", "int"), ("values", "enum"), ("bits", "bitmask")):
        if key in spec and ktype != allowed:
            errors.append(at(where + [key], f"only applies to {allowed} knobs (this one is {ktype})"))
    if ktype == "enum" and "values" not in spec:
        errors.append(at(where + ["values"], "is required for an enum knob"))
    if ktype == "bitmask" and "bits" not in spec:
        errors.append(at(where + ["bits"], "is required for a bitmask knob"))
    lo, hi = spec.get("min"), spec.get("max")
    if lo is not None and hi is not None and hi < lo:
        errors.append(at(where + ["max"], f"must be >= min (got {hi} < {lo})"))
    knob = Knob(
        name=name, type=ktype, default=spec["default"], description=spec["description"], path=path, field=fld,
        min=lo, max=hi, values=tuple(spec.get("values", ())), bits=tuple(spec.get("bits", ())),
        candidates=tuple(spec.get("candidates", ())), unit=spec.get("unit", ""),
        category=spec.get("category", "switch"), requires=Requirements(**requires),
        activation_value=spec.get("value"),
    )
    if lo is None or hi is None or hi >= lo:
        if problem := knob.check(knob.default):
            errors.append(at(where + ["default"], problem))
        for i, cand in enumerate(knob.candidates):
            if problem := knob.check(cand):
                errors.append(at(where + ["candidates", i], problem))
        if len(set(map(repr, knob.candidates))) != len(knob.candidates):
            errors.append(at(where + ["candidates"], "must not repeat a value"))
        if knob.activation_value is not None and (problem := knob.check(knob.activation_value)):
            errors.append(at(where + ["value"], problem))
    return knob
