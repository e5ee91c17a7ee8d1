"""Choosing a backend: by name, or ``auto`` by probing the machine.

``auto`` (jetson.md section 6):

1. a GPU devfreq node under ``<root>/sys/class/devfreq`` -> ``sysfs``; when jetson-stats is
   installed and its service socket exists (on the real root only: the service describes this
   machine, not a copied tree), the ``jtop`` backend wraps it for telemetry;
2. NVML initialises and this is not a Jetson -> ``nvml``;
3. otherwise ``simulated`` from ``--board`` (or the default board).

Each fallback that fires is told in one line (``Selection.notes``), e.g. which library is
missing or which service is down, so a user knows why the GPU is simulated.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent.clock.base import BackendError, BackendUnavailable, ClockBackend
from device_agent.clock.jtop_backend import JTOP_SOCKET, JtopBackend, open_jtop_client
from device_agent.clock.sysfs import GPU_OF_NAMES, SysfsBackend, is_tegra

if TYPE_CHECKING:
    from device_agent.clock.simulated import SimulatedBackend

BACKENDS = ("auto", "sysfs", "jtop", "nvml", "simulated")


@dataclass
class Selection:
    backend: ClockBackend
    notes: list[str] = field(default_factory=list)


def _sysfs(root: Path, board: str | None, **kw: object) -> SysfsBackend:
    of_names = GPU_OF_NAMES
    if board is not None:
        from controller.profiles import load_board

        names = load_board(board).devfreq_names
        of_names = tuple(names) or GPU_OF_NAMES
    return SysfsBackend(root, of_names=of_names, **kw)


def _simulated(board: str | None) -> SimulatedBackend:
    from controller.profiles import load_board
    from device_agent.clock.simulated import DEFAULT_BOARD, SimulatedBackend

    return SimulatedBackend(load_board(board or DEFAULT_BOARD))


def _with_jtop(clock: SysfsBackend | None, notes: list[str], chosen: bool) -> ClockBackend:
    """``clock`` with jtop telemetry, or ``clock`` alone and a note when jtop is unavailable
    (the exception's message already says how to install or reach the service)."""
    try:
        client = open_jtop_client()
    except BackendUnavailable as exc:
        if clock is None:
            raise BackendUnavailable(f"{exc}; and no GPU devfreq node to fall back on") from None
        notes.append(
            f"{exc}; using backend sysfs instead" if chosen else f"{exc}; telemetry from sysfs only"
        )
        return clock
    return JtopBackend(client, clock)


def open_backend(
    name: str = "auto",
    *,
    board: str | None = None,
    sysfs_root: Path | str = "/",
    governor: str | None = None,
) -> Selection:
    """Open backend ``name`` (one of :data:`BACKENDS`); see the module docstring for ``auto``.

    Raises :class:`BackendError` (one line) when a named backend cannot be used here, and
    ``ConfigError`` for a bad ``board``.
    """
    root = Path(sysfs_root)
    notes: list[str] = []
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "sysfs":
        return Selection(_sysfs(root, board, governor=governor), notes)
    if name == "jtop":
        try:
            clock = _sysfs(root, board, governor=governor)
        except BackendUnavailable as exc:
            notes.append(f"{exc}: jtop gives telemetry only")
            clock = None
        return Selection(_with_jtop(clock, notes, chosen=True), notes)
    if name == "nvml":
        from device_agent.clock.nvml_backend import NvmlBackend

        return Selection(NvmlBackend(root=root), notes)
    if name == "simulated":
        return Selection(_simulated(board), notes)

    # auto: each probe that fails adds its reason; the fallback that fires is told in one line
    reasons: list[str] = []
    try:
        clock = _sysfs(root, board, governor=governor)
    except BackendUnavailable as exc:
        reasons.append(f"sysfs: {exc}")
    else:
        on_this_machine = root.resolve() == Path("/").resolve()
        if (
            on_this_machine
            and importlib.util.find_spec("jtop") is not None
            and jtop_service_present()
        ):
            return Selection(_with_jtop(clock, notes, chosen=False), notes)
        return Selection(clock, notes)
    if is_tegra(root):
        reasons.append("nvml: skipped on a Jetson (NVML must not drive Tegra clocks)")
    elif importlib.util.find_spec("pynvml") is None:
        reasons.append("nvml: nvidia-ml-py is not installed (pip install 'cutedge[nvml]')")
    else:
        from device_agent.clock.nvml_backend import NvmlBackend

        try:
            nvml = NvmlBackend(root=root)
        except BackendError as exc:
            reasons.append(str(exc))
        else:
            notes.append(f"auto: {'; '.join(reasons)}; using backend nvml")
            return Selection(nvml, notes)
    sim = _simulated(board)
    notes.append(f"auto: {'; '.join(reasons)}; using backend simulated ({sim.board.name})")
    return Selection(sim, notes)


def reopen(ref: Mapping[str, str]) -> ClockBackend:
    """Open the device a clock state file names (``ClockBackend.device_ref()``), to restore it."""
    try:
        if ref["kind"] == "sysfs":
            return SysfsBackend(ref["root"], node=Path(ref["node"]))
        if ref["kind"] == "nvml":
            from device_agent.clock.nvml_backend import NvmlBackend

            return NvmlBackend(int(ref["index"]))
    except (KeyError, ValueError) as exc:
        raise BackendError(f"clock state of kind {ref.get('kind')!r} lacks a valid {exc}") from None
    raise BackendError(f"clock state of unknown kind {ref.get('kind')!r}")


def jtop_service_present() -> bool:
    """The jtop service's socket exists (cheap; the service may still refuse us)."""
    return JTOP_SOCKET.exists()
