"""Optional compression of the tensors that cross a cut: float16, or int8 affine quantisation.

Uplink bytes are what the controller trades against device work, so halving or quartering them
moves the best cut. The price is accuracy: this module measures it per cut as the largest
absolute difference between the model's output with the crossing tensors compressed and the
float32 output, over seeded random inputs.

int8 is per-tensor affine: ``q = round((x - lo) / scale)`` as uint8 with ``scale = (hi - lo) /
255``; ``scale`` and ``lo`` travel as two float32 values (8 bytes) beside the payload. Integer
tensors (indices, masks) are never compressed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from dnn_split.partition import CutSpec, Partition, TensorSpec, flatten_outputs

WIRE_MODES = ("float16", "int8")
INT8_PARAM_BYTES = 8  # scale and offset, two float32


@dataclass(frozen=True)
class Packed:
    """One crossing tensor as it travels: payload plus what is needed to restore it."""

    data: torch.Tensor
    mode: str | None
    dtype: torch.dtype
    scale: float = 1.0
    offset: float = 0.0


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in WIRE_MODES:
        raise ValueError(f"compression {mode!r}: expected one of {', '.join(WIRE_MODES)}")


def pack(t: torch.Tensor, mode: str | None) -> Packed:
    """Compress ``t`` for the wire (``mode`` None: unchanged)."""
    _check_mode(mode)
    if mode is None or not t.is_floating_point():
        return Packed(t, None, t.dtype)
    if mode == "float16":
        return Packed(t.to(torch.float16), mode, t.dtype)
    x = t.float()
    lo, hi = (float(v) for v in torch.aminmax(x)) if x.numel() else (0.0, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    q = torch.round((x - lo) / scale).clamp_(0, 255).to(torch.uint8)
    return Packed(q, mode, t.dtype, scale, lo)


def unpack(p: Packed) -> torch.Tensor:
    """Restore a packed tensor to its original dtype."""
    if p.mode is None:
        return p.data
    if p.mode == "float16":
        return p.data.to(p.dtype)
    return (p.data.float() * p.scale + p.offset).to(p.dtype)


def packed_nbytes(spec: TensorSpec, mode: str | None, dtype: str | None = None) -> int:
    """Bytes of one crossing tensor on the wire; ``dtype`` is the uncompressed float dtype."""
    _check_mode(mode)
    if mode is None or not spec.torch_dtype.is_floating_point:
        return spec.nbytes_as(dtype)
    if mode == "float16":
        return spec.numel * 2
    return spec.numel + INT8_PARAM_BYTES


def cut_nbytes(cut: CutSpec, mode: str | None, dtype: str | None = None) -> int:
    """Bytes of all tensors crossing ``cut`` on the wire."""
    return sum(packed_nbytes(t, mode, dtype) for t in cut.tensors)


def compression_error(
    part: Partition,
    cuts: Iterable[CutSpec],
    mode: str,
    *,
    inputs: int = 4,
    seed: int = 1,
) -> dict[int, float]:
    """Max |output with compressed crossing tensors - float32 output| per cut index.

    Runs on the partition's current device and dtype; inputs are seeded standard normals.
    """
    _check_mode(mode)
    param = next(part.graph_module.parameters(), None)
    where = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    xs = [part.example_input(seed=seed + i).to(**where) for i in range(inputs)]
    errors: dict[int, float] = {}
    with torch.inference_mode():
        refs = [flatten_outputs(part.model(x)) for x in xs]
        for c in cuts:
            head, tail = part.head(c), part.tail(c)
            worst = 0.0
            for x, ref in zip(xs, refs, strict=True):
                sent = [unpack(pack(t, mode)) for t in head(x)]
                got = flatten_outputs(tail(*sent))
                for a, b in zip(got, ref, strict=True):
                    if a.numel():
                        worst = max(worst, float((a.float() - b.float()).abs().max()))
            errors[c.index] = worst
    return errors


__all__ = [
    "INT8_PARAM_BYTES",
    "WIRE_MODES",
    "Packed",
    "compression_error",
    "cut_nbytes",
    "pack",
    "packed_nbytes",
    "unpack",
]
