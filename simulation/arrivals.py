"""Frame arrival processes: a camera at a fixed rate, Poisson, or timestamps from a file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from controller.config import ConfigError

ARRIVAL_PROCESSES = ("camera", "poisson", "trace")


@dataclass(frozen=True)
class ArrivalSpec:
    process: str = "camera"
    rate_fps: float = 10.0
    path: str | None = None  # for "trace": one arrival time in seconds a line

    def times(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times in [0, duration_s)."""
        if self.process == "camera":
            period = 1.0 / self.rate_fps
            # a random phase so runs with different seeds do not all align with slot edges
            return np.arange(rng.uniform(0.0, period), duration_s, period)
        if self.process == "poisson":
            n = rng.poisson(self.rate_fps * duration_s)
            return np.sort(rng.uniform(0.0, duration_s, size=n))
        if self.process == "trace":
            times = read_arrival_times(self.path)
            return times[times < duration_s]
        raise ValueError(f"unknown arrival process {self.process!r}")


def read_arrival_times(path: str | os.PathLike[str] | None) -> np.ndarray:
    """Read frame timestamps (seconds, one a line, non-decreasing) from ``path``."""
    if path is None:
        raise ConfigError("arrivals", "path", "the trace arrival process needs a path")
    try:
        text = open(path, "rb").read()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read arrival times: {exc.strerror}") from None
    try:
        lines = text.decode("utf-8").split()
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not a text file of arrival times") from None
    if not lines:
        raise ConfigError(path, None, "file is empty")
    try:
        times = np.array([float(x) for x in lines])
    except ValueError:
        bad = next(i for i, x in enumerate(lines) if not _is_float(x))
        raise ConfigError(path, f"value {bad + 1}", f"not a number: {lines[bad][:30]!r}") from None
    if not np.all(np.isfinite(times)) or (times < 0).any():
        raise ConfigError(path, None, "arrival times must be finite and >= 0")
    if (np.diff(times) < 0).any():
        i = int(np.argmax(np.diff(times) < 0)) + 1
        raise ConfigError(path, f"value {i + 1}", "arrival times must not decrease")
    return times


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def arrivals_per_slot(times_s: np.ndarray, slot_s: float, n_slots: int) -> np.ndarray:
    """How many of ``times_s`` fall in each of ``n_slots`` slots (those after the last are not counted)."""
    t = np.asarray(times_s, dtype=float)
    t = t[t < n_slots * slot_s]
    return np.bincount(np.minimum((t // slot_s).astype(np.int64), n_slots - 1), minlength=n_slots)
