"""``cutedge profile``: partition a PyTorch model and profile every cut into a model profile YAML.

torch is imported only when the command runs, so the rest of ``cutedge`` works without it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import click

from cutedge.cli import UsageFailure
from device_agent.clock import BACKENDS

NVML_CURRENT_ONLY = (
    "--backend nvml: only --levels current (a desktop or datacenter GPU may be shared: pinning "
    "its clock changes it for every job on it, so cutedge profile never pins one)"
)


def _load_torch_parts():
    try:
        import torch

        from dnn_split import models, partition, profile
    except ImportError as exc:
        raise UsageFailure(
            f"cutedge profile needs torch and torchvision ({exc}); pip install 'cutedge[torch]'"
        ) from None
    return torch, models, partition, profile


def _cut_json(row: Any, compress_mode: str | None, dtype: str) -> dict[str, Any]:
    c = row.cut
    out: dict[str, Any] = {
        "index": c.index,
        "name": c.name,
        "module": c.module,
        "bytes": int(row.bytes),
        "tensors": len(c.tensors),
        "offered": bool(row.offered),
        "head_flops": int(c.head_flops),
        "tail_flops": int(c.tail_flops),
        "crossing": [
            {
                "name": t.name,
                "shape": list(t.shape),
                "dtype": dtype if t.torch_dtype.is_floating_point else t.dtype,
            }
            for t in c.tensors
        ],
    }
    if compress_mode:
        out["compression"] = compress_mode
        out["uncompressed_bytes"] = int(c.bytes_as(dtype))
        out["max_abs_error"] = row.max_abs_error
    return out


def _print_table(rows: list[Any]) -> None:
    click.echo(f"{'cut':>4}  {'name':<32} {'tensors':>7} {'bytes':>11} {'head GFLOP':>10}  offered")
    for r in rows:
        c = r.cut
        mark = "yes" if r.offered else "-"
        err = f"  err {r.max_abs_error:.3g}" if r.max_abs_error is not None else ""
        gflop, n = c.head_flops / 1e9, len(c.tensors)
        click.echo(
            f"{c.index:>4}  {c.name[:32]:<32} {n:>7} {r.bytes:>11} {gflop:>10.3f}  {mark}{err}"
        )


@click.command("profile")
@click.option(
    "--model",
    "model_name",
    required=True,
    metavar="NAME",
    help="torchvision name (resnet50, ...) or package.module:factory.",
)
@click.option(
    "--input-shape",
    default="3,224,224",
    show_default=True,
    help="One input without the batch dimension.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Compute dtype and dtype of the crossing tensors.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Timed runs per head and tail (the median is kept).",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Untimed runs before timing.",
)
@click.option(
    "--weights",
    metavar="FILE",
    default=None,
    help="A state_dict to load (default: seeded random weights).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the random weights and inputs."
)
@click.option(
    "--out", metavar="FILE", default=None, help="Write the profile YAML here (default: stdout)."
)
@click.option("--list-cuts", is_flag=True, help="List every candidate cut without timing.")
@click.option("--json", "as_json", is_flag=True, help="With --list-cuts: print a JSON list.")
@click.option(
    "--estimate", is_flag=True, help="No timing: times from FLOPs (reference board and edge)."
)
@click.option(
    "--board",
    default=None,
    metavar="NAME",
    help=(
        "Estimate: reference board (default jetson-tx2). "
        "Measured: the configs/boards name of the board this runs on."
    ),
)
@click.option(
    "--clock-hz",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Measured: GPU clock the times hold at (default: read it where possible).",
)
@click.option(
    "--compress",
    type=click.Choice(["float16", "int8"]),
    default=None,
    help=(
        "Compress the crossing tensors; bytes become wire bytes and the accuracy cost is reported."
    ),
)
@click.option(
    "--all-cuts",
    is_flag=True,
    help="Write dominated cuts too (offered: false); measured mode then times them all.",
)
@click.option(
    "--levels",
    "levels_text",
    default=None,
    metavar="all|current|HZ,HZ,...",
    help=(
        "Measure per GPU level through a clock backend: head time, head energy and idle power "
        "at every level (all), at the clock now without pinning (current), or at these levels "
        "(Hz or with a unit: 612MHz). The clock is put back afterwards."
    ),
)
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    metavar="|".join(BACKENDS),
    help="--levels: the backend that pins the GPU and reads its power (see cutedge device info).",
)
@click.option(
    "--sysfs-root",
    default="/",
    show_default=True,
    metavar="DIR",
    help="--levels: root of the sysfs tree (a copy of a board's /sys for testing).",
)
@click.option(
    "--idle-s",
    type=click.FloatRange(min=0, min_open=True),
    default=0.4,
    show_default=True,
    help="--levels: seconds of the idle-power window at each level.",
)
@click.option(
    "--energy-window-s",
    type=click.FloatRange(min=0),
    default=0.25,
    show_default=True,
    help="--levels: each head runs (timed) until its runs span this long, for the energy meter.",
)
@click.option(
    "--meter-interval-s",
    type=click.FloatRange(min=0.0005, max=1.0),
    default=0.005,
    show_default=True,
    help="--levels: how often a sampling energy meter reads the power rail.",
)
def profile(
    model_name: str,
    input_shape: str,
    device: str,
    dtype: str,
    repeats: int,
    warmup: int,
    weights: str | None,
    seed: int,
    out: str | None,
    list_cuts: bool,
    as_json: bool,
    estimate: bool,
    board: str | None,
    clock_hz: float | None,
    compress: str | None,
    all_cuts: bool,
    levels_text: str | None,
    backend: str,
    sysfs_root: str,
    idle_s: float,
    energy_window_s: float,
    meter_interval_s: float,
) -> None:
    """Partition a PyTorch vision model at every candidate cut and profile the cuts.

    Writes the model profile YAML that the simulator and the controller read: per offered cut,
    the bytes that cross, head/tail FLOPs and head/tail times (measured here, or estimated from
    FLOPs with --estimate). With --levels, per GPU level: head times (median, p90), head energy
    and idle and busy power from the backend's meter (docs/device-backends.md).
    """
    level_only = ("backend", "sysfs_root", "idle_s", "energy_window_s", "meter_interval_s")
    if levels_text is None:
        ctx = click.get_current_context()
        for name in level_only:
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                raise UsageFailure(f"--{name.replace('_', '-')} goes with --levels")
    else:
        for flag, given in (
            ("--list-cuts", list_cuts), ("--estimate", estimate), ("--clock-hz", clock_hz)
        ):
            if given:
                raise UsageFailure(f"--levels and {flag} do not go together")
        # a shared GPU must never be pinned: refuse before touching it
        if backend == "nvml" and levels_text.strip().lower() != "current":
            raise UsageFailure(NVML_CURRENT_ONLY)
    if as_json and not list_cuts:
        raise UsageFailure("--json goes with --list-cuts")
    if list_cuts and estimate:
        raise UsageFailure(
            "--list-cuts and --estimate do not go together (--list-cuts never times)"
        )
    torch, models, partition, prof = _load_torch_parts()
    try:
        shape = models.parse_input_shape(input_shape)
    except models.ModelError as exc:
        raise UsageFailure(f"--input-shape: {exc}") from None
    if device == "cuda" and not list_cuts and not estimate and not torch.cuda.is_available():
        raise UsageFailure("--device cuda: no CUDA device is visible to torch on this machine")
    board_profile = None
    if levels_text is not None:
        pass  # the board may come from the backend: resolved once it is open
    elif estimate or board is not None:
        from controller.profiles import load_board

        board_profile = load_board(board or prof.REFERENCE_BOARD)

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        part = partition.partition(model_name, shape, weights=weights, seed=seed, announce=say)
    except partition.ModelError as exc:
        raise UsageFailure(str(exc)) from None
    say(part.summary())
    weights_note = str(weights) if weights else f"random (seed {seed})"
    if estimate:
        doc = prof.estimate_profile(
            part,
            board_profile,
            dtype=dtype,
            compress=compress,
            all_cuts=all_cuts,
            generator=(
                "cutedge profile --estimate (dnn_split.profile): layer FLOPs from the torch.fx "
                f"graph and real tensor shapes, input {list(shape)}"
            ),
            weights=weights_note,
        )
    else:
        rows = prof.wire_rows(part, dtype, compress)
        if compress:
            prof.add_compression_error(part, rows, compress)
        if list_cuts:
            if as_json:
                # one cut per line: greppable, and still one JSON list
                items = ",\n ".join(json.dumps(_cut_json(r, compress, dtype)) for r in rows)
                click.echo(f"[{items}]")
            else:
                _print_table(rows)
            return
        try:
            if levels_text is not None:
                from dnn_split.levels import LevelSettings

                settings = LevelSettings(
                    repeats=repeats,
                    warmup=warmup,
                    idle_s=idle_s,
                    energy_window_s=energy_window_s,
                    meter_interval_s=meter_interval_s,
                )
                doc = _measure_levels(
                    torch, prof, part, rows, levels_text, backend, board, sysfs_root, device,
                    dtype, settings, compress, all_cuts, weights_note,
                )
            else:
                doc = _measure(
                    torch,
                    prof,
                    part,
                    rows,
                    board_profile,
                    device,
                    dtype,
                    repeats,
                    warmup,
                    clock_hz,
                    compress,
                    all_cuts,
                    weights_note,
                )
        except RuntimeError as exc:  # e.g. a kernel missing for float16 on this device, or OOM
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageFailure(f"{model_name} on {device} in {dtype}: {first}") from None
    header = (
        f"model profile of {part.name}, written by cutedge profile; schema: controller/profiles.py"
    )
    if out:
        prof.dump_profile(doc, out, header=header)
        say(f"wrote {out}")
    else:
        click.echo(prof.dump_profile(doc, header=header), nl=False)


def _measure(
    torch,
    prof,
    part,
    rows,
    board_profile,
    device,
    dtype,
    repeats,
    warmup,
    clock_hz,
    compress,
    all_cuts,
    weights_note,
):
    dev = torch.device(device)
    part.to(dev, getattr(torch, dtype))
    timed = [r for r in rows if all_cuts or r.offered]
    with click.progressbar(
        length=len(timed),
        label=f"timing {len(timed)} cuts of {part.name} on {device}",
        file=sys.stderr,
    ) as bar:
        prof.measure_times(part, timed, dev, repeats=repeats, warmup=warmup, progress=bar.update)
    name = prof.device_description(dev)
    clock = clock_hz if clock_hz is not None else prof.read_gpu_clock_hz(dev)
    timing = "CUDA events" if dev.type == "cuda" else "perf_counter"
    prov = prof.base_provenance(
        "measured",
        (
            f"cutedge profile (dnn_split.profile): median of {repeats} runs after {warmup} "
            f"warm-up runs, {timing}; batch 1"
        ),
        weights=weights_note,
        repeats=repeats,
        warmup=warmup,
    )
    prov["device"] = name
    prov["board"] = board_profile.name if board_profile is not None else None
    prov["clock_hz"] = int(clock) if clock else None
    prov["edge_device"] = name
    if compress:
        prov.update(prof.compression_note(compress))
    return prof.profile_document(part, rows, prov, dtype=dtype, all_cuts=all_cuts)


def _parse_levels(text: str) -> tuple[str, list[int]]:
    """``all`` | ``current`` | ``HZ,HZ,...`` -> (mode, levels in Hz)."""
    from cutedge.commands.device import parse_hz

    t = text.strip().lower()
    if t in ("all", "current"):
        return t, []
    out = []
    for item in text.split(","):
        if not item.strip():
            raise UsageFailure(f"--levels: expected all, current or HZ,HZ,..., got {text!r}")
        try:
            out.append(parse_hz(item))
        except UsageFailure as exc:
            raise UsageFailure(f"--levels: {exc.format_message()}") from None
    return "list", sorted(set(out))


def _measure_levels(
    torch,
    prof,
    part,
    rows,
    levels_text,
    backend_name,
    board,
    sysfs_root,
    device,
    dtype,
    settings,
    compress,
    all_cuts,
    weights_note,
):
    """``cutedge profile --levels``: open the backend as ``cutedge device`` does, pin each level
    inside a RestoreGuard (the crash-safe state file included), measure, put the clock back."""
    import time

    from controller.profiles import load_board
    from cutedge.commands.device import _open
    from device_agent.clock import BackendError, Capability, NotALevelError, RestoreGuard
    from dnn_split import levels as lv

    def say(line: str) -> None:
        click.echo(line, err=True)

    mode, wanted = _parse_levels(levels_text)
    b = _open(backend_name, board, sysfs_root)
    try:
        if b.name == "nvml" and mode != "current":  # auto chose NVML
            raise UsageFailure(NVML_CURRENT_ONLY)
        board_name = board or getattr(getattr(b, "board", None), "name", None)
        if board_name is None and b.name != "nvml":
            raise UsageFailure(
                f"--levels: give --board NAME (configs/boards), the board this {b.name} backend "
                "drives: the system model uses the per-level tables only on that board"
            )
        board_profile = load_board(board_name) if board_name else None
        pre: list[str] = []
        if mode == "current":
            if Capability.READ_CLOCK not in b.capabilities:
                raise UsageFailure(f"--levels current: the {b.name} backend cannot read the clock")
            levels = [b.current_hz()]
        else:
            if Capability.PIN not in b.capabilities:
                raise UsageFailure(
                    f"--levels {levels_text}: the {b.name} backend on {b.device} cannot pin the "
                    "GPU clock; use --levels current"
                )
            offered = b.levels_hz() if Capability.LEVELS in b.capabilities else None
            if mode == "all":
                if offered is None:
                    raise UsageFailure(f"--levels all: the {b.name} backend lists no GPU levels")
                levels = list(offered)
            else:
                levels = []
                for hz in wanted:
                    if offered is not None and hz not in offered:
                        why = NotALevelError(hz, offered, b.device)
                        pre.append(f"level {lv.fmt_mhz(hz)} ({hz} Hz) not measured: {why}")
                        say(f"warning: {pre[-1]}")
                    else:
                        levels.append(hz)
        if not levels:
            raise UsageFailure(f"--levels {levels_text}: no level of {b.device} to measure")
        dev = torch.device(device)
        part.to(dev, getattr(torch, dtype))
        if dev.type == "cpu" and b.name != "simulated":
            say(
                "note: heads run on the CPU (--device cpu): the GPU levels change the power "
                "readings, not the head times; use --device cuda on the board"
            )
        timed = [r for r in rows if all_cuts or r.offered]
        x = prof.example_input(part, dev)
        full_s = prof.time_call(part.head(part.last), (x,), dev, 3, 2)  # a quick look, for the estimate
        slowdown = None
        if dev.type == "cuda" and board_profile is not None and Capability.READ_CLOCK in b.capabilities:
            now_scale = float(board_profile.clock_scale(float(b.current_hz())))
            slowdown = [float(board_profile.clock_scale(float(f))) / now_scale for f in levels]
        metering = lv.power_problem(b) is None
        guess = lv.run_time_estimate_s(
            timed, full_s, len(levels), settings, metering=metering, slowdown=slowdown
        )
        pinning = "pinned in turn" if mode != "current" else "not pinned"
        say(
            f"estimate: {len(levels)} level(s) ({pinning}) x {len(timed)} cuts x "
            f"({settings.warmup} warm-up + {settings.repeats} runs"
            + (f", at least {settings.energy_window_s:g} s" if metering else "")
            + f") at ~{full_s * 1e3:.3g} ms for the whole model"
            + (f", {len(levels)} idle windows of {settings.idle_s:g} s" if metering else "")
            + f", then the tails once: about {guess:.0f} s"
        )
        guard = RestoreGuard(b) if mode != "current" else None
        lines: list[str] = []
        t0 = time.monotonic()
        try:
            with guard if guard is not None else contextlib.nullcontext():
                with click.progressbar(
                    length=(len(levels) + 1) * len(timed),
                    label=(
                        f"profiling {len(timed)} cuts of {part.name} at {len(levels)} level(s) "
                        f"on {device} ({b.name} backend)"
                    ),
                    file=sys.stderr,
                ) as bar:
                    tables = lv.profile_levels(
                        part, timed, dev, b, levels, pin=guard is not None, settings=settings,
                        unmeasured=pre, progress=bar.update, warn=lines.append,
                    )
        except BackendError as exc:
            raise UsageFailure(str(exc)) from None
        except (SystemExit, KeyboardInterrupt):
            lines.append("stopped before the end: no profile written")
            raise
        finally:
            for line in lines:
                say(f"warning: {line}")
            if guard is not None and guard.restored:
                what = ", ".join(f"{k}={v}" for k, v in guard.restored.items())
                sig = f" (after signal {guard.signal})" if guard.signal else ""
                say(f"restored: {what}{sig}")
        run_s = time.monotonic() - t0
        if not tables.levels_hz:
            raise UsageFailure(f"--levels {levels_text}: no level could be measured")
        if mode == "current" and Capability.READ_CLOCK in b.capabilities:
            after = b.current_hz()
            if after != levels[0]:
                say(
                    f"warning: the clock moved from {levels[0]} Hz to {after} Hz during the run "
                    "(--levels current pins nothing): the times hold at a mix of clocks"
                )
        if board_profile is not None:
            foreign = [f for f in tables.levels_hz if f not in board_profile.levels_hz]
            if foreign:
                say(
                    f"warning: {', '.join(lv.fmt_mhz(f) for f in foreign)} not levels of "
                    f"{board_profile.name}: there the system model follows its fitted curves"
                )
        name = prof.device_description(dev)
        timing = "CUDA events" if dev.type == "cuda" else "perf_counter"
        prov = prof.base_provenance(
            "measured",
            (
                f"cutedge profile --levels {levels_text} (dnn_split.levels): per level, median "
                f"and p90 of at least {settings.repeats} runs (more to span "
                f"{settings.energy_window_s:g} s for the energy meter) after {settings.warmup} "
                f"warm-up runs, {timing}; head energy from the {b.name} meter above the idle "
                f"power of a {settings.idle_s:g} s window; batch 1"
            ),
            weights=weights_note,
            repeats=settings.repeats,
            warmup=settings.warmup,
        )
        prov["device"] = name
        prov["board"] = board_name
        prov["clock_hz"] = int(tables.levels_hz[-1])
        prov["edge_device"] = name
        prov["clock_backend"] = b.name
        prov["clock_device"] = b.device
        prov["levels"] = levels_text if mode != "current" else "current (not pinned)"
        if b.name == "nvml":
            driver = lv.nvidia_driver_version()
            if driver:
                prov["nvidia_driver"] = driver
        elif b.name in ("sysfs", "jtop"):
            release = lv.tegra_release(sysfs_root)
            if release:
                prov["l4t"] = release
        prov["idle_s"] = settings.idle_s
        prov["energy_window_s"] = settings.energy_window_s
        prov["meter_interval_s"] = settings.meter_interval_s
        prov["run_s"] = round(run_s, 1)
        if compress:
            prov.update(prof.compression_note(compress))
        say(
            f"measured {len(tables.levels_hz)} level(s) x {len(timed)} cuts in {run_s:.1f} s; "
            f"{len(tables.unmeasured)} thing(s) not measured"
        )
        return prof.profile_document(
            part, rows, prov, dtype=dtype, all_cuts=all_cuts, measured=tables.document_keys()
        )
    finally:
        b.close()
