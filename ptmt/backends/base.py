"""The backend interface: paired get/set of each knob, validated all-or-nothing apply, probing.

A backend serves one catalog on one host. Subclasses only say how to read and write a single knob
(``read_raw``/``write_raw``) and where it lives (``target``); validation, journaling, write order,
read-back and rollback are shared here so every backend keeps the same safety promises.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ptmt.catalog import Catalog, Knob, Value
from ptmt.errors import KernelRejected, KnobError, KnobMissing, PtmtError, ValidationError
from ptmt.host import Host, memory_tier_count
from ptmt.journal import Entry, Journal

log = logging.getLogger(__name__)


@dataclass
class KnobState:
    """What probing found for one knob."""

    knob: Knob
    present: bool
    writable: bool = False
    current: Value | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        k = self.knob
        return {
            "name": k.name, "path": k.path, "field": k.field, "type": k.type, "default": k.default,
            "current": self.current, "candidates": list(k.candidates), "min": k.min, "max": k.max,
            "values": list(k.values) or None, "bits": list(k.bits) or None, "unit": k.unit,
            "category": k.category, "requires": k.requires.describe(), "description": k.description,
            "present": self.present, "writable": self.writable, "problem": self.problem,
        }


@dataclass
class Change:
    knob: Knob
    before: Value | None
    after: Value


@dataclass
class Plan:
    """A validated configuration change: only knobs whose value differs, in write order."""

    backend: str
    changes: list[Change] = field(default_factory=list)

    def describe(self) -> list[str]:
        return [f"{c.knob.name}: {c.before} -> {c.after}" for c in self.changes]


class Backend(ABC):
    """One tiering solution's knobs on one host."""

    def __init__(self, catalog: Catalog, host: Host, options: Mapping[str, Any] | None = None) -> None:
        self.catalog = catalog
        self.host = host
        self.options = dict(options or {})

    @property
    def name(self) -> str:
        return self.catalog.name

    # -- the paired get/set each backend provides ------------------------------------------------
    @abstractmethod
    def read_raw(self, knob: Knob) -> str:
        """The knob's current value as text; raises KnobError subclasses."""

    @abstractmethod
    def write_raw(self, knob: Knob, text: str) -> None:
        """Write one value; raises KnobError subclasses (KernelRejected for refused values)."""

    @abstractmethod
    def target(self, knob: Knob) -> str:
        """Where the knob lives, as recorded in the journal."""

    def unavailable_reason(self, knob: Knob) -> str | None:
        """Why a knob cannot exist on this host at all (before touching it), or None."""
        if knob.requires.platform and knob.requires.platform != self.host.platform:
            note = f" ({knob.requires.note})" if knob.requires.note else ""
            return f"exists only on the {knob.requires.platform} platform{note}"
        return None

    # -- reading ----------------------------------------------------------------------------------
    def read(self, knob: Knob) -> Value:
        return knob.parse(self.read_raw(knob))

    def probe_knob(self, knob: Knob) -> KnobState:
        if reason := self.unavailable_reason(knob):
            return KnobState(knob, present=False, problem=reason)
        try:
            current = self.read(knob)
        except KnobError as e:
            needs = knob.requires.describe()
            hint = f" (needs {needs})" if needs != "none" and type(e) is KnobMissing else ""
            return KnobState(knob, present=False, problem=f"{e}{hint}")
        except ValidationError as e:  # e.g. a daemon knob without its target process
            return KnobState(knob, present=False, problem=str(e))
        except ValueError as e:
            return KnobState(knob, present=True, problem=str(e))
        return KnobState(knob, present=True, writable=self.writable(knob), current=current)

    def writable(self, knob: Knob) -> bool:
        if knob.path is None:
            return True
        return os.access(self.host.fs.host_path(knob.path), os.W_OK)

    def probe(self) -> list[KnobState]:
        """Activation settings first, then tunables."""
        return [self.probe_knob(k) for k in self.catalog.all_knobs.values()]

    def usability(self, states: list[KnobState] | None = None) -> tuple[bool, list[str]]:
        """Usable when every activation setting can be written, at least one tunable is present and
        writable, a patch-set catalog finds all of its knobs, and the machine has the tiers it needs."""
        states = states if states is not None else self.probe()
        reasons = []
        for s in states:
            if s.knob.name in self.catalog.activation and not (s.present and s.writable):
                reasons.append(f"activation setting {s.knob.name}: {s.problem or 'not writable: needs root'}")
        tunables = [s for s in states if s.knob.name in self.catalog.knobs]
        if tunables and not any(s.present and s.writable for s in tunables):
            reasons.append("no tunable knob is present and writable")
        if patch := self.catalog.requires.patch:
            missing = [s.knob.name for s in tunables if not s.present]
            if missing:
                reasons.append(f"needs a kernel with the out-of-tree {patch} patch ({', '.join(missing)} missing)")
        if (need := self.catalog.requires.tiers) and self.host.platform == "linux":
            have = memory_tier_count(self.host.fs)
            if have < need:
                reasons.append(f"needs {need} memory tiers, this machine has {have} "
                               f"(no CPU-less slow node in a lower tier; try --platform sim)")
        return (not reasons, reasons)

    def notes(self) -> list[str]:
        """Caveats that probing cannot settle without writing (e.g. a patched activation value)."""
        return [f"activation {k.name}={k.format(k.activation_value)} needs the {k.requires.patch} patch; "
                "a stock kernel rejects it (PTMT then rolls back)"
                for k in self.catalog.activation.values()
                if k.requires.patch and k.requires.patch != self.catalog.requires.patch]

    def read_config(self) -> dict[str, Value]:
        """Current values of the tunables that are present."""
        return {s.knob.name: s.current for s in map(self.probe_knob, self.catalog.knobs.values())
                if s.present and s.current is not None}

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, settings: Mapping[str, Value | str], activate: bool = False) -> Plan:
        """Validate a whole configuration. Raises ValidationError listing every problem; reads only."""
        problems: list[str] = []
        wanted: dict[str, Value] = {}
        if activate:
            wanted.update({n: k.activation_value for n, k in self.catalog.activation.items()})  # type: ignore[misc]
        for name, raw in settings.items():
            try:
                knob = self.catalog.knob(name)
                wanted[name] = knob.coerce(raw)
            except ValidationError as e:
                problems.append(str(e))
        states = {n: self.probe_knob(self.catalog.knob(n)) for n in wanted if n in self.catalog.all_knobs}
        for name, state in states.items():
            if not state.present:
                problems.append(f"{name}: {state.problem}")
        for rule in self.catalog.rules:
            if rule.left in wanted or rule.right in wanted:
                values = {n: wanted[n] if n in wanted else self._current_or_default(self.catalog.knobs[n])
                          for n in (rule.left, rule.right)}
                if not rule.holds(values):
                    problems.append(f"rule '{rule}' violated ({rule.left}={values[rule.left]}, "
                                    f"{rule.right}={values[rule.right]})")
        if problems:
            raise ValidationError(f"invalid configuration for {self.name}, nothing written:\n  " + "\n  ".join(problems))
        plan = Plan(self.name)
        for name, knob in self.catalog.all_knobs.items():  # catalog order is write order
            if name in wanted and states[name].current != wanted[name]:
                plan.changes.append(Change(knob, states[name].current, wanted[name]))
        return plan

    def _current_or_default(self, knob: Knob) -> Value:
        state = self.probe_knob(knob)
        return state.current if state.current is not None else knob.default

    # -- applying ---------------------------------------------------------------------------------
    def entry_for(self, knob: Knob, original: str) -> Entry:
        return Entry(backend=self.name, knob=knob.name, platform=self.host.platform,
                     root=str(self.host.fs.root), target=self.target(knob), original=original,
                     options=self.journal_options(), catalog=str(self.catalog.source))

    def journal_options(self) -> dict[str, Any]:
        return {}

    def apply(self, plan: Plan, journal: Journal) -> None:
        """Journal originals (durably), then write in order, reading each back; on any failure put
        back what was written and raise. The journal keeps the originals until ``restore``."""
        if not plan.changes:
            return
        with journal.locked():
            originals = {c.knob.name: c.knob.format(self.read(c.knob)) for c in plan.changes}
            added = journal.record([self.entry_for(c.knob, originals[c.knob.name]) for c in plan.changes])
            done: list[Change] = []  # written and verified
            for change in plan.changes:
                text = change.knob.format(change.after)
                wrote = False
                try:
                    self.write_raw(change.knob, text)
                    wrote = True
                    back = self.read(change.knob)
                    if back != change.after:
                        raise KernelRejected(self.target(change.knob),
                                             f"kernel kept {back!r} after PTMT wrote {text!r}")
                except PtmtError as failure:
                    # A knob the kernel took but read back differently is put back too.
                    stuck = self._rollback([*done, change] if wrote else done, originals)
                    if not stuck:
                        journal.remove({e.key for e in added})
                    note = f"rolled back {len(done)} knob(s) written before it"
                    if stuck:
                        note += f"; could NOT roll back {', '.join(stuck)} (originals kept in {journal.path})"
                    if isinstance(failure, KnobError):
                        raise failure.amended(note) from failure
                    raise PtmtError(f"{failure}; {note}") from failure
                log.info("%s: %s %s -> %s", self.name, change.knob.name, change.before, change.after)
                journal.mark_written(self.entry_for(change.knob, "").key, text)
                done.append(change)

    def _rollback(self, changes: list[Change], originals: Mapping[str, str]) -> list[str]:
        """Write originals back in reverse order; returns the knobs that could not be restored."""
        stuck = []
        for change in reversed(changes):
            try:
                self.write_raw(change.knob, originals[change.knob.name])
            except PtmtError as e:
                log.error("rollback of %s failed: %s", change.knob.name, e)
                stuck.append(change.knob.name)
        return stuck

    def restore_entry(self, entry: Entry) -> None:
        """Write a journaled original back."""
        self.write_raw(self.catalog.knob(entry.knob), entry.original)
