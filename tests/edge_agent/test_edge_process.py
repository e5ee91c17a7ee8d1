"""``cutedge edge`` as a real process on 127.0.0.1: real requests, 10 000 malformed messages,
oversized frames, CURVE, and clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import random
import signal
import struct
import time

import pytest
import torch
import zmq
from edge_helpers import EdgeProcess
from edge_tinynet import INPUT_SHAPE, MODEL

from cutedge.cli import main as cli_main
from dnn_split.partition import partition
from wire.curve import ClientKeys
from wire.format import (
    DESC_BYTES,
    DTYPE_CODES,
    FIXED_BYTES,
    ErrorCode,
    Header,
    Limits,
    MsgType,
    TensorDesc,
    encode_header,
    peek_request_id,
)
from wire.transport import EdgeClient, EdgeTimeout, parse

MAX_MESSAGE_BYTES = 2**20
SHAPE_ARG = "x".join(map(str, INPUT_SHAPE))
EDGE_ARGS = (
    "--models",
    f"{MODEL}@{SHAPE_ARG}",
    "--log-interval-s",
    "0.5",
    "--max-message-bytes",
    str(MAX_MESSAGE_BYTES),
    "--max-batch",
    "16",
)


@pytest.fixture(scope="module")
def part():
    return partition(MODEL, INPUT_SHAPE, announce=lambda line: None)


@pytest.fixture(scope="module")
def edge():
    proc = EdgeProcess(*EDGE_ARGS)
    try:
        yield proc.started()
    finally:
        proc.kill()


def local_tail(part, cut, inputs):
    with torch.inference_mode():
        out = part.tail(cut)(*inputs)
    return out


# -- real requests -----------------------------------------------------------------------------


def test_results_over_the_wire_equal_the_local_tail(edge, part):
    tail_cuts = [c.index for c in part.cuts if c.index != part.last.index]
    with EdgeClient(edge.endpoint) as client:
        assert client.ping(timeout_s=10) > 0
        for batch in (1, 3):
            x = part.example_input(batch=batch, seed=batch)
            for cut in tail_cuts:
                with torch.inference_mode():
                    sent = list(part.head(cut)(x))
                reply = client.infer(MODEL, cut, sent, timeout_s=30)
                want = local_tail(part, cut, sent)
                assert len(reply.tensors) == 1 and reply.tensors[0].shape == (batch, 10)
                torch.testing.assert_close(reply.tensors[0], want, rtol=1e-6, atol=1e-6)
                assert reply.edge_tail_s > 0
        # the whole model through cut 0 equals the model itself
        x = part.example_input(seed=5)
        with torch.inference_mode():
            whole = part.model(x)
        torch.testing.assert_close(
            client.infer(MODEL, 0, [x], timeout_s=30).tensors[0], whole, rtol=1e-6, atol=1e-6
        )


def test_half_precision_uplink_is_cast_back_by_the_edge(edge, part):
    cut = 3  # two crossing tensors (the residual branch)
    with torch.inference_mode():
        sent = [t.to(torch.float16) for t in part.head(cut)(part.example_input(seed=9))]
    with EdgeClient(edge.endpoint) as client:
        reply = client.infer(MODEL, cut, sent, timeout_s=30)
    want = local_tail(part, cut, [t.float() for t in sent])
    torch.testing.assert_close(reply.tensors[0], want, rtol=1e-6, atol=1e-6)


def test_int8_compressed_uplink_equals_the_local_tail_on_unpacked_tensors(edge, part):
    from dnn_split.compress import pack, unpack

    cut = 3
    with torch.inference_mode():
        packed = [pack(t, "int8") for t in part.head(cut)(part.example_input(seed=11))]
    with EdgeClient(edge.endpoint) as client:
        reply = client.infer(MODEL, cut, packed, timeout_s=30)
    want = local_tail(part, cut, [unpack(p) for p in packed])
    torch.testing.assert_close(reply.tensors[0], want, rtol=1e-5, atol=1e-5)


def test_statistics_line_every_interval(edge):
    start = len(edge.lines)
    with EdgeClient(edge.endpoint) as client:
        client.infer(MODEL, 0, [torch.zeros(1, *INPUT_SHAPE)], timeout_s=30)
    stats = r"edge: last [\d.]+ s: (\d+) requests, (\d+) served, (\d+) errors, (\d+) pings, "
    m = edge.wait_for(stats + r"mean tail ([\d.]+) ms", timeout_s=10, start=start)
    assert int(m.group(1)) >= 1 and float(m.group(5)) > 0


# -- malformed messages ------------------------------------------------------------------------


class Fuzz:
    """Malformed messages for the tiny model's catalog, each with the error codes it may get."""

    def __init__(self, part, seed: int = 0):
        self.rng = random.Random(seed)
        self.rid = 1000
        self.cuts = {c.index: c for c in part.cuts}
        self.last = part.last.index

    def _next_id(self) -> int:
        self.rid += 1
        return self.rid

    def valid(self, cut: int = 0, batch: int = 1, dtype: str = "float32", msg_type=MsgType.REQUEST):
        descs = tuple(TensorDesc.of(dtype, (batch, *t.shape[1:])) for t in self.cuts[cut].tensors)
        h = Header(msg_type, self._next_id(), MODEL, cut, tensors=descs, sent_ns=123)
        return bytearray(encode_header(h)), [bytes(d.nbytes) for d in descs]

    def one(self):
        r = self.rng
        kind = r.randrange(23)
        cut = r.choice([0, 1, 3, 8])
        hdr, frames = self.valid(cut)
        d0 = FIXED_BYTES  # first descriptor
        if kind == 0:
            return [b""], {ErrorCode.BAD_HEADER}
        if kind == 1:  # truncated header
            return [bytes(hdr[: r.randrange(len(hdr))]), *frames], {ErrorCode.BAD_HEADER}
        if kind == 2:  # random bytes, random frames
            return [r.randbytes(r.randrange(0, 400)) for _ in range(r.randint(1, 3))], None
        if kind == 3:  # random bytes behind a valid magic and version
            return [b"CE\x01" + r.randbytes(r.randrange(0, 300)), *frames], None
        if kind == 4:
            hdr[2] = r.choice([0, *range(2, 256)])
            return [bytes(hdr), *frames], {ErrorCode.BAD_VERSION}
        if kind == 5:
            hdr[3] = r.choice([0, *range(6, 256)])
            return [bytes(hdr), *frames], {ErrorCode.BAD_TYPE}
        if kind == 6:  # a reply type sent to the edge
            h2, f2 = self.valid(cut, msg_type=r.choice([MsgType.RESULT]))
            return [bytes(h2), *f2], {ErrorCode.BAD_TYPE}
        if kind == 7:  # lying nbytes in the descriptor
            true = struct.unpack_from("<Q", hdr, d0 + 8)[0]
            struct.pack_into(
                "<Q", hdr, d0 + 8, r.choice([0, true - 1, true + 1, r.randrange(2**64)])
            )
            return [bytes(hdr), *frames], {ErrorCode.BAD_LENGTH}
        if kind == 8:  # frame length differs from the header
            frames[0] = bytes(max(0, len(frames[0]) + r.choice([-4, -1, 1, 4, 4096])))
            return [bytes(hdr), *frames], {ErrorCode.BAD_LENGTH}
        if kind == 9:  # huge shape, sizes consistent where they can be
            dims = [r.choice([2**32 - 1, 2**31, 65536, 4096]) for _ in range(4)]
            struct.pack_into("<4I", hdr, d0 + 24, *dims)
            total = dims[0] * dims[1] * dims[2] * dims[3] * 4
            struct.pack_into("<Q", hdr, d0 + 8, total if total < 2**64 else r.randrange(2**64))
            return [bytes(hdr), *frames], {ErrorCode.TOO_LARGE, ErrorCode.BAD_LENGTH}
        if kind == 10:  # a dtype the cut does not send, sizes consistent
            dtype = r.choice(["int64", "int32", "uint8", "bool", "int8", "int16"])
            h2, f2 = self.valid(cut, dtype=dtype)
            return [bytes(h2), *f2], {ErrorCode.BAD_DTYPE}
        if kind == 11:  # unknown dtype code
            hdr[d0] = r.choice([0, *range(len(DTYPE_CODES) + 1, 256)])
            return [bytes(hdr), *frames], {ErrorCode.BAD_DTYPE}
        if kind == 12:  # extra frames
            return [
                bytes(hdr),
                *frames,
                *[r.randbytes(r.randrange(64)) for _ in range(r.randint(1, 3))],
            ], {ErrorCode.BAD_FRAMES}
        if kind == 13:  # missing frames
            return [bytes(hdr), *frames[:-1]], {ErrorCode.BAD_FRAMES}
        if kind == 14:  # unknown model
            struct.pack_into(
                "<64s", hdr, 16, r.choice([b"resnet50", b"vgg16", b"edge_tinynet:other", b"x"])
            )
            return [bytes(hdr), *frames], {ErrorCode.UNKNOWN_MODEL}
        if kind == 15:  # cut out of range or without a tail
            struct.pack_into(
                "<H",
                hdr,
                80,
                r.choice([self.last, self.last + 1, r.randrange(self.last + 1, 65536)]),
            )
            return [bytes(hdr), *frames], {
                ErrorCode.BAD_CUT,
                ErrorCode.BAD_TENSOR_COUNT,
                ErrorCode.BAD_SHAPE,
            }
        if kind == 16:  # a cut's shape sent for another cut
            h2, f2 = self.valid(3 if cut != 3 else 0)
            struct.pack_into("<H", h2, 80, cut)
            return [bytes(h2), *f2], {ErrorCode.BAD_TENSOR_COUNT, ErrorCode.BAD_SHAPE}
        if kind == 17:  # wrong batch: 0, over the limit
            batch = r.choice([0, 17, 100])
            h2, f2 = self.valid(0, batch=batch)
            return [bytes(h2), *f2], {ErrorCode.BAD_SHAPE, ErrorCode.TOO_LARGE}
        if kind == 18:  # ndim over 8, or dims set beyond ndim
            if r.random() < 0.5:
                hdr[d0 + 1] = r.randrange(9, 256)
            else:
                struct.pack_into("<I", hdr, d0 + 24 + 4 * r.randrange(4, 8), r.randrange(1, 2**32))
            return [bytes(hdr), *frames], {ErrorCode.BAD_SHAPE}
        if kind == 19:  # more tensors than the limit, header length consistent
            n = r.choice([17, 64, 1000])
            h2 = bytearray(hdr[:FIXED_BYTES]) + bytes(n * DESC_BYTES)
            struct.pack_into("<H", h2, 6, n)
            return [bytes(h2)], {ErrorCode.TOO_LARGE}
        if kind == 20:  # reserved bytes, model id garbage
            choice = r.randrange(4)
            if choice == 0:
                struct.pack_into("<H", hdr, 82, r.randrange(1, 65536))
            elif choice == 1:
                hdr[d0 + 3 + r.randrange(5)] = r.randrange(1, 256)
            elif choice == 2:
                struct.pack_into("<4s", hdr, 16, b"\xffab\x00")
            else:
                struct.pack_into("<5s", hdr, 16, b"ed\x00ge")
            return [bytes(hdr), *frames], {ErrorCode.BAD_HEADER}
        if kind == 22:  # encodings: unknown, affine on float32, bad affine parameters, raw scale
            choice = r.randrange(4)
            if choice == 0:
                hdr[d0 + 2] = r.randrange(2, 256)
            elif choice == 1:
                hdr[d0 + 2] = 1
            elif choice == 2:
                h2, f2 = self.valid(cut, dtype="uint8")
                h2[d0 + 2] = 1
                bad = r.choice([0.0, -1.0, float("nan"), float("inf")])
                struct.pack_into("<ff", h2, d0 + 16, bad, 0.0)
                return [bytes(h2), *f2], {ErrorCode.BAD_DTYPE}
            else:
                struct.pack_into("<f", hdr, d0 + 16 + 4 * r.randrange(2), 0.25)
                return [bytes(hdr), *frames], {ErrorCode.BAD_HEADER}
            return [bytes(hdr), *frames], {ErrorCode.BAD_DTYPE}
        # kind 21: over the message limit (3.2 MB announced), refused before frames are looked at
        h2, _ = self.valid(3, batch=200)
        return [bytes(h2), b"", b""], {ErrorCode.TOO_LARGE}


