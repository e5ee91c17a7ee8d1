"""Uplink capacity traces: readers for public measurement formats and a synthetic generator.

Every trace, read or generated, becomes one :class:`Trace`: a step function of capacity over
time, ``rate_bps[i]`` on the interval ``(edges_s[i], edges_s[i+1]]``. The simulator never sees a
file format; it asks :meth:`Trace.resample` for the mean capacity of each slot. Keeping the
exact step function (rather than resampling at read time) means a trace is read once and can
then be cut into any slot length without losing or inventing volume.

Formats (``traces/README.md`` has the long version, with sources):

``mahimahi``
    One integer a line, a timestamp in ms; each line is one 1500-byte delivery opportunity.
    Kept at 1 ms resolution: the opportunities at ``t`` ms fill the millisecond ``[t, t+1)``,
    so a slot ``[a, a+d)`` gets exactly the lines whose timestamp lies in it (the rule in
    Mahimahi's ``traces/README``). The duration is the last timestamp ``T``; mm-link loops
    the trace with period ``T``, so a timestamp equal to ``T`` is the same instant as 0 of
    the next lap and its opportunities count at 0 ms. Mean = lines * 12000 bit / T.
``two-column``
    ``time_s  Mbit/s`` per line, tab or space separated (Pensieve "cooked", Norway HSDPA, FCC,
    Lumos5G). Sample ``i`` holds over ``(t[i-1], t[i]]`` (Pensieve's convention). The first
    sample covers one median step before it, clipped at 0: a first time of 0 covers nothing
    and is not used (as in Pensieve), a first time of 1.0 with 1 s steps covers ``(0, 1]``
    (Lumos5G 5G), and a trace cut from the middle of a longer one (first time 300 s) starts
    one step before its first sample, shifted to 0. Repeated times are merged into their mean.
``gnettrack``
    G-NetTrack Pro CSV (UCC Cork 5G dataset): header row, ``Timestamp`` as
    ``yyyy.mm.dd_HH.MM.SS``, bitrates in kbit/s, ``-`` for missing. Rows whose chosen column is
    ``-`` (or empty) are skipped, rows in the same second are merged into their mean, and each
    second holds over the interval since the previous one (a skipped second takes the next
    row's value); the first row covers the second before it.
``nuwins``
    NUWiNS 5G mmWave uplink ``.list`` files: ``#####`` / ``Run <k>`` blocks. A run with one data
    line is a throughput series in Mbit/s, samples 100 ms apart (inferred, not documented); a
    run with more lines has a time axis in s on line 1 and the throughput on line 2 (timed
    like ``two-column``); later lines are not documented and are ignored. Runs are
    concatenated in run-number order; ``path#run=K`` reads run ``K`` alone.

Errors in a file raise :class:`controller.config.ConfigError` naming the file, the line (or the
column) and what is wrong, in one line.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from controller.config import ConfigError, read_bytes
from controller.seeding import make_rng

TRACE_FORMATS = ("auto", "mahimahi", "two-column", "gnettrack", "nuwins")
"""Names accepted by :func:`read_trace`'s ``format``; ``auto`` sniffs the content."""

SYNTHETIC_KINDS = ("markov-lte", "5g-mmwave", "wifi")
"""Built-in generated traces (see :func:`synthetic_uplink`)."""

SYNTHETIC_SLOT_S = 0.1
"""Granularity of generated traces: capacity is constant over each 100 ms."""

MAHIMAHI_PACKET_BITS = 1500 * 8
"""Bits per Mahimahi delivery opportunity (one MTU-sized packet)."""

NUWINS_SAMPLE_S = 0.1
"""Spacing assumed for NUWiNS series without a time axis (the files that have one step 0.1 s)."""

DEFAULT_SYNTHETIC_DURATION_S = 600.0
DEFAULT_SYNTHETIC_MEAN_BPS = 20e6

TRACES_ENV = "CUTEDGE_TRACES"
"""Environment variable naming the folder of shared public traces (tests, benchmarks)."""

_TRACE_FORMATS_OUT = (*TRACE_FORMATS[1:], "synthetic")
_RULE_RE = re.compile(r"#{3,}")
_RUN_RE = re.compile(r"Run\s+(\d+)", re.IGNORECASE)
_INT_RE = re.compile(r"\d+")
_GNT_TIME_RE = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})_(\d{2})\.(\d{2})\.(\d{2})")
_MISSING = ("-", "")
_RUN_SUFFIX = "#run="


