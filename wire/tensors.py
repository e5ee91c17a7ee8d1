"""Torch tensors to wire buffers and back, without copies where the memory allows it.

Sending: a contiguous CPU tensor is handed to ZeroMQ as a ``memoryview`` of its own storage
(``copy=False``), so the bytes go from the tensor to the socket with no Python-side copy. A GPU
or non-contiguous tensor is copied once (to host / to contiguous), which it must be anyway.

Receiving: ``torch.frombuffer`` over the received ZeroMQ frame gives a tensor that *is* the
frame's memory. ZeroMQ does not promise alignment (small frames arrive at odd addresses), so a
frame whose address is not a multiple of the dtype's item size is copied once into an aligned
tensor; large frames arrive aligned in practice and are never copied.

torch is imported lazily: ``wire.format`` stays importable without it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from wire.format import AFFINE_U8, DTYPE_CODES, ITEMSIZE, TensorDesc

if TYPE_CHECKING:
    import torch


def _torch():
    import torch

    return torch


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a wire dtype name (``"float32"`` -> ``torch.float32``)."""
    if not _TORCH:
        _tables()
    return _TORCH[name]


_NAMES: dict[Any, str] = {}  # torch dtype -> wire name, filled on first use
_TORCH: dict[str, Any] = {}  # wire name -> torch dtype
#: dtypes numpy can view directly (a faster path to a byte view than going through uint8)
_NUMPY_OK = {"float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"}


def _tables() -> None:
    torch = _torch()
    for name in DTYPE_CODES:
        _TORCH[name] = getattr(torch, name)
        _NAMES[getattr(torch, name)] = name


def dtype_name(dtype: Any) -> str:
    """The wire name of a torch dtype; ``ValueError`` if it cannot travel."""
    if not _NAMES:
        _tables()
    name = _NAMES.get(dtype)
    if name is None:
        shown = str(dtype).removeprefix("torch.")
        raise ValueError(
            f"dtype {shown} cannot travel on the wire (allowed: {', '.join(DTYPE_CODES)})"
        )
    return name


def tensor_buffer(t: torch.Tensor) -> memoryview:
    """A byte view of ``t``'s memory for a zero-copy send.

    The view keeps the tensor's storage alive until ZeroMQ has sent it. Viewing as uint8 first
    makes every dtype (bfloat16 and bool included, which numpy does not have) one byte buffer.
    """
    if not t.is_cpu:
        t = t.cpu()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.requires_grad:
        t = t.detach()
    flat = t.reshape(-1)
    if dtype_name(t.dtype) in _NUMPY_OK:
        return memoryview(flat.numpy()).cast("B")
    return memoryview(flat.view(_torch().uint8).numpy())


class Affine(NamedTuple):
    """A float tensor sent as uint8 codes: ``value = codes * scale + offset`` (per tensor).

    A quarter of float32's bytes on the uplink. ``scale`` and ``offset`` travel as float32 in
    the tensor's descriptor; the receiver gets a float32 tensor back. ``dnn_split.compress``
    makes these (``pack(t, "int8")``); its ``Packed`` objects can be sent as they are.
    """

    codes: Any  # torch.Tensor of dtype uint8
    scale: float
    offset: float


def _f32(x: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.inf


def as_sendable(item: Any) -> Any:
    """A tensor or :class:`Affine` for ``item``: a tensor, an Affine, or a ``Packed``.

    ``Packed`` (from ``dnn_split.compress``) is recognised by its fields, so ``wire`` does not
    import ``dnn_split``: mode None or "float16" sends its tensor, "int8" its affine codes.
    """
    if isinstance(item, Affine) or hasattr(item, "dtype") and hasattr(item, "data_ptr"):
        return item
    mode = getattr(item, "mode", "?")
    if mode in (None, "float16"):
        return item.data
    if mode == "int8":
        return Affine(item.data, float(item.scale), float(item.offset))
    raise TypeError(f"cannot send {type(item).__name__}: expected a tensor, Affine or Packed")


def describe(t: Any) -> TensorDesc:
    """The header descriptor of tensor ``t`` (as it will be sent, C-contiguous) or an Affine."""
    if isinstance(t, Affine):
        if dtype_name(t.codes.dtype) != "uint8":
            raise ValueError(f"affine codes must be uint8, got {t.codes.dtype}")
        scale, offset = _f32(t.scale), _f32(t.offset)
        if not (math.isfinite(scale) and scale > 0 and math.isfinite(offset)):
            raise ValueError(
                f"affine scale {t.scale} and offset {t.offset} must be finite float32, scale > 0"
            )
        return TensorDesc("uint8", tuple(t.codes.shape), t.codes.numel(), AFFINE_U8, scale, offset)
    name = dtype_name(t.dtype)
    return TensorDesc(name, tuple(t.shape), t.numel() * ITEMSIZE[name])


def buffer_tensor(buf: Any, desc: TensorDesc) -> torch.Tensor:
    """A tensor of ``desc``'s dtype and shape over ``buf`` (a frame's ``.buffer``, bytes, ...).

    Zero-copy when the buffer is writable and aligned for the dtype; otherwise one copy. An
    affine tensor comes back as float32 ``codes * scale + offset`` (a new tensor). The caller
    has checked ``len(buf) == desc.nbytes`` (see ``wire.format.check_frames``).
    """
    torch = _torch()
    dtype = torch_dtype(desc.dtype)
    if desc.nbytes == 0:
        out = torch.empty(desc.shape, dtype=dtype)
        return out.float() if desc.encoding == AFFINE_U8 else out
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if mv.readonly:
        # torch.frombuffer warns on read-only memory and writes through it would be undefined
        mv = memoryview(bytearray(mv))
    raw = torch.frombuffer(mv, dtype=torch.uint8)
    if desc.encoding == AFFINE_U8:
        return (raw.view(desc.shape).float() * desc.scale + desc.offset).contiguous()
    if raw.data_ptr() % ITEMSIZE[desc.dtype]:
        raw = raw.clone()
    return raw.view(dtype).view(desc.shape)


def tensors_to_wire(tensors: Sequence[Any]) -> tuple[tuple[TensorDesc, ...], list[memoryview]]:
    """Descriptors and zero-copy buffers for tensors (or :class:`Affine`/``Packed``), in order."""
    descs = []
    bufs = []
    for item in tensors:
        t = as_sendable(item)
        descs.append(describe(t))
        bufs.append(tensor_buffer(t.codes if isinstance(t, Affine) else t))
    return tuple(descs), bufs


def wire_to_tensors(descs: Sequence[TensorDesc], buffers: Sequence[Any]) -> list[torch.Tensor]:
    """Tensors over received buffers (frames' ``.buffer``), in order; see :func:`buffer_tensor`."""
    return [buffer_tensor(b, d) for d, b in zip(descs, buffers, strict=True)]
