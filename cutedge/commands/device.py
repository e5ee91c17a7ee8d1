"""``cutedge device``: look at and pin the GPU clock through the device agent's backends.

``info`` shows what a backend sees (levels, clock, power); ``clock HZ`` pins a level, holds it,
and puts back what was there, also on Ctrl-C and ``kill``; ``restore`` puts back what a process
that died (SIGKILL, OOM) left pinned, from its state file (device_agent/clock/state.py);
``service`` (device_service.py) writes the systemd unit for ``run`` (device_run.py). Both take the backend options:
``--backend auto|sysfs|jtop|nvml|simulated``, ``--board NAME`` (profile for ``simulated``; on a
Jetson it narrows the devfreq node search), ``--sysfs-root DIR`` (a copy of a board's tree).
Every expected failure is one ``error:`` line: a bad value, a clock that is not a level, no
permission (with what to run instead), a missing node.
"""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from cutedge.cli import UsageFailure
from device_agent.clock import (
    BACKENDS,
    BackendError,
    Capability,
    ClockBackend,
    RestoreGuard,
    open_backend,
)

_UNITS = {
    "": 1,
    "hz": 1,
    "k": 10**3,
    "khz": 10**3,
    "m": 10**6,
    "mhz": 10**6,
    "g": 10**9,
    "ghz": 10**9,
}


def parse_hz(text: str) -> int:
    """``1109250000``, ``1109.25MHz``, ``1109.25M``, ``306000kHz``, ``1.02GHz`` -> Hz."""
    s = text.strip().lower().replace(" ", "")
    i = len(s)
    while i > 0 and s[i - 1].isalpha():
        i -= 1
    number, unit = s[:i], s[i:]
    try:
        value = Decimal(number) * _UNITS[unit]
    except (InvalidOperation, KeyError):
        raise UsageFailure(
            f"HZ: expected a clock such as 1109250000 or 1109.25MHz, got {text!r}"
        ) from None
    if value <= 0 or value != value.to_integral_value():
        raise UsageFailure(f"HZ: expected a positive whole number of Hz, got {text!r}")
    return int(value)


def fmt_hz(hz: int | None) -> str:
    if hz is None:
        return "unknown"
    return f"{hz / 1e6:g} MHz"


