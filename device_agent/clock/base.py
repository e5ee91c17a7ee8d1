"""The contract every GPU clock and power backend keeps, and the pieces they share.

The live device agent drives the GPU through one small interface, :class:`ClockBackend`, whatever
the machine: a Jetson's devfreq sysfs files, the jetson-stats service, NVML on a desktop GPU, or a
simulated board. Real hardware differs in what it can do (jetson-stats cannot set a clock; a
Nano 2 GB has no power monitor; NVML cannot tell which locked clocks were set before), so every
backend lists what it can do in :attr:`ClockBackend.capabilities` and raises
:class:`NotSupportedError` for the rest instead of returning made-up numbers.

Units are SI: Hz, W, J, s. Errors a user can fix (no permission, not a level, missing node) are
:class:`BackendError` subclasses whose message is one line that says what to do.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from types import TracebackType


class Capability(str, Enum):
    """What a backend can do; each method names the capability it needs."""

    LEVELS = "levels"  # levels_hz()
    READ_CLOCK = "read_clock"  # current_hz()
    PIN = "pin"  # pin() and restore()
    POWER = "power"  # power_w(), board_power_w()
    RAILS = "rails"  # power_w() has more than one rail (per-rail breakdown)
    ENERGY = "energy"  # energy_meter()
    TELEMETRY = "telemetry"  # telemetry(): temperatures, nvpmodel, jetson_clocks


class BackendError(Exception):
    """An expected failure of a backend; the message is one line a user can act on."""


class BackendUnavailable(BackendError):
    """The backend cannot be used on this machine (no node, no library, no service)."""


class NotSupportedError(BackendError):
    """The backend, or the hardware under it, cannot do this; see ``capabilities``."""


class PermissionDeniedError(BackendError, PermissionError):
    """The operation needs privileges the process does not have; the message says which."""


class NotALevelError(BackendError, ValueError):
    """A requested clock is not one of the GPU's levels; ``nearest_hz`` lists the closest."""

    def __init__(self, hz: int, levels_hz: Iterable[int], device: str = "the GPU"):
        self.hz = int(hz)
        self.nearest_hz = nearest_levels(self.hz, levels_hz)
        near = ", ".join(str(f) for f in self.nearest_hz)
        super().__init__(
            f"{self.hz} Hz is not a GPU level of {device}; nearest levels: {near} Hz "
            "(all levels: cutedge device info)"
        )


def nearest_levels(hz: int, levels_hz: Iterable[int]) -> tuple[int, ...]:
    """The level just below and just above ``hz`` (one of them at either end of the table)."""
    levels = sorted(set(int(f) for f in levels_hz))
    if not levels:
        return ()
    i = bisect.bisect_left(levels, hz)
    return tuple(levels[j] for j in (i - 1, i) if 0 <= j < len(levels))


# -- energy --------------------------------------------------------------------------------------


