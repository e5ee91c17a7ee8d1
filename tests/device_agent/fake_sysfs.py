"""Fake Jetson sysfs trees that follow the real layouts, and a fake kernel that plays devfreq.

A real board cannot exist here, so tests build its ``/sys`` under a temporary root the way the
kernel lays it out (jetson.md section 2):

* ``sys/class/devfreq/<node>`` is a relative symlink into ``sys/devices/.../devfreq/<node>``;
  the node's ``device`` is a symlink to the parent device, whose ``of_node`` is a symlink into
  ``sys/firmware/devicetree/base/...`` holding ``name`` with a trailing NUL byte;
* power rails: JetPack 4 IIO (``ina3221x/<bus>-<addr>/iio:deviceN/in_powerN_input`` in mW,
  ``rail_name_N`` on some BSPs) or JetPack 5+ hwmon (``ina3221/<bus>-<addr>/hwmon/hwmonN/``
  ``inN_label``, ``inN_input`` mV, ``currN_input`` mA), the driver entries being symlinks to the
  i2c devices;
* other devfreq nodes (vic, nvdec) that discovery must skip.

Regular files cannot refuse a write, so :class:`FakeKernel` takes the place of the backend's
``store`` (the write(2) itself) and does what the devfreq core does on a store: validate the
value (EINVAL for ``min_freq > max_freq`` like L4T 4.9 kernels, or clamp like newer ones), apply
record every write, and move ``cur_freq`` inside ``[min_freq, max_freq]`` (a
governor picking levels, optionally throttled). It also runs as a thread for processes it cannot
patch (the CLI in a subprocess).

With a :class:`FakePower` model the rails follow the clock: each time ``cur_freq`` moves (and each
time the GPU turns busy or idle: in-process, the backend's ``mark_busy`` tells the kernel) the
rail files are rewritten with the power the model gives at that clock, so an energy meter over
the fake reads what a real INA3221 would, at its resolution (hwmon: 1 mA at 5000 mV; IIO: 1 mW).
``etc/nv_tegra_release`` (the L4T release line) is written on request (``make_tree(...,
release=True)``).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MHZ = 1_000_000
NOBODY = 65534


def _mhz(*values: float) -> tuple[int, ...]:
    return tuple(round(v * MHZ) for v in values)


@dataclass(frozen=True)
class RailSpec:
    chip: str  # <bus>-<addr>
    channel: int
    label: str | None  # None: no label file (old BSP)


@dataclass(frozen=True)
class Layout:
    """Where one board/JetPack keeps its GPU devfreq node and its power rails."""

    name: str
    device_dir: str  # parent device of the GPU, under sys/devices
    node_name: str  # devfreq node name (sys/class/devfreq/<node_name>)
    of_node: str | None  # device-tree path under sys/firmware/devicetree/base; None: no of_node
    of_name: str | None  # its name property
    levels_hz: tuple[int, ...]
    rail_layout: str  # iio or hwmon
    rails: tuple[RailSpec, ...]
    i2c_parent: str  # i2c adapter device dir under sys/devices
    hwmon_index: int = 0
    governors: tuple[str, ...] = (
        "wmark_active",
        "wmark_simple",
        "nvhost_podgov",
        "userspace",
        "performance",
    )
    others: tuple[
        tuple[str, str, str], ...
    ] = ()  # other devfreq nodes: (device dir, node, of name)
    ina238_vin: bool = False
    #: first line of /etc/nv_tegra_release on this JetPack (L4T R32 = JP 4, R35 = JP 5, ...)
    release: str = "# R36 (release), REVISION: 4.3, BOARD: generic, EABI: aarch64"


JP4 = "# R32 (release), REVISION: 7.4, BOARD: t186ref, EABI: aarch64"

# Levels: jetson.md section 2.3. Rails: section 2.4.
LAYOUTS: dict[str, Layout] = {
    "tx2-jp4": Layout(
        name="tx2-jp4",
        device_dir="17000000.gp10b",
        node_name="17000000.gp10b",
        of_node="gp10b",
        of_name="gp10b",
        levels_hz=_mhz(
            140.25,
            229.5,
            318.75,
            408.0,
            497.25,
            586.5,
            675.75,
            765.0,
            854.25,
            943.5,
            1032.75,
            1122.0,
            1211.25,
            1300.5,
        ),
        rail_layout="iio",
        rails=(
            RailSpec("0-0040", 0, "VDD_SYS_GPU"),
            RailSpec("0-0040", 1, "VDD_SYS_SOC"),
            RailSpec("0-0040", 2, "VDD_4V0_WIFI"),
            RailSpec("0-0041", 0, "VDD_IN"),
            RailSpec("0-0041", 1, "VDD_SYS_CPU"),
            RailSpec("0-0041", 2, "VDD_SYS_DDR"),
        ),
        i2c_parent="3160000.i2c/i2c-0",
        governors=("nvhost_podgov", "userspace", "performance"),
        release=JP4,
    ),
    "nano-jp4": Layout(  # an older L4T without rail_name_N files
        name="nano-jp4",
        device_dir="57000000.gpu",
        node_name="57000000.gpu",
        of_node="gpu",
        of_name="gpu",
        levels_hz=_mhz(
            76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6, 614.4, 691.2, 768.0, 844.8, 921.6
        ),
        rail_layout="iio",
        rails=(
            RailSpec("6-0040", 0, None),
            RailSpec("6-0040", 1, None),
            RailSpec("6-0040", 2, None),
        ),
        i2c_parent="7000c400.i2c/i2c-6",
        governors=("nvhost_podgov", "userspace", "performance"),
        release="# R32 (release), REVISION: 7.4, BOARD: t210ref, EABI: aarch64",
    ),
    "xavier-nx-jp4": Layout(
        name="xavier-nx-jp4",
        device_dir="17000000.gv11b",
        node_name="17000000.gv11b",
        of_node="gv11b",
        of_name="gv11b",
        levels_hz=_mhz(
            114.75,
            204.0,
            306.0,
            408.0,
            510.0,
            599.25,
            701.25,
            752.25,
            803.25,
            854.25,
            905.25,
            956.25,
            1007.25,
            1058.25,
            1109.25,
        ),
        rail_layout="iio",
        rails=(
            RailSpec("7-0040", 0, "VDD_IN"),
            RailSpec("7-0040", 1, "VDD_CPU_GPU_CV"),
            RailSpec("7-0040", 2, "VDD_SOC"),
        ),
        i2c_parent="c250000.i2c/i2c-7",
        others=(("15340000.vic", "15340000.vic", "vic"),),
        release=JP4,
    ),
    "orin-jp5": Layout(  # AGX Orin 64 GB: no VDD_IN, two chips, NC channels
        name="orin-jp5",
        device_dir="17000000.ga10b",
        node_name="17000000.ga10b",
        of_node="ga10b",
        of_name="ga10b",
        levels_hz=_mhz(
            114.75,
            216.75,
            318.75,
            420.75,
            522.75,
            624.75,
            726.75,
            828.75,
            930.75,
            1032.75,
            1134.75,
            1236.75,
            1300.5,
        ),
        rail_layout="hwmon",
        rails=(
            RailSpec("1-0040", 1, "VDD_GPU_SOC"),
            RailSpec("1-0040", 2, "VDD_CPU_CV"),
            RailSpec("1-0040", 3, "VIN_SYS_5V0"),
            RailSpec("1-0041", 1, "NC"),
            RailSpec("1-0041", 2, "VDDQ_VDD2_1V8AO"),
            RailSpec("1-0041", 3, "NC"),
        ),
        i2c_parent="platform/c240000.i2c/i2c-1",
        hwmon_index=3,
        others=(("platform/15340000.vic", "15340000.vic", "vic"),),
        release="# R35 (release), REVISION: 4.1, BOARD: t186ref, EABI: aarch64",
    ),
    "orin-nano-jp6": Layout(
        name="orin-nano-jp6",
        device_dir="platform/bus@0/17000000.gpu",
        node_name="17000000.gpu",
        of_node="bus@0/gpu@17000000",
        of_name="gpu",
        levels_hz=_mhz(306, 408, 510, 612, 714, 816, 918, 1020),
        rail_layout="hwmon",
        rails=(
            RailSpec("1-0040", 1, "VDD_IN"),
            RailSpec("1-0040", 2, "VDD_CPU_GPU_CV"),
            RailSpec("1-0040", 3, "VDD_SOC"),
        ),
        i2c_parent="platform/bus@0/c240000.i2c/i2c-1",
        hwmon_index=1,
        others=(
            ("platform/bus@0/15340000.vic", "15340000.vic", "vic"),
            ("platform/bus@0/15480000.nvdec", "15480000.nvdec", "nvdec"),
        ),
    ),
    "thor-jp7": Layout(  # no of_node on the GPC node; levels here are test data (table unknown)
        name="thor-jp7",
        device_dir="platform/gpu",
        node_name="gpu-gpc-0",
        of_node=None,
        of_name=None,
        levels_hz=_mhz(420, 840, 1260, 1575),
        rail_layout="hwmon",
        rails=(RailSpec("2-0040", 1, "VDD_GPU"), RailSpec("2-0040", 2, "VDD_CPU_SOC_MSS")),
        i2c_parent="platform/c240000.i2c/i2c-2",
        hwmon_index=2,
        others=(("platform/gpu", "gpu-nvd-0", ""),),
        ina238_vin=True,
        release="# R38 (release), REVISION: 2.0, BOARD: generic, EABI: aarch64",
    ),
}


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _replace(path: Path, text: str) -> None:
    """Write ``path`` in one step (a reader sees the old value or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _link(link: Path, target: Path) -> None:
    """A relative symlink, as sysfs uses."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


@dataclass
class FakeBoard:
    root: Path
    layout: Layout
    node: Path  # sys/class/devfreq/<node> (the symlink)
    real_node: Path
    rail_files: dict[str, tuple[Path, ...]] = field(default_factory=dict)

    @property
    def levels_hz(self) -> tuple[int, ...]:
        return self.layout.levels_hz

    def read(self, attr: str) -> str:
        return (self.real_node / attr).read_text().strip()

    def state(self) -> dict[str, str]:
        return {a: self.read(a) for a in ("min_freq", "max_freq", "governor")}

    def set_power(self, rail: str, watts: float | None) -> None:
        """Set a rail's reading: hwmon at 5000 mV (current rounded to 1 mA), IIO in whole mW,
        INA238 in uW; ``None``: the rail reads nothing (an empty value, as a failed read).
        Each file is replaced at once, so a reader never sees half a value."""
        files = self.rail_files[rail]
        if watts is None:
            _replace(files[-1], "")
        elif len(files) == 1:  # IIO in_powerN_input (mW) or INA238 power1_input (uW)
            scale = 1e6 if files[0].name == "power1_input" else 1e3
            _replace(files[0], f"{round(watts * scale)}\n")
        else:
            _replace(files[0], "5000\n")
            _replace(files[1], f"{round(watts * 1e6 / 5000)}\n")


def _devfreq_node(
    root: Path, device_dir: str, node_name: str, of_node: str | None, of_name: str | None
) -> Path:
    dev = root / "sys/devices" / device_dir
    real = dev / "devfreq" / node_name
    real.mkdir(parents=True, exist_ok=True)
    _link(real / "device", dev)
    if of_node is not None:
        dt = root / "sys/firmware/devicetree/base" / of_node
        _write(dt / "name", (of_name or "").encode() + b"\x00")
        _write(dt / "compatible", b"nvidia,fake\x00")
        _link(dev / "of_node", dt)
    _link(root / "sys/class/devfreq" / node_name, real)
    return real


def make_tree(
    root: Path | str, layout: str, *, governor: str = "nvhost_podgov", release: bool = False
) -> FakeBoard:
    """Build board ``layout`` (a key of :data:`LAYOUTS`) under ``root``: GPU at its top level,
    min/max spanning the table, every rail at 1 W; ``release``: also ``etc/nv_tegra_release``
    (which makes the tree a Tegra to ``is_tegra``)."""
    lay = LAYOUTS[layout]
    root = Path(root)
    if release:
        _write(root / "etc/nv_tegra_release", lay.release + "\n")
    for dev_dir, node, of_name in lay.others:
        _devfreq_node(
            root, dev_dir, node, f"{node.split('.')[-1]}" if of_name else None, of_name or None
        )
    real = _devfreq_node(root, lay.device_dir, lay.node_name, lay.of_node, lay.of_name)
    levels = lay.levels_hz
    # the kernel prints the table with a trailing space
    _write(real / "available_frequencies", " ".join(str(f) for f in levels) + " \n")
    for attr, value in (
        ("min_freq", levels[0]),
        ("max_freq", levels[-1]),
        ("cur_freq", levels[-1]),
        ("target_freq", levels[-1]),
        ("polling_interval", 0),
    ):
        _write(real / attr, f"{value}\n")
    _write(real / "governor", governor + "\n")
    _write(real / "available_governors", " ".join(lay.governors) + "\n")
    dev = root / "sys/devices" / lay.device_dir
    _write(dev / "load", "0\n")
    _write(dev / "railgate_enable", "1\n")

    board = FakeBoard(root, lay, root / "sys/class/devfreq" / lay.node_name, real)
    i2c = root / "sys/devices" / lay.i2c_parent
    for chip in sorted({r.chip for r in lay.rails}):
        chip_dev = i2c / chip
        _write(chip_dev / "name", "ina3221x\n" if lay.rail_layout == "iio" else "ina3221\n")
        driver = "ina3221x" if lay.rail_layout == "iio" else "ina3221"
        _link(root / "sys/bus/i2c/drivers" / driver / chip, chip_dev)
        if lay.rail_layout == "iio":
            iio = chip_dev / f"iio:device{sorted({r.chip for r in lay.rails}).index(chip)}"
            for r in (r for r in lay.rails if r.chip == chip):
                if r.label is not None:
                    _write(iio / f"rail_name_{r.channel}", r.label + "\n")
                _write(iio / f"in_voltage{r.channel}_input", "5000\n")
                _write(iio / f"in_current{r.channel}_input", "200\n")
                _write(iio / f"in_power{r.channel}_input", "1000\n")
                name = r.label or f"{chip}:{r.channel}"
                board.rail_files[name] = (iio / f"in_power{r.channel}_input",)
        else:
            hw = (
                chip_dev
                / "hwmon"
                / f"hwmon{lay.hwmon_index + sorted({r.chip for r in lay.rails}).index(chip)}"
            )
            _write(hw / "name", "ina3221\n")
            for r in (r for r in lay.rails if r.chip == chip):
                n = r.channel
                _write(hw / f"in{n}_label", f"{r.label}\n")
                _write(hw / f"in{n}_input", "5000\n")
                _write(hw / f"curr{n}_input", "200\n")
                _write(hw / f"curr{n}_max", "5000\n")
                _write(hw / f"curr{n}_crit", "8000\n")
                _write(hw / f"in{n + 3}_input", "4\n")  # shunt voltage channels: no label
                if r.label != "NC":
                    board.rail_files[r.label] = (hw / f"in{n}_input", hw / f"curr{n}_input")
            _write(hw / "in7_label", "sum of shunt voltages\n")
            _write(hw / "in7_input", "12\n")
    if lay.ina238_vin:
        chip_dev = i2c / "2-0044"
        _link(root / "sys/bus/i2c/drivers/ina238/2-0044", chip_dev)
        hw = chip_dev / "hwmon" / "hwmon9"
        _write(hw / "name", "ina238\n")
        _write(hw / "power1_input", "1000000\n")  # uW
        board.rail_files["VIN"] = (hw / "power1_input",)
    return board


@dataclass(frozen=True)
class FakePower:
    """The board's power as the fake rails read it, a function of the GPU clock ``f`` (GHz):

    ``idle(f) = idle0_w + k_idle * f`` (static power and the clock tree), and while heads run
    ``busy(f) = idle(f) + k_busy * f**2`` (dynamic power, ~ C V^2 f with V rising with f).

    The input rail (VDD_IN, VIN, ...) reads the board power; the other rails split
    ``rail_share`` of it evenly. Boards without an input rail (AGX Orin) split all of it, so
    the sum of their rails is the board power. ``dead``: rails that read nothing.
    """

    idle0_w: float = 3.0
    k_idle_w_per_ghz: float = 1.5
    k_busy_w_per_ghz2: float = 6.0
    rail_share: float = 0.8
    dead: tuple[str, ...] = ()

    def idle_w(self, hz: float) -> float:
        return self.idle0_w + self.k_idle_w_per_ghz * hz / 1e9

    def busy_w(self, hz: float) -> float:
        return self.idle_w(hz) + self.k_busy_w_per_ghz2 * (hz / 1e9) ** 2

    def board_w(self, hz: float, busy: bool) -> float:
        return self.busy_w(hz) if busy else self.idle_w(hz)

    def rails_w(self, rails: list[str], hz: float, busy: bool) -> dict[str, float | None]:
        from device_agent.clock.base import INPUT_RAILS

        total = self.board_w(hz, busy)
        inputs = [r for r in rails if r in INPUT_RAILS]
        others = [r for r in rails if r not in inputs]
        share = (self.rail_share if inputs else 1.0) * total / max(len(others), 1)
        out: dict[str, float | None] = {r: total for r in inputs}
        out.update({r: share for r in others})
        for r in self.dead:
            out[r] = None
        return out


class FakeKernel:
    """What the devfreq core does when a GPU node's attributes are written, and its governor.

    ``strict``: reject ``min_freq > max_freq`` with EINVAL (L4T 4.9); otherwise accept and let
    max win (PM-QoS kernels). ``throttle_hz``: thermal throttling or the nvpmodel cap, the clock
    (``cur_freq``) never goes above it whatever min and max say.
    ``writes`` records every store to the node, ``min_above_max`` every moment min > max.
    ``power``: the rails follow the clock (and :meth:`set_busy`) by this model; None leaves the
    rail files to the test (``FakeBoard.set_power``).
    """

    def __init__(
        self,
        board: FakeBoard,
        *,
        strict: bool = True,
        throttle_hz: int | None = None,
        seed: int = 0,
        power: FakePower | None = None,
    ):
        self.board = board
        self.power = power
        self.busy = False
        self.busy_marks: list[bool] = []
        self._written: dict[str, float | None] = {}
        self.node = board.real_node.resolve()
        self.strict = strict
        self.throttle_hz = throttle_hz
        self.writes: list[tuple[str, str]] = []
        self.min_above_max: list[tuple[int, int]] = []
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _get(self, attr: str) -> int:
        return int((self.node / attr).read_text().strip())

    def _put(self, attr: str, value: object) -> None:
        tmp = self.node / f".{attr}.tmp"
        tmp.write_text(f"{value}\n")
        os.replace(tmp, self.node / attr)  # readers never see a half-written file

    def store(self, path: Path, value: str) -> None:
        """Stands in for ``device_agent.clock.sysfs.store`` (the write(2))."""
        path = Path(path)
        if path.resolve().parent != self.node:
            with open(path, "w") as f:
                f.write(value)
            return
        attr = path.name
        with self._lock:
            self.writes.append((attr, value))
            if attr in ("min_freq", "max_freq"):
                try:
                    hz = int(value)
                except ValueError:
                    raise OSError(errno.EINVAL, "Invalid argument") from None
                lo, hi = self._get("min_freq"), self._get("max_freq")
                new_lo, new_hi = (hz, hi) if attr == "min_freq" else (lo, hz)
                if new_lo > new_hi:
                    self.min_above_max.append((new_lo, new_hi))
                    if self.strict:
                        raise OSError(errno.EINVAL, "Invalid argument")
                self._put(attr, hz)
            elif attr == "governor":
                if value.strip() not in self.board.layout.governors:
                    raise OSError(errno.EINVAL, "Invalid argument")
                self._put(attr, value.strip())
            elif attr in ("cur_freq", "available_frequencies", "target_freq"):
                raise OSError(errno.EACCES, "Permission denied")  # read-only attributes
            else:
                self._put(attr, value.strip())
            self.poll()

    def poll(self) -> None:
        """The governor's tick: pick a level inside [min, max] (PM-QoS: max wins), throttled."""
        with self._lock:
            try:
                lo, hi = self._get("min_freq"), self._get("max_freq")
            except ValueError:  # a writer outside this process is halfway through a file
                return
            lo = min(lo, hi)
            allowed = [f for f in self.board.levels_hz if lo <= f <= hi] or [hi]
            cur = self._rng.choice(allowed)
            if self.throttle_hz is not None:
                cur = min(cur, self.throttle_hz)
            self._put("cur_freq", cur)
            self._put("target_freq", cur)
            self._write_power(cur)

    def set_busy(self, busy: bool) -> None:
        """The GPU starts or stops computing: the rails read busy or idle power."""
        with self._lock:
            self.busy = bool(busy)
            self.busy_marks.append(self.busy)
            try:
                hz = self._get("cur_freq")
            except ValueError:
                return
            self._write_power(hz)

    def _write_power(self, hz: int) -> None:
        if self.power is None:
            return
        for rail, watts in self.power.rails_w(list(self.board.rail_files), hz, self.busy).items():
            if rail not in self._written or self._written[rail] != watts:
                self.board.set_power(rail, watts)
                self._written[rail] = watts

    def install(self, monkeypatch) -> FakeKernel:
        """In this process: the backend's writes go through :meth:`store`; with a power model,
        a ``SysfsBackend`` on this board reports busy and idle through :meth:`set_busy` (real
        rails see it themselves)."""
        from device_agent.clock import sysfs

        monkeypatch.setattr(sysfs, "store", self.store)
        if self.power is not None:
            kernel = self

            def mark_busy(backend, busy: bool) -> None:
                if Path(backend.node).resolve() == kernel.node:
                    kernel.set_busy(busy)

            monkeypatch.setattr(sysfs.SysfsBackend, "mark_busy", mark_busy)
            self.poll_power()
        return self

    def poll_power(self) -> None:
        """Write the rails for the clock now (done on every governor tick)."""
        with self._lock:
            self._write_power(self._get("cur_freq"))

    def start(self, interval_s: float = 0.002) -> FakeKernel:
        """Play the kernel from a thread (for a CLI in a subprocess): governor ticks, and the
        rails follow the clock (idle power: a subprocess cannot tell this one it is busy)."""
        if self.power is not None:
            self.poll_power()
        def run() -> None:
            while not self._stop.wait(interval_s):
                self.poll()

        self._thread = threading.Thread(target=run, name="fake-kernel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextmanager
def unprivileged(board: FakeBoard) -> Iterator[None]:
    """Inside the block the node's files cannot be written, as for a normal user on a board
    (they are root-owned 0644 there).

    Root ignores mode bits, so when the tests run as root the block runs with effective uid
    ``nobody`` (the real uid stays 0, so the process can come back): a real EACCES from the
    kernel, not a simulated one. The tree must then be reachable by others: build it in
    :func:`world_tmp`. As another user the files are made read-only instead.
    """
    files = [board.real_node / a for a in ("min_freq", "max_freq", "governor")]
    if os.geteuid() != 0:
        for f in files:
            f.chmod(0o444)
        try:
            yield
        finally:
            for f in files:
                f.chmod(0o644)
        return
    try:
        os.seteuid(NOBODY)
    except PermissionError:
        pytest.skip("running as root without the right to change the effective uid")
    try:
        yield
    finally:
        os.seteuid(0)


def own_runtime_dir(world: Path, monkeypatch) -> Path:
    """A clock-state runtime directory (``$CUTEDGE_RUNTIME_DIR``) in ``world`` (a
    :func:`world_tmp`) that belongs to the user :func:`unprivileged` runs as, as the agent's own
    user gets ``/run/cutedge`` from its systemd unit."""
    d = world / "run"
    d.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(d, NOBODY, -1)
    monkeypatch.setenv("CUTEDGE_RUNTIME_DIR", str(d))
    return d


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temporary folder others can traverse (pytest's own tmp root is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="cutedge-sysfs-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)
