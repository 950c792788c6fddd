"""What the service owns: advice mode, and backing off from knobs someone else has taken over.

:class:`ManagedBackend` wraps the tuner's backend. In advice mode (``dry_run``) it validates and
logs every change the tuner decides (``would set knob old -> new: why``) and writes nothing: no
kernel file, no journal entry; the tuner carries on as if the change were made, so the advice it
logs is what it would do. Otherwise it passes writes through and remembers what it wrote.

:class:`KnobWatch` compares, every interval and right before every write, each managed knob's live
value with the value ptmt last wrote (or found, if it never wrote it). A difference means an
administrator changed the knob: ptmt stops managing it, logs what, old and new, drops it from the
journal so that it is not restored over on exit, and goes on with the others. A knob whose file
has gone (debugfs unmounted, module unloaded) is released the same way. The backend's activation
settings (``numa_balancing``, ``demotion_enabled``) are watched too: ptmt writes them once at
start, and an administrator who changes one afterwards keeps their value on exit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ptmt.backends.base import Backend, Change, Plan
from ptmt.catalog import Value
from ptmt.errors import KnobError, KnobMissing, ValidationError
from ptmt.journal import Journal

log = logging.getLogger("ptmt.tune")


class ManagedBackend:
    """A backend as the service's tuner sees it (everything not overridden is the wrapped backend's)."""

    def __init__(self, inner: Backend, *, dry_run: bool = False, history: int | None = None) -> None:
        self.inner = inner
        self.dry_run = dry_run
        #: knob -> the value ptmt last wrote to it, or the value it found there (the admin check's reference)
        self.expected: dict[str, Value] = {}
        #: advice mode: the values the tuner believes it has set
        self.shadow: dict[str, Value] = {}
        #: advice mode: the changes that would have been made, as logged (the latest *history*)
        self.advice: deque[str] = deque(maxlen=history)
        #: called before every write (the admin check), and knobs never to write (released ones)
        self.before_apply: Callable[[], None] = lambda: None
        self.hold: Callable[[], set[str]] = set

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    def read_config(self) -> dict[str, Value]:
        return {**self.inner.read_config(), **self.shadow}

    def plan(self, settings: Mapping[str, Value | str], activate: bool = False) -> Plan:
        plan = self.inner.plan(settings, activate=activate)  # validates everything; raises when illegal
        if not self.dry_run:
            return plan
        wanted: dict[str, Value] = {}
        if activate:
            wanted.update({n: k.activation_value for n, k in self.inner.catalog.activation.items()})  # type: ignore[misc]
        wanted.update({n: self.inner.catalog.knob(n).coerce(v) for n, v in settings.items()})
        shadow_plan = Plan(plan.backend)
        for name, knob in self.inner.catalog.all_knobs.items():
            if name not in wanted:
                continue
            current = self.shadow[name] if name in self.shadow else self.inner.read(knob)
            if current != wanted[name]:
                shadow_plan.changes.append(Change(knob, current, wanted[name]))
        return shadow_plan

    def apply(self, plan: Plan, journal: Journal) -> None:
        if not plan.changes:
            return
        self.before_apply()
        held = self.hold()
        plan = Plan(plan.backend, [c for c in plan.changes if c.knob.name not in held])
        if self.dry_run:
            for c in plan.changes:
                was = "?" if c.before is None else c.knob.format(c.before)  # as the kernel spells it
                line = f"{c.knob.name} {was} -> {c.knob.format(c.after)}"
                self.advice.append(line)
                log.info("advice (dry run, not written): would set %s", line)
                self.shadow[c.knob.name] = c.after
            return
        self.inner.apply(plan, journal)
        for c in plan.changes:
            self.expected[c.knob.name] = c.after


class KnobWatch:
    """Releases the tuner's knobs that an administrator changed or that disappeared."""

    def __init__(self, tuner: Any, backend: ManagedBackend) -> None:
        self.tuner, self.backend = tuner, backend
        self._unreadable: set[str] = set()
        #: activation setting -> the value it held once the tuner had started (None: let go)
        self.activation: dict[str, Value | None] = {}
        backend.before_apply = self.check
        backend.hold = lambda: set(tuner.released)

    def managed(self) -> list[str]:
        return [n for n in self.tuner.space.names if n not in self.tuner.released]

    def start(self) -> None:
        """Take the reference values, once the tuner has started (its activation is written)."""
        for name in self.managed():
            try:
                self.backend.expected.setdefault(name, self.backend.inner.read(self.backend.inner.catalog.knobs[name]))
            except (KnobError, ValidationError, ValueError):
                continue
        if self.backend.dry_run:
            return  # advice mode wrote no activation setting: nothing of ptmt's to watch there
        for name, knob in self.backend.inner.catalog.activation.items():
            try:
                self.activation[name] = self.backend.inner.read(knob)
            except (KnobError, ValidationError, ValueError):
                continue

    def _check_activation(self) -> None:
        inner = self.backend.inner
        for name, expected in list(self.activation.items()):
            if expected is None:
                continue
            try:
                live = inner.read(inner.catalog.activation[name])
            except (KnobError, ValidationError, ValueError):
                continue  # unreadable for now: the tunable knobs' check reports files that vanish
            if live != expected:
                self.activation[name] = None
                self.tuner.release_activation(
                    name, expected, live, f"{name} changed from {expected} to {live} outside ptmt (an "
                    "administrator?): leaving it to them")

    def check(self) -> None:
        inner = self.backend.inner
        self._check_activation()
        for name in self.managed():
            knob = inner.catalog.knobs[name]
            try:
                live = inner.read(knob)
            except KnobMissing:
                self.tuner.release(name, None, "vanished", f"{name} disappeared ({knob.path or inner.target(knob)} "
                                   "is gone: debugfs unmounted or module unloaded?): no longer tuning it")
                continue
            except (KnobError, ValidationError, ValueError) as exc:
                if name not in self._unreadable:
                    self._unreadable.add(name)
                    log.warning("cannot read %s to check it (%s); checking again next interval", name, exc)
                continue
            self._unreadable.discard(name)
            expected = self.backend.expected.get(name)
            if expected is None:
                self.backend.expected[name] = live
            elif live != expected:
                self.tuner.release(name, live, "admin",
                                   f"{name} changed from {expected} to {live} outside ptmt (an administrator?): "
                                   "leaving it to them, no longer tuning it")
