"""Real-host workloads: a YAML file that says what to run and how to read its score.

    name: stream
    command: [./stream, --size, 8G]        # argv, run without a shell; a string is split like a shell would
    shell: false                           # true: run the (string) commands through /bin/sh -c
    setup: ./prepare.sh                    # optional, before every trial (or once in --in-run mode)
    cleanup: [rm, -f, /tmp/stream.out]     # optional, after every trial, even a failed one
    env: {OMP_NUM_THREADS: 8}
    timeout_s: 600
    objective: {regex: 'Triad:\\s+([0-9.]+)', unit: MB/s, direction: max}
    #          {runtime: true}                                       seconds, lower is better
    #          {file: result.txt, regex: 'ops=(\\d+)', unit: ops/s}   read after the command ends

Commands run in their own process group so a timeout or Ctrl-C stops the whole tree, with stdout and
stderr in files (never pipes that could fill up and stall the workload).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ptmt.errors import ConfigError, PtmtError
from ptmt.schema import at, raise_if, read_yaml, schema_errors

#: Characters of stderr kept in a failed trial's error text.
STDERR_TAIL = 2000


@dataclass(frozen=True)
class Objective:
    """How a run's score is read: a regex on stdout or a file, or the runtime."""

    regex: re.Pattern[str] | None = None
    file: Path | None = None
    runtime: bool = False
    unit: str = ""
    direction: str = "max"
    scale: float = 1.0

    def value(self, text: str) -> float | None:
        """The number in *text* (the last match), scaled; None when it does not appear."""
        if self.regex is None:
            try:
                return float(text.strip()) * self.scale
            except ValueError:
                return None
        matches = list(self.regex.finditer(text))
        if not matches:
            return None
        m = matches[-1]
        raw = m.group("value") if "value" in self.regex.groupindex else (m.group(1) if m.groups() else m.group(0))
        try:
            return float(raw) * self.scale
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class HostWorkload:
    """A validated workload file."""

    name: str
    source: Path
    command: tuple[str, ...] | str
    objective: Objective
    shell: bool = False
    setup: tuple[str, ...] | str | None = None
    cleanup: tuple[str, ...] | str | None = None
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def command_line(self) -> str:
        return self.command if isinstance(self.command, str) else shlex.join(self.command)


def _command(value: Any, shell: bool, where: str, errors: list[str]) -> tuple[str, ...] | str | None:
    if value is None:
        return None
    if shell:
        if not isinstance(value, str):
            errors.append(at([where], "must be a string when shell is true"))
            return None
        return value
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as e:
            errors.append(at([where], f"cannot split into arguments: {e}"))
            return None
        if not parts:
            errors.append(at([where], "is empty"))
        return tuple(parts)
    return tuple(str(v) for v in value)


