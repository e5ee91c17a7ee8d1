"""The cutedge wire format: one fixed ``struct`` header, then one raw buffer per tensor.

Why this shape: the tensors that cross a cut are megabytes, the metadata is a few dozen bytes.
A fixed binary header costs a microsecond to pack and to check, needs no parser that an attacker
could steer (no pickle, no JSON), and tells the receiver every size *before* it touches a buffer,
so a lying or hostile message is refused with a reason instead of an allocation. The byte layout
is documented in ``docs/wire-format.md``; this module is the one place that defines it.

A message is a ZeroMQ multipart message::

    frame 0          header: FIXED (112 bytes) + n_tensors * TENSOR_DESC (56 bytes)
    frame 1..n       one raw, C-contiguous buffer per tensor, in the order of the descriptors
    (ERROR only)     frame 1 is the UTF-8 one-line reason, no tensors

All integers are little-endian. Every field is checked by :func:`decode_header` (structure,
sizes, consistency between shape, dtype and byte length, limits), :func:`check_frames` (frame
count and frame lengths against the header) and :func:`check_request` (model, cut, dtypes and
shapes against what the model's cut expects). Each failure raises :class:`WireError` with an
:class:`ErrorCode` and a one-line reason; a server turns it into an ERROR reply.
"""

from __future__ import annotations

import enum
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

MAGIC = b"CE"
VERSION = 1

#: ``<``: little-endian, no padding. magic, version, type, status, n_tensors, request id,
#: model id, cut, flags, edge_backlog_us (reserved before FLAG_BACKLOG), sent_ns,
#: edge_queue_ns, edge_tail_ns.
_FIXED = struct.Struct("<2sBBHHQ64sHHIQQQ")
#: dtype code, ndim, encoding, 5 reserved bytes, nbytes, affine scale and offset, 8 dims.
_DESC = struct.Struct("<BBB5sQff8I")
_ZERO5 = bytes(5)
_PAD = [(0,) * (8 - n) for n in range(9)]

FIXED_BYTES = _FIXED.size  # 112
DESC_BYTES = _DESC.size  # 56
MAX_NDIM = 8
MAX_MODEL_ID_BYTES = 64
MAX_REASON_BYTES = 256
#: hard ceiling on tensors per message, whatever the limits say (keeps the header < 4 KB).
MAX_TENSORS = 64

#: how a tensor's buffer encodes its values
RAW = 0  # the values themselves, in ``dtype``
AFFINE_U8 = 1  # uint8 codes q of a float tensor: value = q * scale + offset (per-tensor int8)
ENCODINGS = {RAW: "raw", AFFINE_U8: "affine-uint8"}

_MODEL_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,63}$")

#: ``flags`` bit 0. On a REQUEST: "this device reads the edge's backlog"; on a reply (RESULT or
#: ERROR) to such a request: "``edge_backlog_us`` holds the edge's backlog". Why a flag and not
#: a plain new field: decoders before it refuse any non-zero ``flags``/``reserved``, so the edge
#: fills the field only for a device that asked, and an old device never sees it.
FLAG_BACKLOG = 1
KNOWN_FLAGS = FLAG_BACKLOG
MAX_BACKLOG_US = _U32 = 2**32 - 1  # about 71 minutes; larger backlogs are sent as this


class MsgType(enum.IntEnum):
    """What a message is; the reply type for each request type is fixed."""

    REQUEST = 1  # device -> edge: run the tail of ``model`` from ``cut`` on these tensors
    RESULT = 2  # edge -> device: the tail's output tensors
    ERROR = 3  # edge -> device: ``status`` is an ErrorCode, frame 1 the reason
    PING = 4  # device -> edge: are you there? (no tensors)
    PONG = 5  # edge -> device: yes (echoes request id and sent_ns)


#: what the edge sends; only these may carry ``edge_backlog_us``
_REPLIES = frozenset({MsgType.RESULT, MsgType.ERROR, MsgType.PONG})


