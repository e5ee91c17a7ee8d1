"""Per-level profiles (``cutedge profile --levels``): head time, head energy and idle power at
each GPU level, measured through a clock backend (``device_agent.clock``).

For each level in turn the clock is pinned (not with ``--levels current``), the board's idle
power is read over a short window (the meter over ``idle_s`` seconds with nothing running), and
every cut's head is timed by :func:`dnn_split.profile.time_runs` (warm-up, then at least
``repeats`` device-synchronised runs, more until they span ``energy_window_s``) with the
backend's energy meter running over exactly the timed runs. The head's energy above idle is

    head_j = (E_window - idle_w * T_window) / runs

and the board's power while heads run at that level is ``busy_w = idle_w + sum(head_j) /
sum(head_s)`` over the cuts whose energy was measured (``head_s``: the median time). The caller
marks the GPU busy around the heads (``backend.mark_busy``), which the simulated backend and the
test fakes use to tell busy from idle; real meters see it themselves.

Anything that cannot be measured (a level the backend refuses, a rail that reads nothing, a
meter too coarse for the head) is one line in :attr:`LevelTables.unmeasured`; the head times
are still kept. Pinning and restoring are the caller's: it holds the backend inside
``device_agent.clock.RestoreGuard`` (see ``cutedge/commands/profile.py``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from device_agent.clock.base import (
    INPUT_RAILS,
    BackendError,
    Capability,
    ClockBackend,
    EnergyMeter,
)
from dnn_split.partition import Partition
from dnn_split.profile import CutRow, example_input, measure_times, percentile, time_runs

#: a meter needs this many readings strictly inside a window for its figure to mean anything
MIN_READINGS = 2


def fmt_mhz(hz: float) -> str:
    return f"{hz / 1e6:g} MHz"


@dataclass(frozen=True)
class LevelSettings:
    """How long to look at each level (seconds) and how often the meter reads."""

    repeats: int = 20
    warmup: int = 3
    idle_s: float = 0.4
    energy_window_s: float = 0.25
    meter_interval_s: float = 0.005


@dataclass
class LevelTables:
    """What a run measured, per entry of ``levels_hz`` (the measured levels, ascending)."""

    levels_hz: list[int] = field(default_factory=list)
    idle_w: list[float | None] = field(default_factory=list)
    busy_w: list[float | None] = field(default_factory=list)
    rail: str | None = None
    unmeasured: list[str] = field(default_factory=list)
    #: the clock the tails were timed at (the highest measured level)
    tails_hz: int | None = None

    def document_keys(self) -> dict[str, Any]:
        """``levels_hz``, ``power`` and ``unmeasured`` as the profile schema writes them."""
        out: dict[str, Any] = {"levels_hz": list(self.levels_hz)}
        if self.rail is not None:
            out["power"] = {
                "rail": self.rail,
                "idle_w": [None if v is None else _sig(v) for v in self.idle_w],
                "busy_w": [None if v is None else _sig(v) for v in self.busy_w],
            }
        out["unmeasured"] = list(self.unmeasured)
        return out


def _sig(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


# -- the power meter --------------------------------------------------------------------------


def rail_name(backend: ClockBackend) -> str | None:
    """The name of what ``board_power_w()`` reads: the input rail, the only rail, or "total"
    (the sum of the rails); None when the backend reads no power."""
    if Capability.POWER not in backend.capabilities:
        return backend.name if Capability.ENERGY in backend.capabilities else None
    try:
        rails = backend.power_w()
    except BackendError:
        return "total"
    for name in INPUT_RAILS:
        if name in rails:
            return name
    if len(rails) == 1:
        return next(iter(rails))
    return "total"


def power_problem(backend: ClockBackend) -> str | None:
    """Why this backend's meter cannot give power or energy here, in one line; None if it can."""
    if Capability.ENERGY not in backend.capabilities:
        return (
            f"power: the {backend.name} backend on {backend.device} has no energy meter: "
            "no idle power or head energy measured"
        )
    if Capability.POWER not in backend.capabilities:
        return None
    try:
        watts = backend.board_power_w()
    except BackendError as exc:
        return f"power: {exc}: no idle power or head energy measured"
    if watts is None:
        return (
            f"power: rail {rail_name(backend)} of the {backend.name} backend reads nothing: "
            "no idle power or head energy measured"
        )
    return None


