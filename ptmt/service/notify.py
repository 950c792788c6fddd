"""systemd's notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG and STOPPING datagrams.

systemd passes the socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace)
and, with ``WatchdogSec=``, the ping period in ``$WATCHDOG_USEC`` (for ``$WATCHDOG_PID``). Outside
systemd there is no socket and every call does nothing, so the same code runs from a terminal.
A failed send is never fatal: the tuner goes on, and systemd's watchdog notices if it matters.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("ptmt.tune")


class Notifier:
    """Sends state changes to systemd when the process runs under it (``$NOTIFY_SOCKET`` set)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_usec: int | None = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self._warned = False

    @property
    def active(self) -> bool:
        return self.address is not None

    @property
    def watchdog_period(self) -> float | None:
        """Seconds between pings: half the watchdog timeout, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def send(self, **fields: str | int) -> bool:
        """One datagram of ``KEY=value`` lines; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)  # a busy or stuck manager must never stall the tuner
                s.connect(addr)
                s.send(message)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=_one_line(status), mainpid=os.getpid())

    def status(self, status: str) -> bool:
        return self.send(status=_one_line(status))

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def stopping(self, status: str) -> bool:
        return self.send(stopping=1, status=_one_line(status))


def _one_line(text: str) -> str:
    return " ".join(text.split())
