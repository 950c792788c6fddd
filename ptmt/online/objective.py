"""Objective sources for ``ptmt tune``: what "better" means, measured once per interval.

The tuner maximises one number per interval. It comes from one of these sources (docs/objectives.md):

- ``sim``: the simulated machine's ops/s (wraps :class:`ptmt.online.simrun.HostObjective`);
- ``cmd:COMMAND``, ``file:PATH``, ``http(s)://URL``: the application's own metric, with optional
  ``regex`` or ``json_path`` extraction, ``rate`` (counter -> per second) and ``direction`` (``min``
  is tuned as 1/x through :class:`Maximised`);
- ``ipc``: system-wide instructions per cycle from the sample's perf counters;
- ``proxy``: fast-tier locality of NUMA hint faults minus the CPU time spent migrating pages.

A source never crashes the tuner while measuring: a failed reading logs one warning per distinct
message and returns None (the tuner skips that interval). ``check(host)`` is where a source that
cannot work at all fails, with a message naming what is wrong, before tuning starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ptmt.errors import PtmtError
from ptmt.sysinfo import NODE_DIR, parse_list, perf_hardware_events
from ptmt.telemetry import Sample, SystemPerf, read_vmstat

log = logging.getLogger("ptmt.tune")

#: What a source spec may be (error messages list it).
ALLOWED_SPECS = "sim, ipc, proxy, cmd:COMMAND, file:PATH, http://URL, https://URL"
#: Mapping keys of an ``objective:`` config section.
MAPPING_KEYS = ("source", "regex", "json_path", "rate", "direction", "unit", "timeout_s")
#: Options only the application-metric sources take (and timeout_s only cmd: and http).
METRIC_OPTIONS = ("regex", "json_path", "rate", "direction", "unit")
DEFAULT_TIMEOUT_S = 5.0
#: At most this much of a file or an HTTP body is read (a metric is a short text).
MAX_BYTES = 1 << 20
#: CPU time to migrate one 4 KiB page (batched move_pages runs at about 1 GB/s, 3.9 us a page).
PAGE_MIGRATION_S = 4e-6

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_MAX_DISTINCT_WARNINGS = 50


class ObjectiveError(PtmtError):
    """An objective source cannot work (bad spec, command missing, perf unavailable, ...)."""


class ObjectiveSource(Protocol):
    """What ``ptmt tune`` needs of an objective (a superset of ``ptmt.online.tuner.Objective``)."""

    name: str
    unit: str
    direction: str

    def measure(self, host: Any, sample: Sample) -> float | None: ...

    def check(self, host: Any) -> None: ...

    def describe(self) -> str: ...

    def spec(self) -> str:
        """The spec string that names this source (``cmd:...``, ``ipc``), for logs and records."""
        ...


class _Failed(Exception):
    """One reading failed; the message is what the user sees (once)."""


class _WarnOnce:
    """One warning per distinct message, so a broken metric does not flood the log every interval."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.seen: set[str] = set()

    def __call__(self, message: str) -> None:
        if message in self.seen:
            return
        self.seen.add(message)
        if len(self.seen) > _MAX_DISTINCT_WARNINGS:
            if len(self.seen) == _MAX_DISTINCT_WARNINGS + 1:
                log.warning("objective %s: more distinct errors follow, no longer logged", self.who)
            return
        log.warning("objective %s: %s (interval skipped)", self.who, message)


def _direction_text(direction: str) -> str:
    return "higher is better" if direction == "max" else "lower is better"


# -- extraction -------------------------------------------------------------------------------------

def _regex_problem(regex: str) -> str | None:
    try:
        re.compile(regex)
    except re.error as exc:
        return f"not a valid regular expression ({exc})"
    return None


def _json_path_problem(path: str) -> str | None:
    if not path or any(not part for part in path.split(".")):
        return f"must be a dotted path like 'metrics.ops' or 'items.0.value' (got {path!r})"
    return None