def _rail_quantum_w(rail: Any) -> float:
    """The smallest power step one sysfs rail reports (device_agent.clock.rails.Rail)."""
    if rail.layout == "hwmon":  # mV x mA: a 1 mA step at the rail's voltage
        try:
            mv = float(Path(rail.files[0]).read_text().strip())
        except (OSError, ValueError):
            mv = 5000.0
        return abs(mv) * 1e-6 or 1e-3
    if rail.layout == "iio":  # whole mW
        return 1e-3
    return 1e-6  # ina238: uW


def power_quantum_w(backend: ClockBackend) -> float:
    """The smallest step of ``board_power_w()`` (W): 0 for the simulated backend (exact)."""
    if backend.name == "simulated":
        return 0.0
    rails = getattr(backend, "rails", None)
    if rails is None:  # jtop: its meter reads the sysfs rails
        rails = getattr(getattr(backend, "_clock", None), "rails", None)
    if not rails:
        return 1e-3  # NVML: mW; anything else: assume mW
    by_name = {r.name: r for r in rails}
    for name in INPUT_RAILS:
        if name in by_name:
            return _rail_quantum_w(by_name[name])
    return math.fsum(_rail_quantum_w(r) for r in rails)


def meter_resolution_j(backend: ClockBackend, window_s: float) -> float:
    """The smallest energy over ``window_s`` the meter tells apart from none (J)."""
    counter_j = 1e-3 if backend.name == "nvml" else 0.0  # NVML's counter counts mJ
    return power_quantum_w(backend) * window_s + counter_j


class _Window:
    """An energy meter over a ``with`` block that records, rather than raises, a failure."""

    def __init__(self, meter: EnergyMeter):
        self.meter = meter
        self.error: BaseException | None = None
        self._started = False

    def __enter__(self) -> _Window:
        try:
            self.meter.start()
            self._started = True
        except BackendError as exc:
            self.error = exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started:
            try:
                self.meter.stop()
            except BackendError as err:
                self.error = err

    def reading(self) -> tuple[float, float, int | None]:
        """(joules, seconds covered, readings strictly inside the window or None if the meter
        is a counter that needs none)."""
        if self.error is not None:
            raise BackendError(str(self.error))
        energy = self.meter.read_j()
        samples = getattr(self.meter, "samples", None)
        inside = None if samples is None else max(samples - 2, 0)  # start and stop read too
        return energy, self.meter.elapsed_s, inside


# -- release of the software under the times ----------------------------------------------------


