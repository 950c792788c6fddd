"""Prometheus metrics of the tuning service, served on 127.0.0.1 only (``--metrics-port``).

``ptmt_objective`` (last reading) and ``ptmt_baseline``, ``ptmt_knob_value{knob}`` for every
numeric or boolean knob the service manages, ``ptmt_knob_managed{knob}`` (0 once let go),
``ptmt_decisions_total{kind}`` (one per logged event: model, explore, keep, revert, admin, ...),
``ptmt_reverts_total``, ``ptmt_errors_total`` and ``ptmt_intervals_total``. The registry is the
service's own, so nothing else of the process leaks out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ptmt.errors import PtmtError

ADDRESS = "127.0.0.1"


class Metrics:
    def __init__(self, backend: str, port: int | None) -> None:
        self.port = port
        self.registry = CollectorRegistry()
        labels = {"backend": backend}
        r = self.registry
        self.objective = Gauge("ptmt_objective", "Last reading of the objective", ["backend"], registry=r).labels(**labels)
        self.baseline = Gauge("ptmt_baseline", "Baseline objective of the current workload phase", ["backend"],
                              registry=r).labels(**labels)
        self._knob = Gauge("ptmt_knob_value", "Value the service holds a knob at", ["backend", "knob"], registry=r)
        self._managed = Gauge("ptmt_knob_managed", "1 while the service manages the knob, 0 once let go",
                              ["backend", "knob"], registry=r)
        self._decisions = Counter("ptmt_decisions", "Logged decisions by kind", ["backend", "kind"], registry=r)
        self.reverts = Counter("ptmt_reverts", "Reverts to the best known configuration", ["backend"],
                               registry=r).labels(**labels)
        self.errors = Counter("ptmt_errors", "Errors (refused values, objective failures, ...)", ["backend"],
                              registry=r).labels(**labels)
        self.intervals = Counter("ptmt_intervals", "Tuning intervals completed", ["backend"], registry=r).labels(**labels)
        self.backend = backend
        self._server: Any = None
        self._last_revert: int | None = None

    def serve(self) -> None:
        """Start the HTTP endpoint (a daemon thread) when a port is configured."""
        if self.port is None:
            return
        try:
            self._server = start_http_server(self.port, addr=ADDRESS, registry=self.registry)
        except OSError as exc:
            raise PtmtError(f"cannot serve metrics on {ADDRESS}:{self.port}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self._server is not None:
            server, _thread = self._server
            server.shutdown()
            server.server_close()
            self._server = None

    def interval(self, objective: float | None, baseline: float | None, knobs: Mapping[str, Any],
                 released: Iterable[str]) -> None:
        self.intervals.inc()
        if objective is not None:
            self.objective.set(objective)
        if baseline is not None:
            self.baseline.set(baseline)
        let_go = set(released)
        for name, value in knobs.items():
            self._managed.labels(self.backend, name).set(0 if name in let_go else 1)
            if isinstance(value, bool) or isinstance(value, (int, float)):
                self._knob.labels(self.backend, name).set(float(value))

    def event(self, kind: str, n: int) -> None:
        """One tuner event; a revert that moves several knobs is one event number, one revert."""
        self._decisions.labels(self.backend, kind).inc()
        if kind == "error":
            self.errors.inc()
        if kind == "revert" and n != self._last_revert:
            self._last_revert = n
            self.reverts.inc()
