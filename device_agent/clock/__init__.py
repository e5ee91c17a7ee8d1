"""GPU clock and power backends for the device agent: one contract, four implementations.

* :mod:`~device_agent.clock.base`: the contract (:class:`ClockBackend`, :class:`Capability`,
  the exceptions, energy meters);
* :mod:`~device_agent.clock.sysfs`: Jetson devfreq + INA3221 rails (primary);
* :mod:`~device_agent.clock.jtop_backend`: jetson-stats telemetry, clock through sysfs;
* :mod:`~device_agent.clock.nvml_backend`: desktop/server GPUs through NVML;
* :mod:`~device_agent.clock.simulated`: a board profile acting as a GPU;
* :func:`open_backend` (by name or ``auto``), :class:`RestoreGuard` (restore on every exit),
  :func:`check_backend` (conformance checker);
* :mod:`~device_agent.clock.state`: the clock state on disk that survives a crash (lock, state
  file, runtime directory); :func:`reopen` opens the device a state file names.

Importing this package loads neither jetson-stats, NVML nor numpy: the optional libraries are
imported only when their backend is chosen or detected.
"""

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
    nearest_levels,
    total_power_w,
)
from device_agent.clock.check import ConformanceError, check_backend
from device_agent.clock.guard import RestoreGuard, put_back
from device_agent.clock.selection import BACKENDS, Selection, open_backend, reopen
from device_agent.clock.state import (
    ClockBusyError,
    ClockLock,
    ClockStateError,
    read_state,
    runtime_dir,
    state_files,
)

__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendUnavailable",
    "Capability",
    "ClockBackend",
    "ClockBusyError",
    "ClockLock",
    "ClockStateError",
    "ConformanceError",
    "CounterEnergyMeter",
    "EnergyMeter",
    "IntegratingEnergyMeter",
    "NotALevelError",
    "NotSupportedError",
    "PermissionDeniedError",
    "RestoreGuard",
    "Selection",
    "check_backend",
    "nearest_levels",
    "open_backend",
    "put_back",
    "read_state",
    "reopen",
    "runtime_dir",
    "state_files",
    "total_power_w",
]