def tegra_release(root: Path | str = "/") -> str | None:
    """The L4T (JetPack) release from ``<root>/etc/nv_tegra_release``, e.g. ``R36.4.3``."""
    try:
        first = (Path(root) / "etc/nv_tegra_release").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    if m:
        return f"R{m.group(1)}.{m.group(2).rstrip('.')}"
    return first.lstrip("# ").strip() or None


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver version through NVML (while a backend holds NVML open), or None."""
    try:
        import pynvml

        version = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # noqa: BLE001 - no NVML here: the field is simply left out
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


# -- the run ------------------------------------------------------------------------------------


def run_time_estimate_s(
    rows: Sequence[CutRow],
    full_head_s: float,
    n_levels: int,
    settings: LevelSettings,
    *,
    metering: bool,
    slowdown: Sequence[float] | None = None,
) -> float:
    """About how long :func:`profile_levels` takes: per level the idle window and, per cut,
    warm-up plus timed runs (at least the energy window), then the tails once.

    ``full_head_s`` is one run of the whole model at the clock now; each head is taken as its
    share of the FLOPs. ``slowdown``: per level, head time there over head time now.
    """
    total = max((r.cut.head_flops for r in rows), default=0) or 1
    heads = [full_head_s * r.cut.head_flops / total for r in rows if r.cut.index != 0]
    runs = settings.warmup + settings.repeats
    window = settings.energy_window_s if metering else 0.0
    seconds = 0.0
    for i in range(n_levels):
        k = slowdown[i] if slowdown is not None else 1.0
        seconds += settings.idle_s if metering else 0.0
        seconds += sum(
            settings.warmup * h * k + max(settings.repeats * h * k, window) for h in heads
        )
    seconds += sum(runs * (full_head_s - h) for h in heads) + runs * full_head_s  # tails
    return seconds


def profile_levels(
    part: Partition,
    rows: Sequence[CutRow],
    device: torch.device,
    backend: ClockBackend,
    levels_hz: Sequence[int],
    *,
    pin: bool,
    settings: LevelSettings = LevelSettings(),
    unmeasured: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> LevelTables:
    """Measure ``rows`` at each of ``levels_hz`` (pinned when ``pin``) and fill each row's
    ``by_level`` lists, ``head_s`` (at the highest measured level) and ``tail_s``.

    ``unmeasured``: lines found before the run (levels not offered), kept first. ``warn`` gets
    each new unmeasured line as it is found. Raises :class:`BackendError` only for failures
    that leave no way on (the clock cannot be set back to the top level for the tails).
    """
    step = progress or (lambda n: None)
    tables = LevelTables(unmeasured=list(unmeasured), rail=rail_name(backend))

    def note(line: str) -> None:
        tables.unmeasured.append(line)
        if warn is not None:
            warn(line)

    problem = power_problem(backend)
    metering = problem is None
    if problem is not None:
        note(problem)
    x = example_input(part, device)
    n = len(rows)
    per_row: list[dict[int, tuple[float, float, float | None]]] = [{} for _ in rows]
    idle: dict[int, float | None] = {}
    pinned: int | None = None
    for hz in sorted(set(int(f) for f in levels_hz)):
        if pin:
            try:
                actual = backend.pin(hz)
            except BackendError as exc:
                note(f"level {fmt_mhz(hz)} ({hz} Hz) not measured: {exc}")
                step(n)
                continue
            pinned = hz
            if actual != hz:
                note(
                    f"level {fmt_mhz(hz)} ({hz} Hz) not measured: the clock reads {actual} Hz "
                    "after the pin (thermal throttling or the power mode's cap holds it)"
                )
                step(n)
                continue
        idle[hz] = _idle_power(backend, hz, settings, note) if metering else None
        coarse: dict[str, list[str]] = {}
        for i, r in enumerate(rows):
            per_row[i][hz] = _measure_head(
                part, r, x, device, backend, idle[hz], settings, coarse
            )
            step(1)
        for reason, names in coarse.items():
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            note(
                f"head energy at {fmt_mhz(hz)} not measured for {len(names)} of "
                f"{sum(r.cut.index != 0 for r in rows)} cuts ({shown}): {reason}"
            )
        tables.levels_hz.append(hz)
    if not tables.levels_hz:
        return tables
    top = tables.levels_hz[-1]
    if pin and pinned != top:
        backend.pin(top)  # the tails at the level head_s holds at
    tables.tails_hz = top
    measure_times(
        part, rows, device, repeats=settings.repeats, warmup=settings.warmup, progress=step,
        heads=False,
    )
    for i, r in enumerate(rows):
        got = [per_row[i][hz] for hz in tables.levels_hz]
        r.by_level = {
            "head_s_by_level": [g[0] for g in got],
            "head_p90_s_by_level": [g[1] for g in got],
            "head_j_by_level": [g[2] for g in got],
        }
        r.head_s = got[-1][0]
    for hz in tables.levels_hz:
        w = idle.get(hz)
        tables.idle_w.append(w)
        tables.busy_w.append(_busy_w(w, [per_row[i][hz] for i in range(n)]))
    return tables


def _busy_w(idle_w: float | None, cuts: list[tuple[float, float, float | None]]) -> float | None:
    """idle + sum of head energy / sum of head time, over the cuts whose energy was measured."""
    if idle_w is None:
        return None
    got = [(s, j) for s, _, j in cuts if j is not None and s > 0]
    seconds = math.fsum(s for s, _ in got)
    if not got or seconds <= 0:
        return None
    return idle_w + math.fsum(j for _, j in got) / seconds


def _idle_power(
    backend: ClockBackend, hz: int, settings: LevelSettings, note: Callable[[str], None]
) -> float | None:
    """The board's power over ``settings.idle_s`` with nothing running, at the pinned level."""
    backend.mark_busy(False)
    win = _Window(backend.energy_meter(settings.meter_interval_s))
    with win:
        time.sleep(settings.idle_s)
    what = f"idle power at {fmt_mhz(hz)} not measured"
    try:
        energy, seconds, inside = win.reading()
    except BackendError as exc:
        note(f"{what}: {exc}; no head energy at this level")
        return None
    if inside is not None and inside < MIN_READINGS:
        note(
            f"{what}: the meter took {inside} reading(s) in the {settings.idle_s:g} s window "
            f"(it reads every {settings.meter_interval_s:g} s): give a longer --idle-s; "
            "no head energy at this level"
        )
        return None
    if not seconds > 0:
        note(f"{what}: the meter covered no time (the rail reads nothing); no head energy here")
        return None
    return energy / seconds


