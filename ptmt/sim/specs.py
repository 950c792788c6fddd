"""Finding and validating the simulator's YAML data: machine presets and workload specs.

Built-in files live in ``configs/machines`` and ``configs/workloads`` of a source checkout (or the copy
packed into the wheel); a NAME is looked up there, anything with a ``/`` or ``.yaml`` suffix is a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptmt.errors import ConfigError
from ptmt.schema import raise_if, read_yaml, schema_errors


def builtin_dir(kind: str) -> Path:
    """``configs/<kind>`` of a source checkout, or the copy packed into the wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_configs" / kind, here.parent / "configs" / kind):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"built-in {kind} not found (broken installation?)")


def builtin_names(kind: str) -> list[str]:
    return sorted(p.stem for p in builtin_dir(kind).glob("*.yaml"))


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """The file for a built-in NAME or a user's PATH."""
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        return path
    path = builtin_dir(kind) / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {kind[:-1]} {text!r} (built-in: {', '.join(builtin_names(kind))})")
    return path


def load_validated(kind: str, schema: str, name_or_path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read and schema-check one file; errors name the file and the key."""
    path = resolve(kind, name_or_path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values")
    raise_if(schema_errors(data, schema), path)
    return data, path
