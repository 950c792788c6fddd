"""Canonical JSON and content hashes.

Identical knob configurations, workloads and hosts are stored once, keyed by the SHA-256 of a
canonical JSON text: keys sorted, no whitespace, numpy scalars turned into Python numbers, tuples
into lists, and floats with an integral value (``2.0``) into integers so that ``{"x": 2}`` and
``{"x": 2.0}`` are one configuration. Booleans stay booleans.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any


_PLAIN = (str, int, bool, type(None))


def normalize(value: Any) -> Any:
    """A JSON-ready copy of *value* in canonical form (see module docstring)."""
    if type(value) is dict and all(type(k) is str and type(v) in _PLAIN
                                   for k, v in value.items()):
        return dict(value)  # fast path: flat counters and knob sets of ints and strings
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"keys must be strings, got {k!r}")
            out[k] = normalize(v)
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars (np.int64, np.float64, np.bool_)
    if callable(item) and getattr(value, "shape", None) == ():
        return normalize(item())
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return normalize(tolist())
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def canonical_json(value: Any) -> str:
    return json.dumps(normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def content_hash(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of *value* (64 characters)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def config_hash(knobs: Mapping[str, Any]) -> str:
    """The hash under which a knob configuration is stored."""
    return content_hash(dict(knobs))
