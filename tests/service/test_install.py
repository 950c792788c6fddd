"""`ptmt install-service` into a temporary root, and systemd's own check of the installed units."""

from __future__ import annotations

import subprocess
from pathlib import Path

from typer.testing import CliRunner

from ptmt.cli import app
from ptmt.service.install import ptmt_command


def verify(tool: str, *units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "verify", *map(str, units)], capture_output=True, text=True, timeout=120)


def test_install_service_writes_units_that_systemd_accepts(tmp_path: Path, helpers) -> None:
    tool = helpers.ensure_systemd_analyze()
    root = tmp_path / "root"
    done = CliRunner().invoke(app, ["install-service", "--root", str(root)])
    assert done.exit_code == 0, done.output
    units = root / "etc/systemd/system"
    tune, boot = units / "ptmt-tune@.service", units / "ptmt-restore.service"
    assert f"installed {tune}" in done.output and f"installed {boot}" in done.output
    text = tune.read_text()
    assert f"ExecStart={ptmt_command()} tune --backend %i --platform linux\n" in text
    assert f"ExecStartPre={ptmt_command()} restore --platform linux --backend %i\n" in text
    for line in ("Type=notify", "WatchdogSec=60", "Restart=on-failure", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/ptmt -/proc/sys -/sys/kernel/mm -/sys/kernel/debug"):
        assert line + "\n" in text
    assert "ProtectKernelTunables" not in text.replace("ProtectKernelTunables= is", "")  # would block /proc/sys
    assert "Type=oneshot\n" in boot.read_text() and "ConditionPathExists=/var/lib/ptmt/journal.json\n" in boot.read_text()
    example = root / "etc/ptmt/ptmt.yaml"
    assert example.read_text() == (Path(__file__).resolve().parents[2] / "configs/ptmt.yaml").read_text()

    instance = units / "ptmt-tune@autonuma.service"  # systemd-analyze finds the template next to it
    r = verify(tool, instance, boot)
    assert (r.returncode, r.stderr.strip()) == (0, ""), r.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ptmt-tune@.service").write_text(text.replace("Type=notify", "Type=notifyy"))
    r = verify(tool, broken / "ptmt-tune@autonuma.service")
    assert "Failed to parse service type" in r.stderr  # the check above can fail

    example.write_text("backend: tpp\n")
    again = CliRunner().invoke(app, ["install-service", "--root", str(root)])
    assert again.exit_code == 0 and f"kept the existing configuration {example}" in again.output
    assert example.read_text() == "backend: tpp\n"
