"""The knob space the online tuner moves in: one ordered ladder of values per knob.

Each tuned knob's ladder is its catalog candidates plus its default, sorted. The agent moves one
knob one rung up or down per interval, so the action space grows linearly with the number of knobs
(``1 + 2·n`` actions: stay, or knob *i* down/up) instead of with the Cartesian product of their
values the original PTMT enumerated (4–20 joint actions for 2–3 knobs). Rules of the catalog
(``scan_period_min_ms <= scan_period_max_ms``) are checked before a move is offered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ptmt.catalog import Catalog, Knob, Value
from ptmt.errors import PtmtError


@dataclass(frozen=True)
class Ladder:
    """The ordered values one knob may take, and where its default sits."""

    knob: Knob
    values: tuple[Value, ...]

    @property
    def name(self) -> str:
        return self.knob.name

    @property
    def default_index(self) -> int:
        return self.index(self.knob.default)

    def index(self, value: Value) -> int:
        """The rung of *value*, or the nearest rung for a value between rungs (a live value an
        administrator set that is not a candidate)."""
        if value in self.values:
            return self.values.index(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return self.default_index
        return min(range(len(self.values)), key=lambda i: (abs(float(self.values[i]) - value), i))  # type: ignore[arg-type]

    def position(self, value: Value) -> float:
        """0..1 along the ladder (the agent's view of the knob)."""
        return self.index(value) / (len(self.values) - 1) if len(self.values) > 1 else 0.0


def _ladder(knob: Knob) -> Ladder:
    values = list(dict.fromkeys([*knob.candidates, knob.default]))
    if knob.type == "bool":
        values = [False, True]
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        values = sorted(values)  # type: ignore[type-var]
    return Ladder(knob, tuple(values))


@dataclass(frozen=True)
class Move:
    """One action: ``knob`` one rung ``direction`` (-1 down, +1 up); ``knob`` None = stay."""

    knob: str | None = None
    direction: int = 0

    def __str__(self) -> str:
        return "stay" if self.knob is None else f"{self.knob} {'up' if self.direction > 0 else 'down'}"


class KnobSpace:
    """The tuned knobs of one backend, their ladders, and the mapping action index <-> move."""

    def __init__(self, catalog: Catalog, knobs: Iterable[str] | None = None) -> None:
        self.catalog = catalog
        names = list(knobs) if knobs is not None else list(catalog.knobs)
        unknown = [n for n in names if n not in catalog.knobs]
        if unknown:
            raise PtmtError(f"backend {catalog.name} has no tunable knob {', '.join(map(repr, unknown))} "
                            f"(tunables: {', '.join(catalog.knobs)})")
        # catalog order, whatever order they were given in: the action numbering is stable
        self.ladders = [_ladder(catalog.knobs[n]) for n in catalog.knobs if n in names]
        self.ladders = [ladder for ladder in self.ladders if len(ladder.values) > 1]
        if not self.ladders:
            raise PtmtError(f"backend {catalog.name}: no knob left to tune")
        self._by_name = {ladder.name: ladder for ladder in self.ladders}
        #: knobs the tuner no longer moves (released to an administrator), with the value they hold
        self.pinned: dict[str, Value] = {}
        #: (knob, value) pairs the kernel refused: never offered again
        self.forbidden: set[tuple[str, str]] = set()

    def pin(self, name: str, value: Value) -> None:
        """Hold *name* at *value*: no move or configuration that changes it is legal any more."""
        self.pinned[name] = value

    def forbid(self, name: str, value: Value) -> None:
        """Never offer *name* = *value* again (the kernel refused it)."""
        self.forbidden.add((name, str(value)))

    @property
    def names(self) -> list[str]:
        return [ladder.name for ladder in self.ladders]

    @property
    def n_actions(self) -> int:
        return 1 + 2 * len(self.ladders)

    def ladder(self, name: str) -> Ladder:
        return self._by_name[name]

    def move(self, action: int) -> Move:
        if not 0 <= int(action) < self.n_actions:
            raise PtmtError(f"action {action} outside 0..{self.n_actions - 1}")
        if action == 0:
            return Move()
        i, up = divmod(int(action) - 1, 2)
        return Move(self.ladders[i].name, 1 if up else -1)

    def action(self, move: Move) -> int:
        if move.knob is None:
            return 0
        return 1 + 2 * self.names.index(move.knob) + (1 if move.direction > 0 else 0)

    def defaults(self) -> dict[str, Value]:
        return {ladder.name: ladder.knob.default for ladder in self.ladders}

    def snap(self, config: Mapping[str, Value]) -> dict[str, Value]:
        """*config* restricted to the tuned knobs, each on its ladder (defaults fill gaps)."""
        out = {}
        for ladder in self.ladders:
            v = config.get(ladder.name, ladder.knob.default)
            out[ladder.name] = ladder.values[ladder.index(v)]
        return out

    def positions(self, config: Mapping[str, Value]) -> list[float]:
        return [ladder.position(config.get(ladder.name, ladder.knob.default)) for ladder in self.ladders]

    def apply_move(self, config: Mapping[str, Value], move: Move) -> dict[str, Value] | None:
        """The configuration after *move*, or None when it leaves the ladder or breaks a rule."""
        new = dict(config)
        if move.knob is None:
            return new
        if move.knob in self.pinned:
            return None
        ladder = self._by_name[move.knob]
        i = ladder.index(config.get(move.knob, ladder.knob.default)) + move.direction
        if not 0 <= i < len(ladder.values):
            return None
        new[move.knob] = ladder.values[i]
        return new if self.legal(new) else None

    def legal(self, config: Mapping[str, Value]) -> bool:
        if any(n in config and config[n] != v for n, v in self.pinned.items()):
            return False
        if any((n, str(v)) in self.forbidden for n, v in config.items()):
            return False
        for rule in self.catalog.rules:
            if rule.left in config or rule.right in config:
                values = {n: config.get(n, self.catalog.knobs[n].default) for n in (rule.left, rule.right)}
                if not rule.holds(values):
                    return False
        return True

    def legal_moves(self, config: Mapping[str, Value]) -> list[bool]:
        """Per action index: does it change the configuration legally? (stay is always legal)."""
        return [True] + [self.apply_move(config, self.move(a)) is not None for a in range(1, self.n_actions)]

    def schema(self) -> dict[str, Any]:
        """What a trained agent depends on: knob names and their ladders."""
        return {"knobs": [{"name": ladder.name, "values": list(ladder.values)} for ladder in self.ladders]}

    def schema_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.schema(), sort_keys=True).encode()).hexdigest()[:16]


def describe(config: Mapping[str, Value], names: Sequence[str] | None = None) -> str:
    keys = names if names is not None else sorted(config)
    return ", ".join(f"{k}={config[k]}" for k in keys if k in config)
