"""Options and helpers shared by every ``ptmt`` command (kept apart so subsystem CLIs can import them)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ptmt.errors import PtmtError
from ptmt.host import Host, default_state_dir
from ptmt.platforms import open_host, resolve_platform

#: Backends whose knobs exist only on a patched (simulated) kernel.
PATCHED_SIM_BACKENDS = ("tpp", "colloid")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

RootOpt = Annotated[Path | None, typer.Option("--root", help="Directory holding /proc and /sys (tests, chroots). Default: /, or the simulated machine's files.")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="Where the rollback journal lives. Default: /var/lib/ptmt (linux) or the user's state dir (sim); env PTMT_STATE_DIR.")]
PlatformOpt = Annotated[str | None, typer.Option("--platform", help="linux or sim. Default: linux on a machine with two memory tiers, sim otherwise.")]
CatalogDirOpt = Annotated[list[Path] | None, typer.Option("--catalog-dir", help="Extra directory of knob catalogs (*.yaml); repeatable, later ones win.")]
BackendOpt = Annotated[str, typer.Option("--backend", "-b", help="Tiering solution: autonuma, tpp, colloid, upm, tiering08, memtis, or a user catalog.")]
PidOpt = Annotated[int | None, typer.Option("--pid", help="Target process for per-process backends (UPM).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log every step; show tracebacks.")]

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(fn: F) -> F:
    """Turn PtmtError into one clear line on stderr and exit status 1 (a traceback with --verbose)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = kwargs.get("verbose", False)
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="ptmt: %(levelname)s: %(message)s", stream=sys.stderr, force=True)
        try:
            return fn(*args, **kwargs)
        except PtmtError as e:
            if verbose:
                err.print_exception()
            first, *rest = str(e).splitlines()
            err.print(f"ptmt: error: {first}", markup=False)
            for line in rest:
                err.print(f"  {line.strip()}", markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def open_cli_host(platform: str | None, root: Path | None, state_dir: Path | None, announce: bool = True,
                  backend: str | None = None) -> tuple[Host, Path]:
    """The host a command runs on, and its state directory. On the simulated machine a TPP or Colloid
    backend boots the simulated kernel carrying that patch (other backends keep the machine's kernel)."""
    chosen = resolve_platform(platform, root)
    if announce and platform is None:
        err.print(f"ptmt: platform {chosen} ({'two memory tiers found' if chosen == 'linux' else 'no tiered memory here: the simulated machine'})", markup=False)
    state = state_dir or default_state_dir(chosen)
    if chosen == "sim" and backend in PATCHED_SIM_BACKENDS:
        from ptmt.sim.knobs import kernel_for_backend

        return open_host(chosen, root, state_dir=state, kernel=kernel_for_backend(backend)), state
    return open_host(chosen, root, state_dir=state), state


def catalog_dirs(dirs: list[Path] | None) -> list[str]:
    return [str(d) for d in dirs or []]


def parse_sets(sets: list[str], option: str = "--set", key: str = "KNOB") -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise PtmtError(f"{option} expects {key}=VALUE (got {item!r})")
        parsed[name.strip()] = value.strip()
    return parsed