def _send_and_check(sock, batch):
    for frames, _ in batch:
        sock.send_multipart(frames, copy=False)
    for i, (frames, expected) in enumerate(batch):
        assert sock.poll(20000), f"no reply to malformed message {i} of the batch"
        reply = sock.recv_multipart()
        msg = parse(reply, Limits())
        h = msg.header
        assert h.msg_type is MsgType.ERROR, (frames[0][:120], h)
        assert h.request_id == peek_request_id(frames[0])
        if expected is not None:
            assert ErrorCode(h.status) in expected, (ErrorCode(h.status), msg.reason(), expected)
        assert msg.reason() and "\n" not in msg.reason()


def test_ten_thousand_malformed_messages_leave_the_edge_serving(edge, part):
    fuzz = Fuzz(part, seed=1)
    ctx = zmq.Context()
    bad = ctx.socket(zmq.DEALER)
    bad.setsockopt(zmq.LINGER, 0)
    bad.connect(edge.endpoint)
    x = part.example_input(seed=3)
    with torch.inference_mode():
        want = part.model(x)
    try:
        with EdgeClient(edge.endpoint) as good:
            torch.testing.assert_close(
                good.infer(MODEL, 0, [x], timeout_s=30).tensors[0], want, rtol=1e-6, atol=1e-6
            )
            _send_and_check(bad, [fuzz.one() for _ in range(500)])  # warm the allocator up
            rss_before = edge.rss_bytes()
            sent = 500
            # big frames whose header lies about them: libzmq must buffer them, the edge must
            # refuse them and free them
            desc = TensorDesc.of("float32", (1, *INPUT_SHAPE))
            liar = encode_header(Header(MsgType.REQUEST, 7, MODEL, 0, tensors=(desc,)))
            big = [([liar, bytes(900_000)], {ErrorCode.BAD_LENGTH}) for _ in range(100)]
            _send_and_check(bad, big)
            sent += len(big)
            while sent < 10_000:
                batch = [fuzz.one() for _ in range(min(500, 10_000 - sent))]
                _send_and_check(bad, batch)
                sent += len(batch)
                # a good request between batches is still served, and right
                torch.testing.assert_close(
                    good.infer(MODEL, 0, [x], timeout_s=30).tensors[0], want, rtol=1e-6, atol=1e-6
                )
            rss_after = edge.rss_bytes()
            assert good.ping(timeout_s=10) > 0
    finally:
        bad.close()
        ctx.term()
    assert edge.proc.poll() is None
    assert rss_after - rss_before < 48 * 2**20, (
        f"edge RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB"
    )
    edge.wait_for(r"not logged", timeout_s=10)  # refusals are summarised, not logged 10 000 times


