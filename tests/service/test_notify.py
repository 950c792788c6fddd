"""sd_notify against real AF_UNIX datagram sockets, and the service's whole conversation with systemd
through the command line: READY, STATUS, WATCHDOG pings, STOPPING on SIGTERM, exit 0, knobs restored.
Also the crash path: SIGKILL leaves the originals in the journal and `ptmt restore` puts them back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ptmt.journal import Journal
from ptmt.service.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path):
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    yield path, s
    s.close()


def test_messages_reach_a_datagram_socket(listener) -> None:
    path, s = listener
    n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000"})
    assert n.active and n.watchdog_period == 1.5
    assert n.ready("tuning tpp;\n objective proxy")
    assert s.recv(4096).decode() == f"READY=1\nSTATUS=tuning tpp; objective proxy\nMAINPID={os.getpid()}"
    assert n.watchdog()
    assert s.recv(4096) == b"WATCHDOG=1"
    assert n.stopping("interrupted")
    assert s.recv(4096) == b"STOPPING=1\nSTATUS=interrupted"


def test_abstract_socket_and_no_systemd() -> None:
    name = f"ptmt-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("ok")
        assert s.recv(100) == b"STATUS=ok"
    off = Notifier({})
    assert not off.active and off.watchdog_period is None and not off.ready("x")
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_period is None


def cli(host_tree: dict, objective: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ptmt", "tune", "--backend", "autonuma", "--platform", "linux",
            "--root", str(host_tree["root"]), "--state-dir", str(host_tree["state"]), "--objective",
            f"cmd:{sys.executable} {objective} {host_tree['root']}", "--objective-regex", r"^ops (\d+)",
            "--interval", "0.05", "--search", *extra]


SCRIPT = """
import sys
from pathlib import Path
rate = int((Path(sys.argv[1]) / "proc/sys/kernel/numa_balancing_promote_rate_limit_MBps").read_text())
print("ops", 120 if rate == 256 else 100)
"""


@pytest.fixture
def objective(tmp_path: Path) -> Path:
    p = tmp_path / "objective.py"
    p.write_text(SCRIPT)
    return p


def wait_for_change(proc: subprocess.Popen, root: Path, before: dict, helpers) -> None:
    deadline = time.monotonic() + 60  # until a trial is under way (activation alone is not enough)
    while helpers.knob_files(root).get(helpers.RATE) != str(helpers.BEST):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)


def test_the_service_talks_to_systemd_and_stops_cleanly_on_sigterm(listener, host_tree, objective, helpers) -> None:
    path, s = listener
    root = host_tree["root"]
    before = helpers.knob_files(root)
    messages: list[str] = []
    s.settimeout(0.5)

    def drain() -> None:  # systemd reads as they come (a datagram socket queues only a few)
        while True:
            try:
                messages.append(s.recv(4096).decode())
            except TimeoutError:
                if proc.poll() is not None:
                    return
            except OSError:
                return

    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cli(host_tree, objective), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    wait_for_change(proc, root, before, helpers)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    reader.join(timeout=10)
    assert proc.returncode == 0, err
    assert "every original knob value is restored" in out
    assert "ptmt tune: stopped by SIGTERM: every original knob value is restored" in err
    assert helpers.knob_files(root) == before
    ready = [m for m in messages if m.startswith("READY=1")]
    assert len(ready) == 1 and "STATUS=autonuma: objective cmd:" in ready[0] and f"MAINPID={proc.pid}" in ready[0]
    assert "no configuration file" in ready[0]
    assert sum(m == "WATCHDOG=1" for m in messages) >= 5, [m[:30] for m in messages]
    assert any(m.startswith("STATUS=autonuma: objective") and "ops 1 change(s)" not in m
               and " 1 change(s)" in m for m in messages), messages
    assert messages[-1] == "STOPPING=1\nSTATUS=interrupted; original knob values restored"


def test_sigkill_then_ptmt_restore_puts_every_knob_back(host_tree, objective, helpers) -> None:
    root = host_tree["root"]
    before = helpers.knob_files(root)
    proc = subprocess.Popen(cli(host_tree, objective), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_change(proc, root, before, helpers)
    proc.kill()
    proc.wait(timeout=30)
    assert helpers.knob_files(root) != before  # nobody restored anything
    assert Journal(host_tree["state"]).entries()
    done = subprocess.run([sys.executable, "-m", "ptmt", "restore", "--state-dir", str(host_tree["state"])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "restored autonuma numa_balancing = 1" in done.stdout
    assert helpers.knob_files(root) == before
    assert Journal(host_tree["state"]).entries() == []


def test_journal_lines_carry_their_syslog_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from ptmt.service.logfmt import tune_log_handler

    record = logging.LogRecord("ptmt.tune", logging.WARNING, __file__, 1, "objective gone\nsecond line", None, None)
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert tune_log_handler().format(record) == "<4>objective gone\n<4>second line"
    monkeypatch.delenv("JOURNAL_STREAM")
    info = logging.LogRecord("ptmt.tune", logging.INFO, __file__, 1, "scan_size_mb 256 -> 1024: why", None, None)
    assert tune_log_handler().format(info) == "ptmt tune: scan_size_mb 256 -> 1024: why"
