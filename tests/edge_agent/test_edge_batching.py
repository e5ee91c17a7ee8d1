"""Batching across devices: which requests share a tail call, and that each gets its own answer.

No test depends on timing: a gate holds the edge's one worker inside a first tail call while the
devices' requests queue up behind it (the test waits until the queue holds them all), then
opens; with ``max_wait_ms`` 0 the worker batches exactly what is queued.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from edge_helpers import serving_in_thread
from edge_tinynet import INPUT_SHAPE, MODEL
from torch import nn

from edge_agent.runner import CachedTailRunner, ModelRequest, SplitTailRunner
from edge_agent.server import ServerConfig, _FairQueue, _Job
from wire.format import ErrorCode, Limits, MsgType, TensorSpec
from wire.transport import EdgeClient

LIMITS = Limits(max_message_bytes=2**20)


class Recording:
    """Wraps a runner: records every tail call (kind, cut, request count) and can hold the first
    one at a gate, so the test decides when the worker gets to the queue."""

    def __init__(self, inner, *, batch: bool = True):
        self.inner = inner
        self.calls: list[tuple[str, int, int]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self._first = True
        if batch:
            self.run_batch = self._run_batch

    def catalog(self):
        return self.inner.catalog()

    def _hold(self) -> None:
        if self._first:
            self._first = False
            self.entered.set()
            assert self.gate.wait(30)

    def run(self, model, cut, inputs):
        self.calls.append(("run", cut, 1))
        self._hold()
        return self.inner.run(model, cut, inputs)

    def _run_batch(self, model, cut, batch):
        self.calls.append(("batch", cut, len(batch)))
        self._hold()
        return self.inner.run_batch(model, cut, batch)


@pytest.fixture(scope="module")
def tiny():
    return SplitTailRunner([ModelRequest(MODEL, INPUT_SHAPE)], announce=lambda line: None)


def _wait_queued(server, n: int) -> None:
    deadline = time.monotonic() + 30
    while server._jobs.queued < n:
        assert time.monotonic() < deadline, f"{server._jobs.queued} of {n} requests queued"
        time.sleep(0.005)


def _inputs(tiny, cut: int, seed: int) -> list[torch.Tensor]:
    part = tiny.partitions[MODEL]
    with torch.inference_mode():
        return [t.clone() for t in part.head(cut)(part.example_input(seed=seed))]


def _held_then(server, runner, clients, sends):
    """Block the worker on a first request, queue ``sends`` [(client index, cut, inputs)], open
    the gate; returns the request ids per send and the first client's blocking request id."""
    first = clients[0].submit(MODEL, sends[0][1], sends[0][2], timeout_s=5)
    assert runner.entered.wait(30)
    rids = [clients[i].submit(MODEL, cut, x, timeout_s=5) for i, cut, x in sends]
    _wait_queued(server, len(sends))
    runner.gate.set()
    return rids, first


def test_requests_from_several_devices_share_one_tail_call_and_each_gets_its_own_result(tiny):
    runner = Recording(tiny)
    cut = 3  # two tensors cross here (inside the residual block)
    with serving_in_thread(runner, limits=LIMITS, max_batch=16, max_wait_ms=0) as (server, endpoint):
        clients = [EdgeClient(endpoint) for _ in range(4)]
        try:
            sends = [(i, cut, _inputs(tiny, cut, seed=10 * i + k)) for k in range(3) for i in range(4)]
            rids, first = _held_then(server, runner, clients, sends)
            clients[0].receive(30, first)
            for i, c in enumerate(clients):
                mine = [rid for (j, _, _), rid in zip(sends, rids) if j == i]
                replies = [c.receive(30) for _ in mine]
                assert [r.request_id for r in replies] == mine  # in the order this device sent
                assert all(r.kind is MsgType.RESULT for r in replies)
        finally:
            for c in clients:
                c.close()
    assert runner.calls[0] == ("run", cut, 1)  # a lone request: the plain run
    # everything queued behind the first call ran in one tail call of 12 requests
    assert runner.calls[1:] == [("batch", cut, 12)]
    assert server.stats.total.tail_calls == 2 and server.stats.total.served == 13


