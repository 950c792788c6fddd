"""The tuning service in-process on a fake kernel tree: signals, advice mode, admin back-off, knobs
that vanish or are refused, reload, state file and metrics. The objective acts at chosen readings
(an administrator's write, a signal, a scrape), so each behaviour is tested against the real loop."""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ptmt.cli import app
from ptmt.journal import Journal
from ptmt.online.phase import PhaseSettings
from ptmt.service.config import load_config
from ptmt.service.daemon import Stopped
from ptmt.service.state import read_states


def test_sigterm_mid_tuning_restores_every_knob(make_service, host_tree, helpers) -> None:
    root = host_tree["root"]
    before = helpers.knob_files(root)
    seen: dict[str, dict[str, str]] = {}
    obj = helpers.Objective(root, {12: lambda: (seen.setdefault("during", helpers.knob_files(root)),
                                                os.kill(os.getpid(), signal.SIGTERM))})
    service = make_service(obj)
    with pytest.raises(Stopped):
        service.run()
    assert seen["during"] != before  # tuning had changed the machine (activation and a trial)
    assert seen["during"][helpers.RATE] == str(helpers.BEST)
    assert helpers.knob_files(root) == before
    assert Journal(host_tree["state"]).entries() == []
    (state,) = read_states(host_tree["state"])
    assert (state["status"], state["running"]) == ("interrupted", False)


def test_dry_run_writes_nothing_and_logs_the_advice(make_service, host_tree, helpers, tune_log) -> None:
    root = host_tree["root"]
    before = helpers.knob_bytes(root)
    result = make_service(helpers.Objective(root), duration=0.6, dry_run=True).run()
    assert helpers.knob_bytes(root) == before
    assert not Journal(host_tree["state"]).path.exists()
    lines = [r.getMessage() for r in tune_log.records]
    assert "advice (dry run, not written): would set numa_balancing 1 -> 2" in lines
    assert "advice (dry run, not written): would set demotion_enabled 0 -> 1" in lines
    assert "advice (dry run, not written): would set numa_balancing_promote_rate_limit_MBps 65536 -> 256" in lines
    assert result.changes >= 1  # the tuner decided as if its changes were made


def test_an_admin_write_is_detected_and_respected(make_service, host_tree, helpers, tune_log) -> None:
    root = host_tree["root"]
    before = helpers.knob_files(root)
    admin = lambda: (root / helpers.RATE).write_text("4096\n")  # noqa: E731
    service = make_service(helpers.Objective(root, {10: admin}), duration=1.2)
    result = service.run()
    (event,) = [e for e in result.events if e.kind == "admin"]
    assert event.knob == "numa_balancing_promote_rate_limit_MBps" and event.new == "4096"
    assert re.fullmatch(r"numa_balancing_promote_rate_limit_MBps \d+ -> 4096: numa_balancing_promote_rate_limit_MBps "
                        r"changed from \d+ to 4096 outside ptmt \(an administrator\?\): leaving it to them, no longer "
                        r"tuning it; its original value 65536 is dropped from the journal and not restored on exit",
                        event.line())
    assert event.line() in [r.getMessage() for r in tune_log.records]
    later = [e for e in result.events if e.n > event.n or (e.seq > event.seq)]
    assert all(e.knob != "numa_balancing_promote_rate_limit_MBps" for e in later)
    assert any(e.kind == "explore" and e.knob for e in later)  # it went on with the other knobs
    after = helpers.knob_files(root)
    assert after[helpers.RATE] == "4096"  # not restored over
    assert {k: v for k, v in after.items() if k != helpers.RATE} == \
        {k: v for k, v in before.items() if k != helpers.RATE}
    assert Journal(host_tree["state"]).entries() == []


