"""Validation of YAML data files against JSON schemas, with borgmatic-style error messages.

Every error names the file and the key: ``configs/backends/tpp.yaml: At 'knobs.scan_size_mb.max':
must be >= min (got 10 < 64)``. Schemas are data too (``ptmt/schemas/*.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ptmt.errors import ConfigError


def key_path(parts: Iterable[Any]) -> str:
    """``('knobs', 'scan_size_mb', 'max')`` -> ``knobs.scan_size_mb.max``; list indices as ``[0]``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def at(parts: Sequence[Any], message: str) -> str:
    return f"At '{key_path(parts)}': {message}" if parts else message


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema shipped in ``ptmt/schemas/NAME.yaml``."""
    text = resources.files("ptmt").joinpath("schemas", f"{name}.yaml").read_text()
    schema = yaml.safe_load(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _describe(error: jsonschema.ValidationError) -> str:
    v = error.validator
    if v == "required":
        return error.message.replace("is a required property", "is required")
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key {', '.join(map(repr, extra))} (allowed: {allowed})"
    if v == "enum":
        return f"must be one of {', '.join(map(str, error.validator_value))} (got {error.instance!r})"
    if v == "type":
        return f"must be of type {error.validator_value} (got {error.instance!r})"
    return error.message


def schema_errors(data: Any, schema_name: str) -> list[str]:
    """All schema violations of ``data``, each as ``At 'key': message``, in document order."""
    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [at(list(e.absolute_path), _describe(e)) for e in errors]


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors name the file and line."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: invalid YAML: {getattr(e, 'problem', e)}") from e


def raise_if(errors: list[str], source: str | Path) -> None:
    """Raise one ConfigError listing every message (first one on the first line)."""
    if errors:
        raise ConfigError("\n".join(f"{source}: {m}" for m in errors))
