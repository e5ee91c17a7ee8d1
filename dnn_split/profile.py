"""Profile every cut of a partitioned model: bytes, FLOPs, head and tail times, as profile YAML.

Two ways to fill the times:

* measured (``cutedge profile``): each head and tail runs on this machine, after warm-up, and
  the median of the repeats is kept (CUDA events on a GPU, ``perf_counter`` on a CPU). Head and
  tail run on the same device, so ``provenance.device`` and ``provenance.edge_device`` match.
* estimated (``cutedge profile --estimate``, ``scripts/make_model_profiles.py``): ``head_s`` is
  the head's FLOPs on a reference board at its top clock (``BoardProfile.time_at_max_s``) and
  ``tail_s`` the tail's FLOPs at a reference edge speed of 10 TFLOP/s effective.
* measured per GPU level (``cutedge profile --levels``, :mod:`dnn_split.levels`): the same
  timing at each pinned level, with head energy and idle power from the clock backend's meter.

The document follows the model profile schema in ``controller/profiles.py`` (its loader,
``load_model``, reads what :func:`profile_document` writes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from dnn_split.compress import compression_error, cut_nbytes
from dnn_split.partition import CutSpec, Partition, offered_mask

# An RTX 3090-class GPU sustains about 30 % of its 35.6 TFLOP/s FP32 peak on CNN inference.
EDGE_REF_FLOPS_PER_S = 10e12
EDGE_REF_DEVICE = (
    "edge reference: 10 TFLOP/s effective (an RTX 3090-class GPU at ~30 % of its "
    "35.6 TFLOP/s FP32 peak)"
)
REFERENCE_BOARD = "jetson-tx2"

# what jtop accepts as a GPU devfreq node (boards/jetson.md, section 0.4)
_GPU_DEVFREQ_NAMES = {"gp10b", "gv11b", "ga10b", "gb10b", "gpu"}
#: most timed runs :func:`time_runs` makes to fill ``min_s`` (a head of microseconds)
MAX_RUNS = 100_000


@dataclass
class CutRow:
    """One cut as it goes into the profile: wire bytes, whether offered, times."""

    cut: CutSpec
    bytes: int
    offered: bool
    head_s: float = 0.0
    tail_s: float = 0.0
    max_abs_error: float | None = None
    #: per-level lists (``head_s_by_level``, ...) of ``cutedge profile --levels``, in file order
    by_level: dict[str, list[float | None]] | None = None


def wire_rows(part: Partition, dtype: str = "float32", compress: str | None = None) -> list[CutRow]:
    """Every candidate cut with its bytes on the wire and the reduction applied to those bytes.

    The reduction is redone on the wire bytes because float16/int8 payloads and per-tensor
    overheads can reorder cuts that tie in float32.
    """
    sizes = [cut_nbytes(c, compress, dtype) for c in part.cuts]
    return [
        CutRow(c, b, keep) for c, b, keep in zip(part.cuts, sizes, offered_mask(sizes), strict=True)
    ]


def add_compression_error(
    part: Partition, rows: Sequence[CutRow], mode: str, inputs: int = 4
) -> None:
    """Fill ``max_abs_error`` for the offered rows (float32 reference, seeded random inputs)."""
    errors = compression_error(part, [r.cut for r in rows if r.offered], mode, inputs=inputs)
    for r in rows:
        r.max_abs_error = errors.get(r.cut.index)


def estimate_times(
    rows: Sequence[CutRow], board: Any, edge_flops_per_s: float = EDGE_REF_FLOPS_PER_S
) -> None:
    """Fill head_s from FLOPs on ``board`` at its top clock and tail_s at the edge speed."""
    head = board.time_at_max_s([r.cut.head_flops for r in rows])
    for r, h in zip(rows, head, strict=True):
        r.head_s = float(h)
        r.tail_s = r.cut.tail_flops / edge_flops_per_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(
    fn: Callable[..., Any],
    args: Sequence[Any],
    device: torch.device,
    repeats: int,
    warmup: int,
    *,
    min_s: float = 0.0,
    window: AbstractContextManager[Any] | None = None,
) -> list[float]:
    """Seconds of each timed run of ``fn(*args)``, after ``warmup`` untimed runs.

    At least ``repeats`` runs are timed, and more until the timed runs span ``min_s`` seconds
    (an energy meter needs a window long enough for its readings). ``window``, a context
    manager (an energy meter), is entered once the warm-up has finished on the device and left
    when the last timed run has: it covers exactly the timed runs.

    On CUDA each run is bracketed by events, which time the GPU work itself rather than the
    launch; on a CPU ``perf_counter`` does the same job.
    """
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        _sync(device)
        with window if window is not None else contextlib.nullcontext():
            t_start = time.perf_counter()
            while len(times) < repeats or (
                time.perf_counter() - t_start < min_s and len(times) < MAX_RUNS
            ):
                if device.type == "cuda":
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn(*args)
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) / 1e3)
                else:
                    t0 = time.perf_counter()
                    fn(*args)
                    times.append(time.perf_counter() - t0)
    return times


def time_call(
    fn: Callable[..., Any], args: Sequence[Any], device: torch.device, repeats: int, warmup: int
) -> float:
    """Median seconds of ``fn(*args)`` over ``repeats`` runs after ``warmup`` untimed ones
    (:func:`time_runs`)."""
    return statistics.median(time_runs(fn, args, device, repeats, warmup))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear between order statistics."""
    v = sorted(values)
    if not v:
        raise ValueError("percentile of no values")
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def example_input(part: Partition, device: torch.device) -> torch.Tensor:
    """One seeded input of ``part`` on ``device`` in the dtype of its parameters."""
    param = next(part.graph_module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    return part.example_input().to(device=device, dtype=dtype)


def measure_times(
    part: Partition,
    rows: Sequence[CutRow],
    device: torch.device,
    *,
    repeats: int = 20,
    warmup: int = 3,
    progress: Callable[[int], None] | None = None,
    heads: bool = True,
) -> None:
    """Time the head and tail of each row's cut on ``part``'s current device and dtype.

    Cut 0 runs nothing on the device and the last cut nothing on the edge: those times are 0 by
    definition and are not measured. ``heads=False`` times the tails only (``head_s`` is kept).
    """
    x = example_input(part, device)
    last = part.last.index
    for r in rows:
        head = part.head(r.cut)
        with torch.inference_mode():
            sent = tuple(head(x))
        if heads:
            r.head_s = 0.0 if r.cut.index == 0 else time_call(head, (x,), device, repeats, warmup)
        r.tail_s = (
            0.0
            if r.cut.index == last
            else time_call(part.tail(r.cut), sent, device, repeats, warmup)
        )
        if progress is not None:
            progress(1)


# -- provenance ------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_description(device: torch.device) -> str:
    """Human name of the device the times were taken on."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return f"{_cpu_name()} (cpu, {torch.get_num_threads()} threads)"


def read_gpu_clock_hz(
    device: torch.device, sysfs: str | os.PathLike[str] = "/sys/class/devfreq"
) -> int | None:
    """The GPU clock right now, where this machine can tell: Jetson devfreq, else NVML."""
    if device.type != "cuda":
        return None
    root = Path(sysfs)
    if root.is_dir():
        for node in sorted(root.iterdir()):
            try:
                of_name = (node / "device" / "of_node" / "name").read_text().strip("\x00\n ")
            except OSError:
                of_name = ""
            if of_name in _GPU_DEVFREQ_NAMES or node.name == "gpu-gpc-0":
                try:
                    return int((node / "cur_freq").read_text().strip())
                except (OSError, ValueError):
                    continue
    try:
        mhz = torch.cuda.clock_rate(device)
    except Exception:  # needs pynvml; absent on most machines
        return None
    return int(mhz * 1e6) if mhz else None


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def base_provenance(method: str, generator: str, **extra: Any) -> dict[str, Any]:
    """The fields every profile's provenance carries, in schema order, then ``extra``."""
    prov: dict[str, Any] = {
        "method": method,
        "device": None,
        "board": None,
        "clock_hz": None,
        "edge_device": None,
        "torch": str(torch.__version__),
        "date": now_utc(),
        "generator": generator,
    }
    prov.update(extra)
    return prov


# -- the document ----------------------------------------------------------------------------


def compression_note(mode: str, inputs: int = 4) -> dict[str, str]:
    """Provenance lines for a profile whose bytes are compressed wire bytes."""
    return {
        "compression": mode,
        "compression_error": (
            f"max_abs_error: largest |model output - float32 output| over {inputs} seeded N(0, 1) "
            f"inputs when the crossing tensors travel as {mode} (offered cuts only)"
        ),
    }


def _sig(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}") if value and math.isfinite(value) else float(value)


def profile_document(
    part: Partition,
    rows: Sequence[CutRow],
    provenance: dict[str, Any],
    *,
    dtype: str = "float32",
    all_cuts: bool = False,
    measured: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model profile as a plain mapping (schema: ``controller/profiles.py``).

    Without ``all_cuts`` only offered cuts are written and ``dropped_cuts`` says how many were
    left out; with it, dominated cuts are kept with ``offered: false`` for the record.
    ``measured``: top-level keys of a per-level profile (``levels_hz``, ``power``,
    ``unmeasured``), written before the cuts; each row's ``by_level`` lists go in its entry.
    """
    kept = [r for r in rows if all_cuts or r.offered]
    cuts = []
    for r in kept:
        entry: dict[str, Any] = {
            "name": r.cut.name,
            "index": r.cut.index,
            "bytes": int(r.bytes),
            "tensors": len(r.cut.tensors),
            "head_flops": int(r.cut.head_flops),
            "tail_flops": int(r.cut.tail_flops),
            "head_s": _sig(r.head_s),
            "tail_s": _sig(r.tail_s),
            "offered": bool(r.offered),
        }
        if r.max_abs_error is not None:
            entry["max_abs_error"] = _sig(r.max_abs_error, 4)
        for key, values in (r.by_level or {}).items():
            entry[key] = [None if v is None else _sig(v) for v in values]
        cuts.append(_FlowDict(entry))
    doc: dict[str, Any] = {
        "model": part.name,
        "input_shape": list(part.input_shape),
        "dtype": dtype,
        "result_bytes": int(part.last.bytes_as(dtype)),
        "provenance": provenance,
    }
    if not all_cuts:
        doc["dropped_cuts"] = sum(1 for r in rows if not r.offered)
    doc.update(measured or {})
    doc["cuts"] = cuts
    return doc


class _Dumper(yaml.SafeDumper):
    """Lists of scalars (shapes) and cut entries in flow style, one per line; the rest block."""


class _FlowDict(dict):
    """A mapping written on one line (each cut of the profile)."""


def _represent_flow_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = (
        all(isinstance(v, (int, float, str, bool)) or v is None for v in data) and len(data) <= 16
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(_FlowDict, _represent_flow_dict)


def dump_profile(
    doc: dict[str, Any], out: str | os.PathLike[str] | IO[str] | None = None, header: str = ""
) -> str:
    """Write the profile YAML to ``out`` (a path or a stream) and return its text."""
    lines = "".join(f"# {h}\n" for h in header.splitlines()) if header else ""
    text = lines + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    if out is None:
        return text
    if hasattr(out, "write"):
        out.write(text)  # type: ignore[union-attr]
    else:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text


def estimate_profile(
    part: Partition,
    board: Any,
    *,
    dtype: str = "float32",
    compress: str | None = None,
    all_cuts: bool = False,
    generator: str = "cutedge profile --estimate",
    **extra: Any,
) -> dict[str, Any]:
    """A FLOPs-based profile: head on ``board`` at f_max, tail at the edge reference speed."""
    rows = wire_rows(part, dtype, compress)
    estimate_times(rows, board)
    if compress:
        add_compression_error(part, rows, compress)
    f_ghz = board.f_max_hz / 1e9
    prov = base_provenance("flops-estimate", generator)
    prov.update(
        device=(
            f"{board.name} at its top GPU clock {f_ghz:g} GHz "
            "(BoardProfile.time_at_max_s of the head FLOPs)"
        ),
        board=None,
        clock_hz=None,
        edge_device=EDGE_REF_DEVICE,
        reference_board=board.name,
        edge_flops_per_s=EDGE_REF_FLOPS_PER_S,
        **extra,
    )
    if compress:
        prov.update(compression_note(compress))
    return profile_document(part, rows, prov, dtype=dtype, all_cuts=all_cuts)


__all__ = [
    "EDGE_REF_DEVICE",
    "EDGE_REF_FLOPS_PER_S",
    "REFERENCE_BOARD",
    "CutRow",
    "add_compression_error",
    "base_provenance",
    "compression_note",
    "device_description",
    "dump_profile",
    "estimate_profile",
    "estimate_times",
    "example_input",
    "measure_times",
    "percentile",
    "profile_document",
    "read_gpu_clock_hz",
    "time_call",
    "time_runs",
    "wire_rows",
]
