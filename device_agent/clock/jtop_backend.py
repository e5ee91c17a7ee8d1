"""Telemetry from the jetson-stats service (optional extra ``[jetson]``), clock through sysfs.

jetson-stats (AGPL-3.0) is imported only here, and this module only when the backend is chosen
or ``auto`` finds the service's socket. Its Python API cannot set the GPU clock (jetson.md
section 0), so pinning is delegated to :class:`~device_agent.clock.sysfs.SysfsBackend`; jtop
contributes what it reads well: per-rail power, temperatures, the nvpmodel power mode and the
jetson_clocks state. Its power figures refresh once per service interval (1 s by default), so
the energy meter integrates the sysfs rails directly where they exist and jtop's power only where
they do not.

Every read and write goes through the root ``jtop.service`` over ``/run/jtop.sock``; without the
service ``jtop().start()`` raises ``JtopException``, which becomes :class:`BackendUnavailable`
with the command that installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from device_agent.clock.base import (
    BackendError,
    BackendUnavailable,
    Capability,
    ClockBackend,
    EnergyMeter,
    IntegratingEnergyMeter,
    NotSupportedError,
)
from device_agent.clock.sysfs import SysfsBackend

JTOP_SOCKET = Path("/run/jtop.sock")
INSTALL_HINT = "pip install 'cutedge[jetson]', then sudo jtop --install-service"
# capabilities that come from the sysfs clock underneath
CLOCK_CAPS = frozenset({Capability.LEVELS, Capability.READ_CLOCK, Capability.PIN})


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def open_jtop_client(interval_s: float = 0.5) -> Any:
    """A started ``jtop.jtop`` client; :class:`BackendUnavailable` (one line) when it cannot be."""
    try:
        import jtop
    except ImportError:
        raise BackendUnavailable(f"jtop: jetson-stats is not installed ({INSTALL_HINT})") from None
    client = jtop.jtop(interval=interval_s)
    try:
        client.start()
    except jtop.JtopException as exc:
        raise BackendUnavailable(f"jtop: {_one_line(exc)}") from None
    return client


class JtopBackend(ClockBackend):
    """jtop telemetry over a started ``client``; clock operations go to ``clock`` (or are not
    supported when the board has no GPU devfreq node)."""

    name = "jtop"

    def __init__(self, client: Any, clock: SysfsBackend | None):
        self._client = client
        self._clock = clock
        caps = {Capability.TELEMETRY}
        if clock is not None:
            caps |= clock.capabilities & CLOCK_CAPS
        rails = self.power_w()
        if rails:
            caps |= {Capability.POWER, Capability.ENERGY}
            if len(rails) > 1:
                caps.add(Capability.RAILS)
        self.capabilities = frozenset(caps)
        self.device = clock.device if clock is not None else "jtop service (no GPU devfreq node)"

    def _fresh(self) -> Any:
        """The client, after surfacing an error its reader thread stored (lost service)."""
        import jtop

        try:
            self._client.ok(spin=True)
        except jtop.JtopException as exc:
            raise BackendError(f"jtop: {_one_line(exc)}") from None
        return self._client

    def _need_clock(self, what: str) -> SysfsBackend:
        if self._clock is None:
            raise NotSupportedError(f"jtop cannot {what} and this board has no GPU devfreq node")
        return self._clock

    def levels_hz(self) -> tuple[int, ...]:
        return self._need_clock("list GPU levels").levels_hz()

    def current_hz(self) -> int:
        return self._need_clock("read the GPU clock").current_hz()

    def pin(self, hz: int) -> int:
        return self._need_clock("set the GPU clock").pin(hz)

    def restore(self) -> dict[str, str]:
        return self._clock.restore() if self._clock is not None else {}

    # the clock state is the sysfs clock's: journal, reference and restore go to it
    @property
    def journal(self) -> Callable[[Mapping[str, str]], None] | None:
        return self._clock.journal if self._clock is not None else None

    @journal.setter
    def journal(self, hook: Callable[[Mapping[str, str]], None] | None) -> None:
        if self._clock is not None:
            self._clock.journal = hook

    def device_ref(self) -> dict[str, str] | None:
        return self._clock.device_ref() if self._clock is not None else None

    def restore_saved(self, saved: Mapping[str, str]) -> dict[str, str]:
        return self._need_clock("restore the GPU clock").restore_saved(saved)

    def power_w(self) -> dict[str, float | None]:
        rails = self._fresh().power.get("rail", {}) or {}
        return {
            name: (r["power"] / 1e3 if r.get("online", True) and "power" in r else None)
            for name, r in rails.items()
        }

    def board_power_w(self) -> float | None:
        tot = self._fresh().power.get("tot") or {}
        if "power" in tot:
            return tot["power"] / 1e3
        return super().board_power_w()

    def energy_meter(self, interval_s: float = 0.01) -> EnergyMeter:
        # jtop refreshes power once per service interval: far too coarse for slots, so use the
        # rails directly when sysfs has them.
        if self._clock is not None and Capability.ENERGY in self._clock.capabilities:
            return self._clock.energy_meter(interval_s)
        self.require(Capability.ENERGY, "measure energy")
        return IntegratingEnergyMeter(self.board_power_w, interval_s)

    def telemetry(self) -> dict[str, object]:
        c = self._fresh()
        temps = {
            name: t.get("temp")
            for name, t in (c.temperature or {}).items()
            if t.get("online", True)
        }
        jc = c.jetson_clocks
        return {
            "temperature_c": temps,
            "nvpmodel": c.nvpmodel.name if c.nvpmodel is not None else None,
            "jetson_clocks": None if jc is None else {"enabled": bool(jc), "status": jc.status},
            "interval_s": c.interval,
        }

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
