"""The header format: layout, round trips, and every check a receiver runs."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.format import (
    AFFINE_U8,
    DESC_BYTES,
    DTYPES,
    FIXED_BYTES,
    MAGIC,
    MAX_NDIM,
    VERSION,
    ErrorCode,
    Header,
    Limits,
    MsgType,
    TensorDesc,
    TensorSpec,
    WireError,
    check_frames,
    check_request,
    decode_header,
    decode_reason,
    encode_header,
    error_frames,
    peek_request_id,
    peek_sent_ns,
)
from wire.tensors import Affine, buffer_tensor, tensor_buffer
from wire.transport import parse, request_frames

LIMITS = Limits(max_message_bytes=2**20, max_tensors=4, max_batch=8)
SPEC = (TensorSpec("a", (1, 8, 4, 4), "float32"), TensorSpec("idx", (1, 5), "int64"))
CATALOG = {"net": (SPEC, (TensorSpec("b", (1, 10), "float32"),), None)}


def request_header(**kw) -> Header:
    fields = dict(
        msg_type=MsgType.REQUEST,
        request_id=42,
        model="net",
        cut=0,
        tensors=(TensorDesc.of("float32", (1, 8, 4, 4)), TensorDesc.of("int64", (1, 5))),
        sent_ns=123456789,
    )
    fields.update(kw)
    return Header(**fields)


def code_of(fn, *args) -> ErrorCode:
    with pytest.raises(WireError) as info:
        fn(*args)
    return info.value.code


# -- layout ------------------------------------------------------------------------------------


def test_layout_offsets_match_the_documented_table():
    h = request_header(status=7, cut=3, edge_queue_ns=11, edge_tail_ns=22)
    b = encode_header(h)
    assert FIXED_BYTES == 112 and DESC_BYTES == 56
    assert len(b) == FIXED_BYTES + 2 * DESC_BYTES
    assert b[0:2] == MAGIC and b[2] == VERSION and b[3] == MsgType.REQUEST
    assert struct.unpack_from("<H", b, 4)[0] == 7
    assert struct.unpack_from("<H", b, 6)[0] == 2
    assert struct.unpack_from("<Q", b, 8)[0] == 42
    assert b[16:80].rstrip(b"\0") == b"net"
    assert struct.unpack_from("<H", b, 80)[0] == 3
    assert struct.unpack_from("<QQQ", b, 88) == (123456789, 11, 22)
    d = FIXED_BYTES
    assert b[d] == 1 and b[d + 1] == 4 and b[d + 2] == 0  # float32, ndim 4, raw
    assert struct.unpack_from("<Q", b, d + 8)[0] == 8 * 4 * 4 * 4
    assert struct.unpack_from("<ff", b, d + 16) == (0.0, 0.0)
    assert struct.unpack_from("<8I", b, d + 24) == (1, 8, 4, 4, 0, 0, 0, 0)


def test_docs_table_lists_every_field_at_its_offset():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "wire-format.md").read_text()
    rows = {
        (int(m.group(1)), int(m.group(2)), m.group(3))
        for m in re.finditer(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*`?(\w+)`?", doc, re.M)
    }
    for expected in [
        (0, 2, "magic"),
        (2, 1, "version"),
        (3, 1, "type"),
        (4, 2, "status"),
        (6, 2, "n_tensors"),
        (8, 8, "request_id"),
        (16, 64, "model"),
        (80, 2, "cut"),
        (82, 2, "flags"),
        (84, 4, "edge_backlog_us"),
        (88, 8, "sent_ns"),
        (96, 8, "edge_queue_ns"),
        (104, 8, "edge_tail_ns"),
        (0, 1, "dtype"),
        (1, 1, "ndim"),
        (2, 1, "encoding"),
        (3, 5, "reserved"),
        (8, 8, "nbytes"),
        (16, 4, "scale"),
        (20, 4, "offset"),
        (24, 32, "dims"),
    ]:
        assert expected in rows, expected
    for code in ErrorCode:
        assert re.search(rf"\|\s*{int(code)}\s*\|\s*`?{code.name}`?", doc), code.name


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [name for name, _ in DTYPES.values()])
def test_every_dtype_round_trips_through_frames(dtype):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(2, 3, 5, generator=gen) * 50
    t = base > 0 if dtype == "bool" else base.to(getattr(torch, dtype))
    frames = request_frames("net", 1, [t, t[:, :1].contiguous()], request_id=9)
    msg = parse(frames, LIMITS)
    assert msg.header.tensors[0] == TensorDesc.of(dtype, (2, 3, 5))
    out = msg.tensors()
    assert out[0].dtype == t.dtype and torch.equal(out[0], t)
    assert torch.equal(out[1], t[:, :1])


@pytest.mark.parametrize("shape", [(), (0,), (7,), (1, 2, 3, 4, 5, 6, 7, 2)])
def test_scalar_empty_and_max_ndim_shapes(shape):
    t = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
    out = parse(request_frames("net", 0, [t], 1), LIMITS).tensors()[0]
    assert out.shape == t.shape and torch.equal(out, t)


def test_non_contiguous_tensor_is_sent_as_its_contiguous_values():
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6).t()
    out = parse(request_frames("net", 0, [t], 1), LIMITS).tensors()[0]
    assert torch.equal(out, t)


def test_send_buffer_is_the_tensor_memory():
    t = torch.randn(1000)
    mv = tensor_buffer(t)
    assert mv.nbytes == 4000
    import numpy as np

    assert np.frombuffer(mv, dtype=np.uint8).ctypes.data == t.data_ptr()


def test_receive_is_zero_copy_when_aligned_and_copies_when_not():
    t = torch.randn(64)
    raw = bytearray(t.numpy().tobytes())
    desc = TensorDesc.of("float32", (64,))
    aligned = buffer_tensor(memoryview(raw), desc)
    import numpy as np

    if np.frombuffer(raw, np.uint8).ctypes.data % 4 == 0:
        assert aligned.data_ptr() == np.frombuffer(raw, np.uint8).ctypes.data
    shifted = bytearray(1) + raw
    view = memoryview(shifted)[1:]
    out = buffer_tensor(view, desc)
    assert out.data_ptr() % 4 == 0
    assert torch.equal(out, t)
    # read-only input (bytes) still works, as a copy
    assert torch.equal(buffer_tensor(bytes(raw), desc), t)


def test_error_frames_round_trip_with_one_line_reason():
    frames = error_frames(ErrorCode.BAD_CUT, "cut 99\nout of range", request_id=5, sent_ns=77)
    msg = parse(frames, LIMITS)
    assert msg.header.msg_type is MsgType.ERROR and msg.header.status == ErrorCode.BAD_CUT
    assert msg.header.request_id == 5 and msg.header.sent_ns == 77
    assert msg.reason() == "cut 99 out of range"
    assert decode_reason(b"x" * 1000).endswith("...")


def test_encode_refuses_what_the_format_cannot_carry():
    with pytest.raises(ValueError, match="model id"):
        encode_header(request_header(model="bad model"))
    with pytest.raises(ValueError, match="model id"):
        encode_header(request_header(model="m" * 65))
    with pytest.raises(ValueError, match="cannot travel"):
        encode_header(request_header(tensors=(TensorDesc("complex64", (1,), 8),)))
    with pytest.raises(ValueError, match="at most 8"):
        encode_header(request_header(tensors=(TensorDesc.of("uint8", (1,) * 9),)))
    with pytest.raises(ValueError, match="cannot travel"):
        request_frames("net", 0, [torch.zeros(2, dtype=torch.complex64)], 1)


def test_limits_are_checked():
    with pytest.raises(ValueError):
        Limits(max_message_bytes=10)
    with pytest.raises(ValueError):
        Limits(max_tensors=0)
    with pytest.raises(ValueError):
        Limits(max_batch=0)
    with pytest.raises(ValueError):
        Limits(float_wire_dtypes=("int8",))


# -- decode checks -----------------------------------------------------------------------------


def _patched(buf: bytes, offset: int, fmt: str, *values) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


GOOD = encode_header(request_header())


@pytest.mark.parametrize(
    "buf, code",
    [
        (b"", ErrorCode.BAD_HEADER),
        (GOOD[: FIXED_BYTES - 1], ErrorCode.BAD_HEADER),
        (GOOD[:-1], ErrorCode.BAD_HEADER),
        (GOOD + b"\0", ErrorCode.BAD_HEADER),
        (b"XX" + GOOD[2:], ErrorCode.BAD_HEADER),
        (_patched(GOOD, 2, "<B", 2), ErrorCode.BAD_VERSION),
        (_patched(GOOD, 3, "<B", 0), ErrorCode.BAD_TYPE),
        (_patched(GOOD, 3, "<B", 200), ErrorCode.BAD_TYPE),
        (_patched(GOOD, 82, "<H", 2), ErrorCode.BAD_HEADER),  # a flag not defined
        (_patched(GOOD, 84, "<I", 1), ErrorCode.BAD_HEADER),  # backlog without the flag
        # FLAG_BACKLOG on a request asks for the backlog; the field itself is for replies only
        (_patched(_patched(GOOD, 82, "<H", 1), 84, "<I", 1), ErrorCode.BAD_HEADER),
        (_patched(GOOD, 6, "<H", 3), ErrorCode.BAD_HEADER),  # count vs frame length
        (_patched(GOOD, 6, "<H", 60000), ErrorCode.TOO_LARGE),
        (_patched(GOOD, 16, "<3s", b"\xff\xfe\xfd"), ErrorCode.BAD_HEADER),
        (_patched(GOOD, 16, "<5s", b"n\0et\0"), ErrorCode.BAD_HEADER),
        (_patched(GOOD, 16, "<3s", b"n t"), ErrorCode.BAD_HEADER),
        (_patched(GOOD, FIXED_BYTES, "<B", 0), ErrorCode.BAD_DTYPE),
        (_patched(GOOD, FIXED_BYTES, "<B", 99), ErrorCode.BAD_DTYPE),
        (_patched(GOOD, FIXED_BYTES + 1, "<B", 9), ErrorCode.BAD_SHAPE),
        (_patched(GOOD, FIXED_BYTES + 3, "<B", 1), ErrorCode.BAD_HEADER),  # reserved
        (_patched(GOOD, FIXED_BYTES + 2, "<B", 7), ErrorCode.BAD_DTYPE),  # unknown encoding
        (_patched(GOOD, FIXED_BYTES + 2, "<B", 1), ErrorCode.BAD_DTYPE),  # affine float32
        (_patched(GOOD, FIXED_BYTES + 16, "<f", 0.5), ErrorCode.BAD_HEADER),  # scale on raw
        (_patched(GOOD, FIXED_BYTES + 20, "<f", 0.5), ErrorCode.BAD_HEADER),  # offset on raw
        (_patched(GOOD, FIXED_BYTES + 24 + 4 * 5, "<I", 3), ErrorCode.BAD_SHAPE),  # dim beyond ndim
        (_patched(GOOD, FIXED_BYTES + 8, "<Q", 513), ErrorCode.BAD_LENGTH),  # nbytes lies
        (_patched(GOOD, FIXED_BYTES + 8, "<Q", 2**64 - 1), ErrorCode.BAD_LENGTH),
        # huge but self-consistent shape: over the message limit before anything is allocated
        (
            _patched(
                _patched(GOOD, FIXED_BYTES + 24, "<4I", 2**32 - 1, 2**20, 1, 1),
                FIXED_BYTES + 8,
                "<Q",
                (2**32 - 1) * 2**20 * 4,
            ),
            ErrorCode.TOO_LARGE,
        ),
    ],
)
def test_decode_refuses(buf, code):
    assert code_of(decode_header, buf, LIMITS) is code


AFFINE = encode_header(
    request_header(
        tensors=(
            TensorDesc("uint8", (1, 8, 4, 4), 128, AFFINE_U8, 0.5, -1.0),
            TensorDesc.of("int64", (1, 5)),
        )
    )
)


@pytest.mark.parametrize(
    "buf",
    [
        _patched(AFFINE, FIXED_BYTES + 16, "<f", 0.0),
        _patched(AFFINE, FIXED_BYTES + 16, "<f", -2.0),
        _patched(AFFINE, FIXED_BYTES + 16, "<f", float("nan")),
        _patched(AFFINE, FIXED_BYTES + 16, "<f", float("inf")),
        _patched(AFFINE, FIXED_BYTES + 20, "<f", float("nan")),
        _patched(AFFINE, FIXED_BYTES, "<B", 8),  # int8 codes: affine needs uint8
    ],
)
def test_bad_affine_parameters_are_refused(buf):
    assert code_of(decode_header, buf, LIMITS) is ErrorCode.BAD_DTYPE


def test_affine_tensor_round_trips_as_float32():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 4, 4, generator=gen)
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 255
    codes = torch.round((x - lo) / scale).clamp(0, 255).to(torch.uint8)
    frames = request_frames("net", 0, [Affine(codes, scale, lo)], request_id=3)
    assert len(frames[1]) == x.numel()  # one byte per value on the wire
    msg = parse(frames, LIMITS)
    d = msg.header.tensors[0]
    assert d.encoding == AFFINE_U8 and d.dtype == "uint8"
    back = msg.tensors()[0]
    assert back.dtype == torch.float32 and back.shape == x.shape
    want = codes.float() * struct.unpack("<f", struct.pack("<f", scale))[0]
    want = want + struct.unpack("<f", struct.pack("<f", lo))[0]
    assert torch.equal(back, want)
    assert (back - x).abs().max() <= scale
    with pytest.raises(ValueError, match="uint8"):
        request_frames("net", 0, [Affine(codes.to(torch.int16), scale, lo)], 1)
    with pytest.raises(ValueError, match="scale"):
        request_frames("net", 0, [Affine(codes, 0.0, lo)], 1)


def test_packed_objects_from_dnn_split_are_sent_as_they_are():
    from dnn_split.compress import pack, unpack

    x = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(4))
    for mode, dtype in [(None, torch.float32), ("float16", torch.float16), ("int8", torch.float32)]:
        p = pack(x, mode)
        frames = request_frames("net", 0, [p], 1)
        got = parse(frames, LIMITS).tensors()[0]
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), unpack(p).float(), rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="cannot send"):
        request_frames("net", 0, ["not a tensor"], 1)


def test_refusal_echoes_the_request_id_when_it_can_be_read():
    with pytest.raises(WireError) as info:
        decode_header(_patched(GOOD, 2, "<B", 9), LIMITS)
    assert info.value.request_id == 42
    assert peek_request_id(GOOD) == 42 and peek_request_id(b"zz") == 0
    assert peek_sent_ns(GOOD) == 123456789 and peek_sent_ns(GOOD[:50]) == 0


def test_total_bytes_over_the_limit_is_too_large():
    big = request_header(tensors=(TensorDesc.of("float32", (1, 512, 512)),))
    assert (
        code_of(decode_header, encode_header(big), Limits(max_message_bytes=2**20))
        is ErrorCode.TOO_LARGE
    )
    assert decode_header(encode_header(big), Limits(max_message_bytes=2**21)).payload_bytes == 2**20


# -- frame checks ------------------------------------------------------------------------------


def test_frame_count_and_lengths():
    h = request_header()
    good = [bytes(512), bytes(40)]
    check_frames(h, good)
    assert code_of(check_frames, h, good[:1]) is ErrorCode.BAD_FRAMES
    assert code_of(check_frames, h, [*good, b""]) is ErrorCode.BAD_FRAMES
    assert code_of(check_frames, h, [bytes(511), bytes(40)]) is ErrorCode.BAD_LENGTH
    assert code_of(check_frames, h, [bytes(512), bytes(41)]) is ErrorCode.BAD_LENGTH
    err = Header(MsgType.ERROR, 1, status=1)
    check_frames(err, [b"why"])
    assert code_of(check_frames, err, []) is ErrorCode.BAD_FRAMES
    assert code_of(check_frames, err, [b"x" * 1000]) is ErrorCode.TOO_LARGE
    assert code_of(parse, [], LIMITS) is ErrorCode.BAD_FRAMES


# -- request checks against the model's cut ----------------------------------------------------


def test_request_matching_the_cut_passes_and_returns_its_spec():
    assert check_request(request_header(), CATALOG, LIMITS) == SPEC
    batch = request_header(
        tensors=(TensorDesc.of("float32", (8, 8, 4, 4)), TensorDesc.of("int64", (8, 5)))
    )
    assert check_request(batch, CATALOG, LIMITS) == SPEC


def test_float_tensors_may_travel_as_affine_uint8_codes():
    affine = decode_header(AFFINE, LIMITS)
    check_request(affine, CATALOG, LIMITS)
    no_affine = Limits(max_message_bytes=2**20, allow_affine_uint8=False)
    assert code_of(check_request, affine, CATALOG, no_affine) is ErrorCode.BAD_DTYPE
    raw_u8 = request_header(
        tensors=(TensorDesc.of("uint8", (1, 8, 4, 4)), TensorDesc.of("int64", (1, 5)))
    )
    assert code_of(check_request, raw_u8, CATALOG, LIMITS) is ErrorCode.BAD_DTYPE
    int_affine = request_header(
        tensors=(
            TensorDesc.of("float32", (1, 8, 4, 4)),
            TensorDesc("uint8", (1, 5), 5, AFFINE_U8, 1.0, 0.0),
        )
    )
    assert code_of(check_request, int_affine, CATALOG, LIMITS) is ErrorCode.BAD_DTYPE


def test_float_tensors_may_travel_as_half_precision_but_integers_may_not():
    half = request_header(
        tensors=(TensorDesc.of("float16", (1, 8, 4, 4)), TensorDesc.of("int64", (1, 5)))
    )
    check_request(half, CATALOG, LIMITS)
    only32 = Limits(max_message_bytes=2**20, float_wire_dtypes=("float32",))
    assert code_of(check_request, half, CATALOG, only32) is ErrorCode.BAD_DTYPE
    ints = request_header(
        tensors=(TensorDesc.of("float32", (1, 8, 4, 4)), TensorDesc.of("int32", (1, 5)))
    )
    assert code_of(check_request, ints, CATALOG, LIMITS) is ErrorCode.BAD_DTYPE


@pytest.mark.parametrize(
    "kw, code",
    [
        (dict(model="other"), ErrorCode.UNKNOWN_MODEL),
        (dict(cut=3), ErrorCode.BAD_CUT),
        (dict(cut=65535), ErrorCode.BAD_CUT),
        (dict(cut=2), ErrorCode.BAD_CUT),  # no tail at this cut
        (dict(cut=1), ErrorCode.BAD_TENSOR_COUNT),
        (dict(tensors=(TensorDesc.of("float32", (1, 8, 4, 4)),)), ErrorCode.BAD_TENSOR_COUNT),
        (
            dict(tensors=(TensorDesc.of("int64", (1, 8, 4, 4)), TensorDesc.of("int64", (1, 5)))),
            ErrorCode.BAD_DTYPE,
        ),
        (
            dict(tensors=(TensorDesc.of("float32", (1, 8, 4, 5)), TensorDesc.of("int64", (1, 5)))),
            ErrorCode.BAD_SHAPE,
        ),
        (
            dict(tensors=(TensorDesc.of("float32", (1, 8, 16)), TensorDesc.of("int64", (1, 5)))),
            ErrorCode.BAD_SHAPE,
        ),
        (
            dict(tensors=(TensorDesc.of("float32", (0, 8, 4, 4)), TensorDesc.of("int64", (0, 5)))),
            ErrorCode.BAD_SHAPE,
        ),
        (
            dict(tensors=(TensorDesc.of("float32", (9, 8, 4, 4)), TensorDesc.of("int64", (9, 5)))),
            ErrorCode.TOO_LARGE,
        ),
        (
            dict(tensors=(TensorDesc.of("float32", (2, 8, 4, 4)), TensorDesc.of("int64", (3, 5)))),
            ErrorCode.BAD_SHAPE,
        ),
    ],
)
def test_request_refused(kw, code):
    err = code_of(check_request, request_header(**kw), CATALOG, LIMITS)
    assert err is code


# -- fuzzing the decoder -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=FIXED_BYTES + 5 * DESC_BYTES))
def test_random_bytes_only_ever_raise_wire_errors(data):
    try:
        h = decode_header(data, LIMITS)
    except WireError as exc:
        assert "\n" not in exc.reason
        return
    # anything that decodes is self-consistent
    for t in h.tensors:
        assert t.nbytes == math.prod(t.shape) * dict(DTYPES.values())[t.dtype]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_mutated_headers_decode_consistently_or_are_refused(edits):
    b = bytearray(GOOD)
    for pos, val in edits:
        b[pos] = val
    try:
        h = decode_header(bytes(b), LIMITS)
    except WireError:
        return
    assert len(h.tensors) <= LIMITS.max_tensors
    assert h.payload_bytes <= LIMITS.max_message_bytes
    for t in h.tensors:
        assert len(t.shape) <= MAX_NDIM
        assert t.nbytes == math.prod(t.shape) * dict(DTYPES.values())[t.dtype]
    try:
        check_request(h, CATALOG, LIMITS)
    except WireError:
        pass