def test_oversized_frame_drops_only_that_peer(edge):
    ctx = zmq.Context()
    bad = ctx.socket(zmq.DEALER)
    bad.setsockopt(zmq.LINGER, 0)
    bad.setsockopt(zmq.RECONNECT_IVL, 50)
    bad.connect(edge.endpoint)
    try:
        hdr = encode_header(
            Header(
                MsgType.REQUEST,
                9,
                MODEL,
                0,
                tensors=(TensorDesc.of("uint8", (2 * MAX_MESSAGE_BYTES,)),),
            )
        )
        bad.send_multipart([hdr, bytes(2 * MAX_MESSAGE_BYTES)])
        assert not bad.poll(1500), "an oversized frame got a reply instead of a disconnect"
        with EdgeClient(edge.endpoint) as good:
            assert good.ping(timeout_s=10) > 0
        # the dropped peer reconnects by itself and is served again
        bad.send_multipart([encode_header(Header(MsgType.PING, 10))])
        assert bad.poll(10000)
        assert parse(bad.recv_multipart(), Limits()).header.msg_type is MsgType.PONG
    finally:
        bad.close()
        ctx.term()


# -- CURVE ---------------------------------------------------------------------------------------


def test_curve_serves_allowed_clients_only(tmp_path, part, capsys):
    assert cli_main(["keys", "--out", str(tmp_path), "--name", "edge"]) == 0
    assert cli_main(["keys", "--out", str(tmp_path / "clients"), "--name", "board1"]) == 0
    assert cli_main(["keys", "--out", str(tmp_path / "strangers"), "--name", "intruder"]) == 0
    assert "secret key" in capsys.readouterr().out
    proc = EdgeProcess(
        *EDGE_ARGS,
        "--curve-secret",
        str(tmp_path / "edge.key_secret"),
        "--curve-clients",
        str(tmp_path / "clients"),
    )
    try:
        proc.started()
        assert any("CURVE on (1 client keys)" in line for line in proc.lines)
        x = part.example_input(seed=4)
        with torch.inference_mode():
            want = part.model(x)
        allowed = ClientKeys.load(tmp_path / "edge.key", tmp_path / "clients" / "board1.key_secret")
        with EdgeClient(proc.endpoint, curve=allowed) as client:
            torch.testing.assert_close(
                client.infer(MODEL, 0, [x], timeout_s=30).tensors[0], want, rtol=1e-6, atol=1e-6
            )
        # a key the edge does not know: the handshake fails, nothing is ever served
        stranger = ClientKeys.load(
            tmp_path / "edge.key", tmp_path / "strangers" / "intruder.key_secret"
        )
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        stranger.apply(sock)
        sock.connect(proc.endpoint)
        sock.send_multipart([encode_header(Header(MsgType.PING, 1))])  # queued, never delivered
        assert not sock.poll(2000)
        sock.close()
        with (
            EdgeClient(proc.endpoint, curve=stranger, context=ctx) as client,
            pytest.raises(EdgeTimeout),
        ):
            client.infer(MODEL, 0, [x], timeout_s=1.5)
        # no CURVE at all: not even a connection
        with EdgeClient(proc.endpoint, context=ctx) as client, pytest.raises(EdgeTimeout):
            client.ping(timeout_s=1.5)
        ctx.term()
        proc.wait_for(r"refused CURVE client with unknown public key", timeout_s=10)
        with EdgeClient(proc.endpoint, curve=allowed) as client:  # still serving the allowed one
            assert client.ping(timeout_s=10) > 0
    finally:
        rc = proc.stop()
    assert rc == 0