# -- the trace -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Trace:
    """Capacity over time as a step function: ``rate_bps[i]`` on ``(edges_s[i], edges_s[i+1]]``.

    ``edges_s`` starts at 0 and is strictly ascending; ``rate_bps`` is finite and >= 0. Both
    arrays are copied and made read-only, so a trace can be shared between runs safely.
    ``notes`` records what a reader did that changes the data as read (merged duplicates,
    skipped rows, an inferred time base), so a user can judge the trace without the source.
    Equality is identity: two traces are never compared element-wise by accident.
    """

    name: str
    path: str | None
    format: str
    edges_s: np.ndarray
    rate_bps: np.ndarray
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        edges = np.array(self.edges_s, dtype=np.float64)
        rate = np.array(self.rate_bps, dtype=np.float64)
        if edges.ndim != 1 or rate.ndim != 1 or rate.size == 0 or edges.size != rate.size + 1:
            raise ValueError(
                f"trace {self.name!r}: need edges_s of shape (n+1,) and rate_bps of shape (n,), "
                f"n >= 1; got {edges.shape} and {rate.shape}"
            )
        if edges[0] != 0.0:
            raise ValueError(f"trace {self.name!r}: edges_s[0] must be 0.0, got {edges[0]!r}")
        if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0.0):
            raise ValueError(f"trace {self.name!r}: edges_s must be finite and strictly ascending")
        if not np.all(np.isfinite(rate)) or np.any(rate < 0.0):
            raise ValueError(f"trace {self.name!r}: rate_bps must be finite and >= 0")
        if self.format not in _TRACE_FORMATS_OUT:
            raise ValueError(
                f"trace {self.name!r}: format must be one of {', '.join(_TRACE_FORMATS_OUT)}, "
                f"got {self.format!r}"
            )
        edges.flags.writeable = False
        rate.flags.writeable = False
        object.__setattr__(self, "edges_s", edges)
        object.__setattr__(self, "rate_bps", rate)
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    @property
    def duration_s(self) -> float:
        """Length of one lap of the trace (it repeats after that)."""
        return float(self.edges_s[-1])

    @property
    def volume_bits(self) -> float:
        """Bits the link can carry over one lap: the integral of the step function."""
        return float(self._cum_bits[-1])

    @property
    def mean_bps(self) -> float:
        """Time-weighted mean capacity over one lap, as read."""
        return self.volume_bits / self.duration_s

    @cached_property
    def _cum_bits(self) -> np.ndarray:
        # Cumulative volume at each edge; the integral up to any time is a linear interpolation
        # of this (the step function's integral is piecewise linear), which makes resampling
        # exact and loop-free.
        cum = np.empty(self.edges_s.size)
        cum[0] = 0.0
        np.cumsum(self.rate_bps * np.diff(self.edges_s), out=cum[1:])
        return cum

    def scaled(self, factor: float) -> Trace:
        """The same trace with capacity multiplied by ``factor`` (> 0).

        Used to let a downlink trace stand in for an uplink, or to sweep link quality with the
        shape of a real trace.
        """
        try:
            value = float(factor)
        except (TypeError, ValueError):
            raise ConfigError(
                self.path or self.name, "scale", f"expected a number, got {factor!r}"
            ) from None
        if not math.isfinite(value) or value <= 0.0:
            raise ConfigError(
                self.path or self.name, "scale", f"must be a finite number > 0, got {factor!r}"
            )
        if value == 1.0:
            return self
        return Trace(
            name=self.name,
            path=self.path,
            format=self.format,
            edges_s=self.edges_s,
            rate_bps=self.rate_bps * value,
            notes=(*self.notes, f"capacity scaled by {value:g}"),
        )

    def resample(self, slot_s: float, n_slots: int) -> tuple[np.ndarray, bool]:
        """Mean capacity in bit/s over each slot ``[k*slot_s, (k+1)*slot_s)``, k < ``n_slots``.

        Exact: each value is the integral of the step function over the slot divided by
        ``slot_s``, so ``sum(caps) * slot_s`` is the volume the trace offers over the run. When
        the run is longer than the trace the trace repeats (as mm-link does); the second value
        returned says whether that happened, so a caller can warn that the run saw a trace
        more than once.
        """
        slot = float(slot_s)
        if not math.isfinite(slot) or slot <= 0.0:
            raise ValueError(f"slot_s must be a finite number > 0, got {slot_s!r}")
        n = operator.index(n_slots)
        if n < 0:
            raise ValueError(f"n_slots must be >= 0, got {n_slots!r}")
        duration = self.duration_s
        t = np.arange(n + 1, dtype=np.float64) * slot
        lap = np.floor(t / duration)
        within = np.clip(t - lap * duration, 0.0, duration)
        cum_within = np.interp(within, self.edges_s, self._cum_bits)
        # Laps and the in-lap part are differenced separately, so a run of many laps does not
        # subtract two huge cumulative volumes.
        caps = (np.diff(lap) * self.volume_bits + np.diff(cum_within)) / slot
        np.maximum(caps, 0.0, out=caps)
        wrapped = n * slot > duration * (1.0 + 1e-9)
        return caps, bool(wrapped)


# -- file reading ----------------------------------------------------------------------------


def _split_run(path: str | os.PathLike[str]) -> tuple[Path, int | None]:
    """Split ``file.list#run=K`` into the file and K (only when the full name is not a file)."""
    text = os.fspath(path)
    if _RUN_SUFFIX in text and not os.path.exists(text):
        base, _, run = text.rpartition(_RUN_SUFFIX)
        if not run.isdigit():
            raise ConfigError(base, "run", f"expected a run number after '#run=', got {run!r}")
        return Path(base), int(run)
    return Path(text), None


def _read_file(path: Path) -> tuple[bytes, str]:
    """The file's bytes and text; binary, non-UTF-8 and empty files are errors."""
    data = read_bytes(path, "a trace file")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ConfigError(path, f"line {line}", "binary data (NUL byte), not a text trace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            path, f"line {line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x}); binary file?"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
        data = data[3:]
    if not text.strip():
        raise ConfigError(path, None, "file is empty")
    return data, text


