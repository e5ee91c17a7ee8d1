"""A simulated GPU calibrated from a board profile, so the live agent runs (and is tested) anywhere.

Levels, switch latency and the busy/idle power model come from ``configs/boards/<name>.yaml``
(:class:`controller.profiles.BoardProfile`). Power depends on the clock and on whether the caller
has marked the GPU busy (:meth:`SimulatedBackend.mark_busy`), the same split the controller's
energy model makes. Energy is kept exactly, as an integral of that piecewise-constant power, so
the meter is a counter and the figure does not depend on a sampling rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from controller.profiles import BoardProfile
from device_agent.clock.base import (
    Capability,
    ClockBackend,
    CounterEnergyMeter,
    EnergyMeter,
    NotALevelError,
)

#: the board ``auto`` simulates when no ``--board`` is given
DEFAULT_BOARD = "jetson-orin-nano"


class SimulatedBackend(ClockBackend):
    """A board profile acting as a GPU.

    ``initial_hz`` is the clock "found" at start (the top level by default) and what
    :meth:`restore` returns to. ``clock`` and ``sleep`` let a test run it on simulated time;
    :meth:`pin` sleeps the profile's switch latency when the level changes, as hardware takes
    that long to settle.
    """

    name = "simulated"
    capabilities = frozenset(
        {
            Capability.LEVELS,
            Capability.READ_CLOCK,
            Capability.PIN,
            Capability.POWER,
            Capability.ENERGY,
        }
    )

    def __init__(
        self,
        board: BoardProfile,
        *,
        initial_hz: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.board = board
        self.device = f"{board.name} (simulated from {board.source or 'a board profile'})"
        self._levels = tuple(int(f) for f in board.levels_hz)
        initial = self._levels[-1] if initial_hz is None else int(initial_hz)
        if initial not in self._levels:
            raise NotALevelError(initial, self._levels, board.name)
        self._initial_hz = initial
        self._hz = initial
        self._busy = False
        self._pinned = False
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._energy_j = 0.0
        self._t_last = clock()

    def _power_now_w(self) -> float:
        model = self.board.busy_power_w if self._busy else self.board.idle_power_w
        return float(model(float(self._hz)))

    def _advance(self) -> None:
        """Book the energy of the state that held since the last change (lock held)."""
        t = self._clock()
        self._energy_j += self._power_now_w() * (t - self._t_last)
        self._t_last = t

    def _set_hz(self, hz: int) -> None:
        if hz != self._hz:
            self._sleep(self.board.switch_latency_s)
        with self._lock:
            self._advance()
            self._hz = hz

    def levels_hz(self) -> tuple[int, ...]:
        return self._levels

    def current_hz(self) -> int:
        return self._hz

    def pin(self, hz: int) -> int:
        hz = int(hz)
        if hz not in self._levels:
            raise NotALevelError(hz, self._levels, self.board.name)
        self._pinned = True
        self._set_hz(hz)
        return self._hz

    def restore(self) -> dict[str, str]:
        if not self._pinned:
            return {}
        self._pinned = False
        self._set_hz(self._initial_hz)
        return {"gpu_hz": str(self._initial_hz)}

    def mark_busy(self, busy: bool) -> None:
        with self._lock:
            self._advance()
            self._busy = bool(busy)

    def power_w(self) -> dict[str, float | None]:
        with self._lock:
            return {"board": self._power_now_w()}

    def total_energy_j(self) -> float:
        """Joules since the backend was made, up to now."""
        with self._lock:
            self._advance()
            return self._energy_j

    def energy_meter(self, interval_s: float = 0.01) -> EnergyMeter:
        return CounterEnergyMeter(self.total_energy_j, self._clock)