def test_an_admin_switching_the_backend_off_keeps_their_setting_on_exit(make_service, host_tree, helpers,
                                                                        tune_log) -> None:
    root = host_tree["root"]
    before = helpers.knob_files(root)
    switch = root / "proc/sys/kernel/numa_balancing"
    admin = lambda: switch.write_text("0\n")  # noqa: E731  (ptmt wrote 2 at start)
    result = make_service(helpers.Objective(root, {10: admin}), duration=1.2).run()
    (event,) = [e for e in result.events if e.kind == "admin"]
    assert event.line() == ("numa_balancing 2 -> 0: numa_balancing changed from 2 to 0 outside ptmt (an "
                            "administrator?): leaving it to them; its original value 1 is dropped from the "
                            "journal and not restored on exit")
    assert event.line() in [r.getMessage() for r in tune_log.records]
    assert any(e.kind == "explore" and e.seq > event.seq for e in result.events)  # the knobs are still tuned
    after = helpers.knob_files(root)
    assert after[str(switch.relative_to(root))] == "0"  # not restored over
    assert {k: v for k, v in after.items() if not k.endswith("kernel/numa_balancing")} == \
        {k: v for k, v in before.items() if not k.endswith("kernel/numa_balancing")}  # the rest is restored
    assert Journal(host_tree["state"]).entries() == []


def test_a_knob_that_vanishes_is_let_go(make_service, host_tree, helpers) -> None:
    root = host_tree["root"]
    gone = root / "sys/kernel/debug/sched/numa_balancing/scan_size_mb"
    before = helpers.knob_files(root)
    result = make_service(helpers.Objective(root, {9: gone.unlink}), duration=1.0).run()
    (event,) = [e for e in result.events if e.kind == "vanished"]
    assert event.knob == "scan_size_mb" and "scan_size_mb disappeared" in event.reason
    assert helpers.knob_files(root) == {k: v for k, v in before.items() if not k.endswith("scan_size_mb")}
    assert Journal(host_tree["state"]).entries() == []


def test_a_refused_value_is_rolled_back_marked_bad_and_tuning_goes_on(make_service, host_tree, helpers,
                                                                     faulty) -> None:
    root = host_tree["root"]
    before = helpers.knob_files(root)
    service = make_service(helpers.Objective(root), duration=1.0)
    service.host.fs.io = faulty  # the same tree, with a kernel that refuses one value
    faulty.reject["/" + helpers.RATE] = {"256"}
    result = service.run()
    (error,) = [e for e in result.events if e.kind == "error"]
    assert error.reason.startswith("kernel refused numa_balancing_promote_rate_limit_MBps=256; rolled back, not "
                                   "trying it again this run: kernel rejected value '256' (EINVAL")
    assert ("numa_balancing_promote_rate_limit_MBps", "256") in service.tuner.space.forbidden
    assert any(e.kind == "explore" and e.seq > error.seq for e in result.events)
    assert ("/" + helpers.RATE, "256") not in faulty.writes
    assert helpers.knob_files(root) == before


