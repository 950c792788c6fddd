"""Log lines for a terminal and for the systemd journal.

Under systemd (``$JOURNAL_STREAM`` set: stderr goes to journald) each line starts with its
syslog priority (``<4>`` warning, ``<6>`` info, sd-daemon(3)), so ``journalctl -p warning`` finds
the warnings; journald adds the time and the unit. In a terminal lines read ``ptmt tune: ...``.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def tune_log_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("ptmt tune: %(message)s"))
    return handler
