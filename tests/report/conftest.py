"""A database with real recorded runs, made once: interleaved pairs through ``run_ab`` (the real
DbRecorder), short runs on the simulated machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptmt.report.ab import run_ab

REPEAT = 3
DURATION = 300.0
INTERVAL = 10.0


@pytest.fixture(scope="session")
def ab_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite URL of a database holding REPEAT coordinate-search pairs of autonuma on gups."""
    path = Path(tmp_path_factory.mktemp("report")) / "ptmt.db"
    url = f"sqlite:///{path}"
    run_ab("autonuma", "gups", repeat=REPEAT, db=url, duration=DURATION, interval=INTERVAL, seed=3)
    return url


@pytest.fixture(autouse=True)
def _restore_tune_logger():
    """`ptmt tune` run through CliRunner adds a handler on the runner's (then closed) stderr to the
    ptmt.tune logger; put the logger back as it was so later tests do not log into a closed stream."""
    import logging

    log = logging.getLogger("ptmt.tune")
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    yield
    log.handlers[:] = handlers
    log.setLevel(level)
    log.propagate = propagate
