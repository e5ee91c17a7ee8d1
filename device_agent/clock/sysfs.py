"""Jetson GPU clock through devfreq sysfs, power through the INA3221 rails (the primary backend).

jetson-stats cannot set the GPU clock (jetson.md section 0), so the agent writes devfreq itself:
pinning is ``min_freq = max_freq = f`` under the default governor, the recipe of NVIDIA's L4T
"Clocks" document. Two details matter on real boards:

* Write order. L4T 4.9 kernels reject ``min_freq > max_freq`` with EINVAL, and newer ones clamp
  (max wins), so min must never go above max, not even between the two writes: when the new min
  is above the current max, max is written first; otherwise min first.
* Confirmation. The power mode (nvpmodel) caps the clock and thermal throttling lowers it, so
  ``cur_freq`` is read back for a short while; if it does not reach the level the backend logs a
  warning and returns what it reads. It never waits on the hardware without a bound.

Every path is under ``root`` (``--sysfs-root``), so a copy of a board's tree works the same.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from device_agent.clock.base import (
    INPUT_RAILS,
    BackendError,
    BackendUnavailable,
    Capability,
    ClockBackend,
    NotALevelError,
    PermissionDeniedError,
)
from device_agent.clock.rails import Rail, find_rails, read_rails

log = logging.getLogger(__name__)

#: ``device/of_node/name`` of Jetson GPU devfreq nodes (what jtop matches too)
GPU_OF_NAMES = ("gp10b", "gv11b", "ga10b", "gb10b", "gpu")
#: devfreq nodes without an of_node that are the GPU: Thor's GPC clock
GPU_NODE_NAMES = ("gpu-gpc-0",)

PERMISSION_HINT = (
    "run as root (sudo cutedge device ...) or install the udev rule in docs/device-backends.md "
    "that lets group 'cutedge' write min_freq and max_freq"
)


# All attribute reads and writes go through these functions.
def read_attr(path: Path) -> str:
    """Read one sysfs attribute as stripped text; errors become one-line BackendErrors."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise BackendError(f"cannot read {path}: no such file") from None
    except PermissionError:
        raise PermissionDeniedError(
            f"cannot read {path}: permission denied; {PERMISSION_HINT}"
        ) from None
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from None


def store(path: Path, value: str) -> None:
    """The write(2) itself, in one call as sysfs expects; tests put a fake kernel here."""
    with open(path, "w") as f:
        f.write(value)


