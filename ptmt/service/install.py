"""``ptmt install-service``: the two systemd units, and an example configuration if there is none.

- ``ptmt-tune@.service`` (instance = backend) runs ``ptmt tune`` as a notify service with a watchdog;
- ``ptmt-restore.service`` restores at boot whatever a stopped tuner left in the journal.

The units' ``/usr/bin/ptmt`` is replaced by the ptmt this command runs from (a virtualenv, pipx,
/usr/local), so the installed units start the same program. ``--root`` installs into another
tree (a package build, an image, a test); nothing is enabled or started: the command prints the
``systemctl`` lines to do that.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ptmt.errors import PtmtError

UNITS = ("ptmt-tune@.service", "ptmt-restore.service")
UNIT_DIR = Path("/etc/systemd/system")
CONFIG = Path("/etc/ptmt/ptmt.yaml")
PLACEHOLDER = "/usr/bin/ptmt"


#: where shipped files live: in the wheel (pyproject's force-include), then in a source checkout
_SHIPPED = {"units": ("_units", "scripts"), "configs": ("_configs", "configs")}


def _source(kind: str, name: str) -> Path:
    here = Path(__file__).resolve().parent.parent  # the ptmt package
    wheel, checkout = _SHIPPED[kind]
    for candidate in (here / wheel / name, here.parent / checkout / name):
        if candidate.is_file():
            return candidate
    raise PtmtError(f"{name} is not shipped with this ptmt installation ({here})")


def ptmt_command() -> str:
    """How systemd should start this ptmt: its console script if it sits next to this Python, else
    ``python -m ptmt``."""
    script = Path(sys.executable).parent / "ptmt"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    found = shutil.which("ptmt")
    if found:
        return str(Path(found).resolve())
    return f"{shlex.quote(sys.executable)} -m ptmt"


@dataclass
class Installed:
    units: list[Path] = field(default_factory=list)
    config: Path | None = None  # the example written, or None when a configuration was already there
    kept_config: Path | None = None


def render(unit: str, command: str) -> str:
    text = _source("units", unit).read_text()
    return text.replace(PLACEHOLDER, command)


def install(root: Path = Path("/"), unit_dir: Path = UNIT_DIR, command: str | None = None,
            config: bool = True) -> Installed:
    """Write both units (replacing older ones) and, unless one exists, the example configuration."""
    command = command or ptmt_command()
    if not command.split()[0].startswith("/"):
        raise PtmtError(f"--ptmt must be an absolute path (systemd needs one), got {command!r}")
    done = Installed()
    target_dir = root / unit_dir.relative_to("/")
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        for unit in UNITS:
            path = target_dir / unit
            tmp = path.with_name(f".{unit}.tmp")
            tmp.write_text(render(unit, command))
            tmp.chmod(0o644)
            os.replace(tmp, path)
            done.units.append(path)
        if config:
            cfg = root / CONFIG.relative_to("/")
            if cfg.exists():
                done.kept_config = cfg
            else:
                cfg.parent.mkdir(parents=True, exist_ok=True)
                cfg.write_text(_source("configs", "ptmt.yaml").read_text())
                done.config = cfg
    except OSError as exc:
        raise PtmtError(f"cannot install into {target_dir}: {exc.strerror} (needs root, or use --root)") from exc
    return done