class EnergyMeter:
    """Energy drawn over an interval: ``start()``, ``read_j()`` any number of times, ``stop()``.

    ``read_j()`` returns the joules since ``start()`` and never decreases; ``stop()`` returns
    the final figure and ends any sampling thread. ``elapsed_s`` is the time the figure covers.
    Usable as a context manager (start on enter, stop on exit). A meter is single-use.
    """

    def start(self) -> EnergyMeter:
        raise NotImplementedError

    def read_j(self) -> float:
        raise NotImplementedError

    def stop(self) -> float:
        raise NotImplementedError

    @property
    def elapsed_s(self) -> float:
        raise NotImplementedError

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class IntegratingEnergyMeter(EnergyMeter):
    """Integrates a power reading sampled on a background thread (trapezoid rule).

    Power monitors on Jetson (INA3221) give instantaneous power, not energy, so energy per slot
    has to be integrated from samples; 20-100 Hz is enough for slots of tens of ms and more.
    ``read_j()`` and ``stop()`` take a sample of their own, so the figure covers the interval up
    to the call, not up to the last tick. A sample that reads ``None`` (rail unreadable for a
    moment) is skipped: the trapezoid bridges the gap.
    """

    def __init__(
        self,
        power_w: Callable[[], float | None],
        interval_s: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._power_w = power_w
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_j = 0.0
        self._t0: float | None = None
        self._first_t: float | None = None  # time of the first good sample
        self._last: tuple[float, float] | None = None  # (t, p) of the last good sample
        self._t_end: float | None = None
        self.samples = 0
        self.error: BaseException | None = None

    def _sample(self) -> None:
        with self._lock:
            t = self._clock()
            p = self._power_w()
            if p is None:
                return
            self.samples += 1
            if self._first_t is None:
                self._first_t = t
            if self._last is not None:
                t_prev, p_prev = self._last
                self._energy_j += 0.5 * (p + p_prev) * (t - t_prev)
            self._last = (t, p)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                self._sample()
        except BaseException as exc:  # surfaced by read_j()/stop(), not lost in the thread
            self.error = exc

    def start(self) -> IntegratingEnergyMeter:
        if self._t0 is not None:
            raise RuntimeError("energy meter already started")
        self._t0 = self._clock()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="energy-meter", daemon=True)
        self._thread.start()
        return self

    def _check(self) -> None:
        if self._t0 is None:
            raise RuntimeError("energy meter not started")
        if self.error is not None:
            raise BackendError(f"power sampling failed: {self.error}") from self.error

    def read_j(self) -> float:
        self._check()
        if self._t_end is None:
            self._sample()
        return self._energy_j

    def stop(self) -> float:
        if self._t0 is None:
            raise RuntimeError("energy meter not started")
        if self._t_end is None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._check()
            self._sample()
            self._t_end = self._clock()
        return self._energy_j

    @property
    def elapsed_s(self) -> float:
        """Time between the first and the last good sample (what the energy figure covers)."""
        with self._lock:
            if self._first_t is None or self._last is None:
                return 0.0
            return self._last[0] - self._first_t


class CounterEnergyMeter(EnergyMeter):
    """Energy as the difference of a cumulative counter (NVML's total-energy counter, a model).

    Exact where the hardware keeps the counter; no thread, reads cost one call each.
    """

    def __init__(
        self, read_total_j: Callable[[], float], clock: Callable[[], float] = time.monotonic
    ):
        self._read_total_j = read_total_j
        self._clock = clock
        self._j0: float | None = None
        self._t0 = 0.0
        self._final: tuple[float, float] | None = None  # (energy_j, t)
        self._last_j = 0.0

    def start(self) -> CounterEnergyMeter:
        if self._j0 is not None:
            raise RuntimeError("energy meter already started")
        # counter, then clock, here and in stop(): elapsed_s then spans what the energy covers
        self._j0 = self._read_total_j()
        self._t0 = self._clock()
        return self

    def read_j(self) -> float:
        if self._j0 is None:
            raise RuntimeError("energy meter not started")
        if self._final is not None:
            return self._final[0]
        # a counter that wraps or resets (driver reload) must not make energy go backwards
        self._last_j = max(self._last_j, self._read_total_j() - self._j0)
        return self._last_j

    def stop(self) -> float:
        if self._final is None:
            self._final = (self.read_j(), self._clock())
        return self._final[0]

    @property
    def elapsed_s(self) -> float:
        end = self._final[1] if self._final is not None else self._clock()
        return end - self._t0 if self._j0 is not None else 0.0


# -- the contract --------------------------------------------------------------------------------