def test_an_invalid_reload_keeps_the_running_configuration(make_service, host_tree, helpers, tune_log,
                                                           tmp_path: Path) -> None:
    root = host_tree["root"]
    cfg = tmp_path / "ptmt.yaml"
    cfg.write_text("guard: {revert_after: 2}\n")
    seen = {}

    def bad() -> None:
        cfg.write_text("guard: {revert_after: 0}\ninterval: 0.5\n")
        os.kill(os.getpid(), signal.SIGHUP)

    def good() -> None:
        seen["after_bad"] = (service.tuner.s.interval, service.tuner.s.guard.revert_after)
        cfg.write_text("guard: {revert_after: 3}\ninterval: 0.03\nmetrics_port: 9\nphase: {confirm: 3}\n")
        os.kill(os.getpid(), signal.SIGHUP)

    obj = helpers.Objective(root, {4: bad, 8: good, 11: lambda: os.kill(os.getpid(), signal.SIGTERM)})
    flags = {"backend": "autonuma", "platform": "linux", "search": True, "state_dir": host_tree["state"]}
    service = make_service(obj, reload_config=lambda: load_config(cfg).overlay(**flags),
                           phase=PhaseSettings(objective_shift=0.2))
    assert service.tuner.s.phase.objective_shift == 0.2  # the file's phase settings reach the detector
    service.config.path = cfg
    with pytest.raises(Stopped):
        service.run()
    lines = [r.getMessage() for r in tune_log.records]
    assert (f"configuration reload refused, still running on the previous configuration: {cfg}: At "
            "'guard.revert_after': must be a positive integer (got 0)") in lines
    assert seen["after_bad"] == (0.02, 2)
    assert (f"configuration {cfg} reloaded: interval 0.02 -> 0.03 s; guard (revert_after); phase, metrics_port "
            "take(s) effect when the service restarts") in lines
    assert (service.tuner.s.interval, service.tuner.s.guard.revert_after) == (0.03, 3)
    assert service.config.metrics_port is None
    assert service.tuner.s.phase.confirm == service.config.phase.confirm == 2  # until the restart
    assert service.tuner.phase.s.objective_shift == 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_and_state_of_the_running_service(make_service, host_tree, helpers) -> None:
    root = host_tree["root"]
    port = free_port()
    seen = {}

    def look() -> None:
        seen["metrics"] = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        seen["states"] = read_states(host_tree["state"])
        seen["status"] = CliRunner().invoke(app, ["tune", "--status", "--state-dir", str(host_tree["state"])]).output

    service = make_service(helpers.Objective(root, {14: look}), duration=0.8, metrics_port=port)
    service.run()
    m = seen["metrics"]
    assert re.search(r'^ptmt_objective\{backend="autonuma"\} 1[02]0\.0$', m, re.M)
    assert re.search(r'^ptmt_intervals_total\{backend="autonuma"\} 1[23]\.0$', m, re.M)
    assert re.search(r'^ptmt_knob_value\{backend="autonuma",knob="numa_balancing_promote_rate_limit_MBps"\} '
                     r'\d+\.0$', m, re.M)
    assert re.search(r'^ptmt_decisions_total\{backend="autonuma",kind="explore"\} [1-9]', m, re.M)
    assert "ptmt_reverts_total" in m and "ptmt_errors_total" in m
    (state,) = seen["states"]
    assert (state["running"], state["status"], state["pid"], state["backend"]) == (True, "running", os.getpid(),
                                                                                  "autonuma")
    assert state["knobs"]["numa_balancing_promote_rate_limit_MBps"] in (256, 1024, 4096, 16384, 65536)
    assert seen["status"].startswith(f"ptmt tune autonuma: running (pid {os.getpid()}, updated")
    assert "objective scripted:" in seen["status"]
    with pytest.raises(OSError):  # the endpoint is gone with the service
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    (final,) = read_states(host_tree["state"])
    assert (final["running"], final["status"]) == (False, "finished")


def test_leave_alone_at_start_and_on_reload(make_service, host_tree, helpers, tune_log, tmp_path: Path) -> None:
    root = host_tree["root"]
    before = helpers.knob_files(root)
    cfg = tmp_path / "ptmt.yaml"
    cfg.write_text("leave_alone: [watermark_scale_factor]\n")
    seen = {}

    def hand_over() -> None:  # the rate limit is under trial at 256 now: give it to the administrator
        seen["rate"] = (root / helpers.RATE).read_text().strip()
        cfg.write_text("leave_alone: [watermark_scale_factor, numa_balancing_promote_rate_limit_MBps]\n")
        os.kill(os.getpid(), signal.SIGHUP)

    flags = {"backend": "autonuma", "platform": "linux", "search": True, "state_dir": host_tree["state"],
             "interval": 0.02}
    service = make_service(helpers.Objective(root, {9: hand_over}), duration=1.0,
                           leave_alone=["watermark_scale_factor"], reload_config=lambda: load_config(cfg).overlay(**flags))
    assert "watermark_scale_factor" not in service.tuner.space.names
    result = service.run()
    assert seen["rate"] == str(helpers.BEST)
    (event,) = [e for e in result.events if e.kind == "leave_alone"]
    assert event.line() == ("numa_balancing_promote_rate_limit_MBps 256 -> 65536: numa_balancing_promote_rate_limit_"
                            "MBps is now in leave_alone: its original value is restored; no longer tuning it")
    assert all(e.knob != "numa_balancing_promote_rate_limit_MBps" for e in result.events if e.seq > event.seq)
    assert all(e.knob != "watermark_scale_factor" for e in result.events)
    assert helpers.knob_files(root) == before


