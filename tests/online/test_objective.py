"""Objective sources of ``ptmt tune``: real commands, files and HTTP servers, rates, directions, errors."""

from __future__ import annotations

import http.server
import json
import logging
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ptmt.backends.registry import backend_for
from ptmt.catalog import load_catalog
from ptmt.host import LinuxHost
from ptmt.journal import Journal
from ptmt.online.objective import (
    CommandObjective,
    FileObjective,
    HttpObjective,
    IpcObjective,
    Maximised,
    ObjectiveError,
    ProxyObjective,
    SimObjective,
    default_objective,
    objective_from_mapping,
    parse_objective,
)
from ptmt.online.simrun import HostObjective
from ptmt.sim.host import SimHost
from ptmt.sim.knobs import kernel_for_backend
from ptmt.telemetry import Sample, Telemetry

NO_SAMPLE = Sample(t=0.0, interval_s=10.0, counters={}, nodes={})
ALLOWED = "sim, ipc, proxy, cmd:COMMAND, file:PATH, http://URL, https://URL"
KEYS = "source, regex, json_path, rate, direction, unit, timeout_s"


def py(code: str) -> str:
    """A cmd: spec running *code* in this Python (a real subprocess, no shell)."""
    return "cmd:" + shlex.join([sys.executable, "-c", code])


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ptmt.tune" and r.levelno == logging.WARNING]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# -- cmd: -----------------------------------------------------------------------------------------------

def test_command_first_number_and_regex() -> None:
    src = parse_objective(py("print('run 7: 1234.5 ops/s, p99 3 ms')"))
    assert isinstance(src, CommandObjective)
    src.check(None)
    assert src.measure(None, NO_SAMPLE) == 7.0  # the first number, whatever it means
    src = parse_objective(py("print('run 7: ops=1234.5 p99=3ms')"), regex=r"ops=([\d.]+)", unit="ops/s")
    assert src.measure(None, NO_SAMPLE) == 1234.5
    assert src.unit == "ops/s" and src.direction == "max"
    whole = parse_objective(py("print('p99=3.25ms')"), regex=r"\d+\.\d+")  # no group: the whole match
    assert whole.measure(None, NO_SAMPLE) == 3.25


def test_command_failures_warn_once_per_distinct_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    failing = parse_objective(py("import sys; print('oops', file=sys.stderr); sys.exit(3)"))
    for _ in range(3):
        assert failing.measure(None, NO_SAMPLE) is None
    assert warnings_of(caplog) == [f"objective {failing.spec()}: exited with status 3: oops (interval skipped)"]
    no_number = parse_objective(py("print('no digits here')"))
    assert no_number.measure(None, NO_SAMPLE) is None
    assert no_number.measure(None, NO_SAMPLE) is None
    assert warnings_of(caplog)[1:] == [f"objective {no_number.spec()}: no number in 'no digits here' (interval skipped)"]
    with pytest.raises(ObjectiveError, match="no number in 'no digits here'"):
        no_number.check(None)


