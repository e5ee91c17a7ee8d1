"""A device given several edges: each request goes to the live edge with the least expected wait,
and the frames of an edge that dies are sent again to another one, each completed exactly once.

Real edges serve in this process on loopback (``serving_in_thread``), a real device agent runs on
the simulated clock backend with a tiny model. The controller is replaced by a policy that
offloads every frame at cut 0, so what is tested is the routing, not the controller's tuning.
Nothing waits on a race: an edge "hangs" on a gate the test opens when the agent logs that it
took the edge as down, and an edge is stopped from inside the agent's loop.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge_agent"))  # edge_helpers, tinynet

from edge_helpers import serving_in_thread  # noqa: E402
from edge_tinynet import INPUT_SHAPE, MODEL  # noqa: E402

from controller.policy import Decision  # noqa: E402
from controller.profiles import load_board, model_from_mapping  # noqa: E402
from device_agent.clock.simulated import SimulatedBackend  # noqa: E402
from device_agent.edges import EdgeEndpoint, pick  # noqa: E402
from device_agent.link import Message, Uplink  # noqa: E402
from device_agent.runtime import LiveAgent, LiveConfig  # noqa: E402
from dnn_split.partition import partition  # noqa: E402
from dnn_split.profile import estimate_profile  # noqa: E402
from edge_agent.runner import ModelRequest, SplitTailRunner  # noqa: E402
from wire.transport import EdgeClient  # noqa: E402

FRAMES = 30


# -- picking, on its own ---------------------------------------------------------------------------


class _Named:
    def __init__(self, name: str):
        self.endpoint = name


def _eps(n: int) -> list[EdgeEndpoint]:
    return [EdgeEndpoint(i, _Named(f"tcp://127.0.0.1:{5000 + i}")) for i in range(n)]


def _prior(frame) -> float:
    return 0.01


def test_ties_go_to_the_first_edge_and_the_least_expected_wait_wins():
    a, b, c = _eps(3)
    assert pick([a, b, c], 10.0, _prior) is a
    a.note_backlog(2.0, 10.0)
    b.note_backlog(0.5, 10.0)
    c.note_backlog(0.5, 10.0)
    assert pick([a, b, c], 10.0, _prior) is b  # b and c tie: the first of them
    assert a.reported_wait_s(11.0) == pytest.approx(1.0)  # drained at 1 s/s since the report
    assert pick([a, b, c], 12.0, _prior) is a  # every report drained to 0: the first again


def test_requests_in_flight_count_at_the_edges_tail_time_or_the_prior_before_it_reported_one():
    a, b = _eps(2)
    a.in_flight = {1: object(), 2: object()}
    assert a.expected_wait_s(0.0, _prior) == pytest.approx(0.02)  # 2 x the prior
    a.note_tail(0.1)
    assert a.tail_s == pytest.approx(0.1)
    a.note_tail(0.2)
    assert 0.1 < a.tail_s < 0.2  # a running mean
    assert a.expected_wait_s(0.0, _prior) == pytest.approx(2 * a.tail_s)  # about 0.26 s
    b.note_backlog(0.5, 0.0)
    assert pick([a, b], 0.0, _prior) is a and pick([a, b], 0.2, _prior) is a
    assert pick([a, b], 0.3, _prior) is b  # b's report has drained below a's two in flight


def test_a_busy_edge_is_passed_over_a_down_one_is_never_picked():
    a, b = _eps(2)
    a.busy_until_s = 5.0
    b.note_backlog(100.0, 0.0)
    assert pick([a, b], 1.0, _prior) is b  # a may not take requests now, whatever b's wait
    b.went_down()
    assert pick([a, b], 1.0, _prior) is a  # none may: the least wait among those up
    assert b.reported_wait_s(1.0) == 0.0 and b.downs == 1
    a.went_down()
    assert pick([a, b], 1.0, _prior) is None


def test_a_message_sent_again_goes_ahead_of_those_not_started():
    link = Uplink()
    first, second = Message(8e3, "first", 0.0), Message(8e3, "second", 0.0)
    link.push(first)
    link.push(second)
    link.set_rate(4e3, 0.0)
    assert link.advance(1.0) == []  # first is half sent
    again = Message(8e3, "again", 1.0, unpaced=True)
    link.push_front(again)
    assert [m.payload for m in link.queue] == ["first", "again", "second"]
    assert [m.payload for m, _, _ in link.advance(2.0)] == ["first"]  # its last bit leaves at 2 s
    assert [m.payload for m, _, _ in link.advance(2.001)] == ["again"]  # unpaced: at once, then


# -- a device and real edges -----------------------------------------------------------------------


class AlwaysOffload:
    """Every slot: heads at the fastest level, every frame sent at cut 0 (the input)."""

    name = "always-offload"

    def __init__(self, system, level: int):
        self.system = system
        self.level = level
        self.seen = []

    def reset(self) -> None:
        pass

    def decide(self, obs):
        self.seen.append(obs)
        return Decision(0, self.level, 1e9, True, True)

    def observe(self, outcome) -> None:
        pass


@pytest.fixture(scope="module")
def runner():
    return SplitTailRunner([ModelRequest(MODEL, INPUT_SHAPE)], announce=lambda line: None)


@pytest.fixture(scope="module")
def setup():
    board = load_board("jetson-nano")
    part = partition(MODEL, INPUT_SHAPE, announce=lambda line: None)
    return board, part, model_from_mapping(estimate_profile(part, board), "FLOPs estimate")


def _agent(setup, endpoints, log=lambda m: None, **cfg):
    board, part, profile = setup
    cfg = LiveConfig(model=MODEL, input_shape=INPUT_SHAPE, board=board.name, frames=FRAMES, fps=20.0,
                     calibration=None, **cfg)
    agent = LiveAgent(cfg, part, profile, SimulatedBackend(board), [EdgeClient(e) for e in endpoints], log=log)
    agent.policy = AlwaysOffload(agent.system, len(agent.levels) - 1)
    return agent


def _close(agent) -> None:
    for ep in agent.edges:
        ep.client.close()


def _each_frame_once(agent, summary) -> dict:
    f = summary["frames"]
    assert f["arrived"] == f["completed"] == FRAMES and f["in_flight"] == 0, f
    assert f["conserved"] and f["dropped"] == 0 and f["completed_twice"] == 0, f
    assert sorted(fr.fid for fr in agent.frames) == list(range(FRAMES))
    assert all(math.isfinite(fr.result_s) for fr in agent.frames)
    assert f["offloaded"] == sum(e["offloaded"] for e in summary["edges"])
    return f


def test_an_edge_reporting_a_large_backlog_gets_no_request_after_its_report(runner, setup):
    with serving_in_thread(runner) as (loaded, a), serving_in_thread(runner) as (_, b):
        loaded._jobs.backlog_s = lambda: 1000.0  # what its queue would say under other devices' load
        agent = _agent(setup, [a, b])
        sends: list[float] = []
        reports: list[float] = []
        ep_a = agent.edges[0]
        submit, note = ep_a.client.submit, ep_a.note_backlog

        def timed_submit(*args, **kw):
            sends.append(time.monotonic())
            return submit(*args, **kw)

        def timed_note(backlog_s, now_s):
            if backlog_s is not None:
                reports.append(time.monotonic())
            note(backlog_s, now_s)

        ep_a.client.submit, ep_a.note_backlog = timed_submit, timed_note
        try:
            summary = agent.run()
        finally:
            _close(agent)
    f = _each_frame_once(agent, summary)
    assert f["offloaded"] == FRAMES and f["failed_over"] == 0 and f["late_results"] == 0
    n_a, n_b = (e["offloaded"] for e in summary["edges"])
    assert n_a >= 1  # the first request: no report yet, a tie, the first edge
    assert reports and not [t for t in sends if t > reports[0]]  # none after its first report
    assert n_b > n_a and n_a + n_b == FRAMES
    # the controller is told the wait of the edge a request would go to: b's, not a's
    assert all(obs.edge_wait_s < 1.0 for obs in agent.policy.seen)
    assert {r["endpoint"] for r in summary["edges"]} == {a, b}


class _Gated:
    """A tail runner whose ``block``-th call waits for ``gate`` (at most a minute) before it runs:
    an edge that hangs, then answers late."""

    def __init__(self, inner, block: int):
        self.inner, self.block, self.calls = inner, block, 0
        self.gate = threading.Event()

    def catalog(self):
        return self.inner.catalog()

    def run(self, model, cut, inputs):
        self.calls += 1
        if self.calls == self.block:
            self.gate.wait(60)
        return self.inner.run(model, cut, inputs)


def test_a_hung_edges_frames_are_sent_to_the_other_and_its_late_results_are_dropped(runner, setup):
    gated = _Gated(runner, block=3)
    with serving_in_thread(gated, max_batch=1) as (_, a), serving_in_thread(runner) as (_, b):
        lines: list[str] = []
        agent = None

        def log(line: str) -> None:
            lines.append(line)
            if f"edge {a} down (" in line and not gated.gate.is_set():
                gated.gate.set()  # the hung tail finishes now; its result comes after the resend
                assert agent.edges[0].client.socket.poll(30_000)  # it has come: the next collect takes it

        agent = _agent(setup, [a, b], log=log, edge_timeout_s=0.5)
        try:
            summary = agent.run()
        finally:
            gated.gate.set()
            _close(agent)
    f = _each_frame_once(agent, summary)
    ea, eb = summary["edges"]
    assert ea["downs"] >= 1 and any("no reply within 0.5 s" in e["event"] and e["endpoint"] == a
                                    for e in summary["edge_events"])
    assert f["failed_over"] == ea["failed_over"] >= 1 and eb["failed_over"] == 0
    # the hung request's result came after its frame had gone to b: dropped and counted, once
    assert 1 <= f["late_results"] == ea["late_results"] <= f["failed_over"]
    assert f["offloaded"] + f["local"] == FRAMES
    hung = [fr for fr in agent.frames if fr.path == "edge" and fr.edge == 1]
    assert hung  # b took the failed-over frames (and others while a hung)
    assert any("answered a heartbeat" in ln for ln in lines)  # a was pinged until it answered


def _run_stopping(agent, servers) -> dict:
    """Run ``agent``, stopping ``servers`` once five frames are done; its summary."""
    decide = agent.policy.decide

    def stop_after_five(obs):
        if agent.n_completed >= 5 and not servers[0].stopping:
            for server in servers:
                server.request_stop("test: the edge goes away")
        return decide(obs)

    agent.policy.decide = stop_after_five
    try:
        return agent.run()
    finally:
        _close(agent)


def test_an_edge_stopped_mid_run_is_failed_over_and_never_comes_back(runner, setup):
    with serving_in_thread(runner) as (server_a, a), serving_in_thread(runner) as (_, b):
        agent = _agent(setup, [a, b])
        summary = _run_stopping(agent, [server_a])
    f = _each_frame_once(agent, summary)
    ea, eb = summary["edges"]
    assert ea["downs"] == 1 and eb["downs"] == 0
    assert f["failed_over"] == ea["failed_over"] >= 1  # at least the first frame sent to it after the stop
    assert f["offloaded"] == FRAMES and f["fallback"] == 0  # b took everything: nothing fell back to the device
    down_s = next(e["time_s"] for e in summary["edge_events"] if e["endpoint"] == a)
    assert not [fr for fr in agent.frames if fr.edge == 0 and fr.sent_s > down_s]
    assert [e["event"] for e in summary["edge_events"]] == [summary["edge_events"][0]["event"]]  # never back


def test_with_every_edge_gone_frames_fall_back_to_the_device(runner, setup):
    with serving_in_thread(runner) as (server_a, a), serving_in_thread(runner) as (server_b, b):
        agent = _agent(setup, [a, b])
        summary = _run_stopping(agent, [server_a, server_b])
    f = _each_frame_once(agent, summary)
    assert all(e["downs"] == 1 for e in summary["edges"])
    assert f["local"] > 0 and f["offloaded"] + f["local"] == FRAMES
    assert not agent.edge_up and agent.edge_wait_s(agent.now()) == 0.0


def test_a_client_counts_results_that_come_for_requests_it_gave_up(runner):
    gated = _Gated(runner, block=1)
    x = torch.rand((1, *INPUT_SHAPE))
    with serving_in_thread(gated, max_batch=1) as (_, endpoint), EdgeClient(endpoint) as client:
        rid = client.submit(MODEL, 0, [x], timeout_s=5)
        client.forget(rid)
        gated.gate.set()
        pong = client.submit_ping(timeout_s=5)
        client.forget(client.submit_ping(timeout_s=5))  # a pong given up on is no result
        assert client.receive(30, pong).rtt_s >= 0
        assert client.infer(MODEL, 0, [x], timeout_s=30).ok  # replies come in order of the worker
        assert client.late_results == 1 and client.dropped_replies >= 1