class _WarningLine(logging.Handler):
    """Backend warnings (clock held elsewhere) as ``warning: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def _log_warnings() -> None:
    logger = logging.getLogger("device_agent")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))


def backend_options(fn):
    fn = click.option(
        "--sysfs-root",
        default="/",
        show_default=True,
        metavar="DIR",
        help="Root of the sysfs tree (a copy of a board's /sys for testing).",
    )(fn)
    fn = click.option(
        "--board", default=None, metavar="NAME", help="Board profile (configs/boards) or YAML path."
    )(fn)
    fn = click.option(
        "--backend",
        default="auto",
        show_default=True,
        metavar="|".join(BACKENDS),
        help="Which backend drives the GPU; auto probes sysfs, then NVML, then simulates.",
    )(fn)
    return fn


def _open(
    backend: str, board: str | None, sysfs_root: str, governor: str | None = None
) -> ClockBackend:
    if backend not in BACKENDS:
        raise UsageFailure(
            f"--backend: unknown backend {backend!r} (choose from {', '.join(BACKENDS)})"
        )
    if not Path(sysfs_root).is_dir():
        raise UsageFailure(f"--sysfs-root: {sysfs_root} is not a directory")
    _log_warnings()
    try:
        sel = open_backend(backend, board=board, sysfs_root=sysfs_root, governor=governor)
    except BackendError as exc:
        raise UsageFailure(str(exc)) from None
    for note in sel.notes:
        click.echo(f"note: {note}", err=True)
    if governor is not None and sel.backend.name not in ("sysfs", "jtop"):
        sel.backend.close()
        raise UsageFailure(
            f"--governor: applies to devfreq (sysfs, jtop), not the {sel.backend.name} backend"
        )
    return sel.backend


@click.group()
def device() -> None:
    """GPU clock and power backends on this machine (info, clock, restore), the device agent
    (run) and its systemd unit (service)."""


def _read(b: ClockBackend, cap: Capability, read: Any, errors: dict[str, str], field: str) -> Any:
    if cap not in b.capabilities:
        return None
    try:
        return read()
    except BackendError as exc:
        errors[field] = str(exc)
        return None


@device.command()
@backend_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(backend: str, board: str | None, sysfs_root: str, as_json: bool) -> None:
    """Show the backend, device, GPU levels, current clock and power."""
    b = _open(backend, board, sysfs_root)
    errors: dict[str, str] = {}
    with b:
        levels = _read(b, Capability.LEVELS, b.levels_hz, errors, "levels_hz")
        out: dict[str, Any] = {
            "backend": b.name,
            "device": b.device,
            "capabilities": sorted(c.value for c in b.capabilities),
            "levels_hz": list(levels or ()),
            "current_hz": _read(b, Capability.READ_CLOCK, b.current_hz, errors, "current_hz"),
            "power_w": _read(b, Capability.POWER, b.power_w, errors, "power_w"),
            "board_power_w": _read(b, Capability.POWER, b.board_power_w, errors, "board_power_w"),
        }
        if Capability.TELEMETRY in b.capabilities:
            out["telemetry"] = _read(b, Capability.TELEMETRY, b.telemetry, errors, "telemetry")
        if errors:
            out["errors"] = errors
    for field, msg in errors.items():
        click.echo(f"warning: {field}: {msg}", err=True)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    lv = out["levels_hz"]
    click.echo(f"backend:  {out['backend']}")
    click.echo(f"device:   {out['device']}")
    click.echo(f"can:      {', '.join(out['capabilities']) or 'nothing'}")
    if lv:
        click.echo(f"levels:   {len(lv)}, {' '.join(f'{f / 1e6:g}' for f in lv)} MHz")
    else:
        click.echo("levels:   not available")
    click.echo(
        f"current:  {fmt_hz(out['current_hz'])}"
        + (f" ({out['current_hz']} Hz)" if out["current_hz"] else "")
    )
    if out["power_w"]:
        rails = ", ".join(
            f"{k} {'unreadable' if w is None else f'{w:.3f} W'}" for k, w in out["power_w"].items()
        )
        total = out["board_power_w"]
        board = f" (board {total:.3f} W)" if total is not None and len(out["power_w"]) > 1 else ""
        click.echo(f"power:    {rails}{board}")
    else:
        click.echo("power:    not readable with this backend")
    for key, value in (out.get("telemetry") or {}).items():
        click.echo(f"{key + ':':<9} {value}")


def _parse_hold(text: str) -> float:
    try:
        hold = float(text)
    except ValueError:
        hold = float("nan")
    if not hold >= 0 or hold == float("inf"):
        raise UsageFailure(f"--hold: expected seconds >= 0, got {text!r}")
    return hold


@device.command()
@click.argument("hz", metavar="HZ")
@backend_options
@click.option(
    "--hold",
    "hold_text",
    default="0",
    metavar="SECONDS",
    help="Hold the level this long before restoring.",
)
@click.option(
    "--governor", default=None, metavar="NAME", help="sysfs: devfreq governor to use while pinned."
)
def clock(
    hz: str, backend: str, board: str | None, sysfs_root: str, hold_text: str, governor: str | None
) -> None:
    """Pin the GPU at HZ (a level: see `cutedge device info`), hold, then restore.

    HZ may carry a unit: 1109250000, 1109.25MHz, 1.02GHz. The previous clock settings are put
    back when the hold ends, on Ctrl-C (SIGINT) and on SIGTERM.
    """
    target = parse_hz(hz)
    hold_s = _parse_hold(hold_text)
    b = _open(backend, board, sysfs_root, governor)
    guard = RestoreGuard(b)
    try:
        with guard:
            before = b.current_hz() if Capability.READ_CLOCK in b.capabilities else None
            actual = b.pin(target)
            click.echo(f"{b.name}: {b.device}")
            click.echo(f"before: {fmt_hz(before)}; pinned {fmt_hz(target)}; now {fmt_hz(actual)}")
            if hold_s > 0:
                click.echo(f"holding {hold_s:g} s (Ctrl-C or SIGTERM restores)")
                time.sleep(hold_s)
    except BackendError as exc:
        raise UsageFailure(str(exc)) from None
    finally:
        if guard.restored:
            what = ", ".join(f"{k}={v}" for k, v in guard.restored.items())
            click.echo(
                f"restored: {what}" + (f" (after signal {guard.signal})" if guard.signal else "")
            )
            try:
                if Capability.READ_CLOCK in b.capabilities:
                    click.echo(f"now: {fmt_hz(b.current_hz())}")
            except BackendError as exc:
                click.echo(f"warning: {exc}", err=True)
        b.close()


@device.command()
@click.option(
    "--sysfs-root",
    default=None,
    metavar="DIR",
    help="Only the devfreq state of this tree (default: every state in the runtime directory).",
)
def restore(sysfs_root: str | None) -> None:
    """Put back a GPU clock that a cutedge process left pinned when it died.

    `device clock` and `device run` write the settings they will restore to a state file in the
    runtime directory ($CUTEDGE_RUNTIME_DIR, else /run/cutedge, $XDG_RUNTIME_DIR/cutedge or a
    private temporary folder) before the first pin; after SIGKILL, the OOM killer or a crash the
    file is still there, and this puts those settings back and removes it. Nothing to do is not
    an error. The unit written by `cutedge device service` runs this after the agent stops.
    """
    from device_agent.clock import (
        ClockBusyError,
        ClockLock,
        ClockStateError,
        put_back,
        read_state,
        reopen,
        runtime_dir,
        state_files,
    )

    root = Path(sysfs_root).resolve() if sysfs_root is not None else None
    try:
        directory = runtime_dir()
    except ClockStateError as exc:
        raise UsageFailure(str(exc)) from None
    errors: list[str] = []
    done = 0
    for path in state_files(directory):
        try:
            stale = read_state(path)
        except ClockStateError as exc:
            errors.append(str(exc))
            continue
        if root is not None and (
            stale.ref["kind"] != "sysfs" or Path(stale.ref.get("root", "/")).resolve() != root
        ):
            continue
        lock = ClockLock(stale.ref, directory)
        try:
            lock.acquire()
            stale = lock.stale()  # again, under the lock: another restore may have run
            if stale is None:
                continue
            backend = reopen(stale.ref)
            try:
                restored = put_back(lock, backend, stale)
            finally:
                backend.close()
        except ClockBusyError as exc:
            errors.append(f"not restored: {exc}")
            continue
        except BackendError as exc:
            errors.append(f"{stale.describe()}: {exc}; state kept in {path}")
            continue
        finally:
            lock.release()
        done += 1
        if restored:
            what = ", ".join(f"{k}={v}" for k, v in restored.items())
            click.echo(f"restored {stale.describe()}: {what}")
        else:
            click.echo(f"dropped the state of {stale.describe()}: from an earlier boot")
    if errors:
        for line in errors[:-1]:
            click.echo(f"error: {line}", err=True)
        raise UsageFailure(errors[-1])
    if done == 0:
        click.echo(f"nothing to restore (no clock state in {directory})")


# `cutedge device run`, the live agent (device_agent/runtime.py), lives in its own module; its
# heavy imports (torch, zmq) happen only when it runs.
from cutedge.commands.device_run import run as _run  # noqa: E402

device.add_command(_run, "run")

from cutedge.commands.device_service import service as _service  # noqa: E402

device.add_command(_service, "service")