def test_command_timeout_kills_and_skips(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    slow = parse_objective(py("import time; time.sleep(30); print(1)"), timeout_s=0.3)
    t0 = time.monotonic()
    assert slow.measure(None, NO_SAMPLE) is None
    assert time.monotonic() - t0 < 5
    assert warnings_of(caplog) == [f"objective {slow.spec()}: did not finish within 0.3 s (killed) (interval skipped)"]


def test_command_check_finds_missing_commands() -> None:
    with pytest.raises(ObjectiveError, match=r"command 'ptmt-no-such-tool-x9' not found on PATH"):
        parse_objective("cmd:ptmt-no-such-tool-x9 --stats").check(None)
    with pytest.raises(ObjectiveError, match=r"is not an executable file"):
        parse_objective("cmd:./no/such/dir/stats").check(None)


# -- file: and directions ----------------------------------------------------------------------------------

def test_file_and_min_direction(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    f = tmp_path / "latency"
    f.write_text("p99_ms 12.5\n")
    plain = parse_objective(f"file:{f}")
    assert isinstance(plain, FileObjective) and plain.measure(None, NO_SAMPLE) == 99.0  # "p99" comes first
    lat = parse_objective(f"file:{f}", regex=r"p99_ms (\S+)", direction="min", unit="ms")
    assert isinstance(lat, Maximised) and lat.unit == "1/ms" and lat.direction == "max"
    assert lat.spec() == f"file:{f}"
    lat.check(None)
    assert lat.measure(None, NO_SAMPLE) == pytest.approx(1 / 12.5)
    f.write_text("p99_ms 10\n")  # 20% less latency reads as +25%
    assert lat.measure(None, NO_SAMPLE) == pytest.approx(1 / 10)
    f.write_text("p99_ms 0\n")
    assert lat.measure(None, NO_SAMPLE) is None and lat.measure(None, NO_SAMPLE) is None
    assert len(warnings_of(caplog)) == 1 and "is not positive" in warnings_of(caplog)[0]
    assert "lower is better" in lat.describe() and "tuned as 1/ms" in lat.describe()
    ms_per_op = parse_objective(f"file:{f}", direction="min", unit="ms/op")
    assert ms_per_op.unit == "1/(ms/op)"


def test_file_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    src = parse_objective(f"file:{tmp_path / 'gone'}")
    with pytest.raises(ObjectiveError, match=r"gone does not exist"):
        src.check(None)
    assert src.measure(None, NO_SAMPLE) is None and src.measure(None, NO_SAMPLE) is None
    assert len(warnings_of(caplog)) == 1 and "No such file or directory" in warnings_of(caplog)[0]


def test_rate_mode_primes_and_restarts_after_a_reset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    f, clock = tmp_path / "ops_total", Clock()
    src = objective_from_mapping({"source": f"file:{f}", "rate": True, "unit": "ops/s"}, clock=clock)
    f.write_text("1000\n")
    src.check(None)  # a trial reading does not prime the rate
    assert src.measure(None, NO_SAMPLE) is None  # primes
    clock.t += 10
    f.write_text("3000\n")
    assert src.measure(None, NO_SAMPLE) == pytest.approx(200.0)
    assert src.measure(None, NO_SAMPLE) is None  # no time has passed
    clock.t += 5
    f.write_text("4000\n")
    assert src.measure(None, NO_SAMPLE) == pytest.approx(200.0)  # since the last timed reading
    clock.t += 10
    f.write_text("50\n")  # the application restarted
    assert src.measure(None, NO_SAMPLE) is None
    clock.t += 10
    f.write_text("550\n")
    assert src.measure(None, NO_SAMPLE) == pytest.approx(50.0)
    assert warnings_of(caplog) == [f"objective file:{f}: counter went down (reset?); starting its rate again "
                                   "(interval skipped)"]
    assert "as a rate" in src.describe()


# -- http(s):// -------------------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/slow":
            time.sleep(2)
        if self.path == "/broken":
            self.send_error(500, "Internal Server Error")
            return
        body = {"/metrics": b"# HELP x\nrequests_total 1234\nlatency_seconds 0.25\n",
                "/json": json.dumps({"metrics": {"ops": 99.5, "shards": [{"v": 3}, {"v": "4.5"}],
                                                 "flag": True}}).encode(),
                "/slow": b"1\n"}.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client of /slow has given up: writing the late answer fails, as it should


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_regex_and_json_path(server: str) -> None:
    src = parse_objective(f"{server}/metrics", regex=r"^requests_total (\S+)$")
    assert isinstance(src, HttpObjective)
    src.check(None)
    assert src.measure(None, NO_SAMPLE) == 1234.0  # ^ and $ anchor lines
    assert parse_objective(f"{server}/metrics", regex=r"latency_seconds (\S+)", direction="min",
                           unit="s").measure(None, NO_SAMPLE) == pytest.approx(4.0)
    assert parse_objective(f"{server}/json", json_path="metrics.ops").measure(None, NO_SAMPLE) == 99.5
    assert parse_objective(f"{server}/json", json_path="metrics.shards.0.v").measure(None, NO_SAMPLE) == 3.0
    assert parse_objective(f"{server}/json", json_path="metrics.shards.-1.v").measure(None, NO_SAMPLE) == 4.5


def test_http_failures_are_skipped_with_one_warning_each(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    cases = [
        (parse_objective(f"{server}/broken"), "HTTP 500 Internal Server Error"),
        (parse_objective(f"{server}/json", json_path="metrics.nope"), "no key 'nope' at metrics"),
        (parse_objective(f"{server}/json", json_path="metrics.flag"), "metrics.flag is a boolean, not a number"),
        (parse_objective(f"{server}/json", json_path="metrics.shards.7.v"), "metrics.shards has 2 items, no index 7"),
        (parse_objective(f"{server}/json", json_path="metrics.ops.x"), "metrics.ops is a number, cannot look up 'x'"),
        (parse_objective(f"{server}/metrics", json_path="a"), "not JSON"),
        (parse_objective(f"{server}/slow", timeout_s=0.3), "no answer within 0.3 s"),
    ]
    for src, message in cases:
        assert src.measure(None, NO_SAMPLE) is None
        assert src.measure(None, NO_SAMPLE) is None
    got = warnings_of(caplog)
    assert len(got) == len(cases)
    for (src, message), line in zip(cases, got, strict=True):
        assert line.startswith(f"objective {src.spec()}: {message}")
    with pytest.raises(ObjectiveError, match="HTTP 404 Not Found"):
        parse_objective(f"{server}/missing").check(None)


# -- parsing specs and config mappings ------------------------------------------------------------------

def test_parse_objective_errors_name_the_spec_and_what_is_allowed() -> None:
    with pytest.raises(ObjectiveError) as e:
        parse_objective("throughput")
    assert str(e.value) == f"objective 'throughput': unknown source 'throughput' (allowed: {ALLOWED})"
    with pytest.raises(ObjectiveError) as e:
        parse_objective("cmd:")
    assert str(e.value) == "objective 'cmd:': cmd: needs a command, e.g. cmd:myapp-stats --json"
    with pytest.raises(ObjectiveError) as e:
        parse_objective("cmd:stats", regex="ops=(")
    assert str(e.value).startswith("objective 'cmd:stats': regex: not a valid regular expression (")
    with pytest.raises(ObjectiveError) as e:
        parse_objective("ipc", direction="min", rate=True)
    assert str(e.value) == ("objective 'ipc': rate: only for cmd:, file: and http(s):// sources (the source is 'ipc')\n"
                            "objective 'ipc': direction: only for cmd:, file: and http(s):// sources "
                            "(the source is 'ipc')")
    with pytest.raises(ObjectiveError, match=r"objective 'http://': 'http://' has no host"):
        parse_objective("http://")
    assert isinstance(parse_objective("sim"), SimObjective)
    assert isinstance(parse_objective(" proxy "), ProxyObjective)


def test_mapping_from_yaml() -> None:
    doc = yaml.safe_load('objective:\n  source: "cmd:myapp-stats --port 9000"\n  regex: "ops=(\\\\d+)"\n'
                         "  rate: true\n  direction: max\n  unit: ops/s\n  timeout_s: 5\n")
    src = objective_from_mapping(doc["objective"])
    assert isinstance(src, CommandObjective)
    assert src.argv == ["myapp-stats", "--port", "9000"] and src.rate is not None and src.timeout_s == 5.0
    assert src.extract.regex is not None and src.extract.regex.pattern == r"ops=(\d+)"
    assert src.describe() == ("cmd:myapp-stats --port 9000 (regex 'ops=(\\\\d+)', as a rate; ops/s, "
                              "higher is better)")
    assert isinstance(objective_from_mapping("ipc"), IpcObjective)


@pytest.mark.parametrize(("mapping", "message"), [
    ({"source": "cmd:x", "rate": "yes"}, "At 'objective.rate': must be true or false (got 'yes')"),
    ({"source": "cmd:x", "interval": 5}, f"At 'objective.interval': unknown key (allowed: {KEYS})"),
    ({"regex": "x"}, f"At 'objective.source': required (one of: {ALLOWED})"),
    ({"source": 3}, "At 'objective.source': must be a non-empty string (got 3)"),
    ({"source": "nope"}, f"At 'objective.source': unknown source 'nope' (allowed: {ALLOWED})"),
    ({"source": "cmd:x", "direction": "down"}, "At 'objective.direction': must be 'max' or 'min' (got 'down')"),
    ({"source": "cmd:x", "timeout_s": 0}, "At 'objective.timeout_s': must be a positive number of seconds (got 0)"),
    ({"source": "cmd:x", "timeout_s": True}, "At 'objective.timeout_s': must be a positive number of seconds "
                                             "(got True)"),
    ({"source": "cmd:x", "unit": ""}, "At 'objective.unit': must be a non-empty string (got '')"),
    ({"source": "cmd:x", "json_path": "a..b"}, "At 'objective.json_path': must be a dotted path like "
                                               "'metrics.ops' or 'items.0.value' (got 'a..b')"),
    ({"source": "cmd:x", "regex": "a", "json_path": "b"}, "At 'objective': set regex or json_path, not both"),
    ({"source": "file:x", "timeout_s": 2}, "At 'objective.timeout_s': only for cmd: and http(s):// sources"),
    ({"source": "proxy", "regex": "x"}, "At 'objective.regex': only for cmd:, file: and http(s):// sources "
                                        "(the source is 'proxy')"),
    ({"source": "cmd:'unclosed"}, "At 'objective.source': cannot split the command \"'unclosed\" "
                                  "(No closing quotation)"),
    ([1, 2], "At 'objective': must be a mapping with a 'source' or a source string (got [1, 2])"),
])
def test_mapping_errors(mapping: object, message: str) -> None:
    with pytest.raises(ObjectiveError) as e:
        objective_from_mapping(mapping)
    assert str(e.value) == message


def test_mapping_reports_every_problem_at_its_path() -> None:
    with pytest.raises(ObjectiveError) as e:
        objective_from_mapping({"source": "cmd:x", "rate": 1, "direction": "up"}, path="tune.objective")
    assert str(e.value).splitlines() == ["At 'tune.objective.rate': must be true or false (got 1)",
                                         "At 'tune.objective.direction': must be 'max' or 'min' (got 'up')"]


# -- ipc and proxy from samples -------------------------------------------------------------------------

def test_ipc_from_perf_deltas(fake_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    ipc = parse_objective("ipc")
    s = Sample(t=10, interval_s=10, counters={}, nodes={}, perf={"instructions": 3e9, "cycles": 2e9})
    assert ipc.measure(None, s) == pytest.approx(1.5)
    assert ipc.measure(None, NO_SAMPLE) is None and ipc.measure(None, NO_SAMPLE) is None
    idle = Sample(t=10, interval_s=10, counters={}, nodes={}, perf={"instructions": 0.0, "cycles": 0.0})
    assert ipc.measure(None, idle) is None
    assert warnings_of(caplog) == ["objective ipc: this interval's sample has no perf instructions/cycles "
                                   "(interval skipped)",
                                   "objective ipc: no CPU cycles counted this interval (interval skipped)"]
    with pytest.raises(ObjectiveError, match=r"perf counters are not read under --root"):
        ipc.check(LinuxHost(fake_root))


def _counters(**kw: int) -> Sample:
    return Sample(t=10, interval_s=10, counters=dict(kw), nodes={})


def test_proxy_formula(fake_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ptmt.tune")
    host = LinuxHost(fake_root)  # numa_balancing=1, node0 has CPUs 0-1
    proxy = parse_objective("proxy")
    s = _counters(numa_hint_faults=1000, numa_hint_faults_local=750, pgpromote_success=200_000,
                  pgdemote_kswapd=250_000, pgdemote_direct=50_000, pgmigrate_success=999_999)
    # 0.75 - 500000 pages * 4e-6 s / (10 s * 2 CPUs)
    assert proxy.measure(host, s) == pytest.approx(0.75 - 0.1)
    assert proxy.cpus == 2
    assert ProxyObjective(cpus=4).measure(host, s) == pytest.approx(0.75 - 0.05)
    assert proxy.measure(host, _counters(numa_hint_faults=0, numa_hint_faults_local=0)) is None
    (fake_root / "proc/sys/kernel/numa_balancing").write_text("2\n")
    assert proxy.measure(host, s) is None and proxy.measure(host, s) is None
    assert warnings_of(caplog) == [
        "objective proxy: no NUMA hint faults this interval (interval skipped)",
        "objective proxy: numa_balancing=2 does not sample fast-tier pages (only mode 1 or 3 does), so hint "
        "faults say nothing about locality; use ipc or an application metric (interval skipped)"]
    with pytest.raises(ObjectiveError, match=r"cannot read /proc/vmstat"):
        proxy.check(host)
    (fake_root / "proc/vmstat").write_text("nr_free_pages 1\nnuma_hint_faults 5\n")
    with pytest.raises(ObjectiveError, match=r"/proc/vmstat lacks numa_hint_faults_local"):
        proxy.check(host)
    (fake_root / "proc/vmstat").write_text("numa_hint_faults 5\nnuma_hint_faults_local 2\n")
    proxy.check(host)


def _sim(tmp: Path, config: dict[str, int], mode: str) -> SimHost:
    host = SimHost(tmp / "m", workload="gups", seed=1, fast_gb=4, slow_gb=8, footprint_gb=6, persist=False,
                   kernel=kernel_for_backend("autonuma"))
    catalog = load_catalog("autonuma")
    b = backend_for(catalog, host)
    b.apply(b.plan(config, activate=True), Journal(tmp / "state"))
    host.fs.write("/proc/sys/kernel/numa_balancing", mode)
    return host


def test_proxy_ranks_configurations_like_ops_on_the_simulated_machine() -> None:
    """With NUMA balancing sampling both tiers (mode 3), the proxy orders three gups configurations
    as the simulated ops/s does; in tiering-only mode it gives no readings."""
    means = {}
    for label, config in (("default", {}), ("calm", {"numa_balancing_promote_rate_limit_MBps": 16}),
                          ("thrash", {"scan_period_max_ms": 5000})):
        with tempfile.TemporaryDirectory() as tmp:
            host = _sim(Path(tmp), config, "3")
            tel, proxy = Telemetry(host), ProxyObjective()
            tel.start()
            host.advance(60)
            tel.sample()
            vals, ops = [], []
            for _ in range(4):
                host.advance(10)
                s = tel.sample()
                vals.append(proxy.measure(host, s))
                ops.append(s.objective)
            assert None not in vals
            means[label] = (sum(vals) / len(vals), sum(ops) / len(ops))
    by_proxy = sorted(means, key=lambda k: means[k][0])
    by_ops = sorted(means, key=lambda k: means[k][1])
    assert by_proxy == by_ops == ["thrash", "default", "calm"], means
    with tempfile.TemporaryDirectory() as tmp:
        host = _sim(Path(tmp), {}, "2")
        tel = Telemetry(host)
        tel.start()
        host.advance(30)
        s = tel.sample()
        assert s.counters["numa_hint_faults"] > 0 and s.counters["numa_hint_faults_local"] == 0
        assert ProxyObjective().measure(host, s) is None


# -- sim and the default ----------------------------------------------------------------------------------

def test_default_objective(tmp_path: Path, fake_root: Path) -> None:
    host = SimHost(tmp_path / "m", workload="gups", seed=1, fast_gb=4, slow_gb=8, footprint_gb=6, persist=False)
    src = default_objective(host)
    assert isinstance(src, SimObjective) and src.unit == "ops/s" and src.spec() == "sim"
    src.check(host)
    IpcObjective().check(host)  # the simulated machine has perf counters
    tel = Telemetry(host)
    tel.start()
    host.advance(10)
    s = tel.sample()
    assert src.measure(host, s) == s.objective == HostObjective().measure(host, s) > 0
    assert IpcObjective().measure(host, s) == pytest.approx(s.perf["instructions"] / s.perf["cycles"])
    linux = LinuxHost(fake_root)
    with pytest.raises(ObjectiveError, match=r"only the simulated machine \(--platform sim\)"):
        src.check(linux)
    assert isinstance(default_objective(linux), ProxyObjective)  # no perf under --root
