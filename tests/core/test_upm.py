"""UPM backend against a small UPM protocol server running inside the test."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from ptmt.backends.registry import open_backend
from ptmt.backends.upm import UpmBackend
from ptmt.backends.upm_protocol import ProtocolError, Reply, Request
from ptmt.errors import KernelRejected, ValidationError
from ptmt.host import LinuxHost
from ptmt.journal import Journal
from ptmt.restore import restore


class FakeUpmDaemon(socketserver.ThreadingTCPServer):
    """Speaks the control protocol; keeps per-process settings; refuses thresholds above 10."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.procs: dict[int, dict[str, int]] = {}
        self.log: list[str] = []

    def handle_line(self, line: str) -> Reply:
        self.log.append(line.strip())
        try:
            req = Request.decode(line)
        except ProtocolError as e:
            return Reply(False, error=str(e))
        short = {"hot_page_threshold": "h", "page_migration_interval": "m", "read_sample_period": "d"}
        state = self.procs.setdefault(req.pid, {"enabled": 0, "h": 2, "m": 1, "d": 1000})
        if any(v > 10 for k, v in req.params.items() if k == "hot_page_threshold"):
            return Reply(False, error="threshold out of range")
        if req.verb == "enable":
            state["enabled"] = 1
        elif req.verb == "disable":
            state["enabled"] = 0
        elif req.verb == "update" and not state["enabled"]:
            return Reply(False, error=f"pid {req.pid} not managed")
        for k, v in req.params.items():
            state[short[k]] = v
        return Reply(True, {k: str(v) for k, v in state.items()} if req.verb == "status" else {})


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode()
        self.wfile.write(self.server.handle_line(line).encode().encode())  # type: ignore[attr-defined]


@pytest.fixture
def daemon() -> Iterator[FakeUpmDaemon]:
    server = FakeUpmDaemon()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def upm(fs, daemon) -> UpmBackend:
    host = LinuxHost(fs.root)
    host.fs = fs
    backend = open_backend("upm", host, options={"pid": 4242, "port": daemon.server_address[1]})
    assert isinstance(backend, UpmBackend)
    return backend


def test_activate_and_tune_then_restore(upm, daemon, fake_root, tmp_path):
    journal = Journal(tmp_path / "state")
    upm.apply(upm.plan({"hot_page_threshold": 4, "read_sample_period": 500}, activate=True), journal)
    assert daemon.procs[4242] == {"enabled": 1, "h": 4, "m": 1, "d": 500}
    assert (fake_root / "proc/sys/kernel/numa_balancing").read_text().strip() == "0"
    assert "enable -p 4242" in daemon.log and "update -p 4242 -h 4" in daemon.log
    report = restore(journal, lambda p, r: upm.host)
    assert not report.failed
    assert daemon.procs[4242] == {"enabled": 0, "h": 2, "m": 1, "d": 1000}
    assert (fake_root / "proc/sys/kernel/numa_balancing").read_text().strip() == "1"
    targets = [e.target for e in report.restored]
    assert f"upm://127.0.0.1:{daemon.server_address[1]}/4242/hot_page_threshold" in targets


def test_daemon_refusal_is_reported_and_rolled_back(upm, daemon, tmp_path):
    journal = Journal(tmp_path / "state")
    daemon.procs[4242] = {"enabled": 1, "h": 3, "m": 1, "d": 1000}
    plan = upm.plan({"read_sample_period": 200, "page_migration_interval": 5})
    daemon.procs[4242]["enabled"] = 0  # the daemon stops managing the process mid-way
    with pytest.raises(KernelRejected) as e:
        upm.apply(plan, journal)
    assert "UPM daemon refused 'update -p 4242 -m 5': pid 4242 not managed" in str(e.value)


def test_unreachable_daemon_is_reported_as_missing(fs):
    host = LinuxHost(fs.root)
    backend = open_backend("upm", host, options={"pid": 1, "port": 1})
    state = {s.knob.name: s for s in backend.probe()}["hot_page_threshold"]
    assert not state.present
    assert state.problem.startswith("upm://127.0.0.1:1/1/hot_page_threshold: UPM daemon not reachable at 127.0.0.1:1")


def test_tuning_needs_a_pid(fs):
    backend = open_backend("upm", LinuxHost(fs.root))
    with pytest.raises(ValidationError, match="pass --pid PID"):
        backend.plan({"hot_page_threshold": 3})


def test_protocol_round_trip_and_errors():
    req = Request("update", 7, {"hot_page_threshold": 3, "page_migration_interval": 2})
    assert req.encode() == "update -p 7 -h 3 -m 2\n"
    assert Request.decode(req.encode()) == req
    assert Reply.decode("OK enabled=1 h=3").values == {"enabled": "1", "h": "3"}
    assert Reply.decode("ERR no such pid").error == "no such pid"
    for bad in ("launch -p 1", "update -h 3", "update -p x", "update -p 1 -z 3"):
        with pytest.raises(ProtocolError):
            Request.decode(bad)
