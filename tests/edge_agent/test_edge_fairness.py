"""Fair service: 16 devices on one edge over loopback, one of them flooding it."""

from __future__ import annotations

import csv
import threading
import time

import pytest
import torch
from edge_helpers import serving_in_thread

from edge_agent.server import _FairQueue, _Job
from wire.format import ErrorCode, MsgType, TensorSpec
from wire.transport import EdgeClient, EdgeTimeout

SPEC = (TensorSpec("x", (1, 4), "float32"),)


class SleepRunner:
    """A tail that takes ``tail_s`` of wall time without holding the GIL (as a GPU tail would)."""

    def __init__(self, tail_s: float):
        self.tail_s = tail_s
        self.runs = 0
        self._lock = threading.Lock()

    def catalog(self):
        return {"m": (SPEC, None)}

    def run(self, model, cut, inputs):
        with self._lock:
            self.runs += 1
        time.sleep(self.tail_s)
        return [inputs[0] * 2]


def _job(n: int = 16) -> _Job:
    return _Job(b"", None, 0, n)  # type: ignore[arg-type]


def test_fair_queue_shares_places_and_takes_devices_in_turn():
    q = _FairQueue(max_jobs=8, max_bytes=10_000, workers=1)
    assert all(q.offer(b"a", _job()) is None for _ in range(8))  # alone: the whole queue
    busy = q.offer(b"a", _job())
    assert busy is not None and "queue full" in busy[1] and busy[0] > 0
    for _ in range(3):  # a's jobs run, freeing places
        q.done(q.take(), 0.01)
    # b arrives: a (5 waiting) is over its half share, b gets places
    assert q.offer(b"b", _job()) is None and q.offer(b"b", _job()) is None
    busy = q.offer(b"a", _job())
    assert busy is not None and "share" in busy[1]
    order = []
    for _ in range(4):
        job = q.take()
        order.append(job)
        q.done(job, 0.01)
    keys = [q_key for q_key in order]
    assert len(keys) == 4
    # round robin: a and b alternate while both wait
    q2 = _FairQueue(max_jobs=100, max_bytes=10**6, workers=1)
    for k in (b"a",) * 5 + (b"b",) * 2 + (b"c",):
        assert q2.offer(k, _Job(k, None, 0, 1)) is None  # type: ignore[arg-type]
    assert [q2.take().identity for _ in range(8)] == [b"a", b"b", b"c", b"a", b"b", b"a", b"a", b"a"]
    q2.close()
    assert q2.take() is None


def _device(endpoint: str, stop: threading.Event, window: int, got: dict, sent: list, x: torch.Tensor):
    """A device keeping ``window`` requests in flight until ``stop``; then it collects the rest."""
    with EdgeClient(endpoint) as c:
        pending: set[int] = set()
        while not stop.is_set() or pending:
            while not stop.is_set() and len(pending) < window:
                rid = c.submit("m", 0, [x], timeout_s=5)
                pending.add(rid)
                sent.append(rid)
            try:
                r = c.receive(5)
            except EdgeTimeout:
                got["timeouts"] = got.get("timeouts", 0) + 1
                if stop.is_set():
                    break
                continue
            pending.discard(r.request_id)
            if r.kind is MsgType.RESULT:
                assert torch.equal(r.tensors[0], x * 2)
                got.setdefault("results", []).append(r.request_id)
            else:
                assert r.error_code == ErrorCode.BUSY, r.error_reason
                assert r.retry_after_s > 0
                got.setdefault("busy", []).append(r.request_id)


@pytest.mark.slow
def test_sixteen_devices_one_flooding_each_other_gets_its_share_and_no_request_is_lost(tmp_path):
    runner = SleepRunner(0.002)
    log = tmp_path / "served.csv"
    with serving_in_thread(runner, workers=1, served_log=log) as (server, endpoint):
        stop = threading.Event()
        n = 16
        got = [dict() for _ in range(n)]
        sent = [[] for _ in range(n)]
        # device 0 floods: 400 requests in flight, resent as soon as answered, BUSY or not
        windows = [400] + [4] * (n - 1)
        threads = [
            threading.Thread(target=_device, args=(endpoint, stop, windows[i], got[i], sent[i],
                                                   torch.full((1, 4), float(i))), daemon=True)
            for i in range(n)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while server.stats.total.served < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    results = [len(g.get("results", [])) for g in got]
    total = sum(results)
    assert total >= 2000
    equal_share = total / n
    # every well-behaved device gets >= 80 % of an equal share; the flood got BUSY replies
    assert min(results[1:]) >= 0.8 * equal_share, results
    assert len(got[0].get("busy", [])) > 0
    # nothing lost or run twice: every request sent got exactly one answer, and the edge's
    # record of what it ran matches the results the devices got, one for one
    for i in range(n):
        answered = got[i].get("results", []) + got[i].get("busy", [])
        assert sorted(answered) == sorted(sent[i]), f"device {i}: {len(sent[i])} sent, {len(answered)} answered"
    with log.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == runner.runs == total
    by_peer: dict[str, list[int]] = {}
    for r in rows:
        by_peer.setdefault(r["peer"], []).append(int(r["request_id"]))
    assert sorted(sorted(v) for v in by_peer.values()) == sorted(sorted(g.get("results", [])) for g in got)
