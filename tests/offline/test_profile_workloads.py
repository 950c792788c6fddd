"""Real-host workload files: validation messages name the file and the key; objectives are read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ptmt.errors import ConfigError
from ptmt.offline.workloads import Running, final_objective, load_host_workload


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "w.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ("command: [echo, hi]\nobjective: {regex: 'ops ([0-9', unit: ops/s}\n",
     "At 'objective.regex': invalid regular expression: unterminated character set at position 5"),
    ("command: [echo, hi]\nobjective: {regex: '(a)(b)'}\n",
     "At 'objective.regex': has several groups: name the number's group (?P<value>...)"),
    ("command: echo hi\nobjective: {regex: x, colour: red}\n",
     "At 'objective': unknown key 'colour' (allowed: direction, file, regex, runtime, scale, unit)"),
    ("command: echo hi\ntimeout_s: -1\nobjective: {runtime: true}\n",
     "At 'timeout_s': -1 is less than or equal to the minimum of 0"),
    ("command: [echo, hi]\nshell: true\nobjective: {runtime: true}\n",
     "At 'command': must be a string when shell is true"),
    ("command: [echo]\nobjective: {runtime: true, regex: x}\n",
     "At 'objective.runtime': excludes regex and file (one objective source)"),
    ("command: [echo]\nobjective: {unit: s}\n",
     "At 'objective': needs regex (on stdout), file, or runtime: true"),
    ("command: [echo]\nobjective: {regex: x, direction: up}\n",
     "At 'objective.direction': must be one of max, min (got 'up')"),
    ("objective: {runtime: true}\n", "'command' is required"),
    ("command: \"echo 'unclosed\"\nobjective: {runtime: true}\n",
     "At 'command': cannot split into arguments: No closing quotation"),
])
def test_validation_messages(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_host_workload(path)
    assert f"{path}: {message}" in str(info.value).splitlines()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such workload file"):
        load_host_workload(tmp_path / "nope.yaml")


def test_regex_objective_last_match_and_named_group(tmp_path):
    path = write(tmp_path, f"""
name: demo
command: [{sys.executable}, -c, "print('ops 1'); print('ops 2.5')"]
objective: {{regex: 'ops (?P<value>[0-9.]+)', unit: Mops/s, scale: 2}}
""")
    wl = load_host_workload(path)
    assert wl.name == "demo" and wl.objective.direction == "max"
    run = Running(wl, wl.command)
    assert run.wait(30) == 0
    assert final_objective(wl, run) == 5.0
    run.close()


def test_file_and_runtime_objectives(tmp_path):
    wl = load_host_workload(write(tmp_path, """
command: "echo 'score=41.5' > out.txt"
shell: true
cwd: work
objective: {file: out.txt, regex: 'score=([0-9.]+)', direction: min}
"""))
    (tmp_path / "work").mkdir()
    run = Running(wl, wl.command)
    assert run.wait(30) == 0
    assert final_objective(wl, run) == 41.5
    assert wl.objective.file == (tmp_path / "work" / "out.txt").resolve()
    wl = load_host_workload(write(tmp_path, "command: [sleep, '0.2']\nobjective: {runtime: true}\n"))
    assert wl.objective.unit == "s" and wl.objective.direction == "min"
    run = Running(wl, wl.command)
    assert run.wait(30) == 0
    assert 0.15 < final_objective(wl, run) < 5