def write_attr(path: Path, value: str) -> None:
    """Write one sysfs attribute; errors become one-line BackendErrors."""
    try:
        store(path, value)
    except FileNotFoundError:
        raise BackendError(f"cannot write {path}: no such file") from None
    except PermissionError:
        raise PermissionDeniedError(
            f"cannot write {path}: permission denied; {PERMISSION_HINT}"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise BackendError(
                f"cannot write {value} to {path}: the kernel rejected it (EINVAL)"
            ) from None
        raise BackendError(f"cannot write {path}: {exc.strerror or exc}") from None


def _int_attr(path: Path) -> int:
    text = read_attr(path)
    try:
        return int(text)
    except ValueError:
        raise BackendError(f"{path}: expected a number of Hz, got {text[:40]!r}") from None


def of_node_name(node: Path) -> str | None:
    """The device-tree name of a devfreq node's device; None where it has no of_node (Thor).

    Device-tree string properties end in a NUL byte, which is not part of the name.
    """
    try:
        raw = (node / "device" / "of_node" / "name").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\x00\n ").decode("ascii", "replace")


def scan_devfreq(root: Path | str = "/") -> list[tuple[Path, str | None]]:
    """Every devfreq node under ``root`` with its of_node name, sorted by node name."""
    base = Path(root) / "sys/class/devfreq"
    try:
        nodes = sorted(base.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    return [(n, of_node_name(n)) for n in nodes]


def find_gpu_devfreq(
    root: Path | str = "/", of_names: tuple[str, ...] = GPU_OF_NAMES
) -> Path | None:
    """The GPU's devfreq node: the first whose of_node name is in ``of_names``, or Thor's
    ``gpu-gpc-0``. Always discovered, never hard-coded: paths differ by SoC and JetPack."""
    for node, name in scan_devfreq(root):
        if name in of_names or (name is None and node.name in GPU_NODE_NAMES):
            return node
    return None


class SysfsBackend(ClockBackend):
    """GPU clock through devfreq ``min_freq``/``max_freq``; power from the INA3221 rails.

    ``governor``: a governor to switch to while pinned (for BSPs whose load governor does not
    honour min = max); ``None`` keeps the current one. ``settle_s``: how long :meth:`pin` reads
    ``cur_freq`` back before it reports a clamped clock.
    """

    name = "sysfs"

    def __init__(
        self,
        root: Path | str = "/",
        *,
        node: Path | None = None,
        of_names: tuple[str, ...] = GPU_OF_NAMES,
        governor: str | None = None,
        settle_s: float = 0.25,
    ):
        self.root = Path(root)
        if node is None:
            node = find_gpu_devfreq(self.root, of_names)
        if node is None:
            seen = ", ".join(f"{n.name} ({o or 'no of_node'})" for n, o in scan_devfreq(self.root))
            raise BackendUnavailable(
                f"no GPU devfreq node under {self.root / 'sys/class/devfreq'} "
                f"(looked for of_node names {', '.join(of_names)} or {', '.join(GPU_NODE_NAMES)}; "
                f"found: {seen or 'none'})"
            )
        self.node = node
        self.settle_s = settle_s
        self._levels = self._read_levels()
        self._governor = governor
        if governor is not None:
            self._check_governor(governor)
        self.rails: list[Rail] = find_rails(self.root)
        by_name = {r.name: r for r in self.rails}
        self._input_rail = next((by_name[n] for n in INPUT_RAILS if n in by_name), None)
        of_name = of_node_name(node)
        self.device = f"{node.name} ({of_name or 'GPU'}) at {node}"
        caps = {Capability.LEVELS, Capability.READ_CLOCK, Capability.PIN}
        if self.rails:
            caps |= {Capability.POWER, Capability.ENERGY}
            if len(self.rails) > 1:
                caps.add(Capability.RAILS)
        self.capabilities = frozenset(caps)
        self._saved: dict[str, str] | None = None
        self._wrote = False

    # -- clock ------------------------------------------------------------------------------------
    def _read_levels(self) -> tuple[int, ...]:
        path = self.node / "available_frequencies"
        text = read_attr(path)
        try:
            levels = tuple(sorted({int(v) for v in text.split()}))
        except ValueError:
            raise BackendError(
                f"{path}: expected Hz values separated by spaces, got {text[:60]!r}"
            ) from None
        if not levels or levels[0] <= 0:
            raise BackendError(f"{path}: no GPU levels listed")
        return levels

    def _check_governor(self, governor: str) -> None:
        path = self.node / "available_governors"
        if path.exists():
            known = read_attr(path).split()
            if governor not in known:
                raise BackendError(f"governor {governor!r} is not in {path} ({', '.join(known)})")

    def levels_hz(self) -> tuple[int, ...]:
        return self._levels

    def current_hz(self) -> int:
        return _int_attr(self.node / "cur_freq")

    def limits_hz(self) -> tuple[int, int]:
        """The devfreq ``(min_freq, max_freq)`` now."""
        return _int_attr(self.node / "min_freq"), _int_attr(self.node / "max_freq")

    def _write_limits(self, min_hz: int, max_hz: int) -> None:
        """Set min and max without min ever exceeding max, not even between the writes."""
        _, cur_max = self.limits_hz()
        order = ("max_freq", "min_freq") if min_hz > cur_max else ("min_freq", "max_freq")
        values = {"min_freq": min_hz, "max_freq": max_hz}
        for attr in order:
            self._write(attr, str(values[attr]))

    def _write(self, attr: str, value: str) -> None:
        # the flag goes first: a signal that lands just after the write must still restore
        first, self._wrote = not self._wrote, True
        try:
            write_attr(self.node / attr, value)
        except BackendError:
            if first:  # nothing was changed: nothing to undo
                self._wrote = False
            raise

    def pin(self, hz: int) -> int:
        hz = int(hz)
        if hz not in self._levels:
            raise NotALevelError(hz, self._levels, self.node.name)
        if self._saved is None:
            min_hz, max_hz = self.limits_hz()
            self._saved = {"min_freq": str(min_hz), "max_freq": str(max_hz)}
            gov = self.node / "governor"
            if gov.exists():
                self._saved["governor"] = read_attr(gov)
            try:
                self._remember(self._saved)
            except BaseException:
                self._saved = None
                raise
        if self._governor is not None and self._saved.get("governor") != self._governor:
            self._write("governor", self._governor)
        self._write_limits(hz, hz)
        return self._confirm(hz)

    def _confirm(self, hz: int) -> int:
        deadline = time.monotonic() + self.settle_s
        while True:
            cur = self.current_hz()
            if cur == hz or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        if cur != hz:
            min_hz, max_hz = self.limits_hz()
            log.warning(
                "%s: cur_freq reads %d Hz %.2f s after pinning %d Hz (min_freq %d, max_freq %d): "
                "thermal throttling or the nvpmodel cap holds the clock",
                self.node.name,
                cur,
                self.settle_s,
                hz,
                min_hz,
                max_hz,
            )
        return cur

    def device_ref(self) -> dict[str, str]:
        real = self.node.resolve()
        return {
            "kind": "sysfs",
            "id": str(real),
            "name": self.node.name,
            "root": str(self.root),
            "node": str(self.node),
        }

    def restore_saved(self, saved: Mapping[str, str]) -> dict[str, str]:
        missing = {"min_freq", "max_freq"} - set(saved)
        if missing:
            raise BackendError(f"saved clock state lacks {', '.join(sorted(missing))}")
        self._saved, self._wrote = dict(saved), True
        return self.restore()

    def restore(self) -> dict[str, str]:
        saved, self._saved = self._saved, None
        wrote, self._wrote = self._wrote, False
        if saved is None or not wrote:  # nothing pinned, or the first write already failed
            return {}
        errors = []
        try:
            self._write_limits(int(saved["min_freq"]), int(saved["max_freq"]))
        except BackendError as exc:
            errors.append(str(exc))
        gov = saved.get("governor")
        try:
            if gov is not None and read_attr(self.node / "governor") != gov:
                write_attr(self.node / "governor", gov)
        except BackendError as exc:
            errors.append(str(exc))
        self._wrote = False
        if errors:  # keep what to restore, so a later restore() can try again
            self._saved, self._wrote = saved, True
            raise BackendError("restore incomplete: " + "; ".join(errors))
        return saved

    # -- power ------------------------------------------------------------------------------------
    def power_w(self) -> dict[str, float | None]:
        self.require(
            Capability.POWER,
            f"read power (no INA3221 rails under {self.root / 'sys/bus/i2c/drivers'})",
        )
        return read_rails(self.rails)

    def board_power_w(self) -> float | None:
        # the energy meter calls this at up to 1 kHz: read only the input rail when there is one
        if self._input_rail is not None:
            return self._input_rail.read_w()
        return super().board_power_w()


def is_tegra(root: Path | str = "/") -> bool:
    """A Jetson (Tegra SoC): NVML must not drive its clocks (jetson.md section 3)."""
    root = Path(root)
    if (root / "etc/nv_tegra_release").exists():
        return True
    try:
        return b"nvidia,tegra" in (root / "proc/device-tree/compatible").read_bytes()
    except OSError:
        return False


__all__ = [
    "GPU_NODE_NAMES",
    "GPU_OF_NAMES",
    "SysfsBackend",
    "find_gpu_devfreq",
    "is_tegra",
    "of_node_name",
    "read_attr",
    "scan_devfreq",
    "write_attr",
]
