"""Typed errors. Each one carries a message a user can act on; the CLI prints it as one line."""

from __future__ import annotations


class PtmtError(Exception):
    """Base of every error PTMT reports to a user (exit status 1 on the command line)."""


class ConfigError(PtmtError):
    """A catalog, workload or configuration file is invalid; the message names file and key."""


class ValidationError(PtmtError):
    """A requested knob configuration is illegal; nothing was written."""


class KnobError(PtmtError):
    """Reading or writing one kernel knob failed."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.detail = message

    def amended(self, note: str) -> KnobError:
        """The same error with a note appended (e.g. what was rolled back)."""
        return type(self)(self.path, f"{self.detail}; {note}")


class KnobMissing(KnobError):
    """The knob file does not exist: this kernel (or its configuration) lacks the feature."""


class DebugfsNotMounted(KnobMissing):
    """The knob lives in debugfs and debugfs is not mounted."""


class NeedsRoot(KnobError):
    """The kernel refused access (EACCES/EPERM)."""


class KernelRejected(KnobError):
    """The kernel refused the written value (EINVAL, ERANGE, ...)."""


class PathNotAllowed(KnobError):
    """A path outside the kernel knob locations, or a symlink escaping them."""


class JournalError(PtmtError):
    """The rollback journal cannot be read or written."""