class ErrorCode(enum.IntEnum):
    """Why a message was refused. Stable numbers: they travel on the wire."""

    BAD_HEADER = 1  # header frame too short, wrong magic, reserved bytes set, wrong length
    BAD_VERSION = 2  # format version this side does not speak
    BAD_TYPE = 3  # unknown message type, or a type the receiver does not accept
    UNKNOWN_MODEL = 4  # model id not served here
    BAD_CUT = 5  # cut out of range, or a cut with nothing to run on the edge
    BAD_TENSOR_COUNT = 6  # number of tensors differs from what the cut sends
    BAD_DTYPE = 7  # unknown dtype code or encoding, or not the dtype the cut sends
    BAD_SHAPE = 8  # ndim/dims invalid, or not the shape the cut sends
    BAD_LENGTH = 9  # nbytes inconsistent with shape*itemsize, or frame length != nbytes
    TOO_LARGE = 10  # over the configured maximum message size, batch or tensor count
    BAD_FRAMES = 11  # number of frames differs from the header
    BUSY = 12  # edge queue full: try later
    TAIL_FAILED = 13  # the tail raised while running (a bug or a resource problem)
    SHUTTING_DOWN = 14  # edge is stopping; request not run
    INTERNAL = 15  # unexpected server fault while handling this message


class WireError(Exception):
    """A message that breaks the format or the limits: an error code and a one-line reason."""

    def __init__(self, code: ErrorCode, reason: str, request_id: int = 0):
        self.code = ErrorCode(code)
        self.reason = one_line(reason)
        self.request_id = request_id
        super().__init__(f"{self.code.name}: {self.reason}")