def test_batched_results_equal_the_unbatched_tail_per_request(tiny):
    runner = Recording(tiny)
    cut = 3
    with serving_in_thread(runner, limits=LIMITS, max_batch=16, max_wait_ms=0) as (server, endpoint):
        clients = [EdgeClient(endpoint) for _ in range(3)]
        try:
            # one device sends float16: cast to the tail's dtype before stacking
            sends = []
            for i in range(3):
                for k in range(2):
                    x = _inputs(tiny, cut, seed=100 + 10 * i + k)
                    sends.append((i, cut, [t.half() for t in x] if i == 2 else x))
            rids, first = _held_then(server, runner, clients, sends)
            clients[0].receive(30, first)
            for (i, _, x), rid in zip(sends, rids):
                reply = clients[i].receive(30, rid).raise_for_error()
                want = tiny.run(MODEL, cut, x)
                assert len(reply.tensors) == len(want)
                for a, b in zip(reply.tensors, want):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        finally:
            for c in clients:
                c.close()
    assert runner.calls[1:] == [("batch", cut, 6)]


def test_requests_for_different_cuts_are_never_batched_together(tiny):
    runner = Recording(tiny)
    with serving_in_thread(runner, limits=LIMITS, max_batch=16, max_wait_ms=0) as (server, endpoint):
        clients = [EdgeClient(endpoint) for _ in range(4)]
        try:
            sends = [(i, (3, 5)[i % 2], _inputs(tiny, (3, 5)[i % 2], seed=i)) for i in range(4)] * 2
            rids, first = _held_then(server, runner, clients, sends)
            clients[0].receive(30, first)
            for (i, _, _), rid in zip(sends, rids):
                assert clients[i].receive(30, rid).kind is MsgType.RESULT
        finally:
            for c in clients:
                c.close()
    later = runner.calls[1:]
    assert sorted(later) == [("batch", 3, 4), ("batch", 5, 4)]


class Fragile(nn.Module):
    """Doubles its input; raises on any value below -1000 (a request the tail cannot take,
    which no header check can see)."""

    def forward(self, x):
        if bool((x < -1000).any()):
            raise RuntimeError("value below -1000")
        return x * 2


def test_a_bad_request_in_a_batch_fails_alone_and_the_others_get_results():
    spec = (TensorSpec("x", (1, 4), "float32"),)
    runner = Recording(CachedTailRunner({"m": (spec, None)}, lambda m, c: Fragile()))
    with serving_in_thread(runner, max_batch=16, max_wait_ms=0) as (server, endpoint):
        clients = [EdgeClient(endpoint) for _ in range(4)]
        try:
            xs = [torch.full((1, 4), -5000.0 if i == 2 else float(i)) for i in range(4)]
            first = clients[0].submit("m", 0, [xs[0]], timeout_s=5)
            assert runner.entered.wait(30)
            rids = [c.submit("m", 0, [x], timeout_s=5) for c, x in zip(clients, xs)]
            _wait_queued(server, 4)
            runner.gate.set()
            clients[0].receive(30, first)
            for i, (c, rid) in enumerate(zip(clients, rids)):
                r = c.receive(30, rid)
                if i == 2:
                    assert r.error_code == ErrorCode.TAIL_FAILED and "below -1000" in r.error_reason
                else:
                    assert r.kind is MsgType.RESULT and torch.equal(r.tensors[0], xs[i] * 2)
        finally:
            for c in clients:
                c.close()
    # the batch of 4 failed, then each request ran alone
    assert runner.calls[1] == ("batch", 0, 4)
    assert runner.calls[2:] == [("run", 0, 1)] * 4
    assert server.stats.total.served == 4 and server.stats.total.errors == 1


@pytest.mark.parametrize("has_run_batch", [True, False])
def test_max_batch_1_is_one_request_per_tail_call(tiny, has_run_batch):
    runner = Recording(tiny, batch=has_run_batch)
    with serving_in_thread(runner, limits=LIMITS, max_batch=1, max_wait_ms=50) as (server, endpoint):
        clients = [EdgeClient(endpoint) for _ in range(3)]
        try:
            sends = [(i, 3, _inputs(tiny, 3, seed=i)) for i in range(3)] * 2
            rids, first = _held_then(server, runner, clients, sends)
            clients[0].receive(30, first)
            for (i, _, x), rid in zip(sends, rids):
                r = clients[i].receive(30, rid).raise_for_error()
                torch.testing.assert_close(r.tensors[0], tiny.run(MODEL, 3, x)[0])
        finally:
            for c in clients:
                c.close()
    assert all(n == 1 for _, _, n in runner.calls) and len(runner.calls) == 7
    assert server.stats.total.tail_calls == 7


def test_a_lone_request_is_served_though_no_batch_fills(tiny):
    runner = Recording(tiny)
    runner.gate.set()
    with serving_in_thread(runner, limits=LIMITS, max_batch=16, max_wait_ms=20) as (_, endpoint):
        with EdgeClient(endpoint) as c:
            x = _inputs(tiny, 3, seed=1)
            r = c.infer(MODEL, 3, x, timeout_s=30)
            torch.testing.assert_close(r.tensors[0], tiny.run(MODEL, 3, x)[0])
    assert [n for _, _, n in runner.calls] == [1]