class ClockBackend:
    """One GPU's clock and power, whatever drives them.

    Lifecycle: open a backend (``device_agent.clock.open_backend`` or a backend's constructor),
    optionally ``pin()`` levels any number of times, then ``restore()`` and ``close()``; a
    ``with`` block does the last two on every exit. ``restore()`` puts back what was there
    before the first ``pin()``; calling it twice, or without a pin, does nothing.

    Methods for a capability the backend lacks raise :class:`NotSupportedError`. Subclasses set
    ``name``, ``device`` and ``capabilities`` and implement the ``_``-free methods they support.
    """

    #: short backend name: sysfs, jtop, nvml, simulated
    name: str = "abstract"
    #: what this instance (not just this class) can do on this machine
    capabilities: frozenset[Capability] = frozenset()
    #: one-line description of the device (devfreq node, GPU name, board profile)
    device: str = ""
    #: called by the first :meth:`pin` with the settings :meth:`restore` will put back, before
    #: anything is changed; :class:`~device_agent.clock.guard.RestoreGuard` sets it to write
    #: them to the crash-safe state file (``device_agent.clock.state``). An exception from it
    #: stops the pin.
    journal: Callable[[Mapping[str, str]], None] | None = None

    def device_ref(self) -> dict[str, str] | None:
        """How another process reopens this device to restore it: a JSON-able mapping with
        ``kind`` (the backend that can), ``id`` (unique per device) and ``name`` (for messages).
        ``None`` when a pin changes nothing that outlives this process (simulated)."""
        return None

    def restore_saved(self, saved: Mapping[str, str]) -> dict[str, str]:
        """Put back ``saved``, the settings a process (possibly gone) recorded before its first
        pin of this device; returns what was written, as :meth:`restore` does."""
        raise NotSupportedError(f"{self.name} backend keeps no clock state to restore")

    def _remember(self, saved: Mapping[str, str]) -> None:
        """For backends: call from the first :meth:`pin`, before the first write."""
        if self.journal is not None:
            self.journal(saved)

    def require(self, cap: Capability, what: str) -> None:
        """Raise :class:`NotSupportedError` unless this backend has ``cap``."""
        if cap not in self.capabilities:
            raise NotSupportedError(f"{self.name} backend on {self.device} cannot {what}")

    def levels_hz(self) -> tuple[int, ...]:
        """The GPU clock levels in Hz, ascending, no duplicates."""
        self.require(Capability.LEVELS, "list GPU levels")
        raise NotImplementedError

    def current_hz(self) -> int:
        """The GPU clock now, in Hz, as the hardware reports it (may differ from a pinned level
        while throttled or capped by the power mode)."""
        self.require(Capability.READ_CLOCK, "read the GPU clock")
        raise NotImplementedError

    def pin(self, hz: int) -> int:
        """Hold the GPU at level ``hz`` and return the clock actually reached, in Hz.

        ``hz`` must be one of :meth:`levels_hz` (:class:`NotALevelError` otherwise). The first
        pin saves the state to restore. A result different from ``hz`` means something else
        (thermal throttling, the power mode's cap) holds the clock; the backend logs a warning
        and does not wait for it.
        """
        self.require(Capability.PIN, "pin the GPU clock")
        raise NotImplementedError

    def restore(self) -> dict[str, str]:
        """Put back the clock settings saved by the first :meth:`pin`.

        Returns what was written back (setting -> value, for the user to see); an empty dict
        when there was nothing to restore. Safe to call any number of times.
        """
        return {}

    def power_w(self) -> dict[str, float | None]:
        """Power now per rail, in W; ``None`` for a rail that cannot be read at this moment."""
        self.require(Capability.POWER, "read power")
        raise NotImplementedError

    def board_power_w(self) -> float | None:
        """The one figure that stands for the device's power: the board input rail where the
        board has one (VIN, VDD_IN, POM_5V_IN), otherwise the sum of the readable rails."""
        return total_power_w(self.power_w())

    def energy_meter(self, interval_s: float = 0.01) -> EnergyMeter:
        """A new, not yet started, meter of the energy behind :meth:`board_power_w`."""
        self.require(Capability.ENERGY, "measure energy")
        return IntegratingEnergyMeter(self.board_power_w, interval_s)

    def telemetry(self) -> dict[str, object]:
        """Extra readings (temperatures, power mode) where the backend has them."""
        self.require(Capability.TELEMETRY, "read telemetry")
        raise NotImplementedError

    def mark_busy(self, busy: bool) -> None:
        """Tell the backend whether the GPU is computing now.

        Real hardware measures this itself, so the default does nothing; the simulated backend
        uses it to choose between its busy and idle power.
        """

    def close(self) -> None:
        """Release handles (NVML, the jtop client). Does not restore; safe to call twice."""

    def __enter__(self) -> ClockBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.restore()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.device!r}>"


#: rails that measure the whole board or module, in order of preference (jetson.md section 1.2)
INPUT_RAILS = ("VIN", "POM_5V_IN", "VDD_IN", "5V_IN")


def total_power_w(rails: Mapping[str, float | None]) -> float | None:
    """The board input rail if there is one, else the sum of the readable rails (AGX boards)."""
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name]
    values = [p for p in rails.values() if p is not None]
    return math.fsum(values) if values else None
