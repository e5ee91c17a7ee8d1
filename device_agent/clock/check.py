"""Check any backend against the :class:`~device_agent.clock.base.ClockBackend` contract.

Like Gymnasium's environment checker: tests run it on every backend, and a user can run it on a
board before trusting the live agent with it. It exercises each capability the backend claims
(types, units, ordering, error types) and checks that the ones it does not claim raise
:class:`NotSupportedError` rather than answer. With ``pin=True`` it pins the lowest and the
highest level and restores, so run it where changing the clock for a moment is acceptable.
"""

from __future__ import annotations

import math
from typing import Any

from device_agent.clock.base import (
    BackendError,
    Capability,
    ClockBackend,
    NotALevelError,
    NotSupportedError,
)


class ConformanceError(AssertionError):
    """A backend breaks the contract; the message lists every problem found."""


def _finite_nonneg(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def check_backend(
    backend: ClockBackend, *, pin: bool = True, energy_s: float = 0.05
) -> dict[str, Any]:
    """Run the checks; return what was observed, or raise :class:`ConformanceError`."""
    import time

    problems: list[str] = []
    seen: dict[str, Any] = {"backend": backend.name, "device": backend.device}
    caps = backend.capabilities

    def expect_unsupported(cap: Capability, call: Any, what: str) -> None:
        if cap in caps:
            return
        try:
            call()
        except NotSupportedError:
            return
        except Exception as exc:
            problems.append(
                f"{what} without {cap.value!r} raised {type(exc).__name__}, not NotSupportedError"
            )
            return
        problems.append(
            f"{what} without {cap.value!r} returned instead of raising NotSupportedError"
        )

    if not isinstance(backend.name, str) or not backend.name or not isinstance(backend.device, str):
        problems.append("name and device must be non-empty strings")
    if not isinstance(caps, frozenset) or not all(isinstance(c, Capability) for c in caps):
        problems.append(f"capabilities must be a frozenset of Capability, got {caps!r}")
        raise ConformanceError("; ".join(problems))

    levels: tuple[int, ...] = ()
    if Capability.LEVELS in caps:
        levels = backend.levels_hz()
        seen["levels_hz"] = levels
        if not levels or not all(isinstance(f, int) and f > 0 for f in levels):
            problems.append(f"levels_hz() must be non-empty positive ints, got {levels!r}")
        elif list(levels) != sorted(set(levels)):
            problems.append("levels_hz() must be strictly ascending")
    expect_unsupported(Capability.LEVELS, backend.levels_hz, "levels_hz()")

    if Capability.READ_CLOCK in caps:
        cur = backend.current_hz()
        seen["current_hz"] = cur
        if not isinstance(cur, int) or cur <= 0:
            problems.append(f"current_hz() must be a positive int, got {cur!r}")
    expect_unsupported(Capability.READ_CLOCK, backend.current_hz, "current_hz()")

    if Capability.PIN in caps:
        if Capability.LEVELS not in caps:
            problems.append("'pin' needs 'levels': a caller must know what it may pin")
        elif pin:
            bad = levels[-1] + 1
            try:
                backend.pin(bad)
                problems.append(f"pin({bad}) of a non-level did not raise")
            except NotALevelError as exc:
                if not exc.nearest_hz or not set(exc.nearest_hz) <= set(levels):
                    problems.append(f"NotALevelError.nearest_hz {exc.nearest_hz!r} are not levels")
            try:
                for f in (levels[0], levels[-1], levels[0]):
                    actual = backend.pin(f)
                    if not isinstance(actual, int) or actual <= 0:
                        problems.append(
                            f"pin({f}) must return the clock reached in Hz, got {actual!r}"
                        )
                seen["pinned_hz"] = actual
            finally:
                first = backend.restore()
                second = backend.restore()
            if not isinstance(first, dict) or not first:
                problems.append(f"restore() after pin() must say what it restored, got {first!r}")
            if second != {}:
                problems.append(
                    f"a second restore() must do nothing and return {{}}, got {second!r}"
                )
            seen["restored"] = first
    else:
        expect_unsupported(Capability.PIN, lambda: backend.pin(levels[0] if levels else 1), "pin()")
    try:
        if backend.restore() != {}:
            problems.append("restore() with nothing pinned must return {}")
    except BackendError as exc:
        problems.append(f"restore() with nothing pinned raised {exc}")

    if Capability.POWER in caps:
        rails = backend.power_w()
        seen["power_w"] = rails
        if not isinstance(rails, dict) or not rails:
            problems.append(f"power_w() must be a non-empty dict, got {rails!r}")
        else:
            for name, w in rails.items():
                if not isinstance(name, str) or not (w is None or _finite_nonneg(w)):
                    problems.append(f"power_w()[{name!r}] = {w!r}: expected watts >= 0 or None")
            if Capability.RAILS in caps and len(rails) < 2:
                problems.append("'rails' claimed but power_w() has one rail")
        total = backend.board_power_w()
        if not (total is None or _finite_nonneg(total)):
            problems.append(f"board_power_w() = {total!r}: expected watts >= 0 or None")
    expect_unsupported(Capability.POWER, backend.power_w, "power_w()")

    if Capability.ENERGY in caps:
        meter = backend.energy_meter(interval_s=min(0.01, energy_s / 4))
        meter.start()
        try:
            time.sleep(energy_s / 2)
            a = meter.read_j()
            time.sleep(energy_s / 2)
            b = meter.read_j()
        finally:
            c = meter.stop()
        seen["energy_j"] = c
        if not all(_finite_nonneg(x) for x in (a, b, c)) or not a <= b <= c:
            problems.append(
                f"energy readings must be >= 0 and never decrease, got {a!r}, {b!r}, {c!r}"
            )
        if meter.read_j() != c:
            problems.append("read_j() after stop() must return the final figure")
    expect_unsupported(Capability.ENERGY, backend.energy_meter, "energy_meter()")

    if Capability.TELEMETRY in caps:
        tele = backend.telemetry()
        seen["telemetry"] = tele
        if not isinstance(tele, dict):
            problems.append(f"telemetry() must return a dict, got {type(tele).__name__}")
    expect_unsupported(Capability.TELEMETRY, backend.telemetry, "telemetry()")

    if problems:
        raise ConformanceError(f"{backend.name} backend: " + "; ".join(problems))
    return seen