def test_status_of_a_crashed_daemon_and_of_none(host_tree) -> None:
    from ptmt.service.state import write_state

    runner = CliRunner()
    empty = runner.invoke(app, ["tune", "--status", "--state-dir", str(host_tree["state"])])
    assert empty.exit_code == 0
    assert empty.output.strip() == f"no ptmt tune service has run with state directory {host_tree['state']}"
    dead = subprocess_pid_that_exited()
    write_state(host_tree["state"], "tpp", {"pid": dead, "running": True, "status": "running", "backend": "tpp",
                                            "objective": "proxy", "objective_value": None})
    shown = runner.invoke(app, ["tune", "--status", "--state-dir", str(host_tree["state"])])
    assert shown.output.splitlines()[0] == "ptmt tune tpp: crashed"
    assert ("  the daemon is gone without restoring: run `ptmt restore` (the boot unit does it at boot)"
            in shown.output.splitlines())


def subprocess_pid_that_exited() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_an_admin_write_just_before_sigterm_is_not_restored_over(make_service, host_tree, helpers) -> None:
    root = host_tree["root"]
    before = helpers.knob_files(root)

    def admin_then_stop() -> None:
        (root / "proc/sys/vm/watermark_scale_factor").write_text("150\n")
        os.kill(os.getpid(), signal.SIGTERM)

    service = make_service(helpers.Objective(root, {10: admin_then_stop}))
    with pytest.raises(Stopped):
        service.run()
    (event,) = [e for e in service.tuner.events if e.kind == "admin"]
    assert (event.knob, event.old, event.new) == ("watermark_scale_factor", "10", "150")
    after = helpers.knob_files(root)
    assert after.pop("proc/sys/vm/watermark_scale_factor") == "150"
    before.pop("proc/sys/vm/watermark_scale_factor")
    assert after == before


def test_a_long_running_service_keeps_a_window_in_memory_and_counts_the_whole_run(
        make_service, host_tree, helpers, monkeypatch) -> None:
    """A service runs for weeks: it keeps the latest SERVICE_HISTORY intervals, events and advice
    lines, while its counts (state file, metrics, result) and the reason a knob was let go cover
    the whole run, as the recorder, which receives every row, does."""
    from collections import Counter

    from ptmt.online.recording import ListRecorder
    from ptmt.service import daemon

    monkeypatch.setattr(daemon, "SERVICE_HISTORY", 4)
    root = host_tree["root"]
    admin = lambda: (root / helpers.RATE).write_text("4096\n")  # noqa: E731
    rec = ListRecorder()
    seen: dict[str, Counter[str]] = {}

    def look() -> None:  # the metrics were published before this interval, the recorder has every event since
        samples = service.metrics.registry.collect()
        seen["metrics"] = Counter({s.labels["kind"]: int(s.value) for m in samples for s in m.samples
                                   if s.name == "ptmt_decisions_total"})
        seen["recorded"] = Counter(e["kind"] for e in rec.events)

    service = make_service(helpers.Objective(root, {10: admin, 40: look}), duration=2.0)
    service.tuner.recorder = rec
    result = service.run()
    assert len(rec.intervals) > 40 and len(rec.events) > 4
    assert (len(service.tuner.intervals), len(service.tuner.events)) == (4, 4)
    assert len(service.tuner.decision_ms) == 4
    assert [r["seq"] for r in result.intervals] == [r["seq"] for r in rec.intervals[-4:]]
    assert [e.seq for e in result.events] == [e["seq"] for e in rec.events[-4:]]
    # the counts cover the whole run, not the window
    assert result.interval_count == len(rec.intervals)
    assert result.event_count == len(rec.events)
    readings = [r["objective"] for r in rec.intervals if r["objective"] is not None]
    assert result.mean_objective == pytest.approx(sum(readings) / len(readings))
    changes = sum(1 for e in rec.events if e["kind"] in ("model", "explore", "revert") and e["knob"])
    assert result.changes == changes > 0
    assert result.reverts == len({e["n"] for e in rec.events if e["kind"] == "revert"})
    (state,) = read_states(host_tree["state"])
    assert (state["intervals"], state["changes"], state["reverts"]) == (len(rec.intervals), changes, result.reverts)
    assert len(state["last_events"]) == 4
    # the admin's write left the window long ago; why the knob was let go did not
    assert not any(e.kind == "admin" for e in service.tuner.events)
    assert "changed from 256 to 4096 outside ptmt" in state["released"]["numa_balancing_promote_rate_limit_MBps"]
    # every event reached the metrics exactly once
    assert seen["metrics"] == seen["recorded"] and seen["metrics"]["admin"] == 1
    assert sum(seen["metrics"].values()) > 4