# -- shutdown ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(sig):
    proc = EdgeProcess(*EDGE_ARGS)
    try:
        proc.started()
        with EdgeClient(proc.endpoint) as client:
            client.infer(MODEL, 0, [torch.zeros(1, *INPUT_SHAPE)], timeout_s=30)
        t0 = time.monotonic()
        rc = proc.stop(sig)
    finally:
        proc.kill()
    assert rc == 0
    assert time.monotonic() - t0 < 10
    assert any(f"stopping (signal {signal.Signals(sig).name})" in line for line in proc.lines)
    assert "edge: stopped after" in proc.lines[-1]
    assert "1 requests, 1 served, 0 errors" in proc.lines[-1]
    assert not any("Traceback" in line for line in proc.lines)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_edge_on_cuda_serves_the_same_results(part):
    proc = EdgeProcess(*EDGE_ARGS, "--device", "cuda", "--workers", "2")
    try:
        proc.started()
        assert any("device cuda, 2 workers" in line for line in proc.lines)
        with EdgeClient(proc.endpoint) as client:
            for cut in (0, 3, 8):
                x = part.example_input(batch=2, seed=cut)
                with torch.inference_mode():
                    sent = list(part.head(cut)(x))
                reply = client.infer(MODEL, cut, sent, timeout_s=60)
                want = local_tail(part, cut, sent)
                torch.testing.assert_close(reply.tensors[0], want, rtol=1e-3, atol=1e-4)
    finally:
        rc = proc.stop()
    assert rc == 0


def test_the_start_line_names_the_batching(edge):
    edge.wait_for(r"edge: serving .* batches of up to 16 frames \(wait 2 ms\)", timeout_s=10)
