"""INA3221 (and Thor's INA238) power rails read straight from sysfs.

Two layouts exist (jetson.md section 2.4):

* hwmon, JetPack 5 and later: ``/sys/bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmon*/`` with
  ``inN_label``, ``inN_input`` (mV) and ``currN_input`` (mA). The hwmon index changes between
  boots and boards, so it is globbed. Channels labelled ``NC`` and the "sum of shunt voltages"
  channel are not rails. Thor adds an INA238 with ``power1_input`` in uW for the board input.
* IIO, JetPack 4: ``/sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:device*/in_powerN_input``
  (mW), named by ``rail_name_N`` where the BSP provides it, else ``<bus>-<addr>:N``.

A rail whose file cannot be read at the moment reads ``None`` rather than failing the whole
reading: one flaky channel should not blind the energy meter to the others.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

SKIPPED_LABELS = ("NC", "sum of shunt voltages")


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Rail:
    """One power channel: ``watts = product of the files' values * scale``."""

    name: str
    files: tuple[Path, ...]
    scale: float
    layout: str  # hwmon, iio, ina238
    chip: str  # i2c device, <bus>-<addr>

    def read_w(self) -> float | None:
        value = self.scale
        for f in self.files:
            v = _read_number(f)
            if v is None:
                return None
            value *= v
        return value


def _hwmon_rails(root: Path) -> list[Rail]:
    rails = []
    for hw in sorted(root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
        chip = hw.parent.parent.name
        for label_file in sorted(hw.glob("in*_label"), key=lambda p: p.name):
            m = re.fullmatch(r"in(\d+)_label", label_file.name)
            if not m:
                continue
            n = m.group(1)
            try:
                label = label_file.read_text().strip()
            except OSError:
                continue
            volt, curr = hw / f"in{n}_input", hw / f"curr{n}_input"
            if not label or label in SKIPPED_LABELS or not (volt.exists() and curr.exists()):
                continue
            rails.append(Rail(label, (volt, curr), 1e-6, "hwmon", chip))
    for hw in sorted(root.glob("sys/bus/i2c/drivers/ina238/*/hwmon/hwmon*")):
        power = hw / "power1_input"
        if power.exists():
            label_file = hw / "power1_label"
            label = label_file.read_text().strip() if label_file.exists() else "VIN"
            rails.append(Rail(label, (power,), 1e-6, "ina238", hw.parent.parent.name))
    return rails


def _iio_rails(root: Path) -> list[Rail]:
    rails = []
    for dev in sorted(root.glob("sys/bus/i2c/drivers/ina3221x/*/iio:device*")):
        chip = dev.parent.name
        for power in sorted(dev.glob("in_power*_input"), key=lambda p: p.name):
            m = re.fullmatch(r"in_power(\d+)_input", power.name)
            if not m:
                continue
            n = m.group(1)
            label_file = dev / f"rail_name_{n}"
            try:
                label = label_file.read_text().strip() if label_file.exists() else ""
            except OSError:
                label = ""
            if label in SKIPPED_LABELS:
                continue
            rails.append(Rail(label or f"{chip}:{n}", (power,), 1e-3, "iio", chip))
    return rails


def find_rails(root: Path | str = "/") -> list[Rail]:
    """All power rails under ``root``, in a stable order; names made unique per board."""
    root = Path(root)
    rails = _hwmon_rails(root) + _iio_rails(root)
    count = Counter(r.name for r in rails)
    # the same label on two chips: tell them apart by the chip address
    return [replace(r, name=f"{r.name}@{r.chip}") if count[r.name] > 1 else r for r in rails]


def read_rails(rails: list[Rail]) -> dict[str, float | None]:
    return {r.name: r.read_w() for r in rails}
