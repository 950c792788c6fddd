"""UPM backend: kernel-file activation settings plus daemon-held knobs over the UPM control protocol."""

from __future__ import annotations

from typing import Any

from ptmt.backends.sysfs import SysfsBackend
from ptmt.backends.upm_protocol import DEFAULT_PORT, FIELD_FLAGS, ProtocolError, Reply, Request
from ptmt.catalog import Knob
from ptmt.errors import KernelRejected, KnobMissing, ValidationError
from ptmt.journal import Entry

ENABLED = "enabled"


class UpmBackend(SysfsBackend):
    """Knobs with a ``field`` live in the UPM daemon, per target process (``--pid``).

    ``enabled`` maps to the ``enable``/``disable`` verbs, tunables to ``update``. Current values come
    from the daemon's ``status`` reply; a daemon that does not answer ``status`` is assumed to run
    with the catalog defaults (its documented start-up values).
    """

    @property
    def address(self) -> str:
        return str(self.options.get("address") or self.catalog.daemon.get("address", "127.0.0.1"))

    @property
    def port(self) -> int:
        return int(self.options.get("port") or self.catalog.daemon.get("port", DEFAULT_PORT))

    @property
    def pid(self) -> int | None:
        pid = self.options.get("pid") or getattr(self.host, "workload_pid", None)
        return int(pid) if pid else None

    def journal_options(self) -> dict[str, Any]:
        return {"pid": self.pid, "address": self.address, "port": self.port}

    def target(self, knob: Knob) -> str:
        if knob.path:
            return knob.path
        return f"upm://{self.address}:{self.port}/{self.pid}/{knob.field}"

    def _call(self, knob: Knob, request: Request) -> Reply:
        where = self.target(knob)
        try:
            line = self.host.upm_transport(self.address, self.port).request(request.encode())
            reply = Reply.decode(line)
        except OSError as e:
            raise KnobMissing(where, f"UPM daemon not reachable at {self.address}:{self.port} ({e.strerror or e})") from e
        except ProtocolError as e:
            raise KnobMissing(where, f"UPM daemon answered badly: {e}") from e
        if not reply.ok and request.verb != "status":
            raise KernelRejected(where, f"UPM daemon refused {request.encode().strip()!r}: {reply.error}")
        return reply

    def _require_pid(self) -> int:
        if self.pid is None:
            raise ValidationError("UPM knobs belong to one process: pass --pid PID of the workload")
        return self.pid

    def read_raw(self, knob: Knob) -> str:
        if knob.path:
            return super().read_raw(knob)
        reply = self._call(knob, Request("status", self._require_pid()))
        if not reply.ok:  # daemon without status support: its start-up defaults
            return knob.format(knob.default)
        key = "enabled" if knob.field == ENABLED else FIELD_FLAGS[str(knob.field)].lstrip("-")
        return reply.values.get(key, knob.format(knob.default))

    def write_raw(self, knob: Knob, text: str) -> None:
        if knob.path:
            return super().write_raw(knob, text)
        pid = self._require_pid()
        if knob.field == ENABLED:
            verb = "enable" if knob.parse(text) else "disable"
            self._call(knob, Request(verb, pid))
        else:
            self._call(knob, Request("update", pid, {str(knob.field): int(text)}))

    def restore_entry(self, entry: Entry) -> None:
        self.write_raw(self.catalog.knob(entry.knob), entry.original)
