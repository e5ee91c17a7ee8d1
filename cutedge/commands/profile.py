"""``cutedge profile``: partition a PyTorch model and profile every cut into a model profile YAML.

torch is imported only when the command runs, so the rest of ``cutedge`` works without it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cutedge.cli import UsageFailure


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
) -> None:
    """Partition a PyTorch vision model at every candidate cut and profile the cuts.

    Writes the model profile YAML that the simulator and the controller read: per offered cut,
    the bytes that cross, head/tail FLOPs and head/tail times (measured here, or estimated from
    FLOPs with --estimate).
    """
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
    if estimate or board is not None:
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