def _measure_head(
    part: Partition,
    r: CutRow,
    x: torch.Tensor,
    device: torch.device,
    backend: ClockBackend,
    idle_w: float | None,
    settings: LevelSettings,
    coarse: dict[str, list[str]],
) -> tuple[float, float, float | None]:
    """(median s, p90 s, energy above idle J or None) of one cut's head at the level now."""
    if r.cut.index == 0:  # the input cut runs nothing on the device
        return 0.0, 0.0, 0.0
    head = part.head(r.cut)
    win = _Window(backend.energy_meter(settings.meter_interval_s)) if idle_w is not None else None
    backend.mark_busy(True)
    try:
        times = time_runs(
            head,
            (x,),
            device,
            settings.repeats,
            settings.warmup,
            min_s=settings.energy_window_s if win is not None else 0.0,
            window=win,
        )
    finally:
        backend.mark_busy(False)
    median, p90 = percentile(times, 0.5), percentile(times, 0.9)
    if win is None or idle_w is None:
        return median, p90, None
    try:
        energy, seconds, inside = win.reading()
    except BackendError as exc:
        coarse.setdefault(f"the meter failed: {exc}", []).append(r.cut.name)
        return median, p90, None
    if inside is not None and inside < MIN_READINGS:
        coarse.setdefault(
            f"fewer than {MIN_READINGS} meter readings inside the timed window (the meter reads "
            f"every {settings.meter_interval_s:g} s): give a longer --energy-window-s",
            [],
        ).append(r.cut.name)
        return median, p90, None
    above = energy - idle_w * seconds
    resolution = meter_resolution_j(backend, seconds)
    if not above > resolution:
        coarse.setdefault(
            "the energy above idle over the timed runs is within the meter's resolution "
            f"({power_quantum_w(backend) * 1e3:g} mW over the window): the heads draw no "
            "power the meter sees above idle, or too briefly (a longer --energy-window-s)",
            [],
        ).append(r.cut.name)
        return median, p90, None
    return median, p90, above / len(times)


__all__ = [
    "LevelSettings",
    "LevelTables",
    "fmt_mhz",
    "meter_resolution_j",
    "nvidia_driver_version",
    "power_problem",
    "power_quantum_w",
    "profile_levels",
    "rail_name",
    "run_time_estimate_s",
    "tegra_release",
]
