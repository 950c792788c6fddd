"""Finding backends: built-in and third-party drivers register through the ``ptmt.backends`` entry point."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from ptmt.backends.base import Backend
from ptmt.catalog import Catalog, load_catalog
from ptmt.errors import ConfigError
from ptmt.host import Host

ENTRY_POINT_GROUP = "ptmt.backends"


def drivers() -> dict[str, type[Backend]]:
    """Driver name -> Backend class, from every installed distribution's entry points."""
    found: dict[str, type[Backend]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise ConfigError(f"entry point {ENTRY_POINT_GROUP}:{ep.name} is not a ptmt Backend subclass")
        found[ep.name] = cls
    return found


def backend_for(catalog: Catalog, host: Host, options: Mapping[str, Any] | None = None) -> Backend:
    available = drivers()
    if catalog.driver not in available:
        raise ConfigError(
            f"{catalog.source}: At 'driver': unknown driver {catalog.driver!r} (installed: {', '.join(sorted(available))})"
        )
    return available[catalog.driver](catalog, host, options)


def open_backend(name: str, host: Host, catalog_dirs: Iterable[str | os.PathLike[str]] = (),
                 options: Mapping[str, Any] | None = None) -> Backend:
    return backend_for(load_catalog(name, catalog_dirs), host, options)
