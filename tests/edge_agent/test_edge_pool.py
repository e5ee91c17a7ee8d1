"""The edge pool (``edge_agent.pool``): retries and failures of :class:`PoolRunner` on a fake
pool (no engine), then ``cutedge edge --pool ray`` on a real local Ray Serve instance with two
replicas: it answers exactly like the local edge, and a replica killed (SIGKILL) while it runs a
request loses nothing: the request is run again on the other replica and answered once.

The Ray tests share one edge process (starting Ray and two replicas takes seconds) and skip
when Ray Serve is not installed (``pip install -e '.[serve]'``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edge_helpers import EdgeProcess, serving_in_thread  # noqa: E402
from edge_stallnet import INPUT_SHAPE, MODEL, STALL_ENV  # noqa: E402
from pool_helpers import POOL_START_S, descendants, kill_stalled_replica, wait_until  # noqa: E402

from edge_agent.pool import PoolConfig, PoolRunner, PoolUnavailable, TailError  # noqa: E402
from edge_agent.runner import ModelRequest, SplitTailRunner  # noqa: E402
from wire.format import ErrorCode, MsgType  # noqa: E402
from wire.transport import EdgeClient, EdgeError  # noqa: E402


@pytest.fixture(scope="module")
def local():
    return SplitTailRunner([ModelRequest(MODEL, INPUT_SHAPE)], announce=lambda line: None)


def _frame(seed: int) -> torch.Tensor:
    return torch.rand((1, *INPUT_SHAPE), generator=torch.Generator().manual_seed(seed))


def _tail_inputs(local: SplitTailRunner, cut: int, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = local.partitions[MODEL].head(cut)(x)
    return [t.contiguous() for t in (out if isinstance(out, (tuple, list)) else [out])]


# -- PoolRunner on a fake pool ------------------------------------------------------------------
class FakePool:
    """Replica calls answered by ``local``; ``lose`` attempts fail first (as a killed replica's
    do), each after running the tail when ``ran_first`` (its result was lost on the way back)."""

    def __init__(self, local: SplitTailRunner, lose: int = 0, ran_first: bool = False):
        self.local, self.lose, self.ran_first = local, lose, ran_first
        self.calls = 0
        self.tail_runs = 0

    def __call__(self, method, args, timeout_s):
        self.calls += 1
        if method == "run_batch":
            model, cut, batch = args
            try:
                out = self.local.run_batch(model, cut, batch)
            except Exception as exc:
                return "error", 4242, f"{type(exc).__name__}: {exc}"
            self.tail_runs += 1
            if self.lose > 0:
                self.lose -= 1
                raise RuntimeError("ActorDiedError: The actor died unexpectedly")
            return "ok", 4242, out
        return "ok", 4242, self.local.catalog()


def _runner(pool: FakePool, attempts: int = 3) -> PoolRunner:
    return PoolRunner(pool, pool.local.catalog(), PoolConfig(attempts=attempts))


def test_a_lost_call_is_run_again_and_answered_once(local, tmp_path):
    """The first attempt ran the tail but its replica died before answering: the request runs
    again, the device gets one RESULT with the right values and the served log one row."""
    pool = FakePool(local, lose=1, ran_first=True)
    runner = _runner(pool)
    served = tmp_path / "served.csv"
    x = _frame(1)
    with serving_in_thread(runner, served_log=served) as (_, endpoint), EdgeClient(endpoint) as c:
        r = c.infer(MODEL, 0, [x], timeout_s=30)
    assert r.kind is MsgType.RESULT and torch.equal(r.tensors[0], local.run(MODEL, 0, [x])[0])
    assert pool.tail_runs == 2 and runner.retries == 1
    rows = served.read_text().splitlines()[1:]
    assert len(rows) == 1 and rows[0].split(",")[1] == str(r.request_id)


def test_a_call_that_no_replica_answers_is_tail_failed_never_dropped(local):
    pool = FakePool(local, lose=10**6)
    runner = _runner(pool, attempts=2)
    with pytest.raises(PoolUnavailable, match="in 2 attempts"):
        runner.run(MODEL, 0, [_frame(2)])
    with serving_in_thread(runner) as (_, endpoint), EdgeClient(endpoint) as c:
        with pytest.raises(EdgeError) as err:
            c.infer(MODEL, 0, [_frame(3)], timeout_s=30)
    assert err.value.code == ErrorCode.TAIL_FAILED and "no pool worker answered" in err.value.reason


def test_a_failing_tail_is_not_retried(local):
    pool = FakePool(local)
    runner = _runner(pool)
    with pytest.raises(TailError, match="channels"):
        runner.run(MODEL, 0, [torch.rand(1, 5, *INPUT_SHAPE[1:])])
    assert pool.calls == 1 and runner.retries == 0


def test_a_closed_pool_fails_at_once(local):
    closed = []
    runner = PoolRunner(FakePool(local), local.catalog(), on_close=lambda: closed.append(1))
    runner.close()
    runner.close()
    assert closed == [1]
    with pytest.raises(PoolUnavailable, match="closed"):
        runner.run(MODEL, 0, [_frame(4)])


# -- a real local Ray Serve pool ----------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_edge(tmp_path_factory):
    pytest.importorskip("ray.serve")
    d = tmp_path_factory.mktemp("pool")
    (d / "stall").mkdir()
    edge = EdgeProcess(
        "--models", f"{MODEL}@{'x'.join(map(str, INPUT_SHAPE))}", "--pool", "ray", "--pool-workers", "2",
        "--served-log", str(d / "served.csv"), "--log-interval-s", "1",
        env={STALL_ENV: str(d / "stall"), "RAY_ADDRESS": ""},
    )
    try:
        edge.wait_for(r"edge: serving .* on (tcp://127\.0\.0\.1:\d+)", POOL_START_S)
        edge.started()
        edge.dir = d
        yield edge
    finally:
        edge.kill()


def test_the_pool_edge_answers_exactly_like_the_local_edge(pool_edge, local):
    assert any("pool: Ray Serve app cutedge-edge-" in ln and "2 replicas" in ln for ln in pool_edge.lines)
    cuts = [c for c, spec in enumerate(local.catalog()[MODEL]) if spec is not None]
    with EdgeClient(pool_edge.endpoint) as c:
        # one at a time, every cut
        for cut in cuts:
            xs = _tail_inputs(local, cut, _frame(cut))
            r = c.infer(MODEL, cut, xs, timeout_s=60)
            assert r.kind is MsgType.RESULT
            assert torch.equal(r.tensors[0], local.run(MODEL, cut, xs)[0]), cut
        # many in flight: the front batches them, a replica runs the batch (a stacked run
        # rounds differently from a lone one, on the local edge as here: float32 tolerance)
        sent = {}
        for i in range(16):
            xs = _tail_inputs(local, 8, _frame(100 + i))
            sent[c.submit(MODEL, 8, xs, timeout_s=30)] = xs
        for _ in sent:
            r = c.receive(60)
            assert r.kind is MsgType.RESULT
            torch.testing.assert_close(r.tensors[0], local.run(MODEL, 8, sent[r.request_id])[0])
        # a tensor travelling as float64 is cast to the tail's dtype, as locally
        x64 = _frame(5).to(torch.float64)
        r = c.infer(MODEL, 0, [x64], timeout_s=60)
        assert torch.equal(r.tensors[0], local.run(MODEL, 0, [x64])[0])
    both = wait_until(lambda: len(set(_pool_pids(pool_edge))) >= 2, 60, "both replicas answered", 0.2)
    assert both


def _pool_pids(edge: EdgeProcess) -> list[int]:
    return [int(ln.rsplit("pid ", 1)[1].split()[0]) for ln in edge.lines if "edge: pool worker pid" in ln]


def test_a_replica_killed_mid_request_loses_nothing_and_answers_once(pool_edge, local):
    stall = pool_edge.dir / "stall"
    served = pool_edge.dir / "served.csv"
    before = len(served.read_text().splitlines())
    xs = [_frame(7)]
    with EdgeClient(pool_edge.endpoint) as c:
        (stall / "armed").touch()
        rid = c.submit(MODEL, 0, xs, timeout_s=30)
        killed = kill_stalled_replica(pool_edge, stall)
        r = c.receive(120)
        assert r.request_id == rid and r.kind is MsgType.RESULT
        assert torch.equal(r.tensors[0], local.run(MODEL, 0, xs)[0])
        assert c.ping(timeout_s=30)  # the edge stayed up
        r2 = c.infer(MODEL, 0, [_frame(8)], timeout_s=60)  # and keeps serving
        assert torch.equal(r2.tensors[0], local.run(MODEL, 0, [_frame(8)])[0])
    pool_edge.wait_for(r"edge: pool: run_batch lost on attempt 1 of 3 \(ActorDiedError", timeout_s=10)
    rows = [ln.split(",") for ln in served.read_text().splitlines()[before:]]  # this client's
    assert sorted(int(row[1]) for row in rows) == [rid, r2.request_id]  # each answered once
    assert killed in _pool_pids(pool_edge)


def test_the_pool_edge_stops_cleanly_and_takes_its_ray_instance_with_it(pool_edge):
    procs = descendants(pool_edge.proc.pid)
    assert len(procs) > 3  # Ray's own processes and the replicas run under the edge
    assert pool_edge.stop(timeout_s=120) == 0
    assert any("edge: stopped after" in ln for ln in pool_edge.lines)
    assert any("edge: pool shut down" in ln for ln in pool_edge.lines)
    wait_until(lambda: not [p for p in procs if Path(f"/proc/{p}").exists()], 60,
               "every process of the edge's Ray instance gone", 0.2)
