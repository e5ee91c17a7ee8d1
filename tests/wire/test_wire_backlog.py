"""The backlog field: only in replies to requests that set FLAG_BACKLOG, and a client that
meets an edge from before the flag stops asking."""

from __future__ import annotations

import threading

import pytest
import torch
import zmq

from wire.format import (
    FLAG_BACKLOG,
    ErrorCode,
    Header,
    Limits,
    MsgType,
    WireError,
    decode_header,
    encode_header,
    error_frames,
)
from wire.transport import EdgeClient, error_reply, parse, request_frames, result_frames

LIMITS = Limits()


def _request(ask: bool) -> Header:
    return decode_header(request_frames("m", 0, [torch.zeros(1, 4)], 7, ask_backlog=ask)[0], LIMITS)


def test_replies_carry_the_backlog_only_when_the_request_asked():
    out = [torch.ones(1, 2)]
    asked = decode_header(result_frames(_request(True), out, backlog_s=0.0123456)[0], LIMITS)
    assert asked.flags == FLAG_BACKLOG and asked.edge_backlog_us == 12346
    plain = decode_header(result_frames(_request(False), out, backlog_s=0.5)[0], LIMITS)
    assert plain.flags == 0 and plain.edge_backlog_us == 0  # what an old decoder accepts
    busy = error_reply(WireError(ErrorCode.BUSY, "full", 7), 0, 0.01, request=_request(True), backlog_s=2.0)
    h = decode_header(busy[0], LIMITS)
    assert h.status == ErrorCode.BUSY and h.edge_queue_ns == 10_000_000 and h.edge_backlog_us == 2_000_000
    huge = decode_header(result_frames(_request(True), out, backlog_s=1e9)[0], LIMITS)
    assert huge.edge_backlog_us == 2**32 - 1  # clamped, not wrapped


def test_a_request_cannot_carry_a_backlog():
    with pytest.raises(ValueError, match="only in replies"):
        encode_header(Header(MsgType.REQUEST, 1, "m", flags=FLAG_BACKLOG, edge_backlog_us=5))
    with pytest.raises(ValueError, match="flags"):
        encode_header(Header(MsgType.RESULT, 1, "m", flags=2))


def test_a_client_stops_asking_after_an_edge_from_before_the_flag_refuses_the_header():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    seen_flags = []
    stop = threading.Event()

    def old_edge():  # refuses any non-zero flags, as decoders before FLAG_BACKLOG did
        router.setsockopt(zmq.RCVTIMEO, 100)
        while not stop.is_set():
            try:
                ident, *frames = router.recv_multipart()
            except zmq.Again:
                continue
            h = parse(frames, LIMITS).header
            seen_flags.append(h.flags)
            if h.flags:
                reply = error_frames(ErrorCode.BAD_HEADER, "reserved header fields must be 0", h.request_id)
            else:
                reply = result_frames(h, [torch.zeros(1)])
            router.send_multipart([ident, *reply], copy=False)

    t = threading.Thread(target=old_edge, daemon=True)
    t.start()
    try:
        with EdgeClient(router.getsockopt_string(zmq.LAST_ENDPOINT)) as c:
            assert c.ask_backlog
            first = c.submit("m", 0, [torch.zeros(1, 4)], timeout_s=5)
            assert c.receive(10, first).error_code == ErrorCode.BAD_HEADER
            assert not c.ask_backlog
            r = c.infer("m", 0, [torch.zeros(1, 4)], timeout_s=10)
            assert r.kind is MsgType.RESULT and r.edge_backlog_s is None
    finally:
        stop.set()
        t.join(5)
        router.close(0)
        ctx.term()
    assert seen_flags == [FLAG_BACKLOG, 0]