def _to_float(text: str, what: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise _Failed(f"{what} {text.strip()[:80]!r} is not a number") from None
    if not math.isfinite(value):
        raise _Failed(f"{what} {text.strip()!r} is not a finite number")
    return value


class Extractor:
    """Text -> number: the first number, the regex's first group (or whole match), or a JSON path.

    ``json_path`` is dotted (``metrics.ops``); a part that indexes a list is an integer (``a.0.b``,
    ``a.-1``). Keys that contain dots cannot be addressed.
    """

    def __init__(self, regex: str | None = None, json_path: str | None = None) -> None:
        if regex is not None and json_path is not None:
            raise ObjectiveError("set regex or json_path, not both")
        if regex is not None and (problem := _regex_problem(regex)):
            raise ObjectiveError(f"regex {regex!r}: {problem}")
        if json_path is not None and (problem := _json_path_problem(json_path)):
            raise ObjectiveError(f"json_path: {problem}")
        # MULTILINE: metric output is line-oriented, so ^ and $ anchor lines (``^ops (\d+)$``)
        self.regex = re.compile(regex, re.MULTILINE) if regex is not None else None
        self.json_path = json_path

    def __call__(self, text: str) -> float:
        if self.json_path is not None:
            return self._json(text)
        if self.regex is not None:
            m = self.regex.search(text)
            if m is None:
                raise _Failed(f"no match for regex {self.regex.pattern!r} in {_excerpt(text)}")
            got = m.group(1) if self.regex.groups else m.group(0)
            if got is None:
                raise _Failed(f"regex {self.regex.pattern!r} matched but its group 1 did not")
            return _to_float(got, "regex match")
        m = _NUMBER.search(text)
        if m is None:
            raise _Failed(f"no number in {_excerpt(text)}")
        return _to_float(m.group(0), "output")

    def _json(self, text: str) -> float:
        assert self.json_path is not None
        try:
            node: Any = json.loads(text)
        except ValueError as exc:
            raise _Failed(f"not JSON ({exc})") from None
        walked: list[str] = []
        for part in self.json_path.split("."):
            here = ".".join(walked) or "the top level"
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except ValueError:
                    raise _Failed(f"{here} is a list: {part!r} is not an index") from None
                except IndexError:
                    raise _Failed(f"{here} has {len(node)} items, no index {part}") from None
            elif isinstance(node, dict):
                if part not in node:
                    raise _Failed(f"no key {part!r} at {here}")
                node = node[part]
            else:
                raise _Failed(f"{here} is {_kind(node)}, cannot look up {part!r}")
            walked.append(part)
        if isinstance(node, bool) or not isinstance(node, (int, float, str)):
            raise _Failed(f"{self.json_path} is {_kind(node)}, not a number")
        return _to_float(str(node), f"{self.json_path}")

    def describe(self) -> str:
        if self.json_path is not None:
            return f"json path {self.json_path}"
        if self.regex is not None:
            return f"regex {self.regex.pattern!r}"
        return "first number"


def _kind(node: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(node), "a number")


def _excerpt(text: str) -> str:
    text = text.strip()
    return repr(text[:60] + ("..." if len(text) > 60 else "")) if text else "empty output"


class RateCounter:
    """A monotonically increasing counter -> increase per second between two readings.

    The first reading only primes; a counter that goes down (the application restarted) primes
    again. Both return None: there is no honest rate for that interval.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: tuple[float, float] | None = None

    def update(self, value: float) -> float | None:
        now = self.clock()
        last, self.last = self.last, (now, value)
        if last is None:
            return None
        t0, v0 = last
        if value < v0:
            raise _Failed("counter went down (reset?); starting its rate again")
        if now <= t0:
            self.last = last  # no time has passed: keep the older reading
            return None
        return (value - v0) / (now - t0)


# -- application metrics -------------------------------------------------------------------------------

class MetricObjective:
    """Shared part of cmd:, file: and http(s):// sources: read text, extract, rate, warn once."""

    name = "metric"
    direction = "max"

    def __init__(self, *, regex: str | None = None, json_path: str | None = None, rate: bool = False,
                 unit: str | None = None, direction: str = "max",
                 clock: Callable[[], float] | None = None) -> None:
        if direction not in ("max", "min"):
            raise ObjectiveError(f"direction must be 'max' or 'min' (got {direction!r})")
        self.extract = Extractor(regex, json_path)
        self.rate = RateCounter(clock or time.monotonic) if rate else None
        self.unit = unit or ("value/s" if rate else "value")
        self.direction = direction
        self.warn = _WarnOnce(self.spec())

    def spec(self) -> str:
        raise NotImplementedError

    def read(self) -> str:
        """The raw text of one reading; raises _Failed."""
        raise NotImplementedError

    def _value(self) -> float:
        return self.extract(self.read())

    def measure(self, host: Any, sample: Sample) -> float | None:
        try:
            value = self._value()
            return self.rate.update(value) if self.rate is not None else value
        except _Failed as exc:
            self.warn(str(exc))
        except Exception as exc:  # noqa: BLE001 - a metric never crashes the tuner
            self.warn(f"{type(exc).__name__}: {exc}")
        return None

    def check(self, host: Any) -> None:
        """One trial reading (not fed to the rate): a misconfigured metric fails before tuning."""
        try:
            self._value()
        except _Failed as exc:
            raise ObjectiveError(f"objective {self.spec()}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - reported as the user's error, with its kind
            raise ObjectiveError(f"objective {self.spec()}: {type(exc).__name__}: {exc}") from None

    def describe(self) -> str:
        how = [self.extract.describe()] + (["as a rate"] if self.rate is not None else [])
        return f"{self.spec()} ({', '.join(how)}; {self.unit}, {_direction_text(self.direction)})"


class CommandObjective(MetricObjective):
    """A command's stdout, run without a shell (shlex-split), killed after ``timeout_s``."""

    name = "cmd"

    def __init__(self, command: str | Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 **options: Any) -> None:
        if isinstance(command, str):
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise ObjectiveError(f"objective cmd:{command}: cannot split the command ({exc})") from None
        else:
            argv = list(command)
        if not argv:
            raise ObjectiveError("objective cmd: needs a command after 'cmd:'")
        if not timeout_s > 0:
            raise ObjectiveError(f"timeout_s must be a positive number of seconds (got {timeout_s!r})")
        self.argv, self.timeout_s = argv, float(timeout_s)
        super().__init__(**options)

    def spec(self) -> str:
        return "cmd:" + shlex.join(self.argv)

    def read(self) -> str:
        try:
            done = subprocess.run(self.argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise _Failed(f"did not finish within {self.timeout_s:g} s (killed)") from None
        except OSError as exc:
            raise _Failed(f"cannot run {self.argv[0]!r}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            how = f"killed by signal {-done.returncode}" if done.returncode < 0 else \
                f"exited with status {done.returncode}"
            lines = done.stderr.strip().splitlines()
            raise _Failed(how + (f": {lines[-1][:200]}" if lines else ""))
        return done.stdout

    def check(self, host: Any) -> None:
        exe = self.argv[0]
        if os.sep in exe:
            if not os.access(exe, os.X_OK) or not os.path.isfile(exe):
                raise ObjectiveError(f"objective {self.spec()}: {exe} is not an executable file")
        elif shutil.which(exe) is None:
            raise ObjectiveError(f"objective {self.spec()}: command {exe!r} not found on PATH")
        super().check(host)


class FileObjective(MetricObjective):
    """A file the application rewrites (or a kernel/cgroup file), read whole each interval."""

    name = "file"

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        if not str(path):
            raise ObjectiveError("objective file: needs a path after 'file:'")
        self.path = Path(path).expanduser()
        super().__init__(**options)

    def spec(self) -> str:
        return f"file:{self.path}"

    def read(self) -> str:
        try:
            with open(self.path, "rb") as f:
                return f.read(MAX_BYTES).decode(errors="replace")
        except OSError as exc:
            raise _Failed(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def check(self, host: Any) -> None:
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "does not exist"
            raise ObjectiveError(f"objective {self.spec()}: {self.path} {what}")
        super().check(host)


class HttpObjective(MetricObjective):
    """An HTTP(S) endpoint's body (urllib, honouring the usual proxy variables), with a timeout."""

    name = "http"

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, **options: Any) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ObjectiveError(f"objective {url!r}: not an http:// or https:// URL with a host")
        if not timeout_s > 0:
            raise ObjectiveError(f"timeout_s must be a positive number of seconds (got {timeout_s!r})")
        self.url, self.timeout_s = url, float(timeout_s)
        super().__init__(**options)

    def spec(self) -> str:
        return self.url

    def read(self) -> str:
        req = urllib.request.Request(self.url, headers={"User-Agent": "ptmt-tune", "Accept": "*/*"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read(MAX_BYTES)
                charset = resp.headers.get_content_charset() or "utf-8"
            try:
                return body.decode(charset, errors="replace")
            except LookupError:  # a charset Python does not know
                return body.decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Failed(f"no answer within {self.timeout_s:g} s") from None
            raise _Failed(f"cannot reach {self.url}: {exc.reason}") from None
        except TimeoutError:
            raise _Failed(f"no answer within {self.timeout_s:g} s") from None
        except OSError as exc:  # connection reset, remote closed, ...
            raise _Failed(f"HTTP request failed: {exc}") from None


class Maximised:
    """A lower-is-better source tuned as its reciprocal, so the tuner (which maximises) can use it.

    Relative gains carry over: 10% less latency reads as +11%. Zero or negative readings have no
    reciprocal and are skipped (one warning).
    """

    direction = "max"

    def __init__(self, inner: ObjectiveSource) -> None:
        self.inner = inner
        self.name = inner.name
        u = inner.unit
        self.unit = f"1/({u})" if "/" in u or " " in u else f"1/{u}"
        self.warn = _WarnOnce(inner.spec())

    def spec(self) -> str:
        return self.inner.spec()

    def measure(self, host: Any, sample: Sample) -> float | None:
        value = self.inner.measure(host, sample)
        if value is None:
            return None
        if value <= 0:
            self.warn(f"reading {value:g} is not positive, so it has no reciprocal for a lower-is-better metric")
            return None
        return 1.0 / value

    def check(self, host: Any) -> None:
        self.inner.check(host)

    def describe(self) -> str:
        return f"{self.inner.describe()}, tuned as {self.unit}"


# -- built-in sources -------------------------------------------------------------------------------

class SimObjective:
    """The simulated machine's own measurement (ops/s), as ``ptmt sim run`` reports it."""

    name = "sim"
    unit = "ops/s"
    direction = "max"

    def __init__(self) -> None:
        from ptmt.online.simrun import HostObjective  # lazy: simrun may come to import this module

        self._inner = HostObjective()

    def measure(self, host: Any, sample: Sample) -> float | None:
        return self._inner.measure(host, sample)

    def check(self, host: Any) -> None:
        if getattr(host, "platform", None) != "sim" or not callable(getattr(host, "objective", None)):
            raise ObjectiveError("objective sim: only the simulated machine (--platform sim) measures its "
                                 "own ops/s; on a real host use cmd:, file:, http(s)://, ipc or proxy")

    def spec(self) -> str:
        return self.name

    def describe(self) -> str:
        return self._inner.describe()


class IpcObjective:
    """System-wide instructions per cycle over the interval, from the sample's perf deltas."""

    name = "ipc"
    unit = "instructions/cycle"
    direction = "max"

    def __init__(self) -> None:
        self.warn = _WarnOnce("ipc")

    def measure(self, host: Any, sample: Sample) -> float | None:
        instructions, cycles = sample.perf.get("instructions"), sample.perf.get("cycles")
        if instructions is None or cycles is None:
            self.warn("this interval's sample has no perf instructions/cycles")
            return None
        if cycles <= 0:
            self.warn("no CPU cycles counted this interval")
            return None
        return float(instructions) / float(cycles)

    def check(self, host: Any) -> None:
        """The same counters Telemetry opens: the host's own (simulated) ones, else perf_event_open."""
        if callable(getattr(host, "perf_counters", None)):
            return
        if getattr(host, "platform", None) != "linux":
            raise ObjectiveError("objective ipc: this host has no perf counters")
        if str(host.fs.root) != "/":
            raise ObjectiveError("objective ipc: perf counters are not read under --root (a fake kernel tree)")
        perf = SystemPerf.open()
        if perf is not None:
            perf.close()
            return
        usable, detail = perf_hardware_events()
        if usable:
            detail = "system-wide counting needs perf_event_paranoid <= 0 or CAP_PERFMON"
        raise ObjectiveError(f"objective ipc: perf cannot count instructions and cycles here: {detail}; "
                             "use an application metric (cmd:, file:, http(s)://) or proxy")

    def spec(self) -> str:
        return self.name

    def describe(self) -> str:
        return "ipc (system-wide instructions per cycle from perf, higher is better)"


class ProxyObjective:
    """Fast-tier locality of NUMA hint faults minus the share of CPU time spent migrating pages.

    ``locality - migrated_pages * PAGE_MIGRATION_S / (interval_s * cpus)`` with locality =
    numa_hint_faults_local / numa_hint_faults and migrated pages = pgpromote_success + every
    pgdemote_* counter. See docs/objectives.md for why this is only a proxy and where it fails
    (notably: NUMA balancing in tiering-only mode samples only slow-tier pages, so it has no
    locality signal there and the proxy gives no reading).
    """

    name = "proxy"
    unit = "score"
    direction = "max"

    def __init__(self, cpus: int | None = None, page_migration_s: float = PAGE_MIGRATION_S) -> None:
        self.cpus = cpus
        self.page_migration_s = page_migration_s
        self.warn = _WarnOnce("proxy")

    def _cpus(self, host: Any) -> int:
        if self.cpus is None:
            count = 0
            try:
                for name in host.fs.listdir(NODE_DIR):
                    if re.fullmatch(r"node\d+", name):
                        count += len(parse_list(host.fs.read(f"{NODE_DIR}/{name}/cpulist")))
            except (PtmtError, ValueError):
                count = 0
            self.cpus = count or os.cpu_count() or 1
        return self.cpus

    @staticmethod
    def _mode(host: Any) -> int | None:
        try:
            return int(host.fs.read("/proc/sys/kernel/numa_balancing").strip())
        except (PtmtError, ValueError, AttributeError):
            return None

    def measure(self, host: Any, sample: Sample) -> float | None:
        c = sample.counters
        if "numa_hint_faults" not in c:
            self.warn("no numa_hint_faults counter (a kernel without NUMA balancing?)")
            return None
        mode = self._mode(host)
        if mode is not None and not mode & 1:
            self.warn(f"numa_balancing={mode} does not sample fast-tier pages (only mode 1 or 3 does), so "
                      "hint faults say nothing about locality; use ipc or an application metric")
            return None
        faults = c["numa_hint_faults"]
        if faults <= 0 or sample.interval_s <= 0:
            self.warn("no NUMA hint faults this interval")
            return None
        locality = min(1.0, max(0.0, c.get("numa_hint_faults_local", 0) / faults))
        migrated = c.get("pgpromote_success", 0) + sum(v for k, v in c.items() if k.startswith("pgdemote_"))
        cost = max(0, migrated) * self.page_migration_s / (sample.interval_s * self._cpus(host))
        return locality - cost

    def check(self, host: Any) -> None:
        try:
            vmstat = read_vmstat(host)
        except PtmtError as exc:
            raise ObjectiveError(f"objective proxy: cannot read /proc/vmstat: {exc}") from None
        missing = [k for k in ("numa_hint_faults", "numa_hint_faults_local") if k not in vmstat]
        if missing:
            raise ObjectiveError(f"objective proxy: /proc/vmstat lacks {', '.join(missing)} (a kernel without "
                                 "NUMA balancing); use ipc or an application metric")

    def spec(self) -> str:
        return self.name

    def describe(self) -> str:
        return ("proxy (NUMA hint-fault locality minus the CPU share spent migrating pages; a kernel-counter "
                "estimate, higher is better)")


# -- building sources from the CLI and from config -----------------------------------------------------

_BUILTIN: dict[str, Callable[[], ObjectiveSource]] = {"sim": SimObjective, "ipc": IpcObjective,
                                                      "proxy": ProxyObjective}


def _build(spec: str, opts: Mapping[str, Any], given: set[str],
           clock: Callable[[], float] | None) -> tuple[ObjectiveSource | None, list[tuple[str | None, str]]]:
    """The source for *spec* and *opts*, or the problems found, each with the option it is about."""
    problems: list[tuple[str | None, str]] = []
    spec = spec.strip()
    regex, json_path = opts.get("regex"), opts.get("json_path")
    rate, direction, unit, timeout_s = opts.get("rate", False), opts.get("direction", "max"), \
        opts.get("unit"), opts.get("timeout_s", DEFAULT_TIMEOUT_S)
    if regex is not None and not isinstance(regex, str):
        problems.append(("regex", f"must be a string (got {regex!r})"))
    elif regex is not None and (p := _regex_problem(regex)):
        problems.append(("regex", p))
    if json_path is not None and not isinstance(json_path, str):
        problems.append(("json_path", f"must be a string (got {json_path!r})"))
    elif json_path is not None and (p := _json_path_problem(json_path)):
        problems.append(("json_path", p))
    if regex is not None and json_path is not None:
        problems.append((None, "set regex or json_path, not both"))
    if not isinstance(rate, bool):
        problems.append(("rate", f"must be true or false (got {rate!r})"))
    if direction not in ("max", "min"):
        problems.append(("direction", f"must be 'max' or 'min' (got {direction!r})"))
    if unit is not None and (not isinstance(unit, str) or not unit.strip()):
        problems.append(("unit", f"must be a non-empty string (got {unit!r})"))
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0 \
            or not math.isfinite(timeout_s):
        problems.append(("timeout_s", f"must be a positive number of seconds (got {timeout_s!r})"))

    kind = spec.split(":", 1)[0] if ":" in spec else spec
    body = spec[len(kind) + 1:]
    if spec in _BUILTIN:
        for key in sorted(given & set(METRIC_OPTIONS + ("timeout_s",)), key=MAPPING_KEYS.index):
            if key == "direction" and direction == "max":
                continue
            problems.append((key, f"only for cmd:, file: and http(s):// sources (the source is {spec!r})"))
    elif kind == "cmd":
        try:
            if not shlex.split(body):
                problems.append(("source", "cmd: needs a command, e.g. cmd:myapp-stats --json"))
        except ValueError as exc:
            problems.append(("source", f"cannot split the command {body!r} ({exc})"))
    elif kind == "file":
        if not body.strip():
            problems.append(("source", "file: needs a path, e.g. file:/run/myapp/ops"))
        if "timeout_s" in given:
            problems.append(("timeout_s", "only for cmd: and http(s):// sources"))
    elif kind in ("http", "https"):
        if not urllib.parse.urlsplit(spec).netloc:
            problems.append(("source", f"{spec!r} has no host (e.g. http://127.0.0.1:9100/metrics)"))
    else:
        problems.append(("source", f"unknown source {spec!r} (allowed: {ALLOWED_SPECS})"))
    if problems:
        return None, problems

    if spec in _BUILTIN:
        return _BUILTIN[spec](), []
    metric = {"regex": regex, "json_path": json_path, "rate": rate, "unit": unit, "direction": direction,
              "clock": clock}
    try:
        source: MetricObjective
        if kind == "cmd":
            source = CommandObjective(spec[4:], timeout_s=timeout_s, **metric)
        elif kind == "file":
            source = FileObjective(spec[5:], **metric)
        else:
            source = HttpObjective(spec, timeout_s=timeout_s, **metric)
    except ObjectiveError as exc:
        return None, [("source", str(exc))]
    return (Maximised(source) if direction == "min" else source), []


def parse_objective(spec: str, *, regex: str | None = None, json_path: str | None = None, rate: bool = False,
                    direction: str = "max", unit: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                    clock: Callable[[], float] | None = None) -> ObjectiveSource:
    """The source a ``--objective SPEC`` (and its ``--objective-*`` options) names."""
    opts = {"regex": regex, "json_path": json_path, "rate": rate, "direction": direction, "unit": unit,
            "timeout_s": timeout_s}
    given = {k for k, v in opts.items() if v is not None and v is not False} - \
        ({"timeout_s"} if timeout_s == DEFAULT_TIMEOUT_S else set())
    source, problems = _build(spec, opts, given, clock)
    if problems:
        raise ObjectiveError("\n".join(f"objective {spec!r}: " + (f"{key}: {msg}" if key not in (None, "source")
                                       else msg) for key, msg in problems))
    assert source is not None
    return source


def objective_from_mapping(m: Any, path: str = "objective", *,
                           clock: Callable[[], float] | None = None) -> ObjectiveSource:
    """The source an ``objective:`` config section describes (a mapping, or a spec string).

    Every problem is reported at once, borgmatic style: ``At 'objective.rate': must be true or false``.
    """
    if isinstance(m, str):
        m = {"source": m}
    if not isinstance(m, Mapping):
        raise ObjectiveError(f"At '{path}': must be a mapping with a 'source' or a source string "
                             f"(got {m!r})")
    problems: list[tuple[str | None, str]] = []
    unknown = [k for k in m if k not in MAPPING_KEYS]
    for key in unknown:
        problems.append((str(key), f"unknown key (allowed: {', '.join(MAPPING_KEYS)})"))
    spec = m.get("source")
    if spec is None:
        problems.append(("source", f"required (one of: {ALLOWED_SPECS})"))
    elif not isinstance(spec, str) or not spec.strip():
        problems.append(("source", f"must be a non-empty string (got {spec!r})"))
    source = None
    if not problems:
        opts = {k: v for k, v in m.items() if k != "source"}
        source, problems = _build(spec, opts, set(opts), clock)
    if problems:
        raise ObjectiveError("\n".join(f"At '{path}" + (f".{key}" if key else "") + f"': {msg}"
                                       for key, msg in problems))
    assert source is not None
    return source


def default_objective(host: Any) -> ObjectiveSource:
    """``sim`` on the simulated machine, else ``ipc`` where perf works, else ``proxy``."""
    if getattr(host, "platform", None) == "sim":
        return SimObjective()
    ipc = IpcObjective()
    try:
        ipc.check(host)
        return ipc
    except ObjectiveError as exc:
        log.info("no IPC objective (%s); using the kernel-counter proxy", exc)
        return ProxyObjective()