def _job(key: bytes, tail=("m", 0), rows: int = 1) -> _Job:
    return _Job(key, None, 0, 1, rows, tail)  # type: ignore[arg-type]


def test_fair_queue_fills_a_batch_round_robin_over_devices_keeping_each_devices_order():
    q = _FairQueue(max_jobs=100, max_bytes=10**6, workers=1)
    jobs = {k: [_job(k) for _ in range(3)] for k in (b"a", b"b", b"c")}
    other = _job(b"b", tail=("m", 1))
    for k in (b"a", b"b", b"c"):
        for j in jobs[k][:2]:
            q.offer(k, j)
    q.offer(b"b", other)  # b's third job is for another tail: b gives no more after it
    q.offer(b"a", jobs[b"a"][2])
    batch = q.take_batch(max_rows=5, max_wait_s=0)
    assert batch == [jobs[b"a"][0], jobs[b"b"][0], jobs[b"c"][0], jobs[b"a"][1], jobs[b"b"][1]]
    # the rest, in turn: c's second, a's third, then b's job for the other tail alone
    assert q.take_batch(8, 0) == [jobs[b"c"][1], jobs[b"a"][2]]
    assert q.take_batch(8, 0) == [other]
    assert q.queued == 0


def test_fair_queue_counts_rows_and_a_large_request_runs_alone():
    q = _FairQueue(max_jobs=100, max_bytes=10**6, workers=1)
    big, small = _job(b"a", rows=12), _job(b"b", rows=3)
    q.offer(b"a", big)
    q.offer(b"b", small)
    assert q.take_batch(max_rows=8, max_wait_s=0) == [big]  # over max_rows alone: still runs
    assert q.take_batch(max_rows=8, max_wait_s=0) == [small]


def test_fair_queue_a_filling_batch_does_not_wait_out_max_wait():
    q = _FairQueue(max_jobs=100, max_bytes=10**6, workers=1)
    a, b = _job(b"a"), _job(b"b")
    q.offer(b"a", a)
    out = []
    t = threading.Thread(target=lambda: out.append(q.take_batch(max_rows=2, max_wait_s=300)))
    t.start()
    while q.queued:  # the worker holds a
        time.sleep(0.001)
    q.offer(b"b", b)
    t.join(60)
    assert not t.is_alive() and out == [[a, b]]


def test_backlog_is_waiting_jobs_times_mean_tail_time_per_job_over_workers():
    q = _FairQueue(max_jobs=100, max_bytes=10**6, workers=2)
    assert q.backlog_s() == 0.0
    first = [_job(b"a") for _ in range(4)]
    for j in first:
        q.offer(b"a", j)
    q.done_batch(q.take_batch(4, 0), 0.08)  # 4 jobs in 80 ms: 20 ms per job
    for _ in range(6):
        q.offer(b"b", _job(b"b"))
    assert q.backlog_s() == pytest.approx(6 * 0.02 / 2)


def test_backlog_rises_once_the_load_passes_the_target_utilisation():
    """The virtual server at rho of the workers' speed (simulation.edge's rule): below rho its
    backlog drains between batches, above it it grows, and the edge reports it."""
    now = [0.0]
    q = _FairQueue(max_jobs=100, max_bytes=10**6, workers=1, target_utilisation=0.8, clock=lambda: now[0])
    for _ in range(10):  # 50 ms of work every 100 ms: load 0.5, below rho
        q.offer(b"a", _job(b"a"))
        q.done_batch(q.take_batch(1, 0), 0.05)
        now[0] += 0.1
    assert q.backlog_s() == 0.0
    for _ in range(10):  # 95 ms of work every 100 ms: load 0.95, above rho = 0.8
        q.offer(b"a", _job(b"a"))
        q.done_batch(q.take_batch(1, 0), 0.095)
        now[0] += 0.1
    # 10 slots of (0.095 - 0.8 * 0.1) = 15 ms of excess work each, over rho
    assert q.backlog_s() == pytest.approx(10 * 0.015 / 0.8, rel=1e-6)
    with pytest.raises(ValueError, match="target_utilisation"):
        ServerConfig("tcp://127.0.0.1:0", target_utilisation=0.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_batch", 0, "max_batch must be an integer in 1..4096"),
        ("max_batch", 1.5, "max_batch must be an integer"),
        ("max_wait_ms", -1, "max_wait_ms must be a number in 0..1000"),
        ("max_wait_ms", 5000, "max_wait_ms must be a number in 0..1000"),
    ],
)
def test_server_config_refuses_bad_batching_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig("tcp://127.0.0.1:0", **{field: value})