def one_line(text: str, limit: int = 200) -> str:
    """Squash ``text`` to a single printable line of at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# dtype code -> (name, itemsize). Names are torch's (``torch.float32`` -> "float32").
DTYPES: dict[int, tuple[str, int]] = {
    1: ("float32", 4),
    2: ("float16", 2),
    3: ("bfloat16", 2),
    4: ("float64", 8),
    5: ("int64", 8),
    6: ("int32", 4),
    7: ("int16", 2),
    8: ("int8", 1),
    9: ("uint8", 1),
    10: ("bool", 1),
}
DTYPE_CODES: dict[str, int] = {name: code for code, (name, _) in DTYPES.items()}
ITEMSIZE: dict[str, int] = {name: size for name, size in DTYPES.values()}
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")


class TensorDesc(NamedTuple):
    """One tensor as the header describes it: dtype, shape, byte length of its buffer.

    ``encoding`` is :data:`RAW` or :data:`AFFINE_U8`; an affine tensor travels as uint8 codes
    with its float32 ``scale`` and ``offset`` (``dnn_split.compress``'s int8 mode) and is a float
    tensor again once received. (NamedTuple rather than a frozen dataclass: one is built per
    tensor per message, and a tuple is several times faster to build.)
    """

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    encoding: int = RAW
    scale: float = 0.0
    offset: float = 0.0

    @classmethod
    def of(cls, dtype: str, shape: Sequence[int]) -> TensorDesc:
        """The descriptor of a C-contiguous raw tensor of ``dtype`` and ``shape``."""
        shape = tuple(int(d) for d in shape)
        return cls(dtype, shape, math.prod(shape) * ITEMSIZE[dtype])


class Header(NamedTuple):
    """The decoded header frame (a NamedTuple for speed, like :class:`TensorDesc`).

    ``sent_ns`` is the sender's own clock when it sent a request; replies echo it so the device
    can compute a round trip without bookkeeping. ``edge_queue_ns``/``edge_tail_ns`` are
    durations measured on the edge (receipt to tail start, tail run), so no clock is shared.
    ``flags`` is 0 or :data:`FLAG_BACKLOG`; ``edge_backlog_us`` (replies with the flag only) is
    the edge's estimate of the tail work queued ahead of a new request, in microseconds.
    """

    msg_type: MsgType
    request_id: int
    model: str = ""
    cut: int = 0
    status: int = 0
    tensors: tuple[TensorDesc, ...] = ()
    sent_ns: int = 0
    edge_queue_ns: int = 0
    edge_tail_ns: int = 0
    flags: int = 0
    edge_backlog_us: int = 0

    @property
    def payload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts. Checked on every header before any buffer is touched.

    ``max_message_bytes`` bounds the whole message (header and all tensor frames); sockets also
    get it as ``zmq.MAXMSGSIZE`` so no single frame larger than that is ever buffered.
    ``max_batch`` bounds dim 0 of request tensors (the cut's spec is for batch 1).
    ``float_wire_dtypes``: a floating-point crossing tensor may travel in any of these (a device
    halves its uplink bytes by sending float16); the edge casts it back to the tail's dtype.
    ``allow_affine_uint8``: a floating crossing tensor may also travel as affine uint8 codes
    (a quarter of float32's bytes). Integer and bool tensors must travel in exactly their own
    dtype.
    """

    max_message_bytes: int = 64 * 2**20
    max_tensors: int = 16
    max_batch: int = 16
    float_wire_dtypes: tuple[str, ...] = FLOAT_DTYPES
    allow_affine_uint8: bool = True

    def __post_init__(self) -> None:
        if not FIXED_BYTES < self.max_message_bytes <= 2**40:
            raise ValueError(
                f"max_message_bytes must be in ({FIXED_BYTES}, 2**40], got {self.max_message_bytes}"
            )
        if not 1 <= self.max_tensors <= MAX_TENSORS:
            raise ValueError(f"max_tensors must be in [1, {MAX_TENSORS}], got {self.max_tensors}")
        if not 1 <= self.max_batch <= _U32:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        bad = [d for d in self.float_wire_dtypes if d not in FLOAT_DTYPES]
        if bad or not self.float_wire_dtypes:
            raise ValueError(
                f"float_wire_dtypes must be a non-empty subset of {FLOAT_DTYPES}, "
                f"got {self.float_wire_dtypes}"
            )


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor that crosses a cut, as the partitioner reports it (batch 1, dim 0 = batch)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


#: per model, per cut index: the tensors the device sends at that cut, in order; ``None`` for a
#: cut that leaves nothing to run on the edge (the whole model runs on the device).
Catalog = Mapping[str, Sequence["tuple[TensorSpec, ...] | None"]]


# -- encoding ----------------------------------------------------------------------------------


def check_model_id(model: str) -> bytes:
    """Encode a model id, refusing one the header cannot carry unambiguously."""
    if not _MODEL_ID.match(model):
        raise ValueError(
            f"model id {model!r} must be 1-64 ASCII letters, digits or '._:-', "
            "starting with a letter, digit or '_'"
        )
    return model.encode("ascii")


@lru_cache(maxsize=1024)
def _model_bytes(model: str) -> bytes:
    return check_model_id(model) if model else b""


def encode_header(h: Header) -> bytes:
    """Pack ``h``. Raises ``ValueError`` for a header this format cannot carry (a local bug)."""
    n = len(h.tensors)
    if n > MAX_TENSORS:
        raise ValueError(f"{n} tensors: the format carries at most {MAX_TENSORS}")
    if h.flags & ~KNOWN_FLAGS:
        raise ValueError(f"flags {h.flags:#x}: only FLAG_BACKLOG ({FLAG_BACKLOG}) is defined")
    if h.edge_backlog_us and not (h.flags & FLAG_BACKLOG and h.msg_type in _REPLIES):
        raise ValueError("edge_backlog_us travels only in replies with FLAG_BACKLOG")
    if not 0 <= h.edge_backlog_us <= MAX_BACKLOG_US:
        raise ValueError(f"edge_backlog_us {h.edge_backlog_us} outside 0..{MAX_BACKLOG_US}")
    model = _model_bytes(h.model)
    out = bytearray(FIXED_BYTES + n * DESC_BYTES)
    _FIXED.pack_into(
        out,
        0,
        MAGIC,
        VERSION,
        int(h.msg_type),
        h.status,
        n,
        h.request_id,
        model,
        h.cut,
        h.flags,
        h.edge_backlog_us,
        h.sent_ns,
        h.edge_queue_ns,
        h.edge_tail_ns,
    )
    off = FIXED_BYTES
    for t in h.tensors:
        code = DTYPE_CODES.get(t.dtype)
        if code is None:
            raise ValueError(f"dtype {t.dtype!r} cannot travel (allowed: {', '.join(DTYPE_CODES)})")
        ndim = len(t.shape)
        if ndim > MAX_NDIM:
            raise ValueError(
                f"shape {t.shape} has {ndim} dims: the format carries at most {MAX_NDIM}"
            )
        if t.encoding == AFFINE_U8:
            if t.dtype != "uint8" or not (math.isfinite(t.scale) and t.scale > 0):
                raise ValueError(f"affine encoding needs uint8 codes and a finite scale > 0: {t}")
            if not math.isfinite(t.offset):
                raise ValueError(f"affine offset must be finite: {t}")
        elif t.encoding != RAW or t.scale or t.offset:
            raise ValueError(f"unknown encoding, or scale/offset on a raw tensor: {t}")
        _DESC.pack_into(
            out,
            off,
            code,
            ndim,
            t.encoding,
            _ZERO5,
            t.nbytes,
            t.scale,
            t.offset,
            *t.shape,
            *_PAD[ndim],
        )
        off += DESC_BYTES
    return bytes(out)


# -- decoding and checks -----------------------------------------------------------------------


def peek_request_id(buf: bytes | memoryview) -> int:
    """The request id of a header that may be broken, or 0: error replies echo what they can."""
    if len(buf) >= 16 and bytes(buf[:2]) == MAGIC:
        return int.from_bytes(bytes(buf[8:16]), "little")
    return 0


def peek_sent_ns(buf: bytes | memoryview) -> int:
    """The sender's timestamp of a header that may be broken, or 0."""
    if len(buf) >= FIXED_BYTES and bytes(buf[:2]) == MAGIC:
        return _FIXED.unpack_from(buf, 0)[10]
    return 0


def decode_header(buf: bytes | memoryview, limits: Limits) -> Header:
    """Unpack and check a header frame on its own (no model knowledge needed).

    Checks, in order: length, magic, version, type, reserved bytes, tensor count against the
    frame's length and the limits, model id encoding, each descriptor (dtype code, encoding and
    its parameters, ndim, unused dims zero, nbytes == prod(shape) * itemsize) and the total
    against ``max_message_bytes``. Arithmetic is on Python ints, so no field can overflow a size
    computation.
    """
    size = len(buf)
    if size < FIXED_BYTES:
        raise WireError(
            ErrorCode.BAD_HEADER,
            f"header frame is {size} bytes, needs at least {FIXED_BYTES}",
            peek_request_id(buf),
        )
    (
        magic,
        version,
        mtype,
        status,
        n,
        rid,
        model_raw,
        cut,
        flags,
        reserved,
        sent_ns,
        queue_ns,
        tail_ns,
    ) = _FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise WireError(ErrorCode.BAD_HEADER, f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireError(
            ErrorCode.BAD_VERSION, f"format version {version}, this side speaks {VERSION}", rid
        )
    try:
        msg_type = MsgType(mtype)
    except ValueError:
        raise WireError(ErrorCode.BAD_TYPE, f"unknown message type {mtype}", rid) from None
    if flags & ~KNOWN_FLAGS or (
        reserved and not (flags & FLAG_BACKLOG and msg_type in _REPLIES)
    ):
        raise WireError(
            ErrorCode.BAD_HEADER,
            f"reserved header fields must be 0 (flags={flags}, reserved={reserved}; only "
            f"flag {FLAG_BACKLOG} is defined, and edge_backlog_us only in replies with it)",
            rid,
        )
    if n > limits.max_tensors:
        raise WireError(ErrorCode.TOO_LARGE, f"{n} tensors, limit is {limits.max_tensors}", rid)
    expected = FIXED_BYTES + n * DESC_BYTES
    if size != expected:
        raise WireError(
            ErrorCode.BAD_HEADER,
            f"header frame is {size} bytes, {n} tensors need exactly {expected}",
            rid,
        )
    model = _decode_model(model_raw, rid)
    budget = limits.max_message_bytes - expected
    tensors = []
    total = 0
    for i in range(n):
        code, ndim, encoding, pad, nbytes, scale, offset, *dims = _DESC.unpack_from(
            buf, FIXED_BYTES + i * DESC_BYTES
        )
        if pad != _ZERO5:
            raise WireError(
                ErrorCode.BAD_HEADER, f"tensor {i}: reserved descriptor bytes must be 0", rid
            )
        dt = DTYPES.get(code)
        if dt is None:
            raise WireError(ErrorCode.BAD_DTYPE, f"tensor {i}: unknown dtype code {code}", rid)
        if encoding == RAW:
            if scale or offset:
                raise WireError(
                    ErrorCode.BAD_HEADER, f"tensor {i}: scale/offset set on a raw tensor", rid
                )
        elif encoding == AFFINE_U8:
            if dt[0] != "uint8":
                raise WireError(
                    ErrorCode.BAD_DTYPE,
                    f"tensor {i}: affine encoding needs uint8 codes, got {dt[0]}",
                    rid,
                )
            if not (math.isfinite(scale) and scale > 0 and math.isfinite(offset)):
                raise WireError(
                    ErrorCode.BAD_DTYPE,
                    f"tensor {i}: affine scale {scale} and offset {offset} must be finite, "
                    "scale > 0",
                    rid,
                )
        else:
            raise WireError(ErrorCode.BAD_DTYPE, f"tensor {i}: unknown encoding {encoding}", rid)
        if ndim > MAX_NDIM:
            raise WireError(ErrorCode.BAD_SHAPE, f"tensor {i}: ndim {ndim} > {MAX_NDIM}", rid)
        if any(dims[ndim:]):
            raise WireError(
                ErrorCode.BAD_SHAPE, f"tensor {i}: dims beyond ndim {ndim} must be 0", rid
            )
        shape = tuple(dims[:ndim])
        want = math.prod(shape) * dt[1]
        if nbytes != want:
            raise WireError(
                ErrorCode.BAD_LENGTH,
                f"tensor {i}: nbytes {nbytes} != {want} for {dt[0]} of shape {list(shape)}",
                rid,
            )
        total += nbytes
        if total > budget:
            raise WireError(
                ErrorCode.TOO_LARGE,
                f"tensors add up to more than {budget} bytes "
                f"(max message {limits.max_message_bytes})",
                rid,
            )
        tensors.append(TensorDesc(dt[0], shape, nbytes, encoding, scale, offset))
    return Header(
        msg_type, rid, model, cut, status, tuple(tensors), sent_ns, queue_ns, tail_ns, flags, reserved
    )


def _decode_model(raw: bytes, rid: int) -> str:
    text = raw.rstrip(b"\0")
    if b"\0" in text:
        raise WireError(ErrorCode.BAD_HEADER, "model id has a NUL byte inside", rid)
    try:
        model = text.decode("ascii")
    except UnicodeDecodeError:
        raise WireError(ErrorCode.BAD_HEADER, "model id is not ASCII", rid) from None
    if model and not _MODEL_ID.match(model):
        raise WireError(
            ErrorCode.BAD_HEADER,
            f"model id {model!r} has characters outside [A-Za-z0-9._:-]",
            rid,
        )
    return model


def frame_nbytes(frame: object) -> int:
    """Byte length of a frame: ``zmq.Frame``/bytes (``len``) or a buffer (``.nbytes``)."""
    n = getattr(frame, "nbytes", None)
    return int(n) if n is not None else len(frame)  # type: ignore[arg-type]


def check_frames(h: Header, frames: Sequence[object]) -> None:
    """Check the frames after the header against it: count first, then each buffer's length.

    ``frames`` are frames 1.. (``zmq.Frame``, bytes or buffers); an ERROR message has exactly
    one (the reason), every other type one per tensor.
    """
    if h.msg_type is MsgType.ERROR:
        if len(frames) != 1 or h.tensors:
            raise WireError(
                ErrorCode.BAD_FRAMES,
                f"an ERROR message has a header and one reason frame, got {1 + len(frames)} frames",
                h.request_id,
            )
        size = frame_nbytes(frames[0])
        if size > MAX_REASON_BYTES:
            raise WireError(
                ErrorCode.TOO_LARGE,
                f"error reason is {size} bytes, limit {MAX_REASON_BYTES}",
                h.request_id,
            )
        return
    if len(frames) != len(h.tensors):
        raise WireError(
            ErrorCode.BAD_FRAMES,
            f"header announces {len(h.tensors)} tensor frames, message has {len(frames)}",
            h.request_id,
        )
    for i, (t, f) in enumerate(zip(h.tensors, frames, strict=True)):
        got = frame_nbytes(f)
        if got != t.nbytes:
            raise WireError(
                ErrorCode.BAD_LENGTH,
                f"tensor {i}: frame is {got} bytes, header says {t.nbytes}",
                h.request_id,
            )


def _dtype_ok(t: TensorDesc, s: TensorSpec, limits: Limits) -> bool:
    if s.dtype not in FLOAT_DTYPES:
        return t.encoding == RAW and t.dtype == s.dtype
    if t.encoding == AFFINE_U8:
        return limits.allow_affine_uint8
    return t.dtype == s.dtype or t.dtype in limits.float_wire_dtypes


def check_request(h: Header, catalog: Catalog, limits: Limits) -> tuple[TensorSpec, ...]:
    """Check a REQUEST header against what ``h.model`` sends at ``h.cut``; return that spec.

    Shapes must match the spec exactly except dim 0 (the batch), which may be 1..max_batch and
    must be the same across the cut's tensors. Floating tensors may travel as another float
    dtype or as affine uint8 (see :class:`Limits`); integer and bool tensors as themselves.
    """
    rid = h.request_id
    cuts = catalog.get(h.model)
    if cuts is None:
        served = ", ".join(sorted(catalog)) or "none"
        raise WireError(
            ErrorCode.UNKNOWN_MODEL, f"model {h.model!r} is not served here (served: {served})", rid
        )
    if h.cut >= len(cuts):
        raise WireError(
            ErrorCode.BAD_CUT, f"cut {h.cut} out of range for {h.model} (0..{len(cuts) - 1})", rid
        )
    spec = cuts[h.cut]
    if spec is None:
        raise WireError(
            ErrorCode.BAD_CUT, f"cut {h.cut} of {h.model} leaves nothing to run on the edge", rid
        )
    if len(h.tensors) != len(spec):
        raise WireError(
            ErrorCode.BAD_TENSOR_COUNT,
            f"cut {h.cut} of {h.model} sends {len(spec)} tensors, request has {len(h.tensors)}",
            rid,
        )
    batch = None
    for i, (t, s) in enumerate(zip(h.tensors, spec, strict=True)):
        if not _dtype_ok(t, s, limits):
            if s.dtype in FLOAT_DTYPES:
                allowed = " or ".join(limits.float_wire_dtypes)
                if limits.allow_affine_uint8:
                    allowed += " or affine uint8"
            else:
                allowed = s.dtype
            got = f"affine {t.dtype}" if t.encoding == AFFINE_U8 else t.dtype
            raise WireError(
                ErrorCode.BAD_DTYPE, f"tensor {i} ({s.name}): dtype {got}, expected {allowed}", rid
            )
        if len(t.shape) != len(s.shape) or t.shape[1:] != s.shape[1:] or not t.shape:
            raise WireError(
                ErrorCode.BAD_SHAPE,
                f"tensor {i} ({s.name}): shape {list(t.shape)}, "
                f"expected [B, {', '.join(map(str, s.shape[1:]))}]",
                rid,
            )
        if batch is None:
            batch = t.shape[0]
            if batch < 1:
                raise WireError(
                    ErrorCode.BAD_SHAPE, f"tensor {i} ({s.name}): batch {batch}, must be >= 1", rid
                )
            if batch > limits.max_batch:
                raise WireError(
                    ErrorCode.TOO_LARGE, f"batch {batch} over the limit {limits.max_batch}", rid
                )
        elif t.shape[0] != batch:
            raise WireError(
                ErrorCode.BAD_SHAPE,
                f"tensor {i} ({s.name}): batch {t.shape[0]} differs from tensor 0's {batch}",
                rid,
            )
    return spec


# -- convenience constructors ------------------------------------------------------------------


def error_frames(
    code: ErrorCode,
    reason: str,
    request_id: int = 0,
    sent_ns: int = 0,
    retry_after_ns: int = 0,
    backlog_us: int | None = None,
) -> list[bytes]:
    """The frames of an ERROR reply: header and the one-line reason. A BUSY reply carries the
    edge's advice on how long to wait before sending again in ``edge_queue_ns``; ``backlog_us``
    (for a request that set :data:`FLAG_BACKLOG`, else None) the edge's backlog."""
    header = encode_header(
        Header(
            MsgType.ERROR,
            request_id,
            status=int(code),
            sent_ns=sent_ns,
            edge_queue_ns=retry_after_ns,
            flags=0 if backlog_us is None else FLAG_BACKLOG,
            edge_backlog_us=0 if backlog_us is None else min(MAX_BACKLOG_US, backlog_us),
        )
    )
    return [header, one_line(reason).encode("utf-8")[:MAX_REASON_BYTES]]


def decode_reason(buf: bytes | memoryview) -> str:
    """The reason of an ERROR message, as one printable line."""
    return one_line(bytes(buf[:MAX_REASON_BYTES]).decode("utf-8", errors="replace"))


def check_limits_for(spec: Sequence[TensorSpec], limits: Limits) -> int:
    """Bytes a batch-1 raw request for ``spec`` takes on the wire (header included).

    The edge uses it at start-up to refuse a ``--max-message-bytes`` too small for a cut it
    serves, rather than failing every request for it later.
    """
    return (
        FIXED_BYTES
        + len(spec) * DESC_BYTES
        + sum(math.prod(s.shape) * ITEMSIZE[s.dtype] for s in spec)
    )


__all__ = [
    "AFFINE_U8",
    "DESC_BYTES",
    "DTYPES",
    "DTYPE_CODES",
    "ENCODINGS",
    "FIXED_BYTES",
    "FLAG_BACKLOG",
    "FLOAT_DTYPES",
    "ITEMSIZE",
    "KNOWN_FLAGS",
    "MAGIC",
    "MAX_BACKLOG_US",
    "MAX_NDIM",
    "MAX_REASON_BYTES",
    "MAX_TENSORS",
    "RAW",
    "VERSION",
    "Catalog",
    "ErrorCode",
    "Header",
    "Limits",
    "MsgType",
    "TensorDesc",
    "TensorSpec",
    "WireError",
    "check_frames",
    "check_limits_for",
    "check_model_id",
    "check_request",
    "decode_header",
    "decode_reason",
    "encode_header",
    "error_frames",
    "frame_nbytes",
    "one_line",
    "peek_request_id",
    "peek_sent_ns",
]
