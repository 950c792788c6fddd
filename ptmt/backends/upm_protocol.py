"""The UPM daemon's control protocol, shared by the client backend and any server (simulated or test).

UPM (user-space page migration) is driven like its command-line client:
``client enable|update|disable -p PID -h THR -m INTERVAL -d PERIOD`` sent to TCP port 10086
(DESIGN §3). On the wire one request is that argument list on one line::

    enable -p 4242 -h 2 -m 1 -d 1000
    update -p 4242 -h 4
    disable -p 4242
    status -p 4242

and the reply is one line, ``OK`` optionally followed by ``key=value`` pairs (``status`` answers
``OK enabled=1 h=2 m=1 d=1000``), or ``ERR <reason>``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

DEFAULT_PORT = 10086
VERBS = ("enable", "update", "disable", "status")
#: protocol flag -> catalog field name
FLAGS = {"-h": "hot_page_threshold", "-m": "page_migration_interval", "-d": "read_sample_period"}
FIELD_FLAGS = {v: k for k, v in FLAGS.items()}


class ProtocolError(ValueError):
    """A malformed request or reply."""


@dataclass
class Request:
    verb: str
    pid: int
    params: dict[str, int] = field(default_factory=dict)  # catalog field name -> value

    def encode(self) -> str:
        parts = [self.verb, "-p", str(self.pid)]
        for name, value in self.params.items():
            parts += [FIELD_FLAGS[name], str(int(value))]
        return " ".join(parts) + "\n"

    @classmethod
    def decode(cls, line: str) -> Request:
        words = line.split()
        if not words or words[0] not in VERBS:
            raise ProtocolError(f"unknown verb in {line.strip()!r}; expected one of {', '.join(VERBS)}")
        verb, rest = words[0], words[1:]
        if len(rest) % 2:
            raise ProtocolError(f"flag without a value in {line.strip()!r}")
        pid: int | None = None
        params: dict[str, int] = {}
        for flag, raw in zip(rest[::2], rest[1::2]):
            try:
                value = int(raw)
            except ValueError:
                raise ProtocolError(f"{flag} needs an integer, got {raw!r}") from None
            if flag == "-p":
                pid = value
            elif flag in FLAGS:
                params[FLAGS[flag]] = value
            else:
                raise ProtocolError(f"unknown flag {flag}")
        if pid is None:
            raise ProtocolError("missing -p PID")
        return cls(verb, pid, params)


@dataclass
class Reply:
    ok: bool
    values: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def encode(self) -> str:
        if not self.ok:
            return f"ERR {self.error}\n"
        return " ".join(["OK", *(f"{k}={v}" for k, v in self.values.items())]) + "\n"

    @classmethod
    def decode(cls, line: str) -> Reply:
        line = line.strip()
        if line.startswith("ERR"):
            return cls(False, error=line[3:].strip() or "unspecified error")
        if not line.startswith("OK"):
            raise ProtocolError(f"unexpected reply {line!r}")
        values = dict(w.split("=", 1) for w in line[2:].split() if "=" in w)
        return cls(True, values)


class TcpTransport:
    """One TCP connection per request, as the UPM command-line client does."""

    def __init__(self, address: str = "127.0.0.1", port: int = DEFAULT_PORT, timeout: float = 5.0) -> None:
        self.address, self.port, self.timeout = address, port, timeout

    def request(self, line: str) -> str:
        with socket.create_connection((self.address, self.port), timeout=self.timeout) as sock:
            sock.sendall(line.encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").splitlines()[0] if chunks else ""