def _show(text: str, limit: int = 40) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _sniff(text: str, path: Path) -> str:
    head = text[:65536]
    if len(text) > len(head) and "\n" in head:
        head = head[: head.rfind("\n")]  # drop a line cut in half
    lines = []
    for line in head.splitlines():
        if line.strip():
            lines.append(line.strip())
        if len(lines) >= 20:
            break
    if not lines:
        raise ConfigError(
            path, "format", "cannot tell the trace format: the first 64 KiB are blank"
        )
    first = lines[0]
    if _RULE_RE.fullmatch(first) or _RUN_RE.fullmatch(first):
        return "nuwins"
    if "," in first and "Timestamp" in (f.strip() for f in first.split(",")):
        return "gnettrack"
    if all(_INT_RE.fullmatch(line) for line in lines):
        return "mahimahi"
    if all(len(f := line.split()) == 2 and _is_number(f[0]) and _is_number(f[1]) for line in lines):
        return "two-column"
    raise ConfigError(
        path,
        "format",
        f"cannot tell the trace format from its first lines (line 1 is {_show(first)}); "
        f"name it: one of {', '.join(TRACE_FORMATS[1:])}",
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a trace file, from its content (the first lines), never from its name.

    NUWiNS files open with a ``###`` rule or ``Run <k>``; G-NetTrack CSVs with a comma header
    that has a ``Timestamp`` column; Mahimahi files hold one integer a line; two-column files
    two numbers a line.
    """
    file, _ = _split_run(path)
    return _sniff(_read_file(file)[1], file)


def read_trace(
    path: str | os.PathLike[str], format: str = "auto", column: str = "DL_bitrate"
) -> Trace:
    """Read a trace file into a :class:`Trace`.

    ``format`` is one of :data:`TRACE_FORMATS`; an explicit one overrides detection. ``column``
    picks the G-NetTrack column (kbit/s) and is ignored by the other formats. A NUWiNS path may
    end in ``#run=K`` to read that run alone.
    """
    file, run = _split_run(path)
    if format not in TRACE_FORMATS:
        raise ConfigError(
            file, "format", f"unknown trace format {format!r} (known: {', '.join(TRACE_FORMATS)})"
        )
    data, text = _read_file(file)
    fmt = _sniff(text, file) if format == "auto" else format
    if run is not None and fmt != "nuwins":
        raise ConfigError(
            file, "run", f"'#run=' selects a run of a NUWiNS .list file; this is a {fmt} trace"
        )
    if fmt == "mahimahi":
        edges, rate, notes = _parse_mahimahi(data, file)
    elif fmt == "two-column":
        edges, rate, notes = _parse_two_column(text, file)
    elif fmt == "gnettrack":
        edges, rate, notes = _parse_gnettrack(text, file, column)
    else:
        edges, rate, notes = _parse_nuwins(text, file, run)
    if not np.any(rate > 0.0):
        raise ConfigError(
            file, column if fmt == "gnettrack" else None, "all capacity values are zero"
        )
    name = file.name if run is None else f"{file.name}#run={run}"
    return Trace(
        name=name, path=str(file), format=fmt, edges_s=edges, rate_bps=rate, notes=tuple(notes)
    )


# -- helpers shared by the readers -----------------------------------------------------------


def _floats(
    values: Sequence[str], linenos: Sequence[int] | np.ndarray, path: Path, what: str
) -> np.ndarray:
    """Parse strings as finite floats; the first bad one is an error naming its line."""
    try:
        out = np.array(values, dtype=np.float64)
    except ValueError:
        out = None
    if out is not None and np.all(np.isfinite(out)):
        return out
    for i, v in enumerate(values):  # error path only: find the first bad value
        try:
            ok = math.isfinite(float(v))
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(path, f"line {linenos[i]}", f"{what}: unparsable number {_show(v)}")
    raise AssertionError("unreachable")  # pragma: no cover


def _check_time(
    t: np.ndarray, linenos: Sequence[int] | np.ndarray, path: Path, unit: str = "s"
) -> None:
    back = np.flatnonzero(np.diff(t) < 0.0)
    if back.size:
        i = int(back[0]) + 1
        raise ConfigError(
            path,
            f"line {linenos[i]}",
            f"time goes backwards ({t[i]:g} {unit} after {t[i - 1]:g} {unit}); times must not decrease",
        )
    if t[0] < 0.0:  # ascending, so only the first can be negative
        raise ConfigError(path, f"line {linenos[0]}", f"negative time {t[0]:g} {unit}")


def _check_rate(v: np.ndarray, linenos: Sequence[int] | np.ndarray, path: Path, what: str) -> None:
    neg = np.flatnonzero(v < 0.0)
    if neg.size:
        i = int(neg[0])
        raise ConfigError(path, f"line {linenos[i]}", f"negative capacity: {what} {v[i]:g}")


def _merge_equal_times(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Collapse runs of equal (sorted) times into one sample holding their mean.

    Two readings stamped with the same time are two estimates of the same interval, so their
    mean is the least surprising single value. Returns (times, values, samples merged away).
    """
    starts = np.flatnonzero(np.r_[True, np.diff(t) > 0.0])
    if starts.size == t.size:
        return t, v, 0
    counts = np.diff(np.r_[starts, t.size])
    return t[starts], np.add.reduceat(v, starts) / counts, int(t.size - starts.size)


def _timed_steps(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Edges (from 0) and rates for samples at ascending times, sample i on (t[i-1], t[i]].

    The first sample covers one median step before it, clipped at 0 (see the module
    docstring). Returns (edges, rates, shift, first_dropped): ``shift`` is the time that was
    subtracted to start at 0, ``first_dropped`` says the first sample covered nothing.
    """
    step = float(np.median(np.diff(t))) if t.size >= 2 else float(t[0])
    start = max(0.0, float(t[0]) - step)
    if t[0] - start <= 0.0:  # first time 0: a point, not an interval
        return t - start, v[1:], start, True
    return np.r_[start, t] - start, v, start, False


def _gap_note(edges: np.ndarray, where: str = "") -> list[str]:
    steps = np.diff(edges)
    if steps.size < 2:
        return []
    median = float(np.median(steps))
    long = steps > 10.0 * median
    if not np.any(long):
        return []
    return [
        f"{where}{int(long.sum())} gap(s) over 10 median steps ({median:.3g} s) between samples, "
        f"longest {float(steps.max()):.3g} s; each gap takes the following sample's value"
    ]


def _numbered_lines(text: str) -> tuple[list[int], list[str]]:
    linenos, lines = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            linenos.append(i)
            lines.append(line)
    return linenos, lines


# -- mahimahi --------------------------------------------------------------------------------


_MAHIMAHI_ALLOWED = np.zeros(256, dtype=bool)
_MAHIMAHI_ALLOWED[[ord(c) for c in "0123456789 \t\r\n"]] = True


def _parse_mahimahi(data: bytes, path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Vectorised: digits are decoded from the raw bytes, no Python work per line.

    A file of half a million lines parses in tens of milliseconds; a bad line is still
    reported by number, by counting the newlines before it.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    lines_before = np.cumsum(buf == 10, dtype=np.int64)  # newlines up to and including i

    def line_text(lineno: int) -> str:
        all_lines = data.decode("utf-8", "replace").splitlines()
        return all_lines[lineno - 1] if lineno <= len(all_lines) else ""

    allowed = _MAHIMAHI_ALLOWED[buf]
    if not allowed.all():
        i = int(np.argmin(allowed))
        lineno = int(lines_before[i]) + 1
        shown = line_text(lineno)
        what = "negative timestamp" if shown.strip().startswith("-") else "unparsable number"
        raise ConfigError(
            path, f"line {lineno}", f"{what} {_show(shown)} (expected one integer, a time in ms)"
        )
    digit = np.zeros(buf.size + 2, dtype=np.int8)
    digit[1:-1] = (buf - 48) < 10  # uint8 arithmetic wraps, so this is '0' <= b <= '9'
    change = np.diff(digit)
    starts = np.flatnonzero(change == 1)
    ends = np.flatnonzero(change == -1) - 1  # last digit of each number
    lines = lines_before[starts] + 1
    twice = np.flatnonzero(np.diff(lines) == 0)
    if twice.size:
        lineno = int(lines[twice[0]])
        raise ConfigError(
            path, f"line {lineno}", f"expected one integer a line, got {_show(line_text(lineno))}"
        )
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > 15:
        lineno = int(lines[int(np.argmax(lengths))])
        raise ConfigError(
            path, f"line {lineno}", f"timestamp too large: {_show(line_text(lineno))}"
        )
    # Add the k-th digit from the right of every number at once, for k up to the longest.
    ts = np.zeros(starts.size, dtype=np.int64)
    for k in range(longest):
        has = lengths > k
        ts[has] += (buf[ends[has] - k].astype(np.int64) - 48) * 10**k
    back = np.flatnonzero(np.diff(ts) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise ConfigError(
            path,
            f"line {int(lines[i])}",
            f"time goes backwards ({ts[i]} ms after {ts[i - 1]} ms); timestamps must not decrease",
        )
    duration_ms = int(ts[-1])
    if duration_ms <= 0:
        raise ConfigError(path, None, "zero duration: the last timestamp is 0 ms")
    counts = np.bincount(ts % duration_ms, minlength=duration_ms)
    rate = counts * (MAHIMAHI_PACKET_BITS * 1000.0)
    edges = np.arange(duration_ms + 1, dtype=np.float64) / 1000.0
    return edges, rate, []


# -- two-column ------------------------------------------------------------------------------


def _parse_two_column(text: str, path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    linenos, lines = _numbered_lines(text)
    fields = [line.split() for line in lines]
    wrong = [i for i, f in enumerate(fields) if len(f) != 2]
    if wrong:
        i = wrong[0]
        raise ConfigError(
            path,
            f"line {linenos[i]}",
            f"expected 2 columns (time_s, Mbit/s), got {len(fields[i])}: {_show(lines[i])}",
        )
    t = _floats([f[0] for f in fields], linenos, path, "time")
    v = _floats([f[1] for f in fields], linenos, path, "throughput")
    _check_time(t, linenos, path)
    _check_rate(v, linenos, path, "throughput (Mbit/s)")
    t, v, merged = _merge_equal_times(t, v)
    if t.size == 1 and t[0] == 0.0:
        raise ConfigError(path, None, "zero duration: a single sample at time 0")
    first_s = float(t[0])
    edges, mbps, shift, dropped = _timed_steps(t, v)
    notes = ["throughput read as Mbit/s; sample i holds over (t[i-1], t[i]]"]
    if merged:
        notes.append(f"{merged} repeated time stamp(s) merged into the mean of their samples")
    if dropped:
        notes.append("the first sample (at time 0) covers no interval and is not used")
    if shift > 0.0:
        notes.append(
            f"time axis starts at {first_s:g} s: the trace starts one median step before, shifted by -{shift:g} s"
        )
    notes += _gap_note(edges)
    return edges, mbps * 1e6, notes


# -- G-NetTrack CSV --------------------------------------------------------------------------


def _numeric_columns(header: list[str], rows: list[list[str]]) -> list[str]:
    out = []
    for j, name in enumerate(header):
        values = [r[j].strip() for r in rows if r[j].strip() not in _MISSING]
        try:
            ok = bool(values) and bool(np.all(np.isfinite(np.array(values, dtype=np.float64))))
        except ValueError:
            ok = False
        if ok:
            out.append(name)
    return out


def _parse_gnettrack(
    text: str, path: Path, column: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    linenos, lines = _numbered_lines(text)
    header = [h.strip() for h in lines[0].split(",")]
    if "Timestamp" not in header:
        raise ConfigError(
            path,
            f"line {linenos[0]}",
            "the header has no 'Timestamp' column (not a G-NetTrack CSV?)",
        )
    rows = [line.split(",") for line in lines[1:]]
    linenos = linenos[1:]
    if not rows:
        raise ConfigError(path, None, "no data rows after the header")
    wrong = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if wrong:
        i = wrong[0]
        raise ConfigError(
            path,
            f"line {linenos[i]}",
            f"expected {len(header)} comma-separated fields (as in the header), got {len(rows[i])}",
        )
    if column not in header:
        raise ConfigError(
            path,
            column,
            f"no such column (numeric columns: {', '.join(_numeric_columns(header, rows))})",
        )
    j = header.index(column)
    raw = [r[j].strip() for r in rows]
    keep = [i for i, v in enumerate(raw) if v not in _MISSING]
    if not keep:
        raise ConfigError(path, column, "every value is missing ('-')")
    if not _is_number(raw[keep[0]]):
        raise ConfigError(
            path,
            column,
            f"not a numeric column (first value {_show(raw[keep[0]])}; numeric columns: {', '.join(_numeric_columns(header, rows))})",
        )
    kept_lines = [linenos[i] for i in keep]
    v = _floats([raw[i] for i in keep], kept_lines, path, column)
    _check_rate(v, kept_lines, path, f"{column} (kbit/s)")

    jt = header.index("Timestamp")
    stamps = [r[jt].strip() for r in rows]
    iso = []
    for i, s in enumerate(stamps):
        m = _GNT_TIME_RE.fullmatch(s)
        if m is None:
            raise ConfigError(
                path,
                f"line {linenos[i]}",
                f"Timestamp: expected yyyy.mm.dd_HH.MM.SS, got {_show(s)}",
            )
        iso.append("{}-{}-{}T{}:{}:{}".format(*m.groups()))
    try:
        when = np.array(iso, dtype="datetime64[s]")
    except ValueError:
        when = None
    if when is None:  # error path: which one is not a real date
        for i, s in enumerate(iso):
            try:
                np.datetime64(s, "s")
            except ValueError:
                raise ConfigError(
                    path,
                    f"line {linenos[i]}",
                    f"Timestamp: not a valid date/time {_show(stamps[i])}",
                ) from None
    secs = (when - when[0]).astype(np.int64).astype(np.float64)
    _check_time(
        secs, linenos, path
    )  # every row, missing values or not: the log's clock must run forward

    t = secs[keep]
    t, v, merged = _merge_equal_times(t, v)
    # Each row covers the second that ends at its stamp, so the first covers (t0 - 1, t0].
    edges = np.r_[0.0, t - t[0] + 1.0]
    steps = np.diff(edges)
    notes = [f"{column} read as kbit/s; each second holds over the interval since the previous one"]
    if merged:
        notes.append(
            f"{merged} row(s) sharing a second with another row merged into the mean of that second"
        )
    skipped = len(rows) - len(keep)
    if skipped:
        notes.append(
            f"{skipped} row(s) with '-' (missing) in {column} skipped; their time takes the next row's value"
        )
    gaps = steps > 1.0
    if np.any(gaps):
        notes.append(
            f"{int(gaps.sum())} interval(s) longer than 1 s between rows (longest {float(steps.max()):g} s), "
            "each held at the following row's value"
        )
    return edges, v * 1e3, notes


# -- NUWiNS .list ----------------------------------------------------------------------------


def _parse_series(line: str, lineno: int, path: Path, what: str) -> np.ndarray:
    parts = line.strip().split(",")
    if parts and parts[-1].strip() == "":
        parts = parts[:-1]  # a trailing comma
    try:
        out = np.array(parts, dtype=np.float64)
    except ValueError:
        out = None
    if out is not None and np.all(np.isfinite(out)):
        return out
    for k, p in enumerate(parts):
        if not _is_number(p):
            raise ConfigError(
                path, f"line {lineno}", f"{what}, value {k + 1}: unparsable number {_show(p)}"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _parse_nuwins(
    text: str, path: Path, run: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    runs: list[tuple[int, int, list[tuple[int, str]]]] = []  # (label, line of "Run k", data lines)
    seen: dict[int, int] = {}
    current: list[tuple[int, str]] | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if _RULE_RE.fullmatch(s):
            current = None
            continue
        m = _RUN_RE.fullmatch(s)
        if m:
            label = int(m.group(1))
            if label in seen:
                raise ConfigError(
                    path,
                    f"line {lineno}",
                    f"Run {label} appears twice (first at line {seen[label]})",
                )
            seen[label] = lineno
            current = []
            runs.append((label, lineno, current))
            continue
        if current is None:
            raise ConfigError(path, f"line {lineno}", f"data outside a 'Run <k>' block: {_show(s)}")
        current.append((lineno, s))
    if not runs:
        raise ConfigError(path, None, "no 'Run <k>' blocks found")
    if run is not None:
        chosen = [r for r in runs if r[0] == run]
        if not chosen:
            raise ConfigError(
                path, "run", f"no Run {run} (runs: {', '.join(str(r[0]) for r in runs)})"
            )
        runs_used = chosen
    else:
        runs_used = sorted(runs, key=lambda r: r[0])

    pieces_edges, pieces_rate, notes = [], [], []
    offset = 0.0
    timed = untimed = extra = 0
    for label, run_line, data in runs_used:
        if not data:
            raise ConfigError(path, f"line {run_line}", f"Run {label} has no data line")
        if len(data) == 1:
            lineno, line = data[0]
            v = _parse_series(line, lineno, path, f"Run {label} throughput")
            _check_rate(v, [lineno] * v.size, path, f"Run {label} throughput (Mbit/s)")
            edges = np.arange(v.size + 1, dtype=np.float64) * NUWINS_SAMPLE_S
            untimed += 1
        else:
            (tl, tline), (vl, vline) = data[0], data[1]
            t = _parse_series(tline, tl, path, f"Run {label} time axis")
            v = _parse_series(vline, vl, path, f"Run {label} throughput")
            if t.size != v.size:
                raise ConfigError(
                    path,
                    f"line {vl}",
                    f"Run {label}: the time axis (line {tl}) has {t.size} values but the throughput has {v.size}",
                )
            _check_time(t, [tl] * t.size, path)
            _check_rate(v, [vl] * v.size, path, f"Run {label} throughput (Mbit/s)")
            t, v, merged = _merge_equal_times(t, v)
            if t.size == 1 and t[0] == 0.0:
                raise ConfigError(
                    path, f"line {tl}", f"Run {label}: zero duration (one sample at time 0)"
                )
            edges, v, _, _ = _timed_steps(t, v)
            if merged:
                notes.append(
                    f"Run {label}: {merged} repeated time(s) merged into the mean of their samples"
                )
            notes += _gap_note(edges, f"Run {label}: ")
            timed += 1
            extra = max(extra, len(data) - 2)
        pieces_edges.append(edges[1:] + offset)
        pieces_rate.append(v)
        offset += float(edges[-1])
    edges = np.r_[0.0, np.concatenate(pieces_edges)]
    rate = np.concatenate(pieces_rate) * 1e6
    if edges[-1] <= 0.0:
        raise ConfigError(path, None, "zero duration")
    labels = [r[0] for r in runs_used]
    head = ["throughput read as Mbit/s"]
    if len(runs_used) > 1:
        head.append(
            f"{len(runs_used)} runs concatenated in run-number order ({', '.join(map(str, labels))})"
        )
        in_file = [r[0] for r in runs]
        if in_file != labels:
            head.append(f"the file lists the runs as {', '.join(map(str, in_file))}")
    if untimed:
        head.append(
            f"{untimed} run(s) without a time axis: samples taken as {NUWINS_SAMPLE_S * 1000:g} ms apart (inferred)"
        )
    if timed:
        head.append(f"{timed} run(s) with a time axis (line 1) and throughput (line 2)")
    if extra:
        head.append(f"up to {extra} further undocumented line(s) per run ignored")
    return edges, rate, head + notes


# -- synthetic traces ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Regime:
    """A Markov-modulated capacity model at :data:`SYNTHETIC_SLOT_S` granularity.

    States have a relative mean rate, a mean sojourn time and a log-normal fading spread;
    ``jump[i, j]`` is the chance that leaving state i goes to state j. Fading is one
    unit-variance Gaussian AR(1) process (correlation ``rho`` per slot) shared by all states,
    so the link does not decorrelate at every state change. Figures are illustrative shapes,
    not fitted to a dataset: the scale comes from ``mean_bps``.
    """

    states: tuple[str, ...]
    rel_mean: tuple[float, ...]
    sojourn_s: tuple[float, ...]
    sigma: tuple[float, ...]
    jump: tuple[tuple[float, ...], ...]
    rho: float

    def slot_chain(self, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(leave probability per slot, jump matrix, stationary distribution per slot)."""
        leave = 1.0 - np.exp(-dt / np.asarray(self.sojourn_s))
        jump = np.asarray(self.jump, dtype=np.float64)
        k = len(self.states)
        q = np.diag(1.0 - leave) + leave[:, None] * jump
        a = np.vstack([q.T - np.eye(k), np.ones(k)])
        b = np.r_[np.zeros(k), 1.0]
        pi = np.linalg.lstsq(a, b, rcond=None)[0]
        pi = np.clip(pi, 0.0, None)
        return leave, jump, pi / pi.sum()


_REGIMES: dict[str, _Regime] = {
    # LTE uplink seen from a moving user: coverage classes change every few seconds, more
    # spread at the cell edge (power-limited, interference) than near the site.
    "markov-lte": _Regime(
        states=("cell-edge", "fair", "good", "excellent"),
        rel_mean=(0.15, 0.55, 1.0, 1.6),
        sojourn_s=(3.0, 5.0, 6.0, 4.0),
        sigma=(0.6, 0.45, 0.35, 0.25),
        jump=(
            (0.0, 1.0, 0.0, 0.0),
            (0.5, 0.0, 0.5, 0.0),
            (0.0, 0.5, 0.0, 0.5),
            (0.0, 0.0, 1.0, 0.0),
        ),
        rho=0.7,
    ),
    # mmWave: high line-of-sight rate, short deep drops when a body or vehicle blocks the beam,
    # and a degraded state (reflected beam) between the two.
    "5g-mmwave": _Regime(
        states=("line-of-sight", "reflected", "blocked"),
        rel_mean=(1.0, 0.4, 0.03),
        sojourn_s=(8.0, 2.0, 0.7),
        sigma=(0.2, 0.35, 0.5),
        jump=((0.0, 0.4, 0.6), (0.7, 0.0, 0.3), (0.5, 0.5, 0.0)),
        rho=0.6,
    ),
    # Wi-Fi: mostly steady, with contention periods and short interference bursts.
    "wifi": _Regime(
        states=("clear", "contention", "interference"),
        rel_mean=(1.0, 0.55, 0.15),
        sojourn_s=(10.0, 3.0, 0.5),
        sigma=(0.12, 0.3, 0.5),
        jump=((0.0, 0.8, 0.2), (0.8, 0.0, 0.2), (0.5, 0.5, 0.0)),
        rho=0.5,
    ),
}
assert tuple(_REGIMES) == SYNTHETIC_KINDS


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """A stationary unit-variance Gaussian AR(1) series, by convolution (no per-slot loop)."""
    if rho <= 0.0:
        return rng.standard_normal(n)
    taps = int(math.ceil(math.log(1e-6) / math.log(rho))) + 1
    kernel = rho ** np.arange(taps, dtype=np.float64)
    kernel /= math.sqrt(float(np.sum(kernel**2)))
    noise = rng.standard_normal(n + taps - 1)
    return np.convolve(noise, kernel, mode="valid")


def synthetic_uplink(
    duration_s: float,
    seed: int,
    mean_bps: float = DEFAULT_SYNTHETIC_MEAN_BPS,
    kind: str = "markov-lte",
) -> Trace:
    """A generated uplink trace, so the project runs without any data file.

    ``markov-lte`` (default): four coverage states (cell-edge, fair, good, excellent) with
    mean sojourns of 3-6 s, neighbour-to-neighbour transitions and per-state log-normal
    fading, at 100 ms granularity. ``5g-mmwave`` adds blockage: short deep drops from a high
    line-of-sight rate. ``wifi``: steady with contention and interference bursts.

    The process is scaled so that its long-run (stationary) mean is ``mean_bps``; a finite
    trace's own mean varies around it (the realised mean is in ``notes``). The first state is
    drawn from the stationary distribution, so a short trace is not biased toward one state.
    The same seed gives the same trace, and traces with the same seed and kind but different
    ``mean_bps`` are exact multiples of each other.
    """
    source = f"synthetic:{kind}"
    if kind not in _REGIMES:
        raise ConfigError(
            source,
            "kind",
            f"unknown synthetic trace kind {kind!r} (known: {', '.join(SYNTHETIC_KINDS)})",
        )
    for field_name, value in (("duration_s", duration_s), ("mean_bps", mean_bps)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not (math.isfinite(float(value)) and float(value) > 0.0)
        ):
            raise ConfigError(source, field_name, f"must be a finite number > 0, got {value!r}")
    duration = float(duration_s)
    rng = make_rng(seed, "trace")  # the project's one seed-to-generator place
    regime = _REGIMES[kind]
    dt = SYNTHETIC_SLOT_S
    n = max(1, int(math.ceil(duration / dt - 1e-9)))
    leave, jump, pi = regime.slot_chain(dt)
    k = len(regime.states)

    # Geometric sojourns (in slots) make the state a Markov chain on slots, whose stationary
    # mean is exact; one Python step per sojourn (seconds long), none per slot.
    states = np.empty(n, dtype=np.intp)
    pos = 0
    s = int(rng.choice(k, p=pi))
    while pos < n:
        length = int(rng.geometric(leave[s]))
        states[pos : pos + length] = s
        pos += length
        s = int(rng.choice(k, p=jump[s]))

    z = _ar1(rng, n, regime.rho)
    sigma = np.asarray(regime.sigma)[states]
    rel = np.asarray(regime.rel_mean)[states] * np.exp(sigma * z - 0.5 * sigma**2)
    scale = float(mean_bps) / float(pi @ np.asarray(regime.rel_mean))
    rate = rel * scale
    edges = np.arange(n + 1, dtype=np.float64) * dt
    edges[-1] = duration
    realised_bps = float(np.sum(rate * np.diff(edges))) / duration
    occupancy = ", ".join(f"{name} {p:.0%}" for name, p in zip(regime.states, pi, strict=True))
    return Trace(
        name=f"{source} seed={seed} mean={float(mean_bps) / 1e6:g} Mbit/s {duration:g} s",
        path=None,
        format="synthetic",
        edges_s=edges,
        rate_bps=rate,
        notes=(
            f"long-run mean {float(mean_bps) / 1e6:g} Mbit/s; this trace's mean {realised_bps / 1e6:.3g} Mbit/s",
            f"stationary state shares: {occupancy}",
        ),
    )


# -- one entry point for configs and the CLI -------------------------------------------------


def _parse_synthetic_spec(spec: str) -> tuple[str, dict[str, str]]:
    body = spec[len("synthetic") :]
    kind = "markov-lte"
    query = ""
    if body.startswith(":"):
        body = body[1:]
        kind, _, query = body.partition("?")
    elif body.startswith("?"):
        query = body[1:]
    elif body:
        raise ConfigError(
            spec,
            None,
            "expected 'synthetic', 'synthetic:<kind>' or 'synthetic:<kind>?key=value&...'",
        )
    if kind not in SYNTHETIC_KINDS:
        raise ConfigError(
            spec,
            "kind",
            f"unknown synthetic trace kind {kind!r} (known: {', '.join(SYNTHETIC_KINDS)})",
        )
    params: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise ConfigError(spec, key or item, "expected key=value")
        if key not in ("mean_mbps", "seed", "duration_s"):
            raise ConfigError(spec, key, "unknown parameter (known: mean_mbps, seed, duration_s)")
        params[key] = value
    return kind, params


def load_trace(
    spec: str | os.PathLike[str] | None,
    *,
    format: str = "auto",
    column: str = "DL_bitrate",
    scale: float = 1.0,
    seed: int = 0,
    duration_s: float = DEFAULT_SYNTHETIC_DURATION_S,
) -> Trace:
    """A trace from a spec string: a file path, or a synthetic trace.

    ``None``, ``"synthetic"``, ``"synthetic:<kind>"`` and ``"synthetic:<kind>?mean_mbps=8"``
    generate one (``seed`` and ``duration_s`` apply unless the spec sets them with
    ``&seed=3&duration_s=60``); anything else is a path read by :func:`read_trace` (name a file
    literally called ``synthetic`` as ``./synthetic``). ``scale`` multiplies the capacity, e.g.
    to let a downlink trace stand in for an uplink.
    """
    text = None if spec is None else os.fspath(spec)
    if text is not None and not text.strip():
        raise ConfigError("trace", None, "empty trace spec (give a path or 'synthetic')")
    if text is None or text == "synthetic" or text.startswith(("synthetic:", "synthetic?")):
        label = text or "synthetic"
        kind, params = _parse_synthetic_spec(label)
        values: dict[str, float] = {}
        for key, raw in params.items():
            try:
                values[key] = float(raw)
            except ValueError:
                raise ConfigError(label, key, f"expected a number, got {raw!r}") from None
        mean = values.get("mean_mbps", DEFAULT_SYNTHETIC_MEAN_BPS / 1e6) * 1e6
        run_seed: int = seed
        if "seed" in values:
            if not values["seed"].is_integer() or values["seed"] < 0:
                raise ConfigError(
                    label, "seed", f"expected a non-negative integer, got {params['seed']!r}"
                )
            run_seed = int(values["seed"])
        length = values.get("duration_s", duration_s)
        for key, value in (("mean_mbps", mean), ("duration_s", length)):
            if not (math.isfinite(value) and value > 0.0):
                raise ConfigError(
                    label, key, f"must be a finite number > 0, got {params.get(key, value)!r}"
                )
        trace = synthetic_uplink(length, run_seed, mean, kind)
    else:
        trace = read_trace(text, format=format, column=column)
    return trace.scaled(scale)


def shared_traces_dir() -> Path:
    """Where the public trace sets are kept: ``$CUTEDGE_TRACES``, else ``../shared/traces``."""
    env = os.environ.get(TRACES_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "traces"


__all__ = [
    "DEFAULT_SYNTHETIC_DURATION_S",
    "DEFAULT_SYNTHETIC_MEAN_BPS",
    "MAHIMAHI_PACKET_BITS",
    "NUWINS_SAMPLE_S",
    "SYNTHETIC_KINDS",
    "SYNTHETIC_SLOT_S",
    "TRACES_ENV",
    "TRACE_FORMATS",
    "Trace",
    "detect_format",
    "load_trace",
    "read_trace",
    "shared_traces_dir",
    "synthetic_uplink",
]
