"""EdgeServer in-process over real sockets: admission, failures, pings under load, shutdown."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import pytest
import torch
import zmq

from edge_agent.server import EdgeServer, ServerConfig
from wire.format import ErrorCode, Limits, MsgType, TensorSpec
from wire.transport import EdgeClient

SPEC = (TensorSpec("x", (1, 4), "float32"),)


class GateRunner:
    """A TailRunner whose tail waits for ``gate``: tests decide when workers are busy.

    The tail doubles its input; a negative first element raises, 99 returns an output too big
    for the wire, 98 one whose dtype cannot travel.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def catalog(self):
        return {"m": (SPEC, None)}

    def run(self, model, cut, inputs):
        self.entered.release()
        assert self.gate.wait(20)
        v = float(inputs[0][0, 0])
        if v < 0:
            raise RuntimeError("negative input\nsecond line of the message")
        if v == 99:
            return [torch.zeros(100_000)]
        if v == 98:
            return [torch.zeros(2, dtype=torch.complex64)]
        return [inputs[0] * 2]


@contextlib.contextmanager
def serving(runner, **kw):
    kw.setdefault("limits", Limits(max_message_bytes=2**16))
    server = EdgeServer(runner, ServerConfig("tcp://127.0.0.1:0", **kw))
    endpoint = server.start()
    t = threading.Thread(target=server.serve)
    t.start()
    client = EdgeClient(endpoint)
    try:
        yield server, client
    finally:
        client.close()
        server.request_stop("test over")
        runner.gate.set()
        t.join(20)
        assert not t.is_alive()


def x_of(v: float, batch: int = 1) -> torch.Tensor:
    return torch.full((batch, 4), float(v))


def test_serves_requests_with_timings():
    runner = GateRunner()
    runner.gate.set()
    with serving(runner) as (server, client):
        reply = client.infer("m", 0, [x_of(1.5, batch=3)], timeout_s=10)
        assert torch.equal(reply.tensors[0], x_of(3.0, batch=3))
        assert reply.edge_tail_s > 0 and reply.edge_queue_s >= 0
        assert reply.rtt_s >= reply.edge_tail_s
    assert server.stats.total.served == 1


def test_full_queue_answers_busy_and_pings_are_answered_while_workers_are_busy():
    runner = GateRunner()
    with serving(runner, workers=1, max_queued=2) as (server, client):
        first = client.submit("m", 0, [x_of(1)])
        assert runner.entered.acquire(timeout=10)  # the worker is now stuck in the tail
        second = client.submit("m", 0, [x_of(2)])
        third = client.submit("m", 0, [x_of(3)])
        busy = client.receive(10, third)
        assert busy.error_code == ErrorCode.BUSY and "queue full" in busy.error_reason
        assert client.ping(timeout_s=5) < 5  # the main thread answers at once
        runner.gate.set()
        assert torch.equal(client.receive(10, first).raise_for_error().tensors[0], x_of(2))
        assert torch.equal(client.receive(10, second).raise_for_error().tensors[0], x_of(4))


def test_queue_is_bounded_in_bytes_too():
    runner = GateRunner()
    with serving(runner, workers=1, queue_bytes=16 * 3) as (server, client):
        ids = [client.submit("m", 0, [x_of(i + 1)]) for i in range(4)]  # 16 bytes each
        assert client.receive(10, ids[3]).error_code == ErrorCode.BUSY
        runner.gate.set()
        for rid in ids[:3]:
            assert client.receive(10, rid).ok


def test_a_failing_tail_gets_an_error_reply_and_the_server_goes_on(caplog):
    caplog.set_level(logging.INFO, logger="cutedge.edge")
    runner = GateRunner()
    runner.gate.set()
    with serving(runner) as (server, client):
        reply = client.receive(10, client.submit("m", 0, [x_of(-1)]))
        assert reply.error_code == ErrorCode.TAIL_FAILED
        assert "RuntimeError: negative input second line" in reply.error_reason
        too_big = client.receive(10, client.submit("m", 0, [x_of(99)]))
        assert (
            too_big.error_code == ErrorCode.TAIL_FAILED
            and "over the message limit" in too_big.error_reason
        )
        odd = client.receive(10, client.submit("m", 0, [x_of(98)]))
        assert odd.error_code == ErrorCode.TAIL_FAILED and "cannot travel" in odd.error_reason
        assert client.infer("m", 0, [x_of(1)], timeout_s=10).ok
    assert any("negative input" in r.getMessage() for r in caplog.records)
    assert server.stats.total.errors == 3 and server.stats.total.served == 1


def test_shutdown_finishes_accepted_work_and_refuses_new(caplog):
    caplog.set_level(logging.INFO, logger="cutedge.edge")
    runner = GateRunner()
    server = EdgeServer(
        runner, ServerConfig("tcp://127.0.0.1:0", limits=Limits(max_message_bytes=2**16))
    )
    endpoint = server.start()
    t = threading.Thread(target=server.serve)
    t.start()
    with EdgeClient(endpoint) as client:
        accepted = client.submit("m", 0, [x_of(5)])
        assert runner.entered.acquire(timeout=10)
        server.request_stop("test")
        deadline = time.monotonic() + 10
        while not any("stopping (test)" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        late = client.receive(10, client.submit("m", 0, [x_of(6)]))
        assert late.error_code == ErrorCode.SHUTTING_DOWN
        ping = client.receive(10, client.submit_ping())
        assert ping.kind is MsgType.ERROR and ping.error_code == ErrorCode.SHUTTING_DOWN
        runner.gate.set()
        assert torch.equal(client.receive(10, accepted).raise_for_error().tensors[0], x_of(10))
    t.join(15)
    assert not t.is_alive()
    last = caplog.records[-1].getMessage()
    assert (
        last.startswith("edge: stopped after") and "2 requests, 1 served, 2 errors, 1 pings" in last
    )


def test_interval_log_line(caplog):
    caplog.set_level(logging.INFO, logger="cutedge.edge")
    runner = GateRunner()
    runner.gate.set()
    with serving(runner, log_interval_s=0.2) as (server, client):
        client.infer("m", 0, [x_of(1)], timeout_s=10)
        client.receive(10, client.submit("nope", 0, [x_of(1)]))
        deadline = time.monotonic() + 5
        while not any(
            "1 requests" in r.getMessage() or "2 requests" in r.getMessage() for r in caplog.records
        ):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    line = next(
        r.getMessage()
        for r in caplog.records
        if "last " in r.getMessage() and "2 requests" in r.getMessage()
    )
    assert "1 served, 1 errors" in line and "mean tail" in line


def test_limit_too_small_for_a_served_cut_is_refused_at_start():
    big = {"m": ((TensorSpec("x", (1, 64, 64), "float32"),), None)}

    class R(GateRunner):
        def catalog(self):
            return big

    with pytest.raises(ValueError, match="smaller than one request for m cut 0"):
        EdgeServer(R(), ServerConfig("tcp://127.0.0.1:0", limits=Limits(max_message_bytes=8192)))


def test_bind_failure_is_an_os_error_naming_the_endpoint():
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    try:
        server = EdgeServer(GateRunner(), ServerConfig(f"tcp://127.0.0.1:{port}"))
        with pytest.raises(OSError, match=f"cannot bind tcp://127.0.0.1:{port}"):
            server.start()
    finally:
        s.close(linger=0)
        ctx.term()
