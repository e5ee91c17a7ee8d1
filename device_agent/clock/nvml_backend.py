"""Desktop and server NVIDIA GPUs through NVML (optional extra ``[nvml]``: ``nvidia-ml-py``).

Clock levels are the supported graphics clocks at the highest memory clock; pinning uses locked
clocks (``nvmlDeviceSetGpuLockedClocks`` with min = max), which needs root and a Volta or newer
GPU; restoring resets the locked clocks. NVML cannot report which locked clocks were set before,
so :meth:`NvmlBackend.restore` returns the GPU to its default range, not to an earlier lock.
Power is ``nvmlDeviceGetPowerUsage`` (a one-second average on Ampere and newer); energy is the
driver's total-energy counter where the GPU has one (Volta+), else integrated power.

Every NVML failure is a subclass of ``pynvml.NVMLError``; the ones a user can act on (no
permission, not supported, no driver) become one-line :class:`BackendError` subclasses. On a
Jetson (Tegra) NVML is partial at best and must not set clocks (jetson.md section 3), so pinning
is left out of the capabilities there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from device_agent.clock.base import (
    BackendError,
    BackendUnavailable,
    Capability,
    ClockBackend,
    CounterEnergyMeter,
    EnergyMeter,
    IntegratingEnergyMeter,
    NotALevelError,
    NotSupportedError,
    PermissionDeniedError,
)
from device_agent.clock.sysfs import is_tegra

log = logging.getLogger(__name__)
MHZ = 1_000_000
#: what a restore does on NVML (and what the crash-safe state file records)
RESET = {"locked_clocks": "reset (default range)"}


def import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise BackendUnavailable(
            "NVML: nvidia-ml-py is not installed (pip install 'cutedge[nvml]')"
        ) from None
    return pynvml


class NvmlBackend(ClockBackend):
    """GPU ``index`` through NVML. ``root`` is where to look for signs of a Jetson (Tegra)."""

    name = "nvml"

    def __init__(self, index: int = 0, *, root: Path | str = "/"):
        N = self._nvml = import_pynvml()
        try:
            N.nvmlInit()
        except N.NVMLError_LibraryNotFound as exc:
            raise BackendUnavailable(f"NVML: {exc} (no NVIDIA driver on this machine)") from None
        except N.NVMLError_DriverNotLoaded as exc:
            raise BackendUnavailable(f"NVML: {exc} (load the NVIDIA driver first)") from None
        except N.NVMLError as exc:
            raise BackendUnavailable(f"NVML: initialisation failed: {exc}") from None
        self._open = True
        try:
            self._handle = self._call(N.nvmlDeviceGetHandleByIndex, index, what=f"open GPU {index}")
            name = self._call(N.nvmlDeviceGetName, self._handle, what="read the GPU name")
        except BackendError as exc:
            self.close()
            raise BackendUnavailable(str(exc)) from None
        name = name.decode() if isinstance(name, bytes) else str(name)
        self.index = index
        self.device = f"GPU {index}: {name}"
        self.tegra = is_tegra(root)
        self._pinned = False
        caps: set[Capability] = set()
        self._levels: tuple[int, ...] = ()
        if self._probe(self._read_levels):
            caps.add(Capability.LEVELS)
            if not self.tegra:
                caps.add(Capability.PIN)
        if self._probe(self._read_hz):
            caps.add(Capability.READ_CLOCK)
        if self._probe(self._read_power_w):
            caps |= {Capability.POWER, Capability.ENERGY}
        self._has_counter = self._probe(self._read_energy_j)
        if self._has_counter:
            caps.add(Capability.ENERGY)
        self.capabilities = frozenset(caps)

    # -- NVML calls with errors a user can act on -------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, what: str) -> Any:
        N = self._nvml
        try:
            return fn(*args)
        except N.NVMLError_NoPermission:
            raise PermissionDeniedError(
                f"NVML: {what} needs root: run it as root (sudo cutedge device ...)"
            ) from None
        except N.NVMLError_NotSupported:
            raise NotSupportedError(
                f"NVML: {what} is not supported on {self.device or 'this GPU'}"
            ) from None
        except N.NVMLError as exc:
            raise BackendError(f"NVML: cannot {what}: {exc}") from None

    @staticmethod
    def _probe(read: Callable[[], Any]) -> bool:
        try:
            read()
        except NotSupportedError:
            return False
        except BackendError as exc:  # permission or a transient error: report, do not claim it
            log.info("%s", exc)
            return False
        return True

    def _read_levels(self) -> None:
        N = self._nvml
        mem = self._call(
            N.nvmlDeviceGetSupportedMemoryClocks, self._handle, what="list memory clocks"
        )
        if not mem:
            raise NotSupportedError("NVML: no supported memory clocks listed")
        gfx = self._call(
            N.nvmlDeviceGetSupportedGraphicsClocks,
            self._handle,
            max(mem),
            what="list graphics clocks",
        )
        self._levels = tuple(sorted({int(m) * MHZ for m in gfx}))
        if not self._levels:
            raise NotSupportedError("NVML: no supported graphics clocks listed")

    def _read_hz(self) -> int:
        N = self._nvml
        return (
            int(
                self._call(
                    N.nvmlDeviceGetClockInfo,
                    self._handle,
                    N.NVML_CLOCK_GRAPHICS,
                    what="read the graphics clock",
                )
            )
            * MHZ
        )

    def _read_power_w(self) -> float:
        N = self._nvml
        return self._call(N.nvmlDeviceGetPowerUsage, self._handle, what="read power") / 1e3

    def _read_energy_j(self) -> float:
        N = self._nvml
        return (
            self._call(
                N.nvmlDeviceGetTotalEnergyConsumption, self._handle, what="read the energy counter"
            )
            / 1e3
        )

    # -- the contract -----------------------------------------------------------------------------
    def levels_hz(self) -> tuple[int, ...]:
        self.require(Capability.LEVELS, "list GPU levels")
        return self._levels

    def current_hz(self) -> int:
        self.require(Capability.READ_CLOCK, "read the GPU clock")
        return self._read_hz()

    def pin(self, hz: int) -> int:
        what = "pin the GPU clock" + (" (a Jetson: use the sysfs backend)" if self.tegra else "")
        self.require(Capability.PIN, what)
        hz = int(hz)
        if hz not in self._levels:
            raise NotALevelError(hz, self._levels, self.device)
        N = self._nvml
        mhz = hz // MHZ
        first = not self._pinned
        if first:
            self._remember(RESET)
        self._pinned = True  # before the call: a signal right after it must still restore
        try:
            self._call(
                N.nvmlDeviceSetGpuLockedClocks, self._handle, mhz, mhz, what="locking GPU clocks"
            )
        except BackendError:
            if first:
                self._pinned = False
            raise
        cur = self._read_hz() if Capability.READ_CLOCK in self.capabilities else hz
        if cur != hz:
            log.warning(
                "%s: graphics clock reads %d Hz after locking %d Hz (power or thermal cap)",
                self.device,
                cur,
                hz,
            )
        return cur

    def device_ref(self) -> dict[str, str]:
        return {
            "kind": "nvml",
            "id": f"nvml:{self.index}",
            "name": self.device,
            "index": str(self.index),
        }

    def restore_saved(self, saved: Mapping[str, str]) -> dict[str, str]:
        # NVML cannot set back an earlier lock: whatever was saved, the reset is the restore
        self._pinned = True
        return self.restore()

    def restore(self) -> dict[str, str]:
        if not self._pinned:
            return {}
        N = self._nvml
        self._call(N.nvmlDeviceResetGpuLockedClocks, self._handle, what="resetting locked clocks")
        self._pinned = False
        return dict(RESET)

    def power_w(self) -> dict[str, float | None]:
        self.require(Capability.POWER, "read power")
        return {"gpu": self._read_power_w()}

    def energy_meter(self, interval_s: float = 0.01) -> EnergyMeter:
        self.require(Capability.ENERGY, "measure energy")
        if self._has_counter:
            return CounterEnergyMeter(self._read_energy_j)
        return IntegratingEnergyMeter(self.board_power_w, interval_s)

    def close(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.info("NVML shutdown: %s", exc)