def load_host_workload(path: str | os.PathLike[str]) -> HostWorkload:
    """Read and validate a workload file; every error names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such workload file")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping with keys command and objective")
    raise_if(schema_errors(data, "host_workload"), path)
    errors: list[str] = []
    shell = bool(data.get("shell", False))
    command = _command(data["command"], shell, "command", errors)
    setup = _command(data.get("setup"), shell, "setup", errors)
    cleanup = _command(data.get("cleanup"), shell, "cleanup", errors)
    base = path.parent.resolve()
    cwd = (base / data["cwd"]).resolve() if data.get("cwd") else base
    obj = data["objective"]
    regex = None
    if "regex" in obj:
        try:
            regex = re.compile(obj["regex"], re.MULTILINE)
        except re.error as e:
            errors.append(at(["objective", "regex"], f"invalid regular expression: {e}"))
        else:
            if regex.groups > 1 and "value" not in regex.groupindex:
                errors.append(at(["objective", "regex"],
                                 "has several groups: name the number's group (?P<value>...)"))
    runtime = bool(obj.get("runtime", False))
    if runtime and ("regex" in obj or "file" in obj):
        errors.append(at(["objective", "runtime"], "excludes regex and file (one objective source)"))
    if not runtime and "regex" not in obj and "file" not in obj:
        errors.append(at(["objective"], "needs regex (on stdout), file, or runtime: true"))
    if runtime and obj.get("direction", "min") != "min":
        errors.append(at(["objective", "direction"], "runtime is always minimised (got 'max')"))
    raise_if(errors, path)
    objective = Objective(
        regex=regex, file=(cwd / obj["file"]) if "file" in obj else None, runtime=runtime,
        unit=obj.get("unit", "s" if runtime else ""),
        direction="min" if runtime else obj.get("direction", "max"), scale=float(obj.get("scale", 1.0)))
    return HostWorkload(
        name=data.get("name", path.stem), source=path, command=command, objective=objective,  # type: ignore[arg-type]
        shell=shell, setup=setup, cleanup=cleanup, cwd=cwd,
        env={k: str(v) for k, v in (data.get("env") or {}).items()},
        timeout_s=data.get("timeout_s"), data=data)


# ---- running -------------------------------------------------------------------------------------


class CommandFailed(PtmtError):
    """A workload command exited non-zero, timed out or printed no objective."""


class Running:
    """A started workload command with its output captured in temporary files."""

    def __init__(self, workload: HostWorkload, command: tuple[str, ...] | str) -> None:
        self.workload = workload
        self.out: IO[str] = tempfile.TemporaryFile("w+", prefix="ptmt-out-")
        self.err: IO[str] = tempfile.TemporaryFile("w+", prefix="ptmt-err-")
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                command, shell=workload.shell, cwd=workload.cwd, stdout=self.out, stderr=self.err,
                stdin=subprocess.DEVNULL, env={**os.environ, **workload.env}, start_new_session=True,
                text=True)
        except OSError as e:
            self.close()
            raise CommandFailed(f"cannot start {_show(command)}: {e.strerror or e}") from e
        self.ended: float | None = None
        self._read_to = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.ended is None:
            self.ended = time.monotonic()
        return code

    def wait(self, timeout: float) -> int | None:
        """Wait up to *timeout* seconds for the command to end; its exit code or None."""
        try:
            self.proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None
        return self.poll()

    @property
    def runtime_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the command's process group, SIGKILL after a grace period."""
        if self.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            if self.wait(wait) is not None:
                break

    def stdout(self) -> str:
        self.out.flush()
        self.out.seek(0)
        return self.out.read()

    def new_stdout(self) -> str:
        """What the command printed since the previous call (for per-interval objectives)."""
        text = self.stdout()
        new, self._read_to = text[self._read_to:], len(text)
        return new

    def stderr_tail(self, chars: int = STDERR_TAIL) -> str:
        self.err.flush()
        self.err.seek(0)
        text = self.err.read().strip()
        return text if len(text) <= chars else "…" + text[-chars:]

    def close(self) -> None:
        self.out.close()
        self.err.close()


def _show(command: tuple[str, ...] | str) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def run_hook(workload: HostWorkload, which: str) -> None:
    """Run ``setup`` or ``cleanup`` to completion; raise CommandFailed with its stderr on failure."""
    command = getattr(workload, which)
    if command is None:
        return
    run = Running(workload, command)
    try:
        code = run.wait(workload.timeout_s or 3600)
        if code is None:
            run.stop()
            raise CommandFailed(f"{which} timed out: {_show(command)}")
        if code != 0:
            raise CommandFailed(f"{which} exited with status {code}: {_show(command)}\n{run.stderr_tail()}")
    finally:
        run.close()


def final_objective(workload: HostWorkload, run: Running) -> float:
    """The score of a finished run, or CommandFailed saying why there is none."""
    obj = workload.objective
    if obj.runtime:
        return run.runtime_s
    if obj.file is not None:
        try:
            text = obj.file.read_text()
        except OSError as e:
            raise CommandFailed(f"objective file {obj.file}: {e.strerror}") from e
        where = f"objective file {obj.file}"
    else:
        text, where = run.stdout(), "stdout"
    value = obj.value(text)
    if value is None:
        pattern = obj.regex.pattern if obj.regex else "a number"
        raise CommandFailed(f"no objective in {where} (looked for {pattern!r})\n{run.stderr_tail()}".rstrip())
    return value
