"""``ptmt install-service``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptmt.cli_common import VerboseOpt, out, reports_errors


@reports_errors
def install_service(
        root: Annotated[Path, typer.Option("--root", help="Install into this tree instead of / (package builds, images, tests).")] = Path("/"),
        unit_dir: Annotated[Path, typer.Option("--unit-dir", help="Absolute directory for the units, under --root.")] = Path("/etc/systemd/system"),
        ptmt: Annotated[str | None, typer.Option("--ptmt", help="Absolute command the units run. Default: the ptmt this command runs from.")] = None,
        no_config: Annotated[bool, typer.Option("--no-config", help="Do not write the example /etc/ptmt/ptmt.yaml.")] = False,
        verbose: VerboseOpt = False) -> None:
    """Install the systemd units ptmt-tune@.service and ptmt-restore.service (and an example configuration)."""
    from ptmt.errors import PtmtError
    from ptmt.service.install import install

    if not unit_dir.is_absolute():
        raise PtmtError(f"--unit-dir must be absolute (got {unit_dir})")
    done = install(root=root, unit_dir=unit_dir, command=ptmt, config=not no_config)
    for path in done.units:
        out.print(f"installed {path}", markup=False)
    if done.config is not None:
        out.print(f"installed the example configuration {done.config}: edit it (backend, objective) first", markup=False)
    elif done.kept_config is not None:
        out.print(f"kept the existing configuration {done.kept_config}", markup=False)
    if root == Path("/"):
        out.print("then: systemctl daemon-reload && systemctl enable ptmt-restore.service && "
                  "systemctl enable --now ptmt-tune@BACKEND.service", markup=False)
